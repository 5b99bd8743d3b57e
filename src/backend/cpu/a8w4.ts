/**
 * A8W4 dynamic (torchao's 8da4w semantics): each input row (token) is quantized on the fly to int8
 * asymmetric in [-128, 127] with an fp32 scale and zero point; weights are int4 symmetric in [-8, 7]
 * with one fp32 scale per (output, group). Each group's dot product is exact integer arithmetic, then
 * scaled. K that is not a multiple of the group is zero-padded (torchao refuses such layers).
 */
import { QuantizedLinear } from "../../formats/types.js";
import { roundHalfEven } from "../../tensor/round.js";
import { GptqError } from "../../util/errors.js";
import { addBias, checkInput } from "./gemm.js";
import type { Linear } from "./linear.js";
import { checkQuantizedLinear, groupOrder } from "./quant-linear.js";
import { WasmGemm, wasmGemm } from "./wasm-gemm.js";

const FP32_EPS = 2 ** -23;
/** int4 weight bytes per pass (see forward) */
const SLAB_BYTES = 256 * 1024;
/** activation rows widened into the WebAssembly memory at a time */
const ROW_CHUNK = 256; // torch.finfo(torch.float32).eps, the floor of every scale

export interface TokenQuant {
  /** rows x K codes in [-128, 127] */
  q: Int8Array;
  /** per row: x ≈ scale * (q - zero) */
  scale: Float32Array;
  zero: Int32Array;
}

/**
 * Per-token asymmetric int8 (torchao choose_qparams_affine + quantize_affine, ASYMMETRIC, fp32):
 * the range is widened to include 0, scale = (max - min) / 255 (at least fp32 eps),
 * zero = -128 - round(min / scale), q = clamp(round(x * (1 / scale)) + zero, -128, 127), rounding half to even.
 */
export function quantizePerToken(x: Float32Array, rows: number, K: number): TokenQuant {
  const q = new Int8Array(rows * K);
  const scale = new Float32Array(rows);
  const zero = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * K;
    let min = 0;
    let max = 0;
    for (let k = 0; k < K; k++) {
      const v = x[o + k];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const s = Math.max(Math.fround(Math.fround(max - min) / 255), FP32_EPS);
    const z = Math.min(127, Math.max(-128, -128 - roundHalfEven(Math.fround(min / s))));
    const inv = Math.fround(1 / s);
    for (let k = 0; k < K; k++) {
      const v = roundHalfEven(Math.fround(x[o + k] * inv)) + z;
      q[o + k] = v < -128 ? -128 : v > 127 ? 127 : v;
    }
    scale[r] = s;
    zero[r] = z;
  }
  return { q, scale, zero };
}

/**
 * Symmetric int4 of one fp weight group (torchao SYMMETRIC, quant range [-8, 7]):
 * scale = max(|min|, |max|) / 7.5 (at least fp32 eps), code = clamp(round(w / scale), -8, 7).
 */
function quantizeGroup(w: Float32Array, off: number, len: number, codes: Int8Array, cOff: number): number {
  let amax = 0;
  for (let k = 0; k < len; k++) amax = Math.max(amax, Math.abs(w[off + k]));
  const s = Math.max(Math.fround(amax / 7.5), FP32_EPS);
  const inv = Math.fround(1 / s);
  for (let k = 0; k < len; k++) {
    const v = roundHalfEven(Math.fround(w[off + k] * inv));
    codes[cOff + k] = v < -8 ? -8 : v > 7 ? 7 : v;
  }
  return s;
}

export class A8W4Linear implements Linear {
  /** groups along K */
  readonly groups: number;
  /** K rounded up to whole groups */
  readonly paddedK: number;
  /** sum of the codes of each (output, group), for the activation zero-point correction */
  private readonly codeSums: Int32Array;

  /**
   * codes: N x paddedK int4 values in [-8, 7] (padding columns zero), scales: N x groups;
   * inputPosition[k] is where input k sits in the padded group-ordered row (k itself without act-order).
   */
  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    readonly groupSize: number,
    readonly codes: Int8Array,
    readonly scales: Float32Array,
    readonly inputPosition?: Int32Array,
    readonly bias?: Float32Array,
  ) {
    const K = inFeatures;
    const N = outFeatures;
    if (!Number.isInteger(groupSize) || groupSize <= 0)
      throw new GptqError(`A8W4: bad group size ${groupSize}`);
    this.groups = Math.ceil(K / groupSize);
    this.paddedK = this.groups * groupSize;
    if (codes.length !== N * this.paddedK)
      throw new GptqError(`A8W4: ${codes.length} codes, expected ${N} x ${this.paddedK}`);
    if (scales.length !== N * this.groups)
      throw new GptqError(`A8W4: ${scales.length} scales, expected ${N} x ${this.groups}`);
    if (inputPosition && inputPosition.length !== K)
      throw new GptqError(`A8W4: ${inputPosition.length} input positions, expected ${K}`);
    if (bias && bias.length !== N) throw new GptqError(`A8W4: bias has ${bias.length} values, expected ${N}`);
    const gs = groupSize;
    this.codeSums = new Int32Array(N * this.groups);
    for (let n = 0; n < N; n++)
      for (let g = 0; g < this.groups; g++) {
        let s = 0;
        const o = n * this.paddedK + g * gs;
        for (let k = 0; k < gs; k++) {
          const c = codes[o + k];
          if (c < -8 || c > 7) throw new GptqError(`A8W4: code ${c} is outside [-8, 7]`);
          s += c;
        }
        this.codeSums[n * this.groups + g] = s;
      }
  }

  /** Quantizes an fp weight (N x K, nn.Linear orientation) group-wise as torchao's 8da4w does. */
  static fromWeight(
    weight: Float32Array,
    N: number,
    K: number,
    groupSize: number,
    bias?: Float32Array,
  ): A8W4Linear {
    if (weight.length !== N * K)
      throw new GptqError(`A8W4: weight has ${weight.length} values, expected ${N} x ${K}`);
    const gs = groupSize === -1 ? K : groupSize;
    const G = Math.ceil(K / gs);
    const Kp = G * gs;
    const codes = new Int8Array(N * Kp);
    const scales = new Float32Array(N * G);
    for (let n = 0; n < N; n++)
      for (let g = 0; g < G; g++) {
        const k0 = g * gs;
        scales[n * G + g] = quantizeGroup(weight, n * K + k0, Math.min(gs, K - k0), codes, n * Kp + k0);
      }
    return new A8W4Linear(K, N, gs, codes, scales, undefined, bias);
  }

  /**
   * From a symmetric 4-bit QuantizedLinear (every zero point 8): int4 value = code - 8, its fp scales.
   * Act-order layers are supported: the inputs are permuted into group order before quantization.
   */
  static fromQuantized(layer: QuantizedLinear): A8W4Linear {
    const G = checkQuantizedLinear(layer);
    const { inFeatures: K, outFeatures: N } = layer;
    if (layer.bits !== 4) throw new GptqError(`A8W4 needs 4-bit weights, this layer has ${layer.bits} bits`);
    for (let i = 0; i < layer.zeros.length; i++)
      if (layer.zeros[i] !== 8)
        throw new GptqError(
          `A8W4 needs symmetric weights (zero point 8), found zero point ${layer.zeros[i]}`,
        );
    const gs = layer.groupSize === -1 ? K : layer.groupSize;
    const order = groupOrder(layer.gIdx, G);
    const position = new Int32Array(K);
    for (let g = 0; g < G; g++) {
      const count = order.starts[g + 1] - order.starts[g];
      if (count > gs)
        throw new GptqError(`A8W4: g_idx puts ${count} inputs in group ${g}, more than the group size ${gs}`);
      for (let j = order.starts[g]; j < order.starts[g + 1]; j++)
        position[order.perm ? order.perm[j] : j] = g * gs + (j - order.starts[g]);
    }
    const Kp = G * gs;
    const codes = new Int8Array(N * Kp);
    const scales = new Float32Array(N * G);
    for (let k = 0; k < K; k++) {
      const p = position[k];
      const cOff = k * N;
      for (let n = 0; n < N; n++) codes[n * Kp + p] = layer.codes[cOff + n] - 8;
    }
    for (let g = 0; g < G; g++) for (let n = 0; n < N; n++) scales[n * G + g] = layer.scales[g * N + n];
    const identity = position.every((p, k) => p === k);
    return new A8W4Linear(K, N, gs, codes, scales, identity ? undefined : position, layer.bias);
  }

  /**
   * The same weights as a symmetric 4-bit QuantizedLinear (codes + 8, K x N, g_idx restoring any
   * act-order), e.g. to store or to run dequantized for comparison.
   */
  toQuantized(): QuantizedLinear {
    const { inFeatures: K, outFeatures: N, groups: G, paddedK: Kp, groupSize: gs, inputPosition: pos } = this;
    const codes = new Uint8Array(K * N);
    const gIdx = new Int32Array(K);
    for (let k = 0; k < K; k++) {
      const p = pos ? pos[k] : k;
      gIdx[k] = Math.floor(p / gs);
      for (let n = 0; n < N; n++) codes[k * N + n] = this.codes[n * Kp + p] + 8;
    }
    const scales = new Float32Array(G * N);
    for (let g = 0; g < G; g++) for (let n = 0; n < N; n++) scales[g * N + n] = this.scales[n * G + g];
    return {
      inFeatures: K,
      outFeatures: N,
      bits: 4,
      groupSize: gs,
      codes,
      scales,
      zeros: new Uint8Array(G * N).fill(8),
      gIdx,
      bias: this.bias,
    };
  }

  /** x laid out as padded rows (rows x paddedK, zeros in the padding), in group order */
  private padded(x: Float32Array, rows: number): Float32Array {
    const { inFeatures: K, paddedK: Kp, inputPosition: pos } = this;
    if (Kp === K && !pos) return x;
    const out = new Float32Array(rows * Kp);
    for (let r = 0; r < rows; r++)
      for (let k = 0; k < K; k++) out[r * Kp + (pos ? pos[k] : k)] = x[r * K + k];
    return out;
  }

  /**
   * The same products with the int16 WebAssembly kernel: a chunk of activation rows and a slab of weight
   * rows are widened to int16 in the module's memory (each group padded to 8 values), one kernel call per
   * group gives exact int32 dot products, and the scales are applied here.
   */
  private forwardWasm(
    k16: WasmGemm,
    q: Int8Array,
    scale: Float32Array,
    zero: Int32Array,
    rows: number,
  ): Float32Array {
    const { outFeatures: N, paddedK: Kp, groups: G, groupSize: gs, codes, scales, codeSums } = this;
    const gsPad = Math.ceil(gs / 8) * 8;
    const Kq = G * gsPad;
    const rowsPad = Math.ceil(Math.min(rows, ROW_CHUNK) / 4) * 4;
    const slab = Math.max(2, Math.floor(SLAB_BYTES / (2 * Kq)) & ~1);
    const slabPad = Math.min(slab, Math.ceil(N / 2) * 2);
    // layout in int16 units: activations, weights, then the int32 output tile
    const wAt = rowsPad * Kq;
    const oAt = wAt + slabPad * Kq;
    const bytes = 2 * oAt + 4 * rowsPad * slabPad;
    const mem = k16.memory;
    if (mem.buffer.byteLength < bytes) mem.grow(Math.ceil((bytes - mem.buffer.byteLength) / 65536));
    const h16 = new Int16Array(mem.buffer);
    const h32 = new Int32Array(mem.buffer, 2 * oAt, rowsPad * slabPad);
    /** row `src` of a K-padded int8 matrix into int16 row `dst` of the group-padded layout */
    const widen = (from: Int8Array, src: number, dst: number) => {
      if (gsPad === gs) h16.set(from.subarray(src * Kp, (src + 1) * Kp), dst * Kq);
      else
        for (let g = 0; g < G; g++) {
          const d = dst * Kq + g * gsPad;
          h16.set(from.subarray(src * Kp + g * gs, src * Kp + (g + 1) * gs), d);
          h16.fill(0, d + gs, d + gsPad);
        }
    };
    const out = new Float32Array(rows * N);
    const y = new Float64Array(rowsPad * slabPad);
    for (let r0 = 0; r0 < rows; r0 += ROW_CHUNK) {
      const rc = Math.min(ROW_CHUNK, rows - r0);
      const rcPad = Math.ceil(rc / 4) * 4;
      for (let r = 0; r < rc; r++) widen(q, r0 + r, r);
      h16.fill(0, rc * Kq, rcPad * Kq);
      for (let n0 = 0; n0 < N; n0 += slab) {
        const nc = Math.min(slab, N - n0);
        const ncPad = Math.ceil(nc / 2) * 2;
        for (let n = 0; n < nc; n++) widen(codes, n0 + n, rowsPad + n);
        h16.fill(0, wAt + nc * Kq, wAt + ncPad * Kq);
        y.fill(0);
        for (let g = 0; g < G; g++) {
          const off = 2 * g * gsPad;
          k16.dot16(off, 2 * Kq, rcPad, 2 * wAt + off, 2 * Kq, ncPad, 2 * gsPad, 2 * oAt, 4 * ncPad);
          for (let r = 0; r < rc; r++) {
            const zx = zero[r0 + r];
            for (let n = 0; n < nc; n++) {
              const so = (n0 + n) * G + g;
              y[r * ncPad + n] += scales[so] * ((h32[r * ncPad + n] - zx * codeSums[so]) | 0);
            }
          }
        }
        for (let r = 0; r < rc; r++) {
          const sx = scale[r0 + r];
          for (let n = 0; n < nc; n++) out[(r0 + r) * N + n0 + n] = sx * y[r * ncPad + n];
        }
      }
    }
    addBias(out, rows, this.bias);
    return out;
  }

  /** rows r..r+3, outputs n0..n1: the four rows share every weight load */
  private tile4(
    q: Int8Array,
    scale: Float32Array,
    zero: Int32Array,
    r: number,
    n0: number,
    n1: number,
    out: Float32Array,
  ): void {
    const { outFeatures: N, paddedK: Kp, groups: G, groupSize: gs, codes, scales, codeSums } = this;
    const x0 = r * Kp;
    const x1 = x0 + Kp;
    const x2 = x1 + Kp;
    const x3 = x2 + Kp;
    const z0 = zero[r];
    const z1 = zero[r + 1];
    const z2 = zero[r + 2];
    const z3 = zero[r + 3];
    for (let n = n0; n < n1; n++) {
      const wo = n * Kp;
      const so = n * G;
      let y0 = 0;
      let y1 = 0;
      let y2 = 0;
      let y3 = 0;
      for (let g = 0; g < G; g++) {
        const k0 = g * gs;
        // sum (qx - zx) * w = sum qx * w - zx * sum w, in int32
        let a0 = 0;
        let a1 = 0;
        let a2 = 0;
        let a3 = 0;
        for (let k = k0; k < k0 + gs; k++) {
          const w = codes[wo + k];
          a0 = (a0 + q[x0 + k] * w) | 0;
          a1 = (a1 + q[x1 + k] * w) | 0;
          a2 = (a2 + q[x2 + k] * w) | 0;
          a3 = (a3 + q[x3 + k] * w) | 0;
        }
        const s = scales[so + g];
        const cs = codeSums[so + g];
        y0 += s * ((a0 - z0 * cs) | 0);
        y1 += s * ((a1 - z1 * cs) | 0);
        y2 += s * ((a2 - z2 * cs) | 0);
        y3 += s * ((a3 - z3 * cs) | 0);
      }
      out[r * N + n] = scale[r] * y0;
      out[(r + 1) * N + n] = scale[r + 1] * y1;
      out[(r + 2) * N + n] = scale[r + 2] * y2;
      out[(r + 3) * N + n] = scale[r + 3] * y3;
    }
  }

  /** one row r, outputs n0..n1 */
  private tile1(
    q: Int8Array,
    sx: number,
    zx: number,
    r: number,
    n0: number,
    n1: number,
    out: Float32Array,
  ): void {
    const { outFeatures: N, paddedK: Kp, groups: G, groupSize: gs, codes, scales, codeSums } = this;
    const xo = r * Kp;
    for (let n = n0; n < n1; n++) {
      const wo = n * Kp;
      const so = n * G;
      let y = 0;
      for (let g = 0; g < G; g++) {
        const k0 = g * gs;
        let a0 = 0;
        let a1 = 0;
        let k = k0;
        for (; k + 2 <= k0 + gs; k += 2) {
          a0 = (a0 + q[xo + k] * codes[wo + k]) | 0;
          a1 = (a1 + q[xo + k + 1] * codes[wo + k + 1]) | 0;
        }
        if (k < k0 + gs) a0 = (a0 + q[xo + k] * codes[wo + k]) | 0;
        y += scales[so + g] * ((a0 + a1 - zx * codeSums[so + g]) | 0);
      }
      out[r * N + n] = sx * y;
    }
  }

  forward(x: Float32Array, rows: number): Float32Array {
    checkInput(this, x, rows);
    const { outFeatures: N, paddedK: Kp } = this;
    // zero padding never changes a row's range, which already includes 0
    const { q, scale, zero } = quantizePerToken(this.padded(x, rows), rows, Kp);
    const k16 = wasmGemm();
    if (k16) return this.forwardWasm(k16, q, scale, zero, rows);
    const out = new Float32Array(rows * N);
    // a slab of weight rows stays in cache while every row of activations passes over it
    const slab = Math.max(1, Math.floor(SLAB_BYTES / Kp));
    for (let n0 = 0; n0 < N; n0 += slab) {
      const n1 = Math.min(N, n0 + slab);
      let r = 0;
      for (; r + 4 <= rows; r += 4) this.tile4(q, scale, zero, r, n0, n1, out);
      for (; r < rows; r++) this.tile1(q, scale[r], zero[r], r, n0, n1, out);
    }
    addBias(out, rows, this.bias);
    return out;
  }
}
