// What every kernel of model/cuda/ shares (docs/cuda-kernels.md): conversions, the quantized dot
// product of one 16-byte chunk of MLX-affine codes, the grid-wide barrier of the persistent
// kernels, block reductions and RMSNorm's scale. Handed to MLX as the start of each kernel's
// header (`model/cuda/source.py`); nothing here is a kernel of its own.
#ifndef PPX_COMMON_CUH
#define PPX_COMMON_CUH
template <typename T>
__device__ __forceinline__ float ppx_f(T v) { return static_cast<float>(v); }

// The byte at `i` of `word` (0..255) as a float: its bits put under the exponent of 2^23.
__device__ __forceinline__ float ppx_byte(uint32_t word, int i) {
  return __int_as_float(__byte_perm(word, 0x4B000000u, 0x7540u + i)) - 8388608.f;
}

// The codes as denormal floats: a code's bits alone are the float code * 2^-149, and times
// x * 2^100 (a normal float) that is code * x * 2^-49, exactly. Sums of such products round
// exactly as sums of code * x would (everything is a power of two apart), so a code needs one
// byte permute and one FMA instead of the permute, subtraction and FMA of ppx_byte
// (docs/cuda-kernels.md §The temporal step; ppx_chunk_dot's DENORMAL). Callers hold x scaled
// by 2^PPX_XEXP and scale the dot product back by PPX_DOTSCALE. Denormals are kept: the kernels
// are not compiled with flush-to-zero (cubins.options).
#define PPX_XEXP 100
#define PPX_DOTSCALE 0x1p49f
// Where ppx_word_dot<4, true> finds code j (0..7) of a word: its own bits 4j for j < 5, and
// after a shift by 12 bits 8, 12 and 16 for j = 5, 6, 7 (below the exponent, so denormal).
#define PPX_NIBBLE_AT(j) ((j) < 5 ? 4 * (j) : 4 * (j) - 12)
__device__ __forceinline__ float ppx_denormal(uint32_t word, int i) {
  return __uint_as_float(__byte_perm(word, 0u, 0x4440u + i));
}

// sum_j q_j * x[j] for the 32 / BITS codes of one packed word. DENORMAL: the codes as denormals
// and x scaled by 2^PPX_XEXP (the same products in the same order, PPX_DOTSCALE times smaller).
template <int BITS, bool DENORMAL>
__device__ __forceinline__ float ppx_word_dot(uint32_t word, const float* x) {
  auto code = [](uint32_t w, int i) { return DENORMAL ? ppx_denormal(w, i) : ppx_byte(w, i); };
  float dot = 0.f;
  if constexpr (BITS == 8) {
#pragma unroll
    for (int i = 0; i < 4; i++) dot = fmaf(code(word, i), x[i], dot);
  } else if constexpr (BITS == 4 && DENORMAL) {
    // A code masked in place is a denormal too: code j at bit PPX_NIBBLE_AT(j) is code *
    // 2^(PPX_NIBBLE_AT(j) - 149), one AND each (the top three after one shift), where the
    // caller holds x[j] scaled by 2^(100 - PPX_NIBBLE_AT(j)) (ppx_xscale_at): the same exact
    // products code * x * 2^-49, summed in the same order as the byte permutes would.
    const uint32_t up = word >> 12;
    dot = fmaf(__uint_as_float(word & 0xFu), x[0], dot);
    dot = fmaf(__uint_as_float(word & 0xF0u), x[1], dot);
    dot = fmaf(__uint_as_float(word & 0xF00u), x[2], dot);
    dot = fmaf(__uint_as_float(word & 0xF000u), x[3], dot);
    dot = fmaf(__uint_as_float(word & 0xF0000u), x[4], dot);
    dot = fmaf(__uint_as_float(up & 0xF00u), x[5], dot);
    dot = fmaf(__uint_as_float(up & 0xF000u), x[6], dot);
    dot = fmaf(__uint_as_float(up & 0xF0000u), x[7], dot);
  } else if constexpr (BITS == 4) {
    const uint32_t lo = word & 0x0F0F0F0Fu, hi = (word >> 4) & 0x0F0F0F0Fu;
#pragma unroll
    for (int i = 0; i < 4; i++) {
      dot = fmaf(code(lo, i), x[2 * i], dot);
      dot = fmaf(code(hi, i), x[2 * i + 1], dot);
    }
  } else {
#pragma unroll
    for (int j = 0; j < 32 / BITS; j++) {
      const uint32_t q = (word >> (j * BITS)) & ((1u << BITS) - 1u);
      dot = fmaf(DENORMAL ? __uint_as_float(q) : static_cast<float>(q), x[j], dot);
    }
  }
  return dot;
}

// The dot product of one 16-byte chunk of codes (4 packed words) with its 128 / BITS inputs x
// (DENORMAL: x scaled by 2^PPX_XEXP; the sum is scaled back).
template <int BITS, bool DENORMAL = false>
__device__ __forceinline__ float ppx_chunk_dot(const uint4& q, const float* x) {
  constexpr int PW = 32 / BITS;
  const float dot = ppx_word_dot<BITS, DENORMAL>(q.x, x)
      + ppx_word_dot<BITS, DENORMAL>(q.y, x + PW) + ppx_word_dot<BITS, DENORMAL>(q.z, x + 2 * PW)
      + ppx_word_dot<BITS, DENORMAL>(q.w, x + 3 * PW);
  return DENORMAL ? dot * PPX_DOTSCALE : dot;
}

// The affine dequantization folded per chunk: acc + sum((q*s + b) * x) = s * dot + b * xsum.
__device__ __forceinline__ float ppx_affine(float s, float b, float dot, float xsum, float acc) {
  return fmaf(s, dot, fmaf(b, xsum, acc));
}
// +infinity as a float. (cuda::std::numeric_limits would need <cuda/std/limits>, which costs
// NVRTC about a second to parse in every unit.)
__device__ __forceinline__ float ppx_inf() { return __int_as_float(0x7f800000); }

__device__ __forceinline__ unsigned long long ppx_now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Profiling marks (benchmarks/kernel_profile.py), compiled in only when the macros PPX_PROFILE
// (the profile area's offset in words from the barrier counter) and PPX_PROFILE_SLOTS are defined:
// thread 0 of each block writes clock64's low word (slot-major, one word per block) and, after
// all slots, %globaltimer's low word. Slot 0 is the kernel's start; barrier b marks slots
// 1 + 3b (arrival), 2 + 3b (departure) and 3 + 3b (a mark inside the phase that ends at b).
#ifdef PPX_PROFILE
__device__ __forceinline__ void ppx_mark(unsigned int* sync, unsigned int slot) {
  if (threadIdx.x == 0) {
    const unsigned int at = PPX_PROFILE + slot * gridDim.x + blockIdx.x;
    sync[at] = static_cast<unsigned int>(clock64());
    sync[at + PPX_PROFILE_SLOTS * gridDim.x] = static_cast<unsigned int>(ppx_now());
  }
}
#define PPX_MARK(sync, slot) ppx_mark(sync, slot)
#else
#define PPX_MARK(sync, slot)
#endif
// A mark inside the phase that the next barrier ends (`target`: the barriers passed, times
// the grid size), and the kernel's last mark (after its last barrier).
#define PPX_MARK_PHASE(sync, target) PPX_MARK(sync, 3 + 3 * ((target) / gridDim.x))
#define PPX_MARK_END(sync, target) PPX_MARK(sync, 1 + 3 * ((target) / gridDim.x))

// Grid-wide barrier over co-resident blocks: a counter that only grows (zeroed with the buffer),
// each block waiting (acquire loads) for its next multiple of gridDim.x. After a second of
// waiting it raises the error flag (word 1) and every barrier from then on falls through.
// In two halves: ppx_grid_arrive publishes this block's writes and counts it in, ppx_grid_wait
// waits for every block's. Work between them overlaps the barrier; it must neither write what
// other blocks read after the barrier nor read what they write before it (the next phase's
// weights, asked for ahead, are such work). The arrival's fence then does not wait for them.
// PPX_NO_GRID_BARRIER (benchmarks/kernel_profile.py's no-barrier) leaves block barriers only.
__device__ __forceinline__ void ppx_grid_arrive(unsigned int* sync, unsigned int& target) {
  __syncthreads();
  PPX_MARK(sync, 1 + 3 * (target / gridDim.x));
#ifndef PPX_NO_GRID_BARRIER
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(sync, 1u);
  }
#endif
  target += gridDim.x;
}
__device__ __forceinline__ void ppx_grid_wait(unsigned int* sync, unsigned int target) {
#ifndef PPX_NO_GRID_BARRIER
  if (threadIdx.x == 0) {
    unsigned int v;
    int spins = 0;
    unsigned long long t0 = 0;
    while (true) {
      asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(v) : "l"(sync) : "memory");
      if (v >= target) break;
      if ((++spins & 1023) == 0) {  // now and then: the error flag, the clock
        if (t0 == 0) t0 = ppx_now();
        const volatile unsigned int* flag = sync + 1;
        if (*flag) break;
        if (ppx_now() - t0 > 1000000000ull) {
          atomicExch(sync + 1, 1u);
          break;
        }
      }
    }
  }
#endif
  PPX_MARK(sync, 2 + 3 * (target / gridDim.x - 1));
  __syncthreads();
}
__device__ __forceinline__ void ppx_grid_sync(unsigned int* sync, unsigned int& target) {
  ppx_grid_arrive(sync, target);
  ppx_grid_wait(sync, target);
}

template <int NT>
__device__ __forceinline__ float ppx_block_sum(float v, float* red) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffff, v, off);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float t = 0.f;
#pragma unroll
  for (int i = 0; i < NT / 32; i++) t += red[i];
  return t;
}

// (best, idx) becomes the larger of itself and (v, i), the first index on a tie (as MLX's argmax).
__device__ __forceinline__ void ppx_argmax_merge(float& best, int& idx, float v, int i) {
  if (v > best || (v == best && i < idx)) {
    best = v;
    idx = i;
  }
}

// The first index of the largest value over the block (each thread's candidate best at idx),
// as MLX's argmax breaks ties; `best` becomes that value. redf, redi: NT / 32 shared words each.
template <int NT>
__device__ __forceinline__ int ppx_block_argmax(float& best, int idx, float* redf, int* redi) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float ob = __shfl_xor_sync(0xffffffff, best, off);
    const int oi = __shfl_xor_sync(0xffffffff, idx, off);
    ppx_argmax_merge(best, idx, ob, oi);
  }
  __syncthreads();
  if ((threadIdx.x & 31) == 0) {
    redf[threadIdx.x >> 5] = best;
    redi[threadIdx.x >> 5] = idx;
  }
  __syncthreads();
  best = redf[0];
  idx = redi[0];
  for (int w = 1; w < NT / 32; w++) ppx_argmax_merge(best, idx, redf[w], redi[w]);
  return idx;
}

// RMSNorm's scale 1 / sqrt(mean(x^2) + eps) from each thread's part `ss` of the sum of squares.
template <int NT, int D>
__device__ __forceinline__ float ppx_rms_scale(float ss, float eps, float* red) {
  return rsqrtf(ppx_block_sum<NT>(ss, red) / D + eps);
}

#endif  // PPX_COMMON_CUH
