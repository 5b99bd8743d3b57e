/**
 * The fp target: the weights that, fed the inputs a projection sees once the layers before it are
 * quantized (X_q), best reproduce the unquantized model's outputs (X_f W^T). The minimiser of
 * ||X_f W^T - X_q W*^T|| is W* = W (X_f^T X_q) (X_q^T X_q + damp)^-1; GPTQ then quantizes W* instead of W.
 */
import { choleskyLowerInPlace } from "../tensor/linalg.js";

/** Rows transposed per step: K x PANEL float64 panels of both inputs stay in cache while C is swept. */
const PANEL = 64;

/** C = 2/n sum_r f_r q_r^T (K x K), scaled as the Hessian is, from row-aligned fp and quantized-path inputs. */
export class CrossAccumulator {
  readonly C: Float64Array;
  private n = 0;
  private readonly pf: Float64Array;
  private readonly pq: Float64Array;
  constructor(readonly K: number) {
    this.C = new Float64Array(K * K);
    this.pf = new Float64Array(K * PANEL);
    this.pq = new Float64Array(K * PANEL);
  }
  add(f: Float32Array, q: Float32Array, rows: number): void {
    const total = this.n + rows;
    const keep = this.n / total;
    const C = this.C;
    if (keep !== 1) for (let i = 0; i < C.length; i++) C[i] *= keep;
    for (let r0 = 0; r0 < rows; r0 += PANEL) this.addPanel(f, q, r0, Math.min(PANEL, rows - r0), 2 / total);
    this.n = total;
  }
  /** C[i, j] += alpha * sum_r f[r, i] q[r, j] over rows r0 .. r0 + R, two rows of C at a time. */
  private addPanel(f: Float32Array, q: Float32Array, r0: number, R: number, alpha: number): void {
    const K = this.K;
    const { pf, pq, C } = this;
    for (let r = 0; r < R; r++) {
      const src = (r0 + r) * K;
      for (let k = 0; k < K; k++) {
        pf[k * R + r] = f[src + k];
        pq[k * R + r] = q[src + k];
      }
    }
    // 2 x 2 register blocks; a ragged last row or column falls back to the scalar loop.
    for (let i = 0; i < K; i += 2) {
      const a0 = i * R;
      const a1 = a0 + R;
      for (let j = 0; j < K; j += 2) {
        const b0 = j * R;
        const b1 = b0 + R;
        if (i + 1 < K && j + 1 < K) {
          let s00 = 0;
          let s01 = 0;
          let s10 = 0;
          let s11 = 0;
          for (let r = 0; r < R; r++) {
            const x0 = pf[a0 + r];
            const x1 = pf[a1 + r];
            const y0 = pq[b0 + r];
            const y1 = pq[b1 + r];
            s00 += x0 * y0;
            s01 += x0 * y1;
            s10 += x1 * y0;
            s11 += x1 * y1;
          }
          C[i * K + j] += alpha * s00;
          C[i * K + j + 1] += alpha * s01;
          C[(i + 1) * K + j] += alpha * s10;
          C[(i + 1) * K + j + 1] += alpha * s11;
        } else
          for (let ii = i; ii < Math.min(i + 2, K); ii++)
            for (let jj = j; jj < Math.min(j + 2, K); jj++) {
              let sum = 0;
              for (let r = 0; r < R; r++) sum += pf[ii * R + r] * pq[jj * R + r];
              C[ii * K + jj] += alpha * sum;
            }
      }
    }
  }
}

/**
 * W* = W C (H + damp * mean(diag H) I)^-1 for W (N x K): the weights that on the quantized-path inputs
 * best reproduce the fp outputs. Solved row by row with one Cholesky factor of the damped H.
 */
export function fpTargetWeights(
  W: Float32Array,
  N: number,
  K: number,
  C: Float64Array,
  H: Float64Array,
  damp: number,
): Float32Array {
  let mean = 0;
  for (let i = 0; i < K; i++) mean += H[i * K + i];
  mean /= K;
  const L = Float64Array.from(H);
  for (let i = 0; i < K; i++) L[i * K + i] += Math.max(damp, 1e-6) * mean + (H[i * K + i] === 0 ? 1 : 0);
  if (!choleskyLowerInPlace(L, K)) return W; // degenerate inputs: keep the plain target
  const out = new Float32Array(N * K);
  const r = new Float64Array(K);
  for (let n = 0; n < N; n++) {
    // r = w C
    r.fill(0);
    for (let i = 0; i < K; i++) {
      const w = W[n * K + i];
      if (w === 0) continue;
      const row = i * K;
      for (let j = 0; j < K; j++) r[j] += w * C[row + j];
    }
    // solve L y = r, then L^T x = y
    for (let i = 0; i < K; i++) {
      let v = r[i];
      const row = i * K;
      for (let j = 0; j < i; j++) v -= L[row + j] * r[j];
      r[i] = v / L[row + i];
    }
    for (let i = K - 1; i >= 0; i--) {
      let v = r[i];
      for (let j = i + 1; j < K; j++) v -= L[j * K + i] * r[j];
      r[i] = v / L[i * K + i];
    }
    for (let k = 0; k < K; k++) out[n * K + k] = r[k];
  }
  return out;
}
