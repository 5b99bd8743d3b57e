/**
 * Per-group uniform quantizer parameters (scale, zero point) as AutoGPTQ's `Quantizer.find_params` defines
 * them, with scales rounded to fp16 before any code is computed so a packed checkpoint holds exactly the
 * weights we quantized to.
 *
 * Data layout: a group's columns are consecutive rows of length N in a K x N buffer (column k of the
 * nn.Linear weight is contiguous), so every loop runs over the N output rows at once.
 */
import { Bits } from "../formats/types.js";
import { RowSearcher, asymZero, halfScale, quantCode, searchRows } from "../tensor/quant-grid.js";
import { GptqError } from "../util/errors.js";

export { halfScale, quantCode };

/**
 * How a group's range is chosen: "minmax" (the range of the weights), "mse" (AutoGPTQ's shrink grid
 * minimising sum |w - q|^norm), "hessian" (the same grid minimising the Hessian-weighted squared error
 * sum_k h_k (w_k - q_k)^2, with h_k the weight GPTQ gives column k's error), "gptq" (the same grid, each
 * candidate scored by GPTQ's own loss over the group: its columns quantized in order, each one's error
 * fed back into the rest of the group; about groupSize^2 / 2 x N per candidate, so keep it to grouped
 * layers). "hessian" and "gptq" need a Hessian, so GPTQ only; for symmetric groups they also try ranges
 * slightly wider than the weights': with AutoGPTQ's symmetric scale 2 max|w| / maxq the top code stands
 * for only (maxq - 1) / maxq of max|w|.
 */
export type ClipMethod = "minmax" | "mse" | "hessian" | "gptq";

export interface QuantizerOptions {
  bits: Bits;
  /** -1 = one group over all of K */
  groupSize: number;
  sym: boolean;
  /** shorthand for clip: "mse" (AutoGPTQ's `mse=True`) */
  mse?: boolean;
  clip?: ClipMethod;
  /** grid points per unit of shrink (AutoGPTQ: 100) */
  grid?: number;
  /** the largest fraction of the range the grid may cut away (AutoGPTQ: 0.8) */
  maxShrink?: number;
  /** the error norm of the "mse" search (AutoGPTQ: 2.4) */
  norm?: number;
  /**
   * asymmetric only: after the joint shrink, search the lower and upper ends of the range separately
   * (two rounds of coordinate descent over the same grid)
   */
  splitRange?: boolean;
}

export interface Quantizer {
  bits: Bits;
  maxq: number;
  groupSize: number;
  sym: boolean;
  clip: ClipMethod;
  grid: number;
  maxShrink: number;
  norm: number;
  splitRange: boolean;
}

const BITS = [2, 3, 4, 8];

/** Validates options and fills in AutoGPTQ's defaults. */
export function resolveQuantizer(opts: QuantizerOptions, inFeatures: number): Quantizer {
  if (!BITS.includes(opts.bits)) throw new GptqError(`bits must be 2, 3, 4 or 8, got ${opts.bits}`);
  const g = opts.groupSize;
  if (!(g === -1 || (Number.isInteger(g) && g > 0)))
    throw new GptqError(`group size must be -1 or a positive integer, got ${g}`);
  if (g > inFeatures)
    throw new GptqError(`group size ${g} is larger than in_features ${inFeatures}; use -1 for one group`);
  const clip = opts.clip ?? (opts.mse ? "mse" : "minmax");
  if (!["minmax", "mse", "hessian", "gptq"].includes(clip))
    throw new GptqError(`clip must be "minmax", "mse", "hessian" or "gptq", got "${String(clip)}"`);
  const grid = opts.grid ?? 100;
  const maxShrink = opts.maxShrink ?? 0.8;
  const norm = opts.norm ?? 2.4;
  if (!(Number.isInteger(grid) && grid > 0))
    throw new GptqError(`grid must be a positive integer, got ${grid}`);
  if (!(maxShrink > 0 && maxShrink < 1)) throw new GptqError(`maxShrink must be in (0, 1), got ${maxShrink}`);
  if (!(norm > 0)) throw new GptqError(`norm must be positive, got ${norm}`);
  return {
    bits: opts.bits,
    maxq: 2 ** opts.bits - 1,
    groupSize: g,
    sym: opts.sym,
    clip,
    grid,
    maxShrink,
    norm,
    splitRange: opts.splitRange ?? false,
  };
}

/**
 * The candidates of findParams' searches: the range's ends scaled by 1 - i / grid for 0 <= i < shrinks
 * (AutoGPTQ's grid, down to 1 - maxShrink), then, for the Hessian-aware searches of symmetric groups, by
 * 1 + i / grid for 1 <= i <= widens: with AutoGPTQ's symmetric scale 2 max|w| / maxq the top code stands
 * for only (maxq - 1) / maxq of max |w|, so they widen the range until it is covered.
 */
export interface SearchGrid {
  grid: number;
  shrinks: number;
  widens: number;
}

export function searchGrid(q: Quantizer): SearchGrid {
  const widening = q.sym && (q.clip === "hessian" || q.clip === "gptq");
  return {
    grid: q.grid,
    shrinks: Math.floor(q.maxShrink * q.grid),
    widens: widening ? Math.ceil((q.maxq / (q.maxq - 1) - 1) * q.grid) : 0,
  };
}

/** Adds each row's error under candidate parameters (scale[n], zero[n]) to err[n]. */
export type Scorer = (scale: Float64Array, zero: Float64Array, err: Float64Array) => void;

/**
 * Scale and zero point of each of the N rows over `cols` columns starting at `offset` in `src`
 * (column k of the group at src[offset + k * N ...]). Clip "hessian" weighs column k's squared error
 * by `colWeights[k]`; clip "gptq" scores candidates with `scorer`. Results go to scale[n], zero[n].
 */
export function findParams(
  q: Quantizer,
  src: Float32Array,
  offset: number,
  cols: number,
  N: number,
  scale: Float32Array,
  zero: Float32Array,
  colWeights?: Float64Array,
  scorer?: Scorer,
  /** how clip "mse" and "hessian" search the rows (default: one row after another on this thread) */
  rows: RowSearcher = searchRows,
): void {
  const { maxq, sym } = q;
  const xmin = new Float64Array(N);
  const xmax = new Float64Array(N);
  for (let k = 0; k < cols; k++) {
    const base = offset + k * N;
    for (let n = 0; n < N; n++) {
      const v = src[base + n];
      if (v < xmin[n]) xmin[n] = v;
      if (v > xmax[n]) xmax[n] = v;
    }
  }
  const symZero = (maxq + 1) / 2;
  for (let n = 0; n < N; n++) {
    if (sym) {
      xmax[n] = Math.max(-xmin[n], xmax[n]);
      if (xmin[n] < 0) xmin[n] = -xmax[n];
    }
    if (xmin[n] === 0 && xmax[n] === 0) {
      xmin[n] = -1;
      xmax[n] = 1;
    }
    const s = halfScale((xmax[n] - xmin[n]) / maxq);
    scale[n] = s;
    zero[n] = sym ? symZero : asymZero(xmin[n], s, maxq);
  }
  if (q.clip === "minmax") return;
  if (q.clip === "gptq" && !scorer)
    throw new GptqError('clip "gptq" scores candidates by GPTQ\'s loss: use it with GPTQ');
  if ((q.clip === "hessian" || q.clip === "gptq") && (!colWeights || colWeights.length < cols))
    throw new GptqError(`clip "${q.clip}" needs per-column Hessian weights: use it with GPTQ`);
  // AutoGPTQ keeps a symmetric row's range at [0, max] when no weight is negative, which leaves half
  // the codes unused; the Hessian-aware searches start from [-max, max] (shrinking reaches [0, max]'s scale).
  if (sym && q.clip !== "mse") for (let n = 0; n < N; n++) if (xmin[n] === 0) xmin[n] = -xmax[n];
  if (q.clip !== "gptq") {
    rows(
      { maxq, sym, norm: q.clip === "mse" ? q.norm : 2, ...searchGrid(q), splitRange: q.splitRange },
      src,
      offset,
      cols,
      N,
      xmin,
      xmax,
      scale,
      zero,
      q.clip === "hessian" ? colWeights : undefined,
    );
    return;
  }
  // GPTQ's loss over the group, for every row at once
  const score = scorer as Scorer;

  // Candidates shrink the range's ends by factors lo[n], hi[n] (jointly unless splitRange).
  const best = new Float64Array(N).fill(Infinity);
  const bestLo = new Float64Array(N).fill(1);
  const bestHi = new Float64Array(N).fill(1);
  const err = new Float64Array(N);
  const s1 = new Float64Array(N);
  const z1 = new Float64Array(N);
  const tryCandidates = (lo: (n: number) => number, hi: (n: number) => number) => {
    for (let n = 0; n < N; n++) {
      const l = lo(n) * xmin[n];
      const s = halfScale((hi(n) * xmax[n] - l) / maxq);
      s1[n] = s;
      z1[n] = sym ? symZero : asymZero(l, s, maxq);
    }
    err.fill(0);
    score(s1, z1, err);
    for (let n = 0; n < N; n++) {
      if (err[n] < best[n]) {
        best[n] = err[n];
        bestLo[n] = lo(n);
        bestHi[n] = hi(n);
        scale[n] = s1[n];
        zero[n] = z1[n];
      }
    }
  };
  const grid = searchGrid(q);
  const shrinks = Array.from({ length: grid.shrinks }, (_, i) => 1 - i / grid.grid);
  for (const p of shrinks)
    tryCandidates(
      () => p,
      () => p,
    );
  for (let i = 1; i <= grid.widens; i++)
    tryCandidates(
      () => 1 + i / grid.grid,
      () => 1 + i / grid.grid,
    );
  if (!q.splitRange || sym) return;
  for (let round = 0; round < 2; round++) {
    const hiNow = Float64Array.from(bestHi);
    for (const p of shrinks)
      tryCandidates(
        () => p,
        (n) => hiNow[n],
      );
    const loNow = Float64Array.from(bestLo);
    for (const p of shrinks)
      tryCandidates(
        (n) => loNow[n],
        () => p,
      );
  }
}
