/**
 * The fp target: the weights that, fed the inputs a projection sees once the layers before it are
 * quantized (X_q), best reproduce the unquantized model's outputs (X_f W^T). The minimiser of
 * ||X_f W^T - X_q W*^T|| is W* = W (X_f^T X_q) (X_q^T X_q)^-1 (ridge-regularised towards W below); GPTQ then quantizes W* instead of W.
 */
import { choleskyLowerInPlace } from "../tensor/linalg.js";
import { addPanelProducts, transposeRows } from "./hessian.js";

/** Rows transposed per step: K x PANEL float64 panels of both inputs stay in cache while C is swept. */
const PANEL = 128;

/** C = 2/n sum_r f_r q_r^T (K x K), scaled as the Hessian is, from row-aligned fp and quantized-path inputs. */
export class CrossAccumulator {
  readonly C: Float64Array;
  private n = 0;
  private readonly pf: Float64Array;
  private readonly pq: Float64Array;

  constructor(readonly K: number) {
    this.C = new Float64Array(K * K);
    // padded to a multiple of 4 input channels (zero rows) for the 4 x 4 register blocks
    this.pf = new Float64Array(Math.ceil(K / 4) * 4 * PANEL);
    this.pq = new Float64Array(Math.ceil(K / 4) * 4 * PANEL);
  }

  add(f: Float32Array, q: Float32Array, rows: number): void {
    const total = this.n + rows;
    const keep = this.n / total;
    const { C, K, pf, pq } = this;
    if (keep !== 1) for (let i = 0; i < C.length; i++) C[i] *= keep;
    for (let r0 = 0; r0 < rows; r0 += PANEL) {
      const R = Math.min(PANEL, rows - r0);
      transposeRows(f, r0, R, K, pf);
      transposeRows(q, r0, R, K, pq);
      addPanelProducts(C, K, pf, pq, R, 2 / total, false);
    }
    this.n = total;
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
