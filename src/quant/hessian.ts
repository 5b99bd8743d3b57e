/**
 * The GPTQ Hessian H = 2/n sum_x x x^T over calibration inputs, accumulated batch by batch with AutoGPTQ's
 * running rescale (H *= n / (n + rows) before adding the new rows scaled by 2 / (n + rows)), in float64.
 * n counts input rows (tokens). Only the upper triangle is accumulated; `H` mirrors it on read.
 */
import { checkCalibrationRows } from "../tensor/tensor.js";
import { GptqError } from "../util/errors.js";

/** Rows transposed per step: a K x ROWS float64 panel swept against itself while it is in cache. */
const ROWS = 128;

export class HessianAccumulator {
  private readonly h: Float64Array;
  private n = 0;
  private mirrored = true;
  private readonly panel: Float64Array;

  constructor(readonly inFeatures: number) {
    if (!(Number.isInteger(inFeatures) && inFeatures > 0))
      throw new GptqError(`in_features must be a positive integer, got ${inFeatures}`);
    this.h = new Float64Array(inFeatures * inFeatures);
    // padded to a multiple of 4 input channels (zero rows) for the 4 x 4 register blocks
    this.panel = new Float64Array(Math.ceil(inFeatures / 4) * 4 * ROWS);
  }

  get nsamples(): number {
    return this.n;
  }

  /** K x K, symmetric. */
  get H(): Float64Array {
    if (!this.mirrored) {
      const K = this.inFeatures;
      const h = this.h;
      for (let i = 0; i < K; i++) for (let j = 0; j < i; j++) h[i * K + j] = h[j * K + i];
      this.mirrored = true;
    }
    return this.h;
  }

  /** Adds `rows` input rows (x is rows x K row-major). */
  add(x: Float32Array, rows: number): void {
    const K = this.inFeatures;
    checkCalibrationRows(x, rows, K);
    if (rows === 0) return;
    const total = this.n + rows;
    const keep = this.n / total;
    const h = this.h;
    if (keep !== 1) for (let i = 0; i < K; i++) for (let j = i; j < K; j++) h[i * K + j] *= keep;
    const alpha = 2 / total;
    for (let r0 = 0; r0 < rows; r0 += ROWS) this.addPanel(x, r0, Math.min(ROWS, rows - r0), alpha);
    this.n = total;
    this.mirrored = false;
  }

  /**
   * h[i, j] += alpha * sum_r x[r, i] x[r, j] for j >= i, over rows r0 .. r0 + R (entries a diagonal block
   * puts below the diagonal are overwritten by the mirror).
   */
  private addPanel(x: Float32Array, r0: number, R: number, alpha: number): void {
    const K = this.inFeatures;
    transposeRows(x, r0, R, K, this.panel);
    addPanelProducts(this.h, K, this.panel, this.panel, R, alpha, true);
  }
}

/** p[k * R + r] = x[r0 + r, k] for the R rows from r0 (K wide), the padding rows up to p's length zero. */
export function transposeRows(x: Float32Array, r0: number, R: number, K: number, p: Float64Array): void {
  for (let r = 0; r < R; r++) {
    const src = (r0 + r) * K;
    for (let k = 0; k < K; k++) p[k * R + r] = x[src + k];
  }
  p.fill(0, K * R, Math.ceil(K / 4) * 4 * R);
}

/**
 * c[i, j] += alpha * sum_r a[i * R + r] b[j * R + r] for the K x K entries (j >= i only when `upper`: a
 * diagonal block then also adds its entries below the diagonal), in 4 x 4 blocks of dot products; a and
 * b are panels of K rows rounded up to 4 (the padding rows zero), R values each.
 */
export function addPanelProducts(
  c: Float64Array,
  K: number,
  a: Float64Array,
  b: Float64Array,
  R: number,
  alpha: number,
  upper: boolean,
): void {
  const edge = new Float64Array(16);
  for (let i = 0; i < K; i += 4) {
    const a0 = i * R;
    const a1 = a0 + R;
    const a2 = a1 + R;
    const a3 = a2 + R;
    for (let j = upper ? i : 0; j < K; j += 4) {
      const b0 = j * R;
      const b1 = b0 + R;
      const b2 = b1 + R;
      const b3 = b2 + R;
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0; // prettier-ignore
      let s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0; // prettier-ignore
      for (let r = 0; r < R; r++) {
        const x0 = a[a0 + r];
        const x1 = a[a1 + r];
        const x2 = a[a2 + r];
        const x3 = a[a3 + r];
        const y0 = b[b0 + r];
        const y1 = b[b1 + r];
        const y2 = b[b2 + r];
        const y3 = b[b3 + r];
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
        c[o] += alpha * s00;
        c[o + 1] += alpha * s01;
        c[o + 2] += alpha * s02;
        c[o + 3] += alpha * s03;
        o += K;
        c[o] += alpha * s10;
        c[o + 1] += alpha * s11;
        c[o + 2] += alpha * s12;
        c[o + 3] += alpha * s13;
        o += K;
        c[o] += alpha * s20;
        c[o + 1] += alpha * s21;
        c[o + 2] += alpha * s22;
        c[o + 3] += alpha * s23;
        o += K;
        c[o] += alpha * s30;
        c[o + 1] += alpha * s31;
        c[o + 2] += alpha * s32;
        c[o + 3] += alpha * s33;
      } else {
        // a ragged last block: only the rows and columns inside K
        edge.set([s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33]);
        for (let u = 0; u < 4 && i + u < K; u++)
          for (let v = 0; v < 4 && j + v < K; v++) c[(i + u) * K + j + v] += alpha * edge[u * 4 + v];
      }
    }
  }
}
