/** The fp32 matrix kernel and small helpers shared by the CPU linear layers. */
import { GptqError } from "../../util/errors.js";
import { wasmGemm } from "./wasm-gemm.js";

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
 * Scalar version of gemmNT, used where WebAssembly SIMD is unavailable.
 * Tiles of 4 rows x 2 columns keep 8 independent accumulators in registers (JS numbers are doubles, so
 * each dot product is accumulated in float64 and rounded to fp32 once). Ragged edges fall back to
 * narrower tiles.
 */
export function gemmNTScalar(
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

/** rows of x per kernel call: bounds the module's memory by ROW_CHUNK x K plus one slab of W */
const ROW_CHUNK = 256;

const round = (v: number, m: number) => Math.ceil(v / m) * m;

/**
 * Writes rows n0..n1 of W (kLen values each) to dst: row n at dst[dstOff + (n - n0) * dstStride].
 * Lets a quantized layer dequantize straight into the kernel's operand buffer.
 */
export type WeightRows = (
  dst: Float32Array,
  dstOff: number,
  dstStride: number,
  n0: number,
  n1: number,
) => void;

/**
 * out[r, n] (+)= sum_k x[xOff + r * xStride + k] * w[n * wStride + k] for k < kLen (out is rows x N).
 * Runs the WebAssembly SIMD kernel on zero-padded copies of a chunk of rows and a slab of W at a time
 * (fp32 lanes, 4 partial sums per dot product), else the scalar kernel.
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
  if (!wasmGemm()) {
    gemmNTScalar(x, xOff, xStride, rows, w, wStride, N, kLen, out, accumulate);
    return;
  }
  const copy: WeightRows = (dst, dstOff, dstStride, n0, n1) => {
    for (let n = n0; n < n1; n++)
      dst.set(w.subarray(n * wStride, n * wStride + kLen), dstOff + (n - n0) * dstStride);
  };
  gemmNTRows(x, xOff, xStride, rows, copy, N, kLen, out, accumulate);
}

/** gemmNT with the rows of W produced on demand by `weights` (a slab at a time, never all of W). */
export function gemmNTRows(
  x: Float32Array,
  xOff: number,
  xStride: number,
  rows: number,
  weights: WeightRows,
  N: number,
  kLen: number,
  out: Float32Array,
  accumulate: boolean,
): void {
  const k4 = wasmGemm();
  if (!k4) {
    const slab = Math.max(1, Math.floor(N_SLAB_BYTES / (4 * Math.max(1, kLen))));
    const w = new Float32Array(Math.min(N, slab) * kLen);
    const part = new Float32Array(rows * Math.min(N, slab));
    for (let n0 = 0; n0 < N; n0 += slab) {
      const nc = Math.min(slab, N - n0);
      weights(w, 0, kLen, n0, n0 + nc);
      gemmNTScalar(x, xOff, xStride, rows, w, kLen, nc, kLen, part, false);
      for (let r = 0; r < rows; r++) {
        const o = r * N + n0;
        if (accumulate) for (let n = 0; n < nc; n++) out[o + n] += part[r * nc + n];
        else for (let n = 0; n < nc; n++) out[o + n] = part[r * nc + n];
      }
    }
    return;
  }
  if (rows === 0 || N === 0) return;
  if (kLen === 0) {
    if (!accumulate) out.fill(0, 0, rows * N);
    return;
  }
  const kPad = round(kLen, 4);
  const rowsPad = round(Math.min(rows, ROW_CHUNK), 4);
  const slab = Math.min(round(N, 2), Math.max(2, Math.floor(N_SLAB_BYTES / (4 * kPad)) & ~1));
  // layout (in floats): x chunk, W slab, output tile
  const xAt = 0;
  const wAt = rowsPad * kPad;
  const oAt = wAt + slab * kPad;
  const bytes = 4 * (oAt + rowsPad * slab);
  const mem = k4.memory;
  if (mem.buffer.byteLength < bytes) mem.grow(Math.ceil((bytes - mem.buffer.byteLength) / 65536));
  const heap = new Float32Array(mem.buffer);
  for (let r0 = 0; r0 < rows; r0 += ROW_CHUNK) {
    const rc = Math.min(ROW_CHUNK, rows - r0);
    const rcPad = round(rc, 4);
    for (let r = 0; r < rc; r++) {
      const src = xOff + (r0 + r) * xStride;
      heap.set(x.subarray(src, src + kLen), xAt + r * kPad);
      if (kPad > kLen) heap.fill(0, xAt + r * kPad + kLen, xAt + (r + 1) * kPad);
    }
    heap.fill(0, xAt + rc * kPad, xAt + rcPad * kPad);
    for (let n0 = 0; n0 < N; n0 += slab) {
      const nc = Math.min(slab, N - n0);
      const ncPad = round(nc, 2);
      weights(heap, wAt, kPad, n0, n0 + nc);
      if (kPad > kLen) for (let n = 0; n < nc; n++) heap.fill(0, wAt + n * kPad + kLen, wAt + (n + 1) * kPad);
      heap.fill(0, wAt + nc * kPad, wAt + ncPad * kPad);
      k4.gemm(4 * xAt, 4 * kPad, rcPad, 4 * wAt, 4 * kPad, ncPad, 4 * kPad, 4 * oAt, 4 * ncPad);
      for (let r = 0; r < rc; r++) {
        const o = (r0 + r) * N + n0;
        const t = oAt + r * ncPad;
        if (accumulate) for (let n = 0; n < nc; n++) out[o + n] += heap[t + n];
        else for (let n = 0; n < nc; n++) out[o + n] = heap[t + n];
      }
    }
  }
}
