/**
 * A quantized linear layer run by dequantizing one block of input rows (rows of K sharing a group) at a
 * time into a small fp32 buffer and multiplying with it, so only the codes (one byte per weight), the
 * group scales and zeros are held — never an fp32 copy of the whole weight.
 */
import { QuantizedLinear, numGroups } from "../../formats/types.js";
import { GptqError } from "../../util/errors.js";
import { WeightRows, addBias, checkInput, gemmNTRows } from "./gemm.js";
import type { Linear } from "./linear.js";

/** most rows of K dequantized at once (a group of -1 spans all of K) */
const BLOCK_ROWS = 128;
/** below this many rows, dequantizing a block costs more than the product it feeds */
const FEW_ROWS = 4;

/**
 * The input rows of each group, contiguous: perm lists the rows of K ordered by group (stable), and group
 * g owns perm[starts[g] .. starts[g+1]). perm is undefined when g_idx is already ascending (no act-order),
 * so callers can skip gathering activations.
 */
export interface GroupOrder {
  perm: Int32Array | undefined;
  starts: Int32Array;
}

export function groupOrder(gIdx: Int32Array, groups: number): GroupOrder {
  const K = gIdx.length;
  const starts = new Int32Array(groups + 1);
  let sorted = true;
  for (let k = 0; k < K; k++) {
    const g = gIdx[k];
    if (!(g >= 0 && g < groups)) throw new GptqError(`g_idx[${k}] = ${g} is outside [0, ${groups})`);
    if (k > 0 && g < gIdx[k - 1]) sorted = false;
    starts[g + 1]++;
  }
  for (let g = 0; g < groups; g++) starts[g + 1] += starts[g];
  if (sorted) return { perm: undefined, starts };
  const next = starts.slice(0, groups);
  const perm = new Int32Array(K);
  for (let k = 0; k < K; k++) perm[next[gIdx[k]]++] = k;
  return { perm, starts };
}

/** x (rows x K) with its columns reordered by perm: out[r, j] = x[r, perm[j]] */
export function gatherColumns(x: Float32Array, rows: number, perm: Int32Array): Float32Array {
  const K = perm.length;
  const out = new Float32Array(rows * K);
  for (let r = 0; r < rows; r++) {
    const o = r * K;
    for (let j = 0; j < K; j++) out[o + j] = x[o + perm[j]];
  }
  return out;
}

/** Throws unless the arrays of a QuantizedLinear have the sizes its shape implies. */
export function checkQuantizedLinear(q: QuantizedLinear): number {
  const { inFeatures: K, outFeatures: N } = q;
  const G = numGroups(K, q.groupSize);
  const bad = (what: string, got: number, want: number) =>
    new GptqError(`quantized layer ${N}x${K}: ${what} has ${got} values, expected ${want}`);
  if (q.codes.length !== K * N) throw bad("codes", q.codes.length, K * N);
  if (q.scales.length !== G * N) throw bad("scales", q.scales.length, G * N);
  if (q.zeros.length !== G * N) throw bad("zeros", q.zeros.length, G * N);
  if (q.gIdx.length !== K) throw bad("g_idx", q.gIdx.length, K);
  if (q.bias && q.bias.length !== N) throw bad("bias", q.bias.length, N);
  return G;
}

export class QuantLinear implements Linear {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly bits: number;
  readonly groupSize: number;
  private readonly order: GroupOrder;
  /** codes transposed to N x K with K in group order, so a block of a group is contiguous per output */
  private readonly codes: Uint8Array;
  private readonly scales: Float32Array;
  private readonly zeros: Uint8Array;
  private readonly bias?: Float32Array;
  /** [start, end) positions in group order and the group of each block */
  private readonly blocks: { start: number; end: number; group: number }[] = [];

  constructor(layer: QuantizedLinear) {
    const G = checkQuantizedLinear(layer);
    const K = layer.inFeatures;
    const N = layer.outFeatures;
    this.inFeatures = K;
    this.outFeatures = N;
    this.bits = layer.bits;
    this.groupSize = layer.groupSize;
    this.order = groupOrder(layer.gIdx, G);
    const { perm, starts } = this.order;
    this.codes = new Uint8Array(N * K);
    for (let j = 0; j < K; j++) {
      const src = (perm ? perm[j] : j) * N;
      for (let n = 0; n < N; n++) this.codes[n * K + j] = layer.codes[src + n];
    }
    this.scales = layer.scales;
    this.zeros = layer.zeros;
    this.bias = layer.bias;
    for (let g = 0; g < G; g++)
      for (let s = starts[g]; s < starts[g + 1]; s += BLOCK_ROWS)
        this.blocks.push({ start: s, end: Math.min(s + BLOCK_ROWS, starts[g + 1]), group: g });
  }

  forward(x: Float32Array, rows: number): Float32Array {
    checkInput(this, x, rows);
    const { inFeatures: K, outFeatures: N, codes, scales, zeros } = this;
    const { perm } = this.order;
    const xs = perm ? gatherColumns(x, rows, perm) : x;
    if (rows < FEW_ROWS) return this.forwardFewRows(xs, rows);
    const out = new Float32Array(rows * N);
    let first = true;
    for (const { start, end, group } of this.blocks) {
      const len = end - start;
      const gOff = group * N;
      // the block's weights, dequantized straight into the kernel's operand buffer
      const dequant: WeightRows = (dst, dstOff, dstStride, n0, n1) => {
        for (let n = n0; n < n1; n++) {
          const s = scales[gOff + n];
          const z = zeros[gOff + n];
          const src = n * K + start;
          const d = dstOff + (n - n0) * dstStride;
          for (let c = 0; c < len; c++) dst[d + c] = s * (codes[src + c] - z);
        }
      };
      gemmNTRows(xs, start, K, rows, dequant, N, len, out, !first);
      first = false;
    }
    addBias(out, rows, this.bias);
    return out;
  }

  /**
   * For decode-sized inputs, no dequantized block: per output and group, the dot product of x with the
   * codes, then y[n] += scale[g, n] * (dot - zero[g, n] * sum of x over the group).
   */
  private forwardFewRows(xs: Float32Array, rows: number): Float32Array {
    const { inFeatures: K, outFeatures: N, codes, scales, zeros } = this;
    const { starts } = this.order;
    const G = starts.length - 1;
    const out = new Float32Array(rows * N);
    const xsum = new Float64Array(G);
    for (let r = 0; r < rows; r++) {
      const xo = r * K;
      for (let g = 0; g < G; g++) {
        let sum = 0;
        for (let j = starts[g]; j < starts[g + 1]; j++) sum += xs[xo + j];
        xsum[g] = sum;
      }
      for (let n = 0; n < N; n++) {
        const co = n * K;
        let y = 0;
        for (let g = 0; g < G; g++) {
          let a0 = 0;
          let a1 = 0;
          let j = starts[g];
          const end = starts[g + 1];
          for (; j + 2 <= end; j += 2) {
            a0 += xs[xo + j] * codes[co + j];
            a1 += xs[xo + j + 1] * codes[co + j + 1];
          }
          if (j < end) a0 += xs[xo + j] * codes[co + j];
          y += scales[g * N + n] * (a0 + a1 - zeros[g * N + n] * xsum[g]);
        }
        out[r * N + n] = y;
      }
    }
    addBias(out, rows, this.bias);
    return out;
  }
}
