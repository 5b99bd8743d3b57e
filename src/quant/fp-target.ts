/**
 * The fp target: the weights that, fed the inputs a projection sees once the layers before it are
 * quantized (X_q), best reproduce the unquantized model's outputs (X_f W^T). The minimiser of
 * ||X_f W^T - X_q W*^T|| is W* = W (X_f^T X_q) (X_q^T X_q)^-1 (ridge-regularised towards W below); GPTQ then quantizes W* instead of W.
 */
import { choleskyLowerInPlace } from "../tensor/linalg.js";

/** Rows transposed per step: K x PANEL float64 panels of both inputs stay in cache while C is swept. */
const PANEL = 128;

/** C = 2/n sum_r f_r q_r^T (K x K), scaled as the Hessian is, from row-aligned fp and quantized-path inputs. */
export class CrossAccumulator {
  readonly C: Float64Array;
  private n = 0;
  private readonly pf: Float64Array;
  private readonly pq: Float64Array;
  /** K rounded up to the 4 x 4 register blocks; the panels' padding rows stay zero */
  private readonly K4: number;
  constructor(readonly K: number) {
    this.C = new Float64Array(K * K);
    this.K4 = Math.ceil(K / 4) * 4;
    this.pf = new Float64Array(this.K4 * PANEL);
    this.pq = new Float64Array(this.K4 * PANEL);
  }
  add(f: Float32Array, q: Float32Array, rows: number): void {
    const total = this.n + rows;
    const keep = this.n / total;
    const C = this.C;
    if (keep !== 1) for (let i = 0; i < C.length; i++) C[i] *= keep;
    for (let r0 = 0; r0 < rows; r0 += PANEL) this.addPanel(f, q, r0, Math.min(PANEL, rows - r0), 2 / total);
    this.n = total;
  }
  /** C[i, j] += alpha * sum_r f[r, i] q[r, j] over rows r0 .. r0 + R, in 4 x 4 blocks of dot products. */
  private addPanel(f: Float32Array, q: Float32Array, r0: number, R: number, alpha: number): void {
    const { K, K4, pf, pq, C } = this;
    for (let r = 0; r < R; r++) {
      const src = (r0 + r) * K;
      for (let k = 0; k < K; k++) {
        pf[k * R + r] = f[src + k];
        pq[k * R + r] = q[src + k];
      }
    }
    pf.fill(0, K * R, K4 * R);
    pq.fill(0, K * R, K4 * R);
    const edge = new Float64Array(16);
    for (let i = 0; i < K; i += 4) {
      const a0 = i * R;
      const a1 = a0 + R;
      const a2 = a1 + R;
      const a3 = a2 + R;
      for (let j = 0; j < K; j += 4) {
        const b0 = j * R;
        const b1 = b0 + R;
        const b2 = b1 + R;
        const b3 = b2 + R;
        let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0; // prettier-ignore
        let s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0; // prettier-ignore
        for (let r = 0; r < R; r++) {
          const x0 = pf[a0 + r];
          const x1 = pf[a1 + r];
          const x2 = pf[a2 + r];
          const x3 = pf[a3 + r];
          const y0 = pq[b0 + r];
          const y1 = pq[b1 + r];
          const y2 = pq[b2 + r];
          const y3 = pq[b3 + r];
          s00 += x0 * y0;
          s01 += x0 * y1;
          s02 += x0 * y2;
          s03 += x0 * y3;
          s10 += x1 * y0;
          s11 += x1 * y1;
          s12 += x1 * y2;
          s13 += x1 * y3;
          s20 += x2 * y0;
          s21 += x2 * y1;
          s22 += x2 * y2;
          s23 += x2 * y3;
          s30 += x3 * y0;
          s31 += x3 * y1;
          s32 += x3 * y2;
          s33 += x3 * y3;
        }
        if (i + 4 <= K && j + 4 <= K) {
          let o = i * K + j;
          C[o] += alpha * s00;
          C[o + 1] += alpha * s01;
          C[o + 2] += alpha * s02;
          C[o + 3] += alpha * s03;
          o += K;
          C[o] += alpha * s10;
          C[o + 1] += alpha * s11;
          C[o + 2] += alpha * s12;
          C[o + 3] += alpha * s13;
          o += K;
          C[o] += alpha * s20;
          C[o + 1] += alpha * s21;
          C[o + 2] += alpha * s22;
          C[o + 3] += alpha * s23;
          o += K;
          C[o] += alpha * s30;
          C[o + 1] += alpha * s31;
          C[o + 2] += alpha * s32;
          C[o + 3] += alpha * s33;
        } else {
          // a ragged last block: only the rows and columns inside K
          edge.set([s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33]);
          for (let ii = 0; ii < Math.min(4, K - i); ii++)
            for (let jj = 0; jj < Math.min(4, K - j); jj++)
              C[(i + ii) * K + j + jj] += alpha * edge[ii * 4 + jj];
        }
      }
    }
  }
}

/**
 * The ridge of the fp target's solve, from H's diagonal: l = damp * mean(diag H) (damp at least 1e-6), and
 * what each diagonal entry of H gets: l, plus 1 where the diagonal is zero (an input never excited), so
 * that H + l I can be factorised.
 */
export function fpTargetRidge(diagH: Float64Array, damp: number): { lambda: number; onH: Float64Array } {
  const K = diagH.length;
  let mean = 0;
  for (let i = 0; i < K; i++) mean += diagH[i];
  mean /= K;
  const lambda = Math.max(damp, 1e-6) * mean;
  return { lambda, onH: diagH.map((d) => lambda + (d === 0 ? 1 : 0)) };
}

/**
 * W* = W (C + l I) (H + l I)^-1 for W (N x K), l = damp * mean(diag H): the weights that on the
 * quantized-path inputs best reproduce the fp outputs, ridge-regularised towards W (the minimiser of
 * ||X_f W^T - X_q W*^T||^2 + l ||W* - W||^2), so directions the inputs barely excite keep W's weights
 * rather than shrinking to zero, and undrifted inputs (C = H) give W back. Solved row by row with one
 * Cholesky factor of the damped H.
 */
export function fpTargetWeights(
  W: Float32Array,
  N: number,
  K: number,
  C: Float64Array,
  H: Float64Array,
  damp: number,
): Float32Array {
  const { lambda, onH } = fpTargetRidge(
    Float64Array.from({ length: K }, (_, i) => H[i * K + i]),
    damp,
  );
  const L = Float64Array.from(H);
  for (let i = 0; i < K; i++) L[i * K + i] += onH[i];
  if (!choleskyLowerInPlace(L, K)) return W; // degenerate inputs: keep the plain target
  const out = new Float32Array(N * K);
  const r = new Float64Array(K);
  for (let n = 0; n < N; n++) {
    // r = w (C + l I)
    for (let i = 0; i < K; i++) r[i] = lambda * W[n * K + i];
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
