// The Mimi transformer kernel's own device functions (docs/cuda-kernels.md §Mimi's transformer);
// the shared ones (the grid barrier, block sums) are in common.cuh, which comes first.

// The largest of v over the block (every thread gets it); red: NT / 32 floats of shared memory.
template <int NT>
__device__ __forceinline__ float ppx_block_max(float v, float* red) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, off));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float m = red[0];
#pragma unroll
  for (int i = 1; i < NT / 32; i++) m = fmaxf(m, red[i]);
  return m;
}

// The sums over the block of each of v[0..N) (every thread gets them); red: N * NT / 32 floats
// of shared memory. One pair of barriers for all N.
template <int NT, int N>
__device__ __forceinline__ void ppx_block_sums(float (&v)[N], float* red) {
  constexpr int NW = NT / 32;
#pragma unroll
  for (int n = 0; n < N; n++)
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v[n] += __shfl_xor_sync(0xffffffff, v[n], off);
  __syncthreads();
  if ((threadIdx.x & 31) == 0)
#pragma unroll
    for (int n = 0; n < N; n++) red[n * NW + (threadIdx.x >> 5)] = v[n];
  __syncthreads();
#pragma unroll
  for (int n = 0; n < N; n++) {
    float t = 0.f;
#pragma unroll
    for (int i = 0; i < NW; i++) t += red[n * NW + i];
    v[n] = t;
  }
}

// LayerNorm of the TS rows of D floats at x (written by other blocks: read through L2) into xs
// (shared memory, row t at xs + t * D): (x - mean) / sqrt(var + eps) * w + b, as MLX's
// layer_norm (the variance of the centred values); red: TS * NT / 32 floats.
template <int TS, int D, int NT>
__device__ __forceinline__ void ppx_layer_norm(
    const float* x, const float* w, const float* b, float eps, float* xs, float* red) {
  constexpr int PER = (D + NT - 1) / NT;
  float v[TS][PER];
  float s[TS];
#pragma unroll
  for (int t = 0; t < TS; t++) {
    s[t] = 0.f;
#pragma unroll
    for (int k = 0; k < PER; k++) {
      const int i = threadIdx.x + k * NT;
      v[t][k] = i < D ? __ldcg(x + t * D + i) : 0.f;
      s[t] += v[t][k];
    }
  }
  ppx_block_sums<NT, TS>(s, red);
  float q[TS];
#pragma unroll
  for (int t = 0; t < TS; t++) {
    s[t] *= 1.f / D;  // the mean
    q[t] = 0.f;
#pragma unroll
    for (int k = 0; k < PER; k++) {
      const int i = threadIdx.x + k * NT;
      const float c = i < D ? v[t][k] - s[t] : 0.f;
      q[t] = fmaf(c, c, q[t]);
    }
  }
  ppx_block_sums<NT, TS>(q, red);  // its first barrier: every thread has read red
#pragma unroll
  for (int t = 0; t < TS; t++) {
    const float inv = rsqrtf(q[t] * (1.f / D) + eps);
#pragma unroll
    for (int k = 0; k < PER; k++) {
      const int i = threadIdx.x + k * NT;
      if (i < D) xs[t * D + i] = (v[t][k] - s[t]) * inv * w[i] + b[i];
    }
  }
  __syncthreads();
}

// R consecutive rows (K floats each, from row0 of w) times the TS rows of xs (shared memory,
// row t at xs + t * K) by one warp: acc[r][t] on every lane.
template <int K, int TS, int R>
__device__ __forceinline__ void ppx_rows_dot(
    const float* __restrict__ w, size_t row0, const float* xs, int lane, float (&acc)[R][TS]) {
  constexpr int V = K / 4;  // float4s per row
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int t = 0; t < TS; t++) acc[r][t] = 0.f;
  const float4* wr = reinterpret_cast<const float4*>(w + row0 * K);
  const float4* xv = reinterpret_cast<const float4*>(xs);
#pragma unroll  // every load of the rows in flight at once (K / 128 per row and lane)
  for (int i = lane; i < V; i += 32) {
    float4 wv[R];
#pragma unroll
    for (int r = 0; r < R; r++) wv[r] = __ldg(wr + r * V + i);
#pragma unroll
    for (int t = 0; t < TS; t++) {
      const float4 a = xv[t * V + i];
#pragma unroll
      for (int r = 0; r < R; r++) {
        acc[r][t] = fmaf(wv[r].x, a.x, acc[r][t]);
        acc[r][t] = fmaf(wv[r].y, a.y, acc[r][t]);
        acc[r][t] = fmaf(wv[r].z, a.z, acc[r][t]);
        acc[r][t] = fmaf(wv[r].w, a.w, acc[r][t]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int t = 0; t < TS; t++)
#pragma unroll
      for (int off = 16; off > 0; off >>= 1)
        acc[r][t] += __shfl_xor_sync(0xffffffff, acc[r][t], off);
}

// v[t] for a runtime t < N, from registers (an unrolled select: no local memory).
template <int N>
__device__ __forceinline__ float ppx_pick(const float (&v)[N], int t) {
  float out = v[0];
#pragma unroll
  for (int u = 1; u < N; u++)
    if (t == u) out = v[u];
  return out;
}

// x * Phi(x), the exact GELU.
__device__ __forceinline__ float ppx_gelu(float x) {
  return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
}
