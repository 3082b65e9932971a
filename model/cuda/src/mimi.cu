// The Mimi transformer kernel's body: all layers of one codec frame's TS steps (docs/cuda-kernels.md
// §Mimi's transformer). MLX declares the kernel around it: inputs x, off, params, wa, wb, norms,
// r0.. (the rings, written in place); outputs out, work. The constants (D, HID, NH, DH, NL, CTX,
// TS, NSPLIT, NT, SYNC) and PPX_RING_POINTERS come from the prelude (source.py).
  constexpr int NW = NT / 32;
  constexpr int QKV = 3 * D;
  constexpr int AROWS = QKV + D + HID;  // rows of wa per layer: in_proj, out_proj, linear1
  constexpr int KV = 2 * DH;            // a ring row: [k | v]
  constexpr int XW = HID > D ? HID : D;
  constexpr int VPL = DH / 32;          // values per lane in the attention's sums
  __shared__ __align__(16) float xs[TS * XW];  // a mat-vec's input, row t at xs + t * K
  __shared__ float red[TS * NW];
  __shared__ float sc[CTX];             // one attention item's scores, then weights
  __shared__ __align__(16) float qsh[DH];
  __shared__ float osum[NW][DH];
  constexpr int PART = DH + 2;          // a run's partial: max, sum, weighted values
  __shared__ float wsplit[NH * TS][NSPLIT];

  unsigned int* sync = reinterpret_cast<unsigned int*>(work);
  float* qg = work + SYNC;   // [TS][D] the queries, rotated
  float* hg = qg + TS * D;   // [TS][HID] gelu(linear1)
  float* part = hg + TS * HID;  // [NH * TS * nsplit][PART] the attention's partials

  float* ring[NL];
  PPX_RING_POINTERS

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int wib = tid >> 5;
  const int gwarp = blockIdx.x * NW + wib;
  const int nwarps = gridDim.x * NW;
  unsigned int target = 0;
  const float eps = params[0];
  const float scale_log2 = params[1];
  const float log2_base = params[2];
  const int p0 = off[0];          // the position of the first step
  const int plast = p0 + TS - 1;  // of the last: the ring holds plast - CTX + 1 .. plast
  // the attention's items: about one per block
  int nsplit = static_cast<int>(gridDim.x) / (NH * TS);
  nsplit = nsplit < 1 ? 1 : (nsplit > NSPLIT ? NSPLIT : nsplit);
  const int run = (CTX + nsplit - 1) / nsplit;

  PPX_MARK(sync, 0);
  for (int l = 0; l < NL; l++) {
    const float* xc = l == 0 ? x : out;  // the residual stream
    const float* wl = wa + static_cast<size_t>(l) * AROWS * D;
    const float* nl = norms + static_cast<size_t>(l) * 4 * D;
    float* rl = ring[l];
    // 1. norm1; q/k/v by RoPE pairs; k and v into each step's ring slot
    ppx_layer_norm<TS, D, NT>(xc, nl, nl + D, eps, xs, red);
    PPX_MARK_PHASE(sync, target);
    for (int pr = gwarp; pr < QKV / 2; pr += nwarps) {
      const int r = 2 * pr;
      float acc[2][TS];
      ppx_rows_dot<D, TS, 2>(wl, r, xs, lane, acc);
      if (lane < TS) {
        const int t = lane;
        float y0 = ppx_pick<TS>(acc[0], t), y1 = ppx_pick<TS>(acc[1], t);
        const int part = r / D;  // 0 q, 1 k, 2 v
        const int within = r % D;
        const int head = within / DH;
        const int dd = within % DH;
        if (part < 2) {
          const float inv_freq = exp2f(-(static_cast<float>(dd / 2) / (DH / 2)) * log2_base);
          const float theta = static_cast<float>(p0 + t) * inv_freq;
          const float c = cosf(theta), s = sinf(theta);
          const float r0 = y0 * c - y1 * s;
          const float r1 = y0 * s + y1 * c;
          y0 = r0;
          y1 = r1;
        }
        if (part == 0) {
          qg[t * D + within] = y0;
          qg[t * D + within + 1] = y1;
        } else {
          const int slot = (p0 + t) % CTX;
          float* row = rl + (static_cast<size_t>(head) * CTX + slot) * KV + (part == 2 ? DH : 0);
          row[dd] = y0;
          row[dd + 1] = y1;
        }
      }
    }
    ppx_grid_sync(sync, target);
    // 2. attention partials: one (head, step, run of slots) per block; a thread per slot scores
    // it, then each warp sums every NW-th slot's value row (the lanes side by side along it)
    for (int it = blockIdx.x; it < NH * TS * nsplit; it += gridDim.x) {
      const int c = it % nsplit;
      const int ht = it / nsplit;  // h * TS + t
      const int h = ht / TS;
      const int t = ht % TS;
      const int qpos = p0 + t;
      const int s0 = c * run;
      const int s1 = s0 + run < CTX ? s0 + run : CTX;
      if (tid < DH) qsh[tid] = scale_log2 * __ldcg(qg + t * D + h * DH + tid);
      __syncthreads();
      const float* rh = rl + static_cast<size_t>(h) * CTX * KV;
      float best = -ppx_inf();
      for (int s = s0 + tid; s < s1; s += NT) {
        const int kp = plast - ((plast - s) % CTX + CTX) % CTX;  // the position slot s holds
        float score = -ppx_inf();
        if (kp >= 0 && kp <= qpos) {
          const float4* kr = reinterpret_cast<const float4*>(rh + static_cast<size_t>(s) * KV);
          float a = 0.f;
#pragma unroll
          for (int v = 0; v < DH / 4; v++) {
            const float4 k4 = __ldcg(kr + v);
            a = fmaf(qsh[4 * v], k4.x, a);
            a = fmaf(qsh[4 * v + 1], k4.y, a);
            a = fmaf(qsh[4 * v + 2], k4.z, a);
            a = fmaf(qsh[4 * v + 3], k4.w, a);
          }
          score = a;
        }
        sc[s - s0] = score;
        best = fmaxf(best, score);
      }
      const float m = ppx_block_max<NT>(best, red);
      float lsum = 0.f;
      for (int s = s0 + tid; s < s1; s += NT) {
        const float pj = m == -ppx_inf() ? 0.f : exp2f(sc[s - s0] - m);  // 0: a slot not seen
        sc[s - s0] = pj;
        lsum += pj;
      }
      const float total = ppx_block_sum<NT>(lsum, red);  // its barrier orders sc's writes
      {
        float o[VPL];
#pragma unroll
        for (int i = 0; i < VPL; i++) o[i] = 0.f;
        const float* vh = rh + DH + lane;
#pragma unroll 8
        for (int s = s0 + wib; s < s1; s += NW) {
          const float pj = sc[s - s0];  // 0 for a slot not seen (its row is finite)
#pragma unroll
          for (int i = 0; i < VPL; i++)
            o[i] = fmaf(pj, __ldcg(vh + static_cast<size_t>(s) * KV + 32 * i), o[i]);
        }
#pragma unroll
        for (int i = 0; i < VPL; i++) osum[wib][lane + 32 * i] = o[i];
      }
      __syncthreads();
      float* dst = part + static_cast<size_t>(it) * PART;
      if (tid < DH) {
        float o = 0.f;
#pragma unroll
        for (int k = 0; k < NW; k++) o += osum[k][tid];
        dst[2 + tid] = o;
      }
      if (tid == 0) {
        dst[0] = m;
        dst[1] = total;
      }
      __syncthreads();
    }
    ppx_grid_sync(sync, target);
    // 3. every block combines the attention's partials (the runs' weights first), then
    // x + out_proj(attention) (the layer scale folded into the rows)
    for (int ht = tid; ht < NH * TS; ht += NT) {
      const float* src = part + static_cast<size_t>(ht) * nsplit * PART;
      float mx_ = -ppx_inf();
      for (int c = 0; c < nsplit; c++) mx_ = fmaxf(mx_, __ldcg(src + c * PART));
      float lsum = 0.f;
      for (int c = 0; c < nsplit; c++) {
        const float mc = __ldcg(src + c * PART);
        const float f = mc == -ppx_inf() ? 0.f : exp2f(mc - mx_);
        wsplit[ht][c] = f;
        lsum = fmaf(__ldcg(src + c * PART + 1), f, lsum);
      }
      for (int c = 0; c < nsplit; c++) wsplit[ht][c] /= lsum;
    }
    __syncthreads();
    for (int i = tid; i < NH * TS * DH; i += NT) {
      const int dd = i % DH;
      const int ht = i / DH;
      const float* src = part + static_cast<size_t>(ht) * nsplit * PART + 2 + dd;
      float o = 0.f;
#pragma unroll 4
      for (int c = 0; c < nsplit; c++) o = fmaf(__ldcg(src + c * PART), wsplit[ht][c], o);
      xs[(ht % TS) * D + (ht / TS) * DH + dd] = o;
    }
    __syncthreads();
    PPX_MARK_PHASE(sync, target);
    for (int j = gwarp; j < D; j += nwarps) {
      float acc[1][TS];
      ppx_rows_dot<D, TS, 1>(wl, QKV + j, xs, lane, acc);
      if (lane < TS) {
        const int t = lane;
        out[t * D + j] = __ldcg(xc + t * D + j) + ppx_pick<TS>(acc[0], t);
      }
    }
    ppx_grid_sync(sync, target);
    // 4. norm2; gelu(linear1)
    ppx_layer_norm<TS, D, NT>(out, nl + 2 * D, nl + 3 * D, eps, xs, red);
    PPX_MARK_PHASE(sync, target);
    for (int pr = gwarp; pr < HID / 2; pr += nwarps) {
      float acc[2][TS];
      ppx_rows_dot<D, TS, 2>(wl, QKV + D + 2 * pr, xs, lane, acc);
      if (lane < 2 * TS) {  // lane 2t + r: row 2 pr + r of step t
        const int t = lane >> 1;
        const int r = lane & 1;
        const float a = r == 0 ? ppx_pick<TS>(acc[0], t) : ppx_pick<TS>(acc[1], t);
        hg[t * HID + 2 * pr + r] = ppx_gelu(a);
      }
    }
    ppx_grid_sync(sync, target);
    // 5. x + linear2(hidden) (the layer scale folded into the rows)
    for (int i = tid; i < TS * HID; i += NT) xs[i] = __ldcg(hg + i);
    __syncthreads();
    PPX_MARK_PHASE(sync, target);
    const float* wl2 = wb + static_cast<size_t>(l) * D * HID;
    for (int j = gwarp; j < D; j += nwarps) {
      float acc[1][TS];
      ppx_rows_dot<HID, TS, 1>(wl2, j, xs, lane, acc);
      if (lane < TS) {
        const int t = lane;
        out[t * D + j] = __ldcg(out + t * D + j) + ppx_pick<TS>(acc[0], t);
      }
    }
    if (l + 1 < NL) ppx_grid_sync(sync, target);
  }
  PPX_MARK_END(sync, target);
