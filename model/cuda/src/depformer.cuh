// The depformer kernel's own device functions (docs/cuda-kernels.md §The depformer); the shared
// ones are in common.cuh, which comes first in the kernel's header.
__device__ __forceinline__ int ppx_pad(int i) { return i + ((i >> 4) << 2); }

// RMSNorm of x[D] into out (padded), as MLX's kernel rounds: w * T(x * rsqrt(mean(x^2) + eps)).
template <typename T, int D, int NT>
__device__ __forceinline__ void ppx_rms(
    const float* x, const T* w, float* out, float eps, float* red) {
  float ss = 0.f;
  for (int i = threadIdx.x; i < D; i += NT) ss += x[i] * x[i];
  const float inv = ppx_rms_scale<NT, D>(ss, eps, red);
  for (int i = threadIdx.x; i < D; i += NT) {
    const T y = T(x[i] * inv);
    out[ppx_pad(i)] = ppx_f(T(ppx_f(w[i]) * ppx_f(y)));
  }
  __syncthreads();
}

// acc plus one 16-byte chunk c of an affine quantized row (scale s, bias b) times x (shared,
// padded): the folded dequantization, s * dot + b * sum(x).
template <typename T, int BITS>
__device__ __forceinline__ float ppx_qchunk(
    const uint4& q, T s, T b, const float* x, int c, float acc) {
  constexpr int EPC = 128 / BITS;
  const int e0 = c * EPC;
  float xf[EPC];
#pragma unroll
  for (int v = 0; v < EPC / 4; v++) {
    const float4 f = *reinterpret_cast<const float4*>(x + ppx_pad(e0 + 4 * v));
    xf[4 * v] = f.x;
    xf[4 * v + 1] = f.y;
    xf[4 * v + 2] = f.z;
    xf[4 * v + 3] = f.w;
  }
  float xsum = 0.f;
#pragma unroll
  for (int j = 0; j < EPC; j++) xsum += xf[j];
  return ppx_affine(ppx_f(s), ppx_f(b), ppx_chunk_dot<BITS>(q, xf), xsum, acc);
}

// One row of an affine quantized weight times x (shared, padded); every lane gets the sum.
template <typename T, int BITS, int G, int K>
__device__ __forceinline__ float ppx_qdot(
    const uint32_t* w, const T* s, const T* b, size_t row, const float* x, int lane) {
  constexpr int CHUNKS = K * BITS / 128;
  constexpr int EPC = 128 / BITS;
  constexpr int GROUPS = K / G;
  const uint4* wv = reinterpret_cast<const uint4*>(w) + row * CHUNKS;
  const T* sr = s + row * GROUPS;
  const T* br = b + row * GROUPS;
  float acc = 0.f;
#pragma unroll 2
  for (int c = lane; c < CHUNKS; c += 32) {
    const int g = c * EPC / G;
    acc = ppx_qchunk<T, BITS>(wv[c], sr[g], br[g], x, c, acc);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffff, acc, off);
  return acc;
}

// A warp's first row of a mat-vec phase, read into registers ahead of the phase (before the
// barrier and the norm in front of it: the weights depend on nothing they wait for), then
// multiplied as ppx_qdot multiplies (ppx_qchunk): the same sums in the same order.
template <typename T, int BITS, int G, int K>
struct ppx_qrow {
  static constexpr int CHUNKS = K * BITS / 128;
  static constexpr int EPC = 128 / BITS;
  static constexpr int GROUPS = K / G;
  static constexpr int PL = (CHUNKS + 31) / 32;  // a lane's chunks
  uint4 q[PL];
  T s[PL], b[PL];

  __device__ __forceinline__ void load(
      const uint32_t* w, const T* sc, const T* bi, size_t row, int lane) {
    const uint4* wv = reinterpret_cast<const uint4*>(w) + row * CHUNKS;
#pragma unroll
    for (int j = 0; j < PL; j++) {
      const int c = lane + 32 * j;
      if (c < CHUNKS) {
        const int g = c * EPC / G;
        q[j] = wv[c];
        s[j] = sc[row * GROUPS + g];
        b[j] = bi[row * GROUPS + g];
      }
    }
  }

  __device__ __forceinline__ float dot(const float* x, int lane) const {
    float acc = 0.f;
#pragma unroll
    for (int j = 0; j < PL; j++) {
      const int c = lane + 32 * j;
      if (c < CHUNKS) acc = ppx_qchunk<T, BITS>(q[j], s[j], b[j], x, c, acc);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffff, acc, off);
    return acc;
  }
};

// One row of a float weight [rows, K] times x (shared, padded); every lane gets the sum.
template <typename T, int K>
__device__ __forceinline__ float ppx_fdot(const T* w, size_t row, const float* x, int lane) {
  constexpr int EPC = 16 / sizeof(T);
  constexpr int CHUNKS = K / EPC;
  const uint4* wv = reinterpret_cast<const uint4*>(w + row * K);
  float acc = 0.f;
#pragma unroll 2
  for (int c = lane; c < CHUNKS; c += 32) {
    const uint4 u = wv[c];
    const T* t = reinterpret_cast<const T*>(&u);
    const int e0 = c * EPC;
#pragma unroll
    for (int j = 0; j < EPC; j++) acc = fmaf(ppx_f(t[j]), x[ppx_pad(e0 + j)], acc);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffff, acc, off);
  return acc;
}

// Float32 <-> unsigned keys in the same order (for the radix select of the top-k cut).
__device__ __forceinline__ unsigned int ppx_key(float f) {
  const unsigned int u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float ppx_unkey(unsigned int k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// The last byte a radix select of a T value's float key must look at: below it every key of a
// value of T has the same bits (zeros for a positive value, ones for a negative one, as
// ppx_key flips them), since a bfloat16's float has 16 low mantissa bits zero and a float16's 13.
template <typename T>
struct ppx_key_bytes {
  static constexpr int last_shift = 0;
};
template <>
struct ppx_key_bytes<__nv_bfloat16> {
  static constexpr int last_shift = 16;
};
template <>
struct ppx_key_bytes<__half> {
  static constexpr int last_shift = 8;
};

// The token sampling.draw picks from V logits, each a value of T: the argmax when inv_temp is 0,
// else the Gumbel-max of logit * inv_temp + noise[i] over the logits at or above the top_k-th
// largest (none cut when top_k is 0 or at least V), found by a radix select of the logits' keys
// 8 bits at a time from the top. Ties go to the first index, as MLX's argmax. `each(f)` calls
// f(i, logit) for this thread's logits in increasing i; hist: 256 shared words, sel: 2, redf and
// redi: NT / 32 each. Every thread of the block gets the token.
template <typename T, int NT, int V, typename Each>
__device__ __forceinline__ int ppx_draw(
    const Each& each, const float* noise, float inv_temp, int top_k, int* hist, int* sel,
    float* redf, int* redi) {
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  float best = -ppx_inf();
  int idx = 0x7fffffff;
  if (inv_temp <= 0.f) {
    each([&](int i, float v) {
      if (v > best) {
        best = v;
        idx = i;
      }
    });
    return ppx_block_argmax<NT>(best, idx, redf, redi);
  }
  float kth = -ppx_inf();
  if (top_k > 0 && top_k < V) {
    constexpr int LAST = ppx_key_bytes<T>::last_shift;
    unsigned int prefix = 0u, mask = 0u;
    int kk = top_k;
    for (int shift = 24; shift >= LAST; shift -= 8) {
      for (int i = tid; i < 256; i += NT) hist[i] = 0;
      __syncthreads();
      each([&](int, float v) {
        const unsigned int key = ppx_key(v);
        if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1);
      });
      __syncthreads();
      if (tid < 32) {
        int c[8];
        int tot = 0;
#pragma unroll
        for (int j = 0; j < 8; j++) {
          c[j] = hist[lane * 8 + j];
          tot += c[j];
        }
        int incl = tot;  // this lane's bins and every higher lane's
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
          const int o = __shfl_down_sync(0xffffffff, incl, off);
          if (lane + off < 32) incl += o;
        }
        int above = incl - tot;
#pragma unroll
        for (int j = 7; j >= 0; j--) {
          if (above < kk && above + c[j] >= kk) {
            sel[0] = lane * 8 + j;
            sel[1] = kk - above;
          }
          above += c[j];
        }
      }
      __syncthreads();
      prefix |= static_cast<unsigned int>(sel[0]) << shift;
      mask |= 255u << shift;
      kk = sel[1];
      __syncthreads();
    }
    // the bytes not looked at: every candidate left has the sign of the prefix, so the same ones
    constexpr unsigned int LOW = (1u << LAST) - 1u;
    kth = ppx_unkey((prefix & 0x80000000u) ? prefix : (prefix | LOW));
  }
  each([&](int i, float v) {
    const float s = (v >= kth ? v * inv_temp : -ppx_inf()) + noise[i];
    if (s > best) {
      best = s;
      idx = i;
    }
  });
  return ppx_block_argmax<NT>(best, idx, redf, redi);
}

// Calls f(i, logit) for one thread's share of V logits of T in global memory, in increasing i,
// 16 bytes per load (V a multiple of 16 / sizeof(T); the array 16-byte aligned).
template <typename T, int NT, int V>
struct ppx_global_logits {
  const T* p;
  template <typename F>
  __device__ __forceinline__ void operator()(F f) const {
    constexpr int EPV = 16 / sizeof(T);
    const uint4* pv = reinterpret_cast<const uint4*>(p);
#pragma unroll 4
    for (int j = threadIdx.x; j < V / EPV; j += NT) {
      const uint4 u = __ldg(pv + j);
      const T* t = reinterpret_cast<const T*>(&u);
#pragma unroll
      for (int e = 0; e < EPV; e++) f(j * EPV + e, ppx_f(t[e]));
    }
  }
};

// Calls f(i, logit) for one thread's share of V float logits in shared memory, in increasing i.
template <int NT, int V>
struct ppx_shared_logits {
  const float* p;
  template <typename F>
  __device__ __forceinline__ void operator()(F f) const {
    for (int i = threadIdx.x; i < V; i += NT) f(i, p[i]);
  }
};
