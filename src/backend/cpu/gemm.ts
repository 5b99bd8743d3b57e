/** The fp32 matrix kernel and small helpers shared by the CPU linear layers. */
import { GptqError } from "../../util/errors.js";

/** Throws unless x holds `rows` rows of the layer's K inputs. */
export function checkInput(
  layer: { inFeatures: number; outFeatures: number },
  x: Float32Array,
  rows: number,
): void {
  if (!Number.isInteger(rows) || rows < 0 || x.length < rows * layer.inFeatures)
    throw new GptqError(
      `linear ${layer.outFeatures}x${layer.inFeatures}: input of ${x.length} values is not ${rows} rows of ${layer.inFeatures}`,
    );
}

/** Columns of W processed per pass: a slab of W this wide stays in L2 while every row tile streams over it. */
const N_SLAB_BYTES = 256 * 1024;

/**
 * out[r, n] (+)= sum_k x[xOff + r * xStride + k] * w[n * wStride + k] for k < kLen.
 * Tiles of 4 rows x 2 columns keep 8 independent accumulators in registers (JS numbers are doubles, so
 * each dot product is accumulated in float64 and rounded to fp32 once). Ragged edges fall back to
 * narrower tiles.
 */
export function gemmNT(
  x: Float32Array,
  xOff: number,
  xStride: number,
  rows: number,
  w: Float32Array,
  wStride: number,
  N: number,
  kLen: number,
  out: Float32Array,
  accumulate: boolean,
): void {
  const slab = Math.max(2, Math.floor(N_SLAB_BYTES / (4 * Math.max(1, kLen))) & ~1);
  for (let n0 = 0; n0 < N; n0 += slab) {
    const n1 = Math.min(N, n0 + slab);
    let r = 0;
    for (; r + 4 <= rows; r += 4) {
      const x0 = xOff + r * xStride;
      const x1 = x0 + xStride;
      const x2 = x1 + xStride;
      const x3 = x2 + xStride;
      let n = n0;
      for (; n + 2 <= n1; n += 2) {
        const w0 = n * wStride;
        const w1 = w0 + wStride;
        let a00 = 0,
          a01 = 0,
          a10 = 0,
          a11 = 0,
          a20 = 0,
          a21 = 0,
          a30 = 0,
          a31 = 0;
        for (let k = 0; k < kLen; k++) {
          const b0 = w[w0 + k];
          const b1 = w[w1 + k];
          const v0 = x[x0 + k];
          const v1 = x[x1 + k];
          const v2 = x[x2 + k];
          const v3 = x[x3 + k];
          a00 += v0 * b0;
          a01 += v0 * b1;
          a10 += v1 * b0;
          a11 += v1 * b1;
          a20 += v2 * b0;
          a21 += v2 * b1;
          a30 += v3 * b0;
          a31 += v3 * b1;
        }
        const o = r * N + n;
        if (accumulate) {
          out[o] += a00;
          out[o + 1] += a01;
          out[o + N] += a10;
          out[o + N + 1] += a11;
          out[o + 2 * N] += a20;
          out[o + 2 * N + 1] += a21;
          out[o + 3 * N] += a30;
          out[o + 3 * N + 1] += a31;
        } else {
          out[o] = a00;
          out[o + 1] = a01;
          out[o + N] = a10;
          out[o + N + 1] = a11;
          out[o + 2 * N] = a20;
          out[o + 2 * N + 1] = a21;
          out[o + 3 * N] = a30;
          out[o + 3 * N + 1] = a31;
        }
      }
      for (; n < n1; n++) {
        const w0 = n * wStride;
        let a0 = 0,
          a1 = 0,
          a2 = 0,
          a3 = 0;
        for (let k = 0; k < kLen; k++) {
          const b = w[w0 + k];
          a0 += x[x0 + k] * b;
          a1 += x[x1 + k] * b;
          a2 += x[x2 + k] * b;
          a3 += x[x3 + k] * b;
        }
        const o = r * N + n;
        if (accumulate) {
          out[o] += a0;
          out[o + N] += a1;
          out[o + 2 * N] += a2;
          out[o + 3 * N] += a3;
        } else {
          out[o] = a0;
          out[o + N] = a1;
          out[o + 2 * N] = a2;
          out[o + 3 * N] = a3;
        }
      }
    }
    for (; r < rows; r++) {
      const x0 = xOff + r * xStride;
      for (let n = n0; n < n1; n++) {
        const w0 = n * wStride;
        // two interleaved partial sums shorten the dependency chain
        let a0 = 0,
          a1 = 0;
        let k = 0;
        for (; k + 2 <= kLen; k += 2) {
          a0 += x[x0 + k] * w[w0 + k];
          a1 += x[x0 + k + 1] * w[w0 + k + 1];
        }
        if (k < kLen) a0 += x[x0 + k] * w[w0 + k];
        const o = r * N + n;
        if (accumulate) out[o] += a0 + a1;
        else out[o] = a0 + a1;
      }
    }
  }
}

export function addBias(out: Float32Array, rows: number, bias: Float32Array | undefined): void {
  if (!bias) return;
  const N = bias.length;
  for (let r = 0; r < rows; r++) {
    const o = r * N;
    for (let n = 0; n < N; n++) out[o + n] += bias[n];
  }
}
