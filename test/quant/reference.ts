/**
 * Plain float64 references for the quantizer tests, written for clarity, not speed: a matrix inverse by
 * Gauss-Jordan, a textbook Cholesky, and GPTQ with every update applied at once (no blocks, no lazy
 * updates). AutoGPTQ finds a dynamic group's parameters on the weight as it stood at the start of the
 * block the group begins in; `blockSize` reproduces that with a snapshot of the weight at each block start.
 */

export function inverse(a: Float64Array, n: number): Float64Array {
  const m = Float64Array.from(a);
  const inv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) inv[i * n + i] = 1;
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r * n + c]) > Math.abs(m[p * n + c])) p = r;
    for (let k = 0; k < n; k++) {
      [m[c * n + k], m[p * n + k]] = [m[p * n + k], m[c * n + k]];
      [inv[c * n + k], inv[p * n + k]] = [inv[p * n + k], inv[c * n + k]];
    }
    const d = m[c * n + c];
    for (let k = 0; k < n; k++) {
      m[c * n + k] /= d;
      inv[c * n + k] /= d;
    }
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = m[r * n + c];
      for (let k = 0; k < n; k++) {
        m[r * n + k] -= f * m[c * n + k];
        inv[r * n + k] -= f * inv[c * n + k];
      }
    }
  }
  return inv;
}

/** Upper U with A = U^T U. */
export function upperCholesky(a: Float64Array, n: number): Float64Array {
  const u = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    let s = a[i * n + i];
    for (let k = 0; k < i; k++) s -= u[k * n + i] ** 2;
    u[i * n + i] = Math.sqrt(s);
    for (let j = i + 1; j < n; j++) {
      let t = a[i * n + j];
      for (let k = 0; k < i; k++) t -= u[k * n + i] * u[k * n + j];
      u[i * n + j] = t / u[i * n + i];
    }
  }
  return u;
}

function roundEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

function fp16(x: number): number {
  // nearest fp16 for normal-range positive x (scales in these tests are far from subnormal)
  const e = Math.floor(Math.log2(x));
  const step = 2 ** (e - 10);
  return roundEven(x / step) * step;
}

interface Params {
  scale: number;
  zero: number;
}

/** AutoGPTQ's min/max parameters of one row's values (scale rounded to fp16). */
export function minMaxParams(values: number[], bits: number, sym: boolean): Params {
  const maxq = 2 ** bits - 1;
  let lo = Math.min(0, ...values);
  let hi = Math.max(0, ...values);
  if (sym) {
    hi = Math.max(-lo, hi);
    if (lo < 0) lo = -hi;
  }
  if (lo === 0 && hi === 0) [lo, hi] = [-1, 1];
  const scale = fp16((hi - lo) / maxq);
  const zero = sym ? (maxq + 1) / 2 : Math.min(maxq, Math.max(0, roundEven(-lo / scale)));
  return { scale, zero };
}

export function quantValue(x: number, p: Params, bits: number): number {
  const q = Math.min(2 ** bits - 1, Math.max(0, roundEven(x / p.scale) + p.zero));
  return p.scale * (q - p.zero);
}

export interface RefOptions {
  bits: number;
  groupSize: number;
  sym: boolean;
  descAct: boolean;
  staticGroups: boolean;
  damp: number;
  blockSize: number;
}

/** Returns the dequantized weight (N x K) and g_idx. */
export function referenceGptq(
  W: Float32Array,
  N: number,
  K: number,
  H0: Float64Array,
  o: RefOptions,
): { Q: Float64Array; gIdx: Int32Array } {
  const gs = o.groupSize === -1 ? K : o.groupSize;
  const w = Float64Array.from(W);
  const H = Float64Array.from(H0);
  const rowParams = (k0: number, k1: number, src: Float64Array): Params[] =>
    Array.from({ length: N }, (_, n) =>
      minMaxParams(Array.from(src.subarray(n * K + k0, n * K + k1)), o.bits, o.sym),
    );
  const whole = rowParams(0, K, w);
  for (let k = 0; k < K; k++) {
    if (H[k * K + k] === 0) {
      H[k * K + k] = 1;
      for (let n = 0; n < N; n++) w[n * K + k] = 0;
    }
  }
  const staticParams: Params[][] = [];
  if (o.staticGroups)
    for (let k0 = 0; k0 < K; k0 += gs) staticParams.push(rowParams(k0, Math.min(k0 + gs, K), w));
  const order = Array.from({ length: K }, (_, k) => k);
  if (o.descAct) order.sort((a, b) => H[b * K + b] - H[a * K + a] || a - b);
  // permuted copies
  const wp = new Float64Array(N * K);
  const hp = new Float64Array(K * K);
  for (let a = 0; a < K; a++) {
    for (let n = 0; n < N; n++) wp[n * K + a] = w[n * K + order[a]];
    for (let b = 0; b < K; b++) hp[a * K + b] = H[order[a] * K + order[b]];
  }
  let mean = 0;
  for (let k = 0; k < K; k++) mean += hp[k * K + k] / K;
  for (let k = 0; k < K; k++) hp[k * K + k] += o.damp * mean;
  const U = upperCholesky(inverse(hp, K), K);
  const Qp = new Float64Array(N * K);
  const gIdxP = new Int32Array(K);
  let params = whole;
  let snapshot = Float64Array.from(wp);
  for (let c = 0; c < K; c++) {
    if (c % o.blockSize === 0) snapshot = Float64Array.from(wp);
    if (o.groupSize !== -1) {
      if (o.staticGroups) {
        gIdxP[c] = Math.floor(order[c] / gs);
        params = staticParams[gIdxP[c]];
      } else {
        gIdxP[c] = Math.floor(c / gs);
        if (c % gs === 0) {
          // AutoGPTQ's weight outside the block being worked on is as it stood when that block began
          params = rowParams(c, Math.min(c + gs, K), snapshot);
        }
      }
    }
    const d = U[c * K + c];
    for (let n = 0; n < N; n++) {
      const q = quantValue(wp[n * K + c], params[n], o.bits);
      Qp[n * K + c] = q;
      const e = (wp[n * K + c] - q) / d;
      for (let j = c + 1; j < K; j++) wp[n * K + j] -= e * U[c * K + j];
    }
  }
  const Q = new Float64Array(N * K);
  const gIdx = new Int32Array(K);
  for (let a = 0; a < K; a++) {
    gIdx[order[a]] = gIdxP[a];
    for (let n = 0; n < N; n++) Q[n * K + order[a]] = Qp[n * K + a];
  }
  return { Q, gIdx };
}
