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

// One step of ppx_key_scores' butterfly, then the next: each lane keeps the half of its 2 * O
// partial sums that its bit O selects, adds the partner's (lane ^ O) of the same half, and so
// holds O sums (O a template argument, so that every index is a constant and p stays in
// registers).
template <int O>
__device__ __forceinline__ void ppx_halve_sums(float* p, int lane) {
  if constexpr (O >= 1) {
    const bool up = (lane & O) != 0;
#pragma unroll
    for (int i = 0; i < O; i++) {
      const float send = up ? p[i] : p[i + O];
      const float keep = up ? p[i + O] : p[i];
      p[i] = keep + __shfl_xor_sync(0xffffffff, send, O);
    }
    ppx_halve_sums<O / 2>(p, lane);
  }
}

// The attention scores of key rows jb .. jb + 31 (rows at or past j1 count as zero; the caller
// masks them): lane i returns row jb + i's dot with q (shared). A row is K 16-byte pieces (K * XV
// values) and the K lanes of a group read it together, lane c its c-th piece, so a load reads
// 32 / K whole rows; load t gives group g row jb + t + K * g. Each lane keeps its K partial dots
// (XV products each, in order) and the K lanes of a group sum them as a butterfly that halves
// what each lane holds at every step (K - 1 shuffles), leaving lane c with the sum for t = c:
// row jb + lane (docs/cuda-kernels.md §The keys read a row per sixteen lanes).
template <typename T, int K>
__device__ __forceinline__ float ppx_key_scores(
    const T* kb, const float* q, int jb, int j1, int lane) {
  constexpr int XV = 16 / sizeof(T);
  constexpr int DH = K * XV;
  const int c = lane & (K - 1);
  const int g = lane / K;
  uint4 u[K];
#pragma unroll
  for (int t = 0; t < K; t++) {
    const int row = jb + t + K * g;
    const uint4* kp = reinterpret_cast<const uint4*>(kb + static_cast<size_t>(row) * DH);
    u[t] = row < j1 ? __ldcg(kp + c) : make_uint4(0u, 0u, 0u, 0u);
  }
  float p[K];
#pragma unroll
  for (int t = 0; t < K; t++) {
    const T* v = reinterpret_cast<const T*>(&u[t]);
    float acc = 0.f;
#pragma unroll
    for (int e = 0; e < XV; e++) acc = fmaf(q[c * XV + e], ppx_f(v[e]), acc);
    p[t] = acc;
  }
  ppx_halve_sums<K / 2>(p, lane);
  return p[0];
}

// One value per run for runs c0 .. c0 + 31 (0 past nch) of a head's attention partials, each
// STRIDE floats apart from src: 32 loads issued before any is used (the combine, temporal.cu).
template <int STRIDE>
__device__ __forceinline__ void ppx_run_values(const float* src, int c0, int nch, float* v) {
#pragma unroll
  for (int t = 0; t < 32; t++) {
    const int c = c0 + t;
    v[t] = c < nch ? __ldcg(src + static_cast<size_t>(c) * STRIDE) : 0.f;
  }
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

// The sums of a mat-vec's input over each 16-byte weight chunk (EPC values), which the folded
// dequantization needs, taken where the input is written: a thread holding 16-byte segment u
// (XV values, times ppx_xscale_at) sums each quarter of a chunk it holds in order, unscaled (exact:
// powers of two), and adds its quarters; the threads of a chunk (consecutive lanes) then add
// theirs pairwise, so that every chunk's sum is (q0 + q1) + (q2 + q3). Returns the chunk's sum in
// each of its threads.
template <typename T, int BITS>
__device__ __forceinline__ float ppx_segment_chunk_sum(const uint4& seg, int u, bool held) {
  constexpr int XV = 16 / sizeof(T);
  constexpr int PER = 128 / BITS / 4;  // values per quarter of a chunk
  constexpr int QPT = XV / PER;        // quarters per segment: 1 (4 bits) or 2 (8 bits)
  constexpr int TPC = 4 / QPT;         // threads per chunk
  const T* t = reinterpret_cast<const T*>(&seg);
  float s = 0.f;
  if (held) {
#pragma unroll
    for (int q = 0; q < QPT; q++) {
      float part = 0.f;
#pragma unroll
      for (int j = 0; j < PER; j++) {
        part += ppx_f(t[q * PER + j]) * ppx_xunscale_at<T, BITS>(u * XV + q * PER + j);
      }
      s = q == 0 ? part : s + part;
    }
  }
#pragma unroll
  for (int off = 1; off < TPC; off <<= 1) s += __shfl_xor_sync(0xffffffff, s, off);
  return s;
}

// A mat-vec's input of K values that other blocks wrote (activation dtype, times
// ppx_xscale_at), copied into shared memory swizzled, with its chunk sums, in one pass.
template <typename T, int BITS, int K, int NT>
__device__ __forceinline__ void ppx_load_input(const T* src, T* nt, float* csum) {
  constexpr int XV = 16 / sizeof(T);
  constexpr int SPC = 128 / BITS / XV;
  constexpr int NSEG = K / XV;
  for (int at = 0; at < NSEG; at += NT) {  // every thread takes part in the shuffles
    const int u = at + threadIdx.x;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (u < NSEG) {
      v = __ldcg(reinterpret_cast<const uint4*>(src) + u);
      reinterpret_cast<uint4*>(nt)[ppx_seg<SPC>(u)] = v;
    }
    const float s = ppx_segment_chunk_sum<T, BITS>(v, u, u < NSEG);
    if (u < NSEG && u % SPC == 0) csum[u / SPC] = s;  // a thread per segment
  }
  __syncthreads();
}

// RMSNorm of x (shared, plain) into a mat-vec's input (shared, swizzled, times ppx_xscale_at),
// as MLX's kernel rounds (w * T(x * rsqrt(mean(x^2) + eps))), with its chunk sums, in one pass.
template <typename T, int BITS, int D, int NT>
__device__ __forceinline__ void ppx_rms_input(
    const T* x, const T* w, T* nt, float* csum, float eps, float* red) {
  constexpr int XV = 16 / sizeof(T);
  constexpr int SPC = 128 / BITS / XV;
  constexpr int NSEG = D / XV;
  float ss = 0.f;
  for (int i = threadIdx.x; i < D; i += NT) {
    const float v = ppx_f(x[i]);
    ss += v * v;
  }
  const float inv = ppx_rms_scale<NT, D>(ss, eps, red);
  for (int at = 0; at < NSEG; at += NT) {
    const int u = at + threadIdx.x;
    uint4 o = make_uint4(0u, 0u, 0u, 0u);
    if (u < NSEG) {
      const uint4 xv = reinterpret_cast<const uint4*>(x)[u];
      const uint4 wv = reinterpret_cast<const uint4*>(w)[u];
      const T* xt = reinterpret_cast<const T*>(&xv);
      const T* wt = reinterpret_cast<const T*>(&wv);
      T* ot = reinterpret_cast<T*>(&o);
#pragma unroll
      for (int j = 0; j < XV; j++) {
        const T y = T(ppx_f(xt[j]) * inv);
        ot[j] = T(ppx_f(wt[j]) * ppx_f(y) * ppx_xscale_at<T, BITS>(u * XV + j));
      }
      reinterpret_cast<uint4*>(nt)[ppx_seg<SPC>(u)] = o;
    }
    const float s = ppx_segment_chunk_sum<T, BITS>(o, u, u < NSEG);
    if (u < NSEG && u % SPC == 0) csum[u / SPC] = s;  // a thread per segment
  }
  __syncthreads();
}

// --- The weight stream (docs/cuda-kernels.md §The weight stream) -------------------------------
// A mat-vec phase's weights pass through shared memory: each warp copies its next items with
// cp.async (sm_80+; a plain copy elsewhere) NS - 1 items ahead of the arithmetic, so the loads of
// the next rows are in flight while the warp multiplies the current ones, without holding them in
// registers. An item is CPI 16-byte chunks of each of a row pair's two rows per lane (a lane's
// chunks c = lane + 32k, as ppx_qdot2 takes them), with the scales and biases of the groups those
// chunk columns cover. The sums are ppx_qdot2's, in its order: the outputs are bit for bit the same.

// 16 bytes from global to shared memory, asynchronously where the GPU can.
__device__ __forceinline__ void ppx_cp16(uint4* dst, const uint4* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned int d = static_cast<unsigned int>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src) : "memory");
#else
  *dst = *src;
#endif
}
__device__ __forceinline__ void ppx_cp_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
// Wait until at most N of this thread's copy groups are still in flight.
template <int N>
__device__ __forceinline__ void ppx_cp_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// Two rows of a weight (a row pair of a mat-vec phase).
struct ppx_pair {
  size_t r0, r1;
};

// The shape of one warp's stage, in 16-byte words: the lanes' 2 * CPI chunks (chunk-slot major,
// lane minor: conflict-free), then per chunk column the scales of row 0, its biases, row 1's
// scales and biases, GPK groups each (the groups 32 chunks of a column cover).
template <typename T, int BITS, int G, int CPI>
struct ppx_stream_shape {
  static constexpr int EPC = 128 / BITS;
  static constexpr int GPK = 32 * EPC / G;
  static constexpr int SPK = GPK * static_cast<int>(sizeof(T)) / 16;
  static constexpr int WORDS = 2 * CPI * 32 + CPI * 4 * SPK;
};

// One warp's stage in 16-byte words; 0 without a stream (NS 0: the shape is never instantiated).
template <typename T, int BITS, int G, int NS, int CPI>
__device__ __forceinline__ constexpr int ppx_stream_words() {
  if constexpr (NS > 0) {
    return ppx_stream_shape<T, BITS, G, CPI>::WORDS;
  } else {
    return 0;
  }
}

// Copies of item i of a warp's stream (row pairs first, first + stride, ..., IPP items each) into
// stage `stage` of the warp's `area` (stages `sstride` words apart); nothing past `items`. One
// commit group either way, so the groups in flight count items.
template <typename T, int BITS, int G, int K, int NS, int CPI, class Rows>
__device__ __forceinline__ void ppx_stream_issue(
    const uint32_t* w, const T* s, const T* b, int first, int stride, int items, int i, int stage,
    Rows rows, uint4* area, int sstride, int lane) {
  using SH = ppx_stream_shape<T, BITS, G, CPI>;
  constexpr int CHUNKS = K * BITS / 128;
  constexpr int GROUPS = K / G;
  constexpr int KPL = (CHUNKS + 31) / 32;
  constexpr int IPP = (KPL + CPI - 1) / CPI;
  constexpr int TV = 16 / static_cast<int>(sizeof(T));
  if (i < items) {
    const ppx_pair rp = rows(first + (i / IPP) * stride);
    const int k0 = (i % IPP) * CPI;
    uint4* st = area + stage * sstride;
    const uint4* wv = reinterpret_cast<const uint4*>(w);
#pragma unroll
    for (int u = 0; u < CPI; u++) {
      const int c = lane + 32 * (k0 + u);
      if (k0 + u < KPL && c < CHUNKS) {
        ppx_cp16(st + u * 32 + lane, wv + rp.r0 * CHUNKS + c);
        ppx_cp16(st + (CPI + u) * 32 + lane, wv + rp.r1 * CHUNKS + c);
      }
    }
    for (int j = lane; j < CPI * 4 * SH::SPK; j += 32) {
      const int u = j / (4 * SH::SPK);
      const int a = (j / SH::SPK) % 4;  // scales, biases of row 0, then of row 1
      const int g = (k0 + u) * SH::GPK + (j % SH::SPK) * TV;
      if (k0 + u < KPL && g < GROUPS) {
        const T* src = ((a & 1) ? b : s) + ((a & 2) ? rp.r1 : rp.r0) * GROUPS + g;
        ppx_cp16(st + 2 * CPI * 32 + j, reinterpret_cast<const uint4*>(src));
      }
    }
  }
  ppx_cp_commit();
}

// One mat-vec phase of a warp's stream: its weight, its row pairs first, first + stride, ... <
// count (rows(pr) gives a pair's two rows), and how many items they make.
template <typename T, int BITS, int G, int K, int NS, int CPI, class Rows>
struct ppx_phase {
  static constexpr int KPL = (K * BITS / 128 + 31) / 32;
  static constexpr int IPP = CPI > 0 ? (KPL + CPI - 1) / CPI : 1;  // (no stream: CPI 0, unused)
  const uint32_t* w;
  const T* s;
  const T* b;
  int first, count, stride;
  Rows rows;

  __device__ __forceinline__ int items() const {
    return count > first ? (count - first + stride - 1) / stride * IPP : 0;
  }
  // item i into stage `stage` (one commit group, empty past the last item)
  __device__ __forceinline__ void issue(int i, int stage, uint4* area, int sstride, int lane) const {
    ppx_stream_issue<T, BITS, G, K, NS, CPI>(w, s, b, first, stride, items(), i, stage, rows,
                                             area, sstride, lane);
  }
};

template <typename T, int BITS, int G, int K, int NS, int CPI, class Rows>
__device__ __forceinline__ ppx_phase<T, BITS, G, K, NS, CPI, Rows> ppx_make_phase(
    const uint32_t* w, const T* s, const T* b, int first, int count, int stride, Rows rows) {
  return ppx_phase<T, BITS, G, K, NS, CPI, Rows>{w, s, b, first, count, stride, rows};
}

// The first NS - 1 items of a warp's phase, into the stages from `base` on: called before the
// phase (before its barrier and prologue, say), then ppx_stream_run with `started`.
template <int NS, class Phase>
__device__ __forceinline__ void ppx_stream_start(
    const Phase& ph, int base, uint4* area, int sstride, int lane) {
#pragma unroll
  for (int i = 0; i < NS - 1; i++) ph.issue(i, (base + i) % NS, area, sstride, lane);
}

// A warp's row pairs of phase `ph`: its weight's rows times x (shared, swizzled, as ppx_qdot2
// takes it), the two sums handed to emit(pr, sums) by every lane. Item i sits in stage
// (base + i) % NS; `started`: ppx_stream_start already issued the first items. With `chain`,
// and NS - 1 items or more, the stages its last items free take the first NS - 1 items of the
// next phase `next` as they free (their copies in flight through the barrier between), and it
// returns true; otherwise it waits for every copy and returns false (the caller starts the next
// phase). `base` becomes the next phase's: (base + items) % NS.
template <typename T, int BITS, int G, int K, int NS, int CPI, class Phase, class Next,
          class Emit>
__device__ __forceinline__ bool ppx_stream_run(
    const Phase& ph, const Next& next, bool chain, Emit emit, const T* x, const float* csum,
    uint4* area, int sstride, int lane, bool started, int& base) {
  using SH = ppx_stream_shape<T, BITS, G, CPI>;
  constexpr int CHUNKS = K * BITS / 128;
  constexpr int EPC = 128 / BITS;
  constexpr int XV = 16 / sizeof(T);
  constexpr int SPC = EPC / XV;
  constexpr bool DN = ppx_scaled_x<T>::on;
  constexpr int KPL = (CHUNKS + 31) / 32;
  constexpr int IPP = (KPL + CPI - 1) / CPI;
  const int items = ph.items();
  const bool chained = chain && items >= NS - 1;
  if (!started) ppx_stream_start<NS>(ph, base, area, sstride, lane);
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  const int gl = lane * EPC / G;  // a lane's group within its chunk column
  float a0 = 0.f, a1 = 0.f;
  for (int i = 0; i < items; i++) {
    const int o = i + NS - 1;  // the item whose copies go out now, into the stage i - 1 freed
    if (o < items || !chained) {
      ph.issue(o, (base + o) % NS, area, sstride, lane);
    } else {
      next.issue(o - items, (base + o) % NS, area, sstride, lane);
    }
    ppx_cp_wait<NS - 1>();
    __syncwarp();  // the scales other lanes copied
    const uint4* st = area + ((base + i) % NS) * sstride;
    const T* sc = reinterpret_cast<const T*>(st + 2 * CPI * 32);
    const int k0 = (i % IPP) * CPI;
#pragma unroll
    for (int u = 0; u < CPI; u++) {
      const int c = lane + 32 * (k0 + u);
      if (k0 + u < KPL && c < CHUNKS) {
        const uint4 q0 = st[u * 32 + lane];
        const uint4 q1 = st[(CPI + u) * 32 + lane];
        float xf[EPC];
#pragma unroll
        for (int v = 0; v < SPC; v++) {
          const uint4 xw = xv[ppx_seg<SPC>(c * SPC + v)];
          const T* t = reinterpret_cast<const T*>(&xw);
#pragma unroll
          for (int j = 0; j < XV; j++) xf[v * XV + j] = ppx_f(t[j]);
        }
        const float xsum = csum[c];
        const T* su = sc + u * 4 * SH::GPK;
        const float d0 = ppx_chunk_dot<BITS, DN>(q0, xf);
        const float d1 = ppx_chunk_dot<BITS, DN>(q1, xf);
        a0 = ppx_affine(ppx_f(su[gl]), ppx_f(su[SH::GPK + gl]), d0, xsum, a0);
        a1 = ppx_affine(ppx_f(su[2 * SH::GPK + gl]), ppx_f(su[3 * SH::GPK + gl]), d1, xsum, a1);
      }
    }
    if (i % IPP == IPP - 1) {
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) {
        a0 += __shfl_xor_sync(0xffffffff, a0, off);
        a1 += __shfl_xor_sync(0xffffffff, a1, off);
      }
      emit(ph.first + (i / IPP) * ph.stride, make_float2(a0, a1));
      a0 = 0.f;
      a1 = 0.f;
    }
    __syncwarp();  // every lane done with this stage before it is written again
  }
  if (!chained) ppx_cp_wait<0>();
  base = (base + items) % NS;
  return chained;
}

// A mat-vec phase's row pairs for one warp (`ph`): streamed through shared memory when NS > 0
// (see ppx_stream_run: `next`, `chain`, `base`; returns whether the next phase's first items are
// in flight), else each pair read straight into registers (ppx_qdot2).
template <typename T, int BITS, int G, int K, int U, int NS, int CPI, class Phase, class Next,
          class Emit>
__device__ __forceinline__ bool ppx_pairs(
    const Phase& ph, const Next& next, bool chain, Emit emit, const T* x, const float* csum,
    uint4* area, int sstride, int lane, bool started, int& base) {
  if constexpr (NS > 0) {
    return ppx_stream_run<T, BITS, G, K, NS, CPI>(ph, next, chain, emit, x, csum, area, sstride,
                                                  lane, started, base);
  } else {
    for (int pr = ph.first; pr < ph.count; pr += ph.stride) {
      const ppx_pair rp = ph.rows(pr);
      emit(pr, ppx_qdot2<T, BITS, G, K, U>(ph.w, ph.s, ph.b, rp.r0, rp.r1, x, csum, lane));
    }
    return false;
  }
}
