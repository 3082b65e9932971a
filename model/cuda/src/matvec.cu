// The fused quantized mat-vec's body (docs/cuda-kernels.md §The fused quantized mat-vec). MLX
// declares the kernel around it: inputs x, w, scales, biases, r; output out; template T, BITS, G,
// R, U. What it computes is chosen by the length of `r`: 1 plain, 2 gated, else a residual.
  const int n_rows = w_shape[0];
  const int words = w_shape[1];
  const int chunks = words / 4;
  const bool gated = r_shape[0] == 2;
  const bool residual = r_shape[0] > 2;
  const int n_out = gated ? n_rows / 2 : n_rows;
  const int n_acc = gated ? 2 * R : R;
  constexpr int EPC = 128 / BITS;
  constexpr int XV = 16 / sizeof(T);
  constexpr int PW = 32 / BITS;
  // 4-bit: weights read as streaming (no L1 allocation) and x through the read-only cache:
  // the 32 temporal layers' projections 4.33 -> 4.08 ms on an H200; at 8 bits it was slower.
  constexpr bool CACHE_HINTS = BITS == 4;
  const int groups = words * PW / G;
  const int lane = threadIdx.x & 31;
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int out0 = warp * R;
  if (out0 >= n_out) return;
  const uint4* wv = reinterpret_cast<const uint4*>(w);
  int wrow[2 * R];
  float acc[2 * R];
#pragma unroll
  for (int i = 0; i < 2 * R; i++) {
    const int o = min(out0 + (i % R), n_out - 1);
    wrow[i] = i >= R ? o + n_out : o;
    acc[i] = 0.f;
  }
#pragma unroll U
  for (int c = lane; c < chunks; c += 32) {
    const int e0 = c * EPC;
    float xf[EPC];
    const uint4* xp = reinterpret_cast<const uint4*>(x + e0);
#pragma unroll
    for (int v = 0; v < EPC / XV; v++) {
      const uint4 u = CACHE_HINTS ? __ldg(xp + v) : xp[v];
      const T* t = reinterpret_cast<const T*>(&u);
#pragma unroll
      for (int j = 0; j < XV; j++) xf[v * XV + j] = ppx_f(t[j]);
    }
    float xsum = 0.f;
#pragma unroll
    for (int j = 0; j < EPC; j++) xsum += xf[j];
    const int g = e0 / G;
#pragma unroll
    for (int i = 0; i < 2 * R; i++) {
      if (i < n_acc) {
        const uint4* qp = wv + (size_t)wrow[i] * chunks + c;
        const uint4 q = CACHE_HINTS ? __ldcs(qp) : *qp;
        const float s = ppx_f(scales[(size_t)wrow[i] * groups + g]);
        const float b = ppx_f(biases[(size_t)wrow[i] * groups + g]);
        acc[i] = ppx_affine(s, b, ppx_chunk_dot<BITS>(q, xf), xsum, acc[i]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 2 * R; i++) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc[i] += __shfl_xor_sync(0xffffffff, acc[i], off);
  }
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < R; i++) {
      const int o = out0 + i;
      if (o < n_out) {
        float v = acc[i];
        if (gated) {
          v = v / (1.f + __expf(-v)) * acc[i + R];
        } else if (residual) {
          v += ppx_f(r[o]);
        }
        out[o] = T(v);
      }
    }
  }
