// The temporal kernel's body: all layers of one position (docs/cuda-kernels.md §The temporal
// step). MLX declares the kernel around it: inputs x, pos, params, qa, sa, ba, qb, sb, bb, norms,
// k0.., v0.. (the rings); outputs out, work. The constants (T, BITS, G, D, HID, NH, DH, NL, CTX,
// NT, U, SYNC, and the weight stream's NS, CPI, PRE) and PPX_KV_POINTERS (the rings' pointers)
// come from the prelude (source.py). With NS > 0 the mat-vecs' weights pass through NS stages of
// dynamic shared memory (temporal.cuh, the weight stream), and with PRE each phase's first items
// are asked for as the phase before frees its stages (the stream goes on through the barrier),
// or, in warp 0 and where a phase has too few items, between the arrival at the barrier in front
// of it and the wait (common.cuh). Each
// mat-vec's input (x normalised, the attention, the hidden units) goes into shared memory with its
// chunk sums in one pass (temporal.cuh: ppx_rms_input, ppx_load_input).
  constexpr int NW = NT / 32;
  constexpr int QKV = 3 * D;
  constexpr int LROWS = QKV + D + 2 * HID;
  constexpr int VPL = DH / 32;
  constexpr int KV16 = DH * sizeof(T) / 16;
  constexpr int XV = 16 / sizeof(T);
  constexpr int PART = DH + 2;
  // keys read a row per KV16 lanes (coalesced) where a row is a power-of-two number of 16-byte
  // pieces up to 32, else a row per lane
  constexpr bool KEYS_COALESCED = KV16 <= 32 && (KV16 & (KV16 - 1)) == 0 && DH % XV == 0;
  __shared__ __align__(16) T xs[D];
  constexpr int EPC = 128 / BITS;
  __shared__ __align__(16) T nt[HID > D ? HID : D];  // a mat-vec's input (swizzled)
  __shared__ float csum[(HID > D ? HID : D) / EPC];
  __shared__ float qsm[NW][DH];  // each warp's query, for its attention items
  __shared__ float redf[NW];
  __shared__ float2 rope[DH / 2];  // (cos, sin) of each frequency at this position
  extern __shared__ __align__(16) uint4 stage[];  // the weight stream's stages (NS > 0)

  unsigned int* sync = reinterpret_cast<unsigned int*>(work);
  float* x1 = work + SYNC;
  float* x2 = x1 + D;
  float* qg = x2 + D;
  float* att = qg + D;
  float* hidg = att + D;
  float* part = hidg + HID;
  // out_proj's and linear_out's inputs as they keep them in shared memory (activation dtype,
  // times ppx_xscale_at), written by the combine and by linear_in (16-byte aligned: SYNC and the
  // widths are multiples of 4 words)
  T* att_in = reinterpret_cast<T*>(att);
  T* hid_in = reinterpret_cast<T*>(hidg);

  T* kc[NL];
  T* vc[NL];
  PPX_KV_POINTERS

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int wib = tid >> 5;
  const int gwarp = blockIdx.x * NW + wib;
  // the attention's items (few at early positions): warps numbered across blocks first, so
  // that they spread over every SM
  const int awarp = wib * gridDim.x + blockIdx.x;
  // q/k/v's and linear_in's row pairs (2.9 and 5.3 per warp on 132 SMs) go to the warps in the
  // same order, so that the last, partial round spreads over every SM (numbered by blocks, a
  // third of the SMs took all of it: 96 of linear_in's pairs against 80 for the others)
  const int swarp = awarp;
  const int nwarps = gridDim.x * NW;
  unsigned int target = 0;
  const float eps = params[0];
  const float scale_log2 = params[1];
  const float log2_base = params[2];
  const int p = pos[0];
  const int slot = p % CTX;
  const int nvalid = p + 1 < CTX ? p + 1 : CTX;
  // positions per attention item: about one item per warp, whole runs of 32
  int run = (nvalid * NH + nwarps - 1) / nwarps;
  run = ((run + 31) / 32) * 32;
  const int nch = (nvalid + run - 1) / run;
  // the weight stream: this warp's part of each stage, stages NW warps' parts apart
  constexpr int SW = ppx_stream_words<T, BITS, G, NS, CPI>();
  uint4* area = stage + wib * SW;
  constexpr int SSTRIDE = NW * SW;
  constexpr bool AHEAD = NS > 0 && PRE != 0;
  // the row pairs of the four mat-vecs of layer l
  auto qkv_rows = [&](int l) {
    const size_t base = static_cast<size_t>(l) * LROWS;
    return [base](int pr) { return ppx_pair{base + 2 * pr, base + 2 * pr + 1}; };
  };
  auto out_rows = [&](int l) {
    const size_t base = static_cast<size_t>(l) * LROWS + QKV;
    return [base](int pr) { return ppx_pair{base + 2 * pr, base + 2 * pr + 1}; };
  };
  auto in_rows = [&](int l) {  // gate row r and value row r + HID
    const size_t base = static_cast<size_t>(l) * LROWS + QKV + D;
    return [base](int r) { return ppx_pair{base + r, base + r + HID}; };
  };
  auto outb_rows = [&](int l) {
    const size_t base = static_cast<size_t>(l) * D;
    return [base](int pr) { return ppx_pair{base + 2 * pr, base + 2 * pr + 1}; };
  };
  auto qkv_phase = [&](int l) {
    return ppx_make_phase<T, BITS, G, D, NS, CPI>(qa, sa, ba, swarp, QKV / 2, nwarps, qkv_rows(l));
  };
  auto out_phase = [&](int l) {
    return ppx_make_phase<T, BITS, G, D, NS, CPI>(qa, sa, ba, gwarp, D / 2, nwarps, out_rows(l));
  };
  auto in_phase = [&](int l) {
    return ppx_make_phase<T, BITS, G, D, NS, CPI>(qa, sa, ba, swarp, HID, nwarps, in_rows(l));
  };
  auto outb_phase = [&](int l) {
    return ppx_make_phase<T, BITS, G, HID, NS, CPI>(qb, sb, bb, gwarp, D / 2, nwarps,
                                                    outb_rows(l));
  };
  // Each phase's last items hand their stages to the next phase's first ones (ppx_stream_run),
  // except in warp 0: its thread 0 arrives at the grid barriers, and its fence would wait for
  // copies in flight; warp 0 asks for a phase's first items in the barrier's window, as every
  // warp with fewer than NS - 1 items in a phase does.
  const bool chain = AHEAD && wib != 0;
  int sbase = 0;  // the stage of this warp's next item
  if constexpr (AHEAD) ppx_stream_start<NS>(qkv_phase(0), sbase, area, SSTRIDE, lane);

  PPX_MARK(sync, 0);
  for (int i = tid; i < D; i += NT) xs[i] = x[i];
  for (int i = tid; i < DH / 2; i += NT) {  // once per step, not per layer and row pair
    const float inv_freq = exp2f(-(static_cast<float>(i) / (DH / 2)) * log2_base);
    const float theta = static_cast<float>(p) * inv_freq;
    rope[i] = make_float2(cosf(theta), sinf(theta));
  }
  __syncthreads();

  for (int l = 0; l < NL; l++) {
    // 1. norm1; q/k/v by RoPE pairs; k, v into the ring slot
    ppx_rms_input<T, BITS, D, NT>(xs, norms + (2 * l) * D, nt, csum, eps, redf);
    PPX_MARK_PHASE(sync, target);
    const bool c1 = ppx_pairs<T, BITS, G, D, U, NS, CPI>(qkv_phase(l), out_phase(l), chain,
                                                         [&](int pr, float2 v) {
      const int r = 2 * pr;
      if (lane == 0) {
        float y0 = ppx_f(T(v.x));
        float y1 = ppx_f(T(v.y));
        const int part_ = r / D;  // 0 q, 1 k, 2 v
        const int within = r % D;
        const int head = within / DH;
        const int dd = within % DH;
        if (part_ < 2) {
          const float c = rope[dd / 2].x, s = rope[dd / 2].y;
          const float r0 = y0 * c - y1 * s;
          const float r1 = y0 * s + y1 * c;
          y0 = ppx_f(T(r0));
          y1 = ppx_f(T(r1));
        }
        if (part_ == 0) {
          qg[within] = y0;
          qg[within + 1] = y1;
        } else {
          T* cache = part_ == 1 ? kc[l] : vc[l];
          const size_t at = (static_cast<size_t>(head) * CTX + slot) * DH + dd;
          cache[at] = T(y0);
          cache[at + 1] = T(y1);
        }
      }
    }, nt, csum, area, SSTRIDE, lane, AHEAD, sbase);
    ppx_grid_arrive(sync, target);  // then ask for the next weights, then wait
    if constexpr (AHEAD) {
      if (!c1) ppx_stream_start<NS>(out_phase(l), sbase, area, SSTRIDE, lane);
    }
    ppx_grid_wait(sync, target);
    // 2. attention partials: one (head, run of positions) per warp
    {
      const T* kl = kc[l];
      const T* vl = vc[l];
      for (int it = awarp; it < NH * nch; it += nwarps) {
        const int h = it / nch;
        const int c = it % nch;
        __syncwarp();
        for (int d = lane; d < DH; d += 32) qsm[wib][d] = scale_log2 * __ldcg(qg + h * DH + d);
        __syncwarp();
        const T* kb = kl + static_cast<size_t>(h) * CTX * DH;
        const T* vb = vl + static_cast<size_t>(h) * CTX * DH;
        float m = -ppx_inf();
        float lsum = 0.f;
        float o[VPL];
#pragma unroll
        for (int i = 0; i < VPL; i++) o[i] = 0.f;
        const int j0 = c * run;
        const int j1 = j0 + run < nvalid ? j0 + run : nvalid;
        for (int jb = j0; jb < j1; jb += 32) {
          const int j = jb + lane;
          float s = -ppx_inf();
          if constexpr (KEYS_COALESCED) {
            // KV16 lanes read one key row together (16 bytes each), 32 / KV16 rows per load;
            // the lanes' partial dots of KV16 rows are then summed so that lane i holds row
            // jb + i's (ppx_key_scores)
            const float d = ppx_key_scores<T, KV16>(kb, qsm[wib], jb, j1, lane);
            if (j < j1) s = d;
          } else if (j < j1) {
            const uint4* kp = reinterpret_cast<const uint4*>(kb + static_cast<size_t>(j) * DH);
            float acc = 0.f;
#pragma unroll
            for (int v = 0; v < KV16; v++) {
              const uint4 u = __ldcg(kp + v);
              const T* t = reinterpret_cast<const T*>(&u);
#pragma unroll
              for (int e = 0; e < XV; e++) acc = fmaf(qsm[wib][v * XV + e], ppx_f(t[e]), acc);
            }
            s = acc;
          }
          float mb = s;
#pragma unroll
          for (int off = 16; off > 0; off >>= 1) mb = fmaxf(mb, __shfl_xor_sync(0xffffffff, mb, off));
          const float mn = fmaxf(m, mb);
          const float f = exp2f(m - mn);
          const float pj = exp2f(s - mn);
          float ps = pj;
#pragma unroll
          for (int off = 16; off > 0; off >>= 1) ps += __shfl_xor_sync(0xffffffff, ps, off);
          lsum = lsum * f + ps;
#pragma unroll
          for (int i = 0; i < VPL; i++) o[i] *= f;
          const int nj = j1 - jb < 32 ? j1 - jb : 32;
          if (nj == 32) {  // a whole run: its 32 value rows' loads all in flight
#pragma unroll 16
            for (int t = 0; t < 32; t++) ppx_value_row<T, VPL>(vb, jb + t, DH, pj, t, lane, o);
          } else {
#pragma unroll 4
            for (int t = 0; t < nj; t++) ppx_value_row<T, VPL>(vb, jb + t, DH, pj, t, lane, o);
          }
          m = mn;
        }
        float* dst = part + static_cast<size_t>(h * nch + c) * PART;
        if (lane == 0) {
          dst[0] = m;
          dst[1] = lsum;
        }
#pragma unroll
        for (int i = 0; i < VPL; i++) dst[2 + lane * VPL + i] = o[i];
      }
    }
    ppx_grid_sync(sync, target);
    // 3. combine each head's partials (one warp per head and 32 of its dims): the lanes read the
    // runs' maxima and sums side by side, and every run's value for their dims 32 runs at a time,
    // all 32 loads in flight, the first 32 asked for before the maxima and sums are read
    // (docs/cuda-kernels.md §The combine's loads all in flight)
    for (int it = gwarp; it < NH * (DH / 32); it += nwarps) {
      const int h = it / (DH / 32);
      const int d = (it % (DH / 32)) * 32 + lane;
      const float* src = part + static_cast<size_t>(h * nch) * PART;
      constexpr int RPL = ((CTX + 31) / 32 + 31) / 32;  // runs per lane, at most
      float vals[32];
      ppx_run_values<PART>(src + 2 + d, 0, nch, vals);
      float rm[RPL], rf[RPL];
      float mx_ = -ppx_inf();
#pragma unroll
      for (int k = 0; k < RPL; k++) {
        const int c = lane + 32 * k;
        rm[k] = c < nch ? __ldcg(src + c * PART) : -ppx_inf();
        rf[k] = c < nch ? __ldcg(src + c * PART + 1) : 0.f;
        mx_ = fmaxf(mx_, rm[k]);
      }
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) mx_ = fmaxf(mx_, __shfl_xor_sync(0xffffffff, mx_, off));
      float lsum = 0.f;
#pragma unroll
      for (int k = 0; k < RPL; k++) {
        const float f = exp2f(rm[k] - mx_);  // 0 for a lane past the runs
        lsum = fmaf(rf[k], f, lsum);
        rf[k] = f;
      }
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) lsum += __shfl_xor_sync(0xffffffff, lsum, off);
      float acc = 0.f;
#pragma unroll
      for (int k = 0; k < RPL; k++) {
        const int n = nch - 32 * k < 32 ? nch - 32 * k : 32;
        if (n <= 0) break;
        if (k > 0) ppx_run_values<PART>(src + 2 + d, 32 * k, nch, vals);
#pragma unroll
        for (int t = 0; t < 32; t++) {
          const float f = __shfl_sync(0xffffffff, rf[k], t);
          if (t < n) acc = fmaf(vals[t], f, acc);
        }
      }
      const int i = h * DH + d;  // out_proj's input, as it keeps it (ppx_load_input)
      att_in[i] = T(ppx_f(T(acc * __frcp_rn(lsum))) * ppx_xscale_at<T, BITS>(i));
    }
    ppx_grid_sync(sync, target);
    // 4. x + out_proj(attention)
    ppx_load_input<T, BITS, D, NT>(att_in, nt, csum);
    PPX_MARK_PHASE(sync, target);
    const bool c4 = ppx_pairs<T, BITS, G, D, U, NS, CPI>(out_phase(l), in_phase(l), chain,
                                                         [&](int pr, float2 v) {
      const int r = 2 * pr;
      if (lane == 0) {
        x1[r] = ppx_f(T(v.x + ppx_f(xs[r])));
        x1[r + 1] = ppx_f(T(v.y + ppx_f(xs[r + 1])));
      }
    }, nt, csum, area, SSTRIDE, lane, AHEAD, sbase);
    ppx_grid_arrive(sync, target);  // then ask for the next weights, then wait
    if constexpr (AHEAD) {
      if (!c4) ppx_stream_start<NS>(in_phase(l), sbase, area, SSTRIDE, lane);
    }
    ppx_grid_wait(sync, target);
    // 5. norm2, silu(gate) * value
    for (int i = tid; i < D; i += NT) xs[i] = T(__ldcg(x1 + i));
    __syncthreads();
    ppx_rms_input<T, BITS, D, NT>(xs, norms + (2 * l + 1) * D, nt, csum, eps, redf);
    PPX_MARK_PHASE(sync, target);
    const bool c5 = ppx_pairs<T, BITS, G, D, U, NS, CPI>(in_phase(l), outb_phase(l), chain,
                                                         [&](int r, float2 v) {
      if (lane == 0) {  // linear_out's input, as it keeps it (ppx_load_input)
        hid_in[r] = T(ppx_f(T(v.x / (1.f + __expf(-v.x)) * v.y)) * ppx_xscale_at<T, BITS>(r));
      }
    }, nt, csum, area, SSTRIDE, lane, AHEAD, sbase);
    ppx_grid_arrive(sync, target);  // then ask for the next weights, then wait
    if constexpr (AHEAD) {
      if (!c5) ppx_stream_start<NS>(outb_phase(l), sbase, area, SSTRIDE, lane);
    }
    ppx_grid_wait(sync, target);
    // 6. x' + linear_out(hidden)
    ppx_load_input<T, BITS, HID, NT>(hid_in, nt, csum);
    PPX_MARK_PHASE(sync, target);
    const int ln = l + 1 < NL ? l + 1 : l;  // (the last layer hands nothing on)
    const bool c6 = ppx_pairs<T, BITS, G, HID, U, NS, CPI>(
        outb_phase(l), qkv_phase(ln), chain && l + 1 < NL, [&](int pr, float2 v) {
      if (lane == 0) {
        x2[2 * pr] = ppx_f(T(v.x + ppx_f(xs[2 * pr])));
        x2[2 * pr + 1] = ppx_f(T(v.y + ppx_f(xs[2 * pr + 1])));
      }
    }, nt, csum, area, SSTRIDE, lane, AHEAD, sbase);
    ppx_grid_arrive(sync, target);  // then ask for the next weights, then wait
    if constexpr (AHEAD) {
      if (l + 1 < NL && !c6) ppx_stream_start<NS>(qkv_phase(l + 1), sbase, area, SSTRIDE, lane);
    }
    ppx_grid_wait(sync, target);
    for (int i = tid; i < D; i += NT) xs[i] = T(__ldcg(x2 + i));
    __syncthreads();
  }
  PPX_MARK_END(sync, target);
  if (blockIdx.x == 0) {
    for (int i = tid; i < D; i += NT) out[i] = xs[i];
  }
