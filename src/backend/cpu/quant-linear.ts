/**
 * A quantized linear layer run by dequantizing one block of input rows (rows of K sharing a group) at a
 * time into a small fp32 buffer and multiplying with it, so only the codes (one byte per weight), the
 * group scales and zeros are held — never an fp32 copy of the whole weight.
 */
import { QuantizedLinear, numGroups } from "../../formats/types.js";
import { GptqError } from "../../util/errors.js";
import { addBias, checkInput, gemmNT } from "./gemm.js";
import type { Linear } from "./linear.js";

/** most rows of K dequantized at once (a group of -1 spans all of K) */
const BLOCK_ROWS = 128;

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
  private readonly order: GroupOrder;
  /** [start, end) positions in group order and the group of each block */
  private readonly blocks: { start: number; end: number; group: number }[] = [];
  private readonly maxBlock: number;

  constructor(readonly layer: QuantizedLinear) {
    const G = checkQuantizedLinear(layer);
    this.inFeatures = layer.inFeatures;
    this.outFeatures = layer.outFeatures;
    this.order = groupOrder(layer.gIdx, G);
    let maxBlock = 0;
    for (let g = 0; g < G; g++)
      for (let s = this.order.starts[g]; s < this.order.starts[g + 1]; s += BLOCK_ROWS) {
        const end = Math.min(s + BLOCK_ROWS, this.order.starts[g + 1]);
        this.blocks.push({ start: s, end, group: g });
        maxBlock = Math.max(maxBlock, end - s);
      }
    this.maxBlock = maxBlock;
  }

  forward(x: Float32Array, rows: number): Float32Array {
    checkInput(this, x, rows);
    const { inFeatures: K, outFeatures: N } = this;
    const { codes, scales, zeros } = this.layer;
    const { perm } = this.order;
    const xs = perm ? gatherColumns(x, rows, perm) : x;
    const out = new Float32Array(rows * N);
    const wt = new Float32Array(N * this.maxBlock); // one block, transposed to N x len
    let first = true;
    for (const { start, end, group } of this.blocks) {
      const len = end - start;
      const gOff = group * N;
      for (let j = start; j < end; j++) {
        const k = perm ? perm[j] : j;
        const cOff = k * N;
        const col = j - start;
        for (let n = 0; n < N; n++)
          wt[n * len + col] = scales[gOff + n] * (codes[cOff + n] - zeros[gOff + n]);
      }
      gemmNT(xs, start, K, rows, wt, len, N, len, out, !first);
      first = false;
    }
    addBias(out, rows, this.layer.bias);
    return out;
  }
}
