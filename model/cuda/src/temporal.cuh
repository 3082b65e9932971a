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

// Whether a mat-vec's input of type T is kept in shared memory scaled by 2^PPX_XEXP, for the
// denormal codes (common.cuh): bfloat16 has float's exponent range, float16 has not.
template <typename T>
struct ppx_scaled_x {
  static constexpr bool on = false;
};
template <>
struct ppx_scaled_x<__nv_bfloat16> {
  static constexpr bool on = true;
};
// The power of two by which input i of a mat-vec of BITS-bit codes is kept in shared memory: 0
// unless ppx_scaled_x; PPX_XEXP for the byte permutes' denormals; for 4-bit codes masked in place
// (ppx_word_dot) PPX_XEXP - PPX_NIBBLE_AT(i % 8), so that every product is still code * x * 2^-49.
template <typename T, int BITS>
__device__ __forceinline__ int ppx_xexp(int i) {
  if constexpr (!ppx_scaled_x<T>::on) {
    return 0;
  } else if constexpr (BITS == 4) {
    return PPX_XEXP - PPX_NIBBLE_AT(i % 8);
  } else {
    return PPX_XEXP;
  }
}
// 2^ppx_xexp(i) and its inverse, exactly.
template <typename T, int BITS>
__device__ __forceinline__ float ppx_xscale_at(int i) {
  return __int_as_float((127 + ppx_xexp<T, BITS>(i)) << 23);
}
template <typename T, int BITS>
__device__ __forceinline__ float ppx_xunscale_at(int i) {
  return __int_as_float((127 - ppx_xexp<T, BITS>(i)) << 23);
}

// Two rows of an affine quantized weight times x (shared memory, activation dtype, swizzled,
// times ppx_xscale_at); csum: the sums of x over each 16-byte weight chunk (once per phase).
template <typename T, int BITS, int G, int K, int U>
__device__ __forceinline__ float2 ppx_qdot2(
    const uint32_t* w, const T* s, const T* b, size_t row0, size_t row1, const T* x,
    const float* csum, int lane) {
  constexpr int CHUNKS = K * BITS / 128;
  constexpr int EPC = 128 / BITS;
  constexpr int GROUPS = K / G;
  constexpr int XV = 16 / sizeof(T);
  constexpr int SPC = EPC / XV;
  constexpr bool DN = ppx_scaled_x<T>::on;  // x scaled, the codes as denormals
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
    const float d0 = ppx_chunk_dot<BITS, DN>(q0, xf);
    const float d1 = ppx_chunk_dot<BITS, DN>(q1, xf);
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

// o += p * (this lane's VPL values of value row j), p the attention weight that lane t holds;
// the lane's values are one load where they make 8 or 16 bytes.
template <typename T, int VPL>
__device__ __forceinline__ void ppx_value_row(
    const T* vb, int j, int dh, float pj, int t, int lane, float* o) {
  const float p = __shfl_sync(0xffffffff, pj, t);
  const T* vp = vb + static_cast<size_t>(j) * dh + lane * VPL;
  if constexpr (VPL * sizeof(T) == 8) {
    const uint2 u = __ldcg(reinterpret_cast<const uint2*>(vp));
    const T* v = reinterpret_cast<const T*>(&u);
#pragma unroll
    for (int i = 0; i < VPL; i++) o[i] = fmaf(p, ppx_f(v[i]), o[i]);
  } else if constexpr (VPL * sizeof(T) == 16) {
    const uint4 u = __ldcg(reinterpret_cast<const uint4*>(vp));
    const T* v = reinterpret_cast<const T*>(&u);
#pragma unroll
    for (int i = 0; i < VPL; i++) o[i] = fmaf(p, ppx_f(v[i]), o[i]);
  } else {
#pragma unroll
    for (int i = 0; i < VPL; i++) o[i] = fmaf(p, ppx_f(vp[i]), o[i]);
  }
}

// The sums of a swizzled x[K] (times ppx_xscale_at) over each chunk of EPC values, unscaled: four
// threads to a chunk, each summing a quarter in order, then (q0 + q1) + (q2 + q3).
template <typename T, int K, int EPC, int NT>
__device__ __forceinline__ void ppx_chunk_sums(const T* x, float* csum) {
  constexpr int BITS = 128 / EPC;
  constexpr int XV = 16 / sizeof(T);
  constexpr int PER = EPC / 4;
  constexpr int N = K / EPC * 4;
  for (int at = 0; at < N; at += NT) {  // every thread takes part in the shuffles
    const int i = at + threadIdx.x;
    const int c = i / 4;
    float t = 0.f;
    if (i < N) {
#pragma unroll
      for (int j = 0; j < PER; j++) {
        const int e = c * EPC + (i % 4) * PER + j;
        t += ppx_f(x[ppx_sw<XV, EPC / XV>(e)]) * ppx_xunscale_at<T, BITS>(e);
      }
    }
    t += __shfl_xor_sync(0xffffffff, t, 1);
    t += __shfl_xor_sync(0xffffffff, t, 2);
    if (i < N && i % 4 == 0) csum[c] = t;
  }
  __syncthreads();
}

// RMSNorm of x into out (both shared, activation dtype; out swizzled for a mat-vec of SPC
// segments per chunk, times ppx_xscale_at), as MLX's kernel rounds.
template <typename T, int D, int NT, int SPC>
__device__ __forceinline__ void ppx_rms_t(const T* x, const T* w, T* out, float eps, float* red) {
  float ss = 0.f;
  for (int i = threadIdx.x; i < D; i += NT) {
    const float v = ppx_f(x[i]);
    ss += v * v;
  }
  const float inv = ppx_rms_scale<NT, D>(ss, eps, red);
  constexpr int BITS = 128 / (SPC * 16 / sizeof(T));
  for (int i = threadIdx.x; i < D; i += NT) {
    const T y = T(ppx_f(x[i]) * inv);
    out[ppx_sw<16 / sizeof(T), SPC>(i)] = T(ppx_f(w[i]) * ppx_f(y) * ppx_xscale_at<T, BITS>(i));
  }
  __syncthreads();
}
