/**
 * The GPTQ Hessian H = 2/n sum_x x x^T over calibration inputs, accumulated batch by batch with AutoGPTQ's
 * running rescale (H *= n / (n + rows) before adding the new rows scaled by 2 / (n + rows)), in float64.
 * n counts input rows (tokens). Only the upper triangle is accumulated; `H` mirrors it on read.
 */
import { GptqError } from "../util/errors.js";

/** Rows transposed per step: a K x ROWS float64 panel that stays in cache while H is swept. */
const ROWS = 64;

export class HessianAccumulator {
  private readonly h: Float64Array;
  private n = 0;
  private mirrored = true;
  private readonly panel: Float64Array;

  constructor(readonly inFeatures: number) {
    if (!(Number.isInteger(inFeatures) && inFeatures > 0))
      throw new GptqError(`in_features must be a positive integer, got ${inFeatures}`);
    this.h = new Float64Array(inFeatures * inFeatures);
    this.panel = new Float64Array(inFeatures * ROWS);
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
    if (!(Number.isInteger(rows) && rows >= 0) || x.length !== rows * K)
      throw new GptqError(`Hessian input has ${x.length} values, expected rows x K = ${rows} x ${K}`);
    if (rows === 0) return;
    for (let i = 0; i < x.length; i++)
      if (!Number.isFinite(x[i]))
        throw new GptqError(`calibration input has a non-finite value at row ${Math.floor(i / K)}`);
    const total = this.n + rows;
    const keep = this.n / total;
    const h = this.h;
    if (keep !== 1) for (let i = 0; i < K; i++) for (let j = i; j < K; j++) h[i * K + j] *= keep;
    const alpha = 2 / total;
    for (let r0 = 0; r0 < rows; r0 += ROWS) this.addPanel(x, r0, Math.min(ROWS, rows - r0), alpha);
    this.n = total;
    this.mirrored = false;
  }

  /** h[i, j] += alpha * sum_r x[r, i] x[r, j] for j >= i, over rows r0 .. r0 + R. */
  private addPanel(x: Float32Array, r0: number, R: number, alpha: number): void {
    const K = this.inFeatures;
    const p = this.panel; // p[k * R + r] = x[r0 + r, k]
    for (let r = 0; r < R; r++) {
      const src = (r0 + r) * K;
      for (let k = 0; k < K; k++) p[k * R + r] = x[src + k];
    }
    const h = this.h;
    // 2 x 2 register blocks of dot products over the panel's rows.
    for (let i = 0; i < K; i += 2) {
      const a0 = i * R;
      const two = i + 1 < K;
      const a1 = a0 + R;
      for (let j = i; j < K; j += 2) {
        const b0 = j * R;
        const b1 = b0 + R;
        const jj = j + 1 < K;
        let s00 = 0;
        let s01 = 0;
        let s10 = 0;
        let s11 = 0;
        if (two && jj) {
          for (let r = 0; r < R; r++) {
            const x0 = p[a0 + r];
            const x1 = p[a1 + r];
            const y0 = p[b0 + r];
            const y1 = p[b1 + r];
            s00 += x0 * y0;
            s01 += x0 * y1;
            s10 += x1 * y0;
            s11 += x1 * y1;
          }
        } else {
          for (let r = 0; r < R; r++) {
            const x0 = p[a0 + r];
            const y0 = p[b0 + r];
            s00 += x0 * y0;
            if (jj) s01 += x0 * p[b1 + r];
            if (two) s10 += p[a1 + r] * y0;
          }
        }
        h[i * K + j] += alpha * s00;
        if (jj) h[i * K + j + 1] += alpha * s01;
        // (i + 1, j) lies in the upper triangle only when j > i
        if (two && j > i) h[(i + 1) * K + j] += alpha * s10;
        if (two && jj) h[(i + 1) * K + j + 1] += alpha * s11;
      }
    }
  }
}
