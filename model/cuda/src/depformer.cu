// The depformer kernel's body: every step, layer and draw of one column (docs/cuda-kernels.md
// §The depformer). MLX declares the kernel around it: inputs dep_in, text, tlog, tnoise, noise,
// forced, provided, params, qa, sa, ba, qb, sb, bb, heads, emb, norms; outputs tokens (the
// column's, then the text token), work. The constants (T, BITS, G, D, HID, NH, NL, S, CARD, TV,
// TEXT_ROWS, NT, SYNC) come from the prelude.
  constexpr int NW = NT / 32;
  constexpr int DH = D / NH;
  constexpr int VPL = DH / 32;
  constexpr int QKV = 3 * D;
  constexpr int LROWS = S * (QKV + D + 2 * HID);
  constexpr int MAXK = D > HID ? D : HID;
  __shared__ __align__(16) float xs[D];
  __shared__ __align__(16) float ns[MAXK + MAXK / 4 + 16];
  __shared__ float lg[CARD];
  __shared__ float redf[NW];
  __shared__ int redi[NW];
  __shared__ int hist[256];
  __shared__ int sel[2];

  unsigned int* sync = reinterpret_cast<unsigned int*>(work);
  float* x1 = work + SYNC;
  float* x2 = x1 + D;
  float* qkvg = x2 + D;
  float* hidg = qkvg + NL * S * QKV;
  float* logg = hidg + HID;

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int gwarp = blockIdx.x * NW + (tid >> 5);
  const int nwarps = gridDim.x * NW;
  unsigned int target = 0;
  PPX_MARK(sync, 0);  // the profile's marks (benchmarks/depformer_profile.py; compiled out)
  const float eps = params[0];
  const float inv_temp = params[1];
  const float scale_log2 = params[2];
  const int n_steps = static_cast<int>(params[3]);
  const int top_k = static_cast<int>(params[4]);
  const bool use_forced = params[5] != 0.f;

  {
    // the text token: given, or drawn here from the text logits (as sampling.draw does)
    const int text_token = params[8] != 0.f
        ? ppx_draw<T, NT, TV>(ppx_global_logits<T, NT, TV>{tlog}, tnoise, params[6],
              static_cast<int>(params[7]), hist, sel, redf, redi)
        : text[0];
    if (blockIdx.x == 0 && tid == 0) tokens[n_steps] = text_token;
    const T* row = emb + static_cast<size_t>(text_token) * D;
    for (int i = tid; i < D; i += NT) xs[i] = ppx_f(T(ppx_f(dep_in[i]) + ppx_f(row[i])));
    __syncthreads();
  }

  // Each mat-vec phase's first row (pair, for linear_in) of each warp is read into registers
  // ahead: between the barrier's arrival and its wait, before the norm in front of the phase
  // (ppx_qrow); the warp's other rows, if any, are read in the phase (ppx_qdot).
  ppx_qrow<T, BITS, G, D> ra, rv;  // q/k/v's, out_proj's or the gate's row; the value's
  ppx_qrow<T, BITS, G, HID> rb;    // linear_out's
  if (gwarp < QKV) ra.load(qa, sa, ba, gwarp, lane);  // layer 0, step 0

  for (int k = 0; k < n_steps; k++) {
    for (int l = 0; l < NL; l++) {
      const size_t base = static_cast<size_t>(l) * LROWS;
      float* qkv_l = qkvg + static_cast<size_t>(l) * S * QKV;
      // 1. norm1, packed q/k/v
      ppx_rms<T, D, NT>(xs, norms + (2 * l) * D, ns, eps, redf);
      for (int r = gwarp; r < QKV; r += nwarps) {
        const float v = r == gwarp
            ? ra.dot(ns, lane)
            : ppx_qdot<T, BITS, G, D>(qa, sa, ba, base + k * QKV + r, ns, lane);
        if (lane == 0) qkv_l[k * QKV + r] = ppx_f(T(v));
      }
      ppx_grid_arrive(sync, target);
      if (gwarp < D) ra.load(qa, sa, ba, base + S * QKV + k * D + gwarp, lane);
      ppx_grid_wait(sync, target);
      // 2. attention over steps 0..k (every block, all heads), x + out_proj
      for (int hh = tid >> 5; hh < NH; hh += NW) {
        float q[VPL], o[VPL];
        const int d0 = hh * DH + lane * VPL;
#pragma unroll
        for (int i = 0; i < VPL; i++) {
          q[i] = scale_log2 * __ldcg(qkv_l + k * QKV + d0 + i);
          o[i] = 0.f;
        }
        float m = -ppx_inf();
        float sum = 0.f;
        // unrolled by 4: the keys and values of four steps are read together, then used in
        // order (the same sums; docs/cuda-kernels.md §The depformer, the steps' keys read ahead)
#pragma unroll 4
        for (int j = 0; j <= k; j++) {
          const float* kp = qkv_l + j * QKV + D + d0;
          float s = 0.f;
#pragma unroll
          for (int i = 0; i < VPL; i++) s = fmaf(q[i], __ldcg(kp + i), s);
#pragma unroll
          for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffff, s, off);
          const float mn = fmaxf(m, s);
          const float f = exp2f(m - mn);
          const float e = exp2f(s - mn);
          sum = sum * f + e;
#pragma unroll
          for (int i = 0; i < VPL; i++) o[i] = o[i] * f + e * __ldcg(kp + D + i);
          m = mn;
        }
        const float rs = __frcp_rn(sum);
#pragma unroll
        for (int i = 0; i < VPL; i++) ns[ppx_pad(d0 + i)] = ppx_f(T(o[i] * rs));
      }
      __syncthreads();
      for (int r = gwarp; r < D; r += nwarps) {
        const float v = r == gwarp
            ? ra.dot(ns, lane)
            : ppx_qdot<T, BITS, G, D>(qa, sa, ba, base + S * QKV + k * D + r, ns, lane);
        if (lane == 0) x1[r] = ppx_f(T(v + xs[r]));
      }
      const size_t gin = base + S * (QKV + D) + static_cast<size_t>(k) * 2 * HID;
      ppx_grid_arrive(sync, target);
      if (gwarp < HID) {
        ra.load(qa, sa, ba, gin + gwarp, lane);
        rv.load(qa, sa, ba, gin + HID + gwarp, lane);
      }
      ppx_grid_wait(sync, target);
      // 3. norm2, silu(gate) * value
      for (int i = tid; i < D; i += NT) xs[i] = __ldcg(x1 + i);
      __syncthreads();
      ppx_rms<T, D, NT>(xs, norms + (2 * l + 1) * D, ns, eps, redf);
      for (int r = gwarp; r < HID; r += nwarps) {
        const bool first = r == gwarp;
        const float g = first ? ra.dot(ns, lane)
                              : ppx_qdot<T, BITS, G, D>(qa, sa, ba, gin + r, ns, lane);
        const float v = first ? rv.dot(ns, lane)
                              : ppx_qdot<T, BITS, G, D>(qa, sa, ba, gin + HID + r, ns, lane);
        if (lane == 0) hidg[r] = ppx_f(T(g / (1.f + __expf(-g)) * v));
      }
      const size_t gout = (static_cast<size_t>(l) * S + k) * D;
      ppx_grid_arrive(sync, target);
      if (gwarp < D) rb.load(qb, sb, bb, gout + gwarp, lane);
      ppx_grid_wait(sync, target);
      // 4. x' + linear_out
      for (int i = tid; i < HID; i += NT) ns[ppx_pad(i)] = __ldcg(hidg + i);
      __syncthreads();
      for (int r = gwarp; r < D; r += nwarps) {
        const float v = r == gwarp ? rb.dot(ns, lane)
                                   : ppx_qdot<T, BITS, G, HID>(qb, sb, bb, gout + r, ns, lane);
        if (lane == 0) x2[r] = ppx_f(T(v + xs[r]));
      }
      ppx_grid_arrive(sync, target);
      if (l + 1 < NL && gwarp < QKV) ra.load(qa, sa, ba, base + LROWS + k * QKV + gwarp, lane);
      ppx_grid_wait(sync, target);
      for (int i = tid; i < D; i += NT) xs[i] = __ldcg(x2 + i);
      __syncthreads();
    }
    // logits of step k
    for (int i = tid; i < D; i += NT) ns[ppx_pad(i)] = xs[i];
    __syncthreads();
    for (int r = gwarp; r < CARD; r += nwarps) {
      const float v = ppx_fdot<T, D>(heads, static_cast<size_t>(k) * CARD + r, ns, lane);
      if (lane == 0) logg[k * CARD + r] = ppx_f(T(v));
    }
    ppx_grid_arrive(sync, target);
    if (k + 1 < n_steps && gwarp < QKV) ra.load(qa, sa, ba, (k + 1) * QKV + gwarp, lane);
    ppx_grid_wait(sync, target);
    // the token (every block draws it: the next input needs no barrier)
    for (int i = tid; i < CARD; i += NT) lg[i] = __ldcg(logg + k * CARD + i);
    __syncthreads();
    int token = ppx_draw<T, NT, CARD>(ppx_shared_logits<NT, CARD>{lg},
        noise + static_cast<size_t>(k) * CARD, inv_temp, top_k, hist, sel, redf, redi);
    if (use_forced && provided[k] != 0) token = forced[k];
    if (blockIdx.x == 0 && tid == 0) tokens[k] = token;
    if (k + 1 < n_steps) {
      const T* row = emb + (static_cast<size_t>(TEXT_ROWS) + static_cast<size_t>(k) * (CARD + 1)
                            + token) * D;
      const T* din = dep_in + static_cast<size_t>(k + 1) * D;
      for (int i = tid; i < D; i += NT) xs[i] = ppx_f(T(ppx_f(din[i]) + ppx_f(row[i])));
      __syncthreads();
    }
  }
  PPX_MARK_END(sync, target);
