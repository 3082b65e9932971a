// The Mimi quantizer kernel's body: one latent's codes, every codebook (docs/cuda-kernels.md
// §Mimi's quantizer). MLX declares the kernel around it: inputs x, proj, books, bias; outputs
// codes, work. The constants (D, CB, BINS, NQ, NT, SYNC) come from the prelude (source.py).
  constexpr int NW = NT / 32;
  __shared__ __align__(16) float xs[D];
  __shared__ __align__(16) float sem[CB];   // the semantic projection
  __shared__ __align__(16) float res[CB];   // the acoustic residual
  __shared__ float bestv[NW];
  __shared__ int besti[NW];

  unsigned int* sync = reinterpret_cast<unsigned int*>(work);
  float* pg = work + SYNC;  // [2 * CB] the input projections (semantic, acoustic)
  float* cand = pg + 2 * CB;  // [NQ][nwarps][2] each warp's best score and its entry
  float* picked = cand + NQ * gridDim.x * NW * 2;  // [NQ] each code's score (for the check)

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int wib = tid >> 5;
  const int gwarp = blockIdx.x * NW + wib;
  const int nwarps = gridDim.x * NW;
  unsigned int target = 0;

  for (int i = tid; i < D; i += NT) xs[i] = x[i];
  __syncthreads();
  // 1. both input projections, a row per warp
  for (int r = gwarp; r < 2 * CB; r += nwarps) {
    float acc[1][1];
    ppx_rows_dot<D, 1, 1>(proj, r, xs, lane, acc);
    if (lane == 0) pg[r] = acc[0][0];
  }
  ppx_grid_sync(sync, target);
  for (int i = tid; i < CB; i += NT) {
    sem[i] = __ldcg(pg + i);
    res[i] = __ldcg(pg + CB + i);
  }
  __syncthreads();
  for (int q = 0; q < NQ; q++) {
    // 2. the scores x . c - |c|^2 / 2 of codebook q's entries, four per warp at a time; each
    // warp keeps its best (the first entry of a tie, as MLX's argmax)
    const float* in = q == 0 ? sem : res;
    const float* book = books + static_cast<size_t>(q) * BINS * CB;
    const float* bq = bias + static_cast<size_t>(q) * BINS;
    float bv = -ppx_inf();
    int bi = 0x7fffffff;
    for (int j0 = 4 * gwarp; j0 < BINS; j0 += 4 * nwarps) {
      float acc[4][1];
      ppx_rows_dot<CB, 1, 4>(book, j0, in, lane, acc);
#pragma unroll
      for (int r = 0; r < 4; r++) {
        const float s = acc[r][0] + bq[j0 + r];
        if (s > bv) {  // entries come in increasing order: a tie keeps the first
          bv = s;
          bi = j0 + r;
        }
      }
    }
    if (lane == 0) {
      float* c = cand + (static_cast<size_t>(q) * nwarps + gwarp) * 2;
      c[0] = bv;
      c[1] = __int_as_float(bi);
    }
    ppx_grid_sync(sync, target);
    // 3. every block reduces all warps' candidates to the code itself
    bv = -ppx_inf();
    bi = 0x7fffffff;
    for (int w = tid; w < nwarps; w += NT) {
      const float* c = cand + (static_cast<size_t>(q) * nwarps + w) * 2;
      const float v = __ldcg(c);
      const int e = __float_as_int(__ldcg(c + 1));
      ppx_argmax_merge(bv, bi, v, e);
    }
    int code = ppx_block_argmax<NT>(bv, bi, bestv, besti);
    code = code < BINS ? code : 0;  // no score above -inf (NaN): entry 0, as MLX's argmax
    if (blockIdx.x == 0 && tid == 0) {
      codes[q] = code;
      picked[q] = bv;
    }
    // 4. the residual of the acoustic codebooks (after the semantic one, before the last)
    if (q >= 1 && q + 1 < NQ) {
      for (int i = tid; i < CB; i += NT) res[i] -= book[static_cast<size_t>(code) * CB + i];
    }
    __syncthreads();
  }
