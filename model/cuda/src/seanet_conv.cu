// One streaming convolution of Mimi's SEANet (docs/cuda-kernels.md §Mimi's SEANet convolutions).
// MLX declares the kernel around it: inputs x (the call's new rows [T_in, C]), s (the kept rows
// [CTX, C]), w (the weight transposed, [O, K * C], row o: tap k's channels at k * C), b (bias
// [O]), r (residual [T, O]), p (the convolution's ints, below); outputs y (the sum [T, O]), e
// (its ELU), ns (the next kept rows [CTX, C]); template TB (times per warp), V (floats per load).
// Unused inputs and outputs are one element long and never touched (the flags say which are).
//
// A warp computes one output channel o for TB consecutive times: its lanes split the reduction
// (tap k, channel c) V channels at a time, each lane keeping TB sums, and a butterfly adds the
// lanes' sums (the same order every call). The input row of time t and tap k is row t * S + k * D
// of the kept rows followed by the new ones. The block's 8 warps take 8 consecutive channels of
// the same times, so they read the same input rows (from L1).
  constexpr int WARPS = 8;
  constexpr int RAW = 1, ELU = 2, BIAS = 4, RES = 8, STATE = 16;
  const int C = p[0], CTX = p[1], K = p[2], S = p[3], D = p[4];
  const int T = p[5], O = p[6], T_IN = p[7], flags = p[8];
  const int lane = threadIdx.x & 31;
  const int task = blockIdx.x * WARPS + (threadIdx.x >> 5);
  const int o = task % O;
  const int t0 = (task / O) * TB;

  if (flags & STATE) {  // the last CTX rows of [kept; new], before any warp returns
    const int n = CTX * C;
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x) {
      const int row = T_IN + j / C;  // row of [kept; new]
      ns[j] = row < CTX ? s[row * C + j % C] : x[(row - CTX) * C + j % C];
    }
  }
  if (t0 >= T) return;

  const int CV = C / V;  // loads per tap
  const int RV = K * CV;  // loads per output
  float acc[TB];
#pragma unroll
  for (int i = 0; i < TB; i++) acc[i] = 0.f;
  const float* wo = w + static_cast<size_t>(o) * K * C;
  int k = 0, cv = lane;
  while (cv >= CV && k < K) {
    cv -= CV;
    k++;
  }
  for (int j = lane; j < RV; j += 32) {
    float wv[V];
    if constexpr (V == 4) {
      const float4 q = *reinterpret_cast<const float4*>(wo + j * 4);
      wv[0] = q.x;
      wv[1] = q.y;
      wv[2] = q.z;
      wv[3] = q.w;
    } else {
      wv[0] = wo[j];
    }
#pragma unroll
    for (int i = 0; i < TB; i++) {
      const int row = min(t0 + i, T - 1) * S + k * D;
      const float* a = (row < CTX ? s + row * C : x + (row - CTX) * C) + cv * V;
      if constexpr (V == 4) {
        const float4 q = *reinterpret_cast<const float4*>(a);
        acc[i] = fmaf(q.x, wv[0], acc[i]);
        acc[i] = fmaf(q.y, wv[1], acc[i]);
        acc[i] = fmaf(q.z, wv[2], acc[i]);
        acc[i] = fmaf(q.w, wv[3], acc[i]);
      } else {
        acc[i] = fmaf(a[0], wv[0], acc[i]);
      }
    }
    cv += 32;
    while (cv >= CV) {
      cv -= CV;
      k++;
    }
  }
#pragma unroll
  for (int i = 0; i < TB; i++) {
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], m);
  }
  float v = acc[0];  // lane i keeps time t0 + i
#pragma unroll
  for (int i = 1; i < TB; i++) v = lane == i ? acc[i] : v;
  const int t = t0 + lane;
  if (lane < TB && t < T) {
    if (flags & BIAS) v += b[o];
    if (flags & RES) v += r[t * O + o];
    if (flags & RAW) y[t * O + o] = v;
    if (flags & ELU) e[t * O + o] = v > 0.f ? v : expm1f(v);
  }
