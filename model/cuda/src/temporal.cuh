// The temporal kernel's own device functions (docs/cuda-kernels.md §The temporal step); the
// shared ones are in common.cuh, which comes first in the kernel's header.
// Shared-memory layout of a mat-vec's input: its 16-byte segments XOR-swizzled within rows of
// eight, so that the 32 lanes reading their chunks (SPC segments each, lane-strided) hit
// distinct banks: segment s lives at s ^ ((s >> 3) & (SPC - 1)).
template <int SPC>
__device__ __forceinline__ int ppx_seg(int s) {
  return s ^ ((s >> 3) & (SPC - 1));
}
template <int XV, int SPC>
__device__ __forceinline__ int ppx_sw(int i) {
  return ppx_seg<SPC>(i / XV) * XV + i % XV;
}

// Two rows of an affine quantized weight times x (shared memory, activation dtype, swizzled);
// csum: the sums of x over each 16-byte weight chunk (computed once per phase).
template <typename T, int BITS, int G, int K, int U>
__device__ __forceinline__ float2 ppx_qdot2(
    const uint32_t* w, const T* s, const T* b, size_t row0, size_t row1, const T* x,
    const float* csum, int lane) {
  constexpr int CHUNKS = K * BITS / 128;
  constexpr int EPC = 128 / BITS;
  constexpr int GROUPS = K / G;
  constexpr int XV = 16 / sizeof(T);
  constexpr int SPC = EPC / XV;
  const uint4* w0 = reinterpret_cast<const uint4*>(w) + row0 * CHUNKS;
  const uint4* w1 = reinterpret_cast<const uint4*>(w) + row1 * CHUNKS;
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  const T* s0 = s + row0 * GROUPS;
  const T* s1 = s + row1 * GROUPS;
  const T* b0 = b + row0 * GROUPS;
  const T* b1 = b + row1 * GROUPS;
  float a0 = 0.f, a1 = 0.f;
#pragma unroll U
  for (int c = lane; c < CHUNKS; c += 32) {
    const uint4 q0 = w0[c];
    const uint4 q1 = w1[c];
    float xf[EPC];
#pragma unroll
    for (int v = 0; v < SPC; v++) {
      const uint4 u = xv[ppx_seg<SPC>(c * SPC + v)];
      const T* t = reinterpret_cast<const T*>(&u);
#pragma unroll
      for (int j = 0; j < XV; j++) xf[v * XV + j] = ppx_f(t[j]);
    }
    const float xsum = csum[c];
    const int g = c * EPC / G;
    const float d0 = ppx_chunk_dot<BITS>(q0, xf);
    const float d1 = ppx_chunk_dot<BITS>(q1, xf);
    a0 = ppx_affine(ppx_f(s0[g]), ppx_f(b0[g]), d0, xsum, a0);
    a1 = ppx_affine(ppx_f(s1[g]), ppx_f(b1[g]), d1, xsum, a1);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    a0 += __shfl_xor_sync(0xffffffff, a0, off);
    a1 += __shfl_xor_sync(0xffffffff, a1, off);
  }
  return make_float2(a0, a1);
}

// The sums of a swizzled x[K] over each chunk of EPC values (in order, as the mat-vec kernel
// sums them).
template <typename T, int K, int EPC, int NT>
__device__ __forceinline__ void ppx_chunk_sums(const T* x, float* csum) {
  constexpr int XV = 16 / sizeof(T);
  for (int c = threadIdx.x; c < K / EPC; c += NT) {
    float t = 0.f;
#pragma unroll
    for (int j = 0; j < EPC; j++) t += ppx_f(x[ppx_sw<XV, EPC / XV>(c * EPC + j)]);
    csum[c] = t;
  }
  __syncthreads();
}

// RMSNorm of x into out (both shared, activation dtype; out swizzled for a mat-vec of SPC
// segments per chunk), as MLX's kernel rounds.
template <typename T, int D, int NT, int SPC>
__device__ __forceinline__ void ppx_rms_t(const T* x, const T* w, T* out, float eps, float* red) {
  float ss = 0.f;
  for (int i = threadIdx.x; i < D; i += NT) {
    const float v = ppx_f(x[i]);
    ss += v * v;
  }
  const float inv = ppx_rms_scale<NT, D>(ss, eps, red);
  for (int i = threadIdx.x; i < D; i += NT) {
    const T y = T(ppx_f(x[i]) * inv);
    out[ppx_sw<16 / sizeof(T), SPC>(i)] = T(ppx_f(w[i]) * ppx_f(y));
  }
  __syncthreads();
}
