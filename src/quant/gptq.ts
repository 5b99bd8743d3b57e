/**
 * GPTQ (Frantar et al.) as AutoGPTQ's `GPTQ.fasterquant` runs it: dead columns, damping, the upper
 * Cholesky factor of H^-1, column-by-column quantization with error feedback inside blocks of
 * `blockSize` columns and lazy updates of the columns after each block, act-order and static groups.
 *
 * Working layout: the weight transposed to K x N (Float32Array), so each weight column is a contiguous
 * row and every update is a run over the N output rows. GPTQ treats output rows independently: row n's
 * updates only ever involve row n.
 */
import { dequantize } from "../formats/dequantize.js";
import { QuantizedLinear, numGroups } from "../formats/types.js";
import { upperCholeskyOfInverse } from "../tensor/linalg.js";
import { RowSearcher } from "../tensor/quant-grid.js";
import { GptqError } from "../util/errors.js";
import { checkWeight, transpose } from "./layer.js";
import { RefitArrays, RefitInput, RefitSystems } from "../tensor/refit-input.js";
import { refitScales, solveRefit } from "./refit.js";
import {
  Quantizer,
  QuantizerOptions,
  Scorer,
  SearchGrid,
  findParams,
  quantCode,
  resolveQuantizer,
  searchGrid,
} from "./quantizer.js";

export interface GptqOptions extends QuantizerOptions {
  /** act-order: quantize columns by descending Hessian diagonal */
  descAct?: boolean;
  /** compute every group's parameters up front on the unpermuted weight */
  staticGroups?: boolean;
  /** dampening as a fraction of the mean Hessian diagonal (default 0.01); raised when Cholesky fails */
  damp?: number;
  /** columns per lazy-update block (default 128) */
  blockSize?: number;
  /**
   * dynamic groups: find a group's parameters on the weights as GPTQ has updated them when the group
   * begins. Default false: as AutoGPTQ, on the weights as they stood when the current block began (the
   * two differ when a group starts inside a block).
   */
  freshGroups?: boolean;
  /**
   * rounds of refinement (default 0): refit every scale by least squares on the output error with the
   * codes fixed, then quantize again with GPTQ using the refit scales; the best round is kept
   */
  refine?: number;
  /** where the factorisation and the column sweeps run (default: here, on the CPU) */
  backend?: GptqBackend;
}

/**
 * One sweep of GPTQ over the columns in processing order, on weights it owns: codes and the group used
 * per processing position, group parameters (G x N `scales`/`zeros`) found on demand.
 */
export interface GptqSweep {
  readonly codes: Uint8Array;
  readonly groupOf: Int32Array;
  /** Parameters of group g over the columns at processing positions `pos` (ascending), from w as it is. */
  fixGroup(g: number, pos: Int32Array): void;
  /** The sweep; returns AutoGPTQ's loss. */
  run(blockSize: number, groups: "fixed" | "dynamic", gs: number, how: SweepGroups): number;
  dispose?(): void;
}

export interface SweepGroups {
  /** the group of processing position c when groups are fixed */
  staticOf: (c: number) => number;
  /** dynamic groups from the weights as updated when the group begins (else as at its block's start) */
  fresh: boolean;
}

/**
 * A layer's weight and Hessian where a backend keeps them. GPTQ prepares them through this (dead inputs,
 * act-order) and factorises; the CPU keeps host arrays, a GPU device buffers.
 */
export interface GptqProblem {
  readonly N: number;
  readonly K: number;
  /** H's diagonal as it stands */
  diagonal(): Float64Array;
  /** inputs never seen in calibration: H[k, k] := 1 and weight column k := 0 */
  clearDead(dead: readonly number[]): void;
  /** reorders H and the weight: position a takes column perm[a] */
  permute(perm: Int32Array): void;
  /** a host copy of the working weight, K x N in the current order */
  weights(): Float32Array;
  /**
   * Factorises H damped by `damp` x its mean diagonal, raising `damp` until it is positive definite;
   * returns the damping used, the damped matrix, and a maker of sweeps.
   */
  factor(damp: number): GptqFactor;
  dispose?(): void;
}

export interface GptqFactor {
  damp: number;
  /** least-squares refit of `scales` against the damped matrix (see refit.ts); the error after it */
  refit(r: RefitArrays): number;
  /** a sweep over the problem's own working weight, or over `w` (K x N, processing order) when given */
  sweep(q: Quantizer, scales: Float32Array, zeros: Float32Array, w?: Float32Array): GptqSweep;
  dispose?(): void;
}

/** Where GPTQ's dense work runs: the factorisation of the damped Hessian and the sweeps. */
export interface GptqBackend {
  readonly name: string;
  /** the problem of weight W (N x K) and Hessian H (K x K), both left unmodified */
  problem(W: Float32Array, H: Float64Array, N: number, K: number): GptqProblem;
}

/** Host arrays: the weight transposed to K x N, H as float64 (the caller's until it is changed). */
export class HostProblem implements GptqProblem {
  private w: Float32Array;
  private h: Float64Array;
  private ownsH = false;

  constructor(
    W: Float32Array,
    H: Float64Array,
    readonly N: number,
    readonly K: number,
    private readonly steps: CpuDenseSteps = SERIAL_STEPS,
  ) {
    this.w = transpose(W, N, K, steps.allocate?.(K * N));
    this.h = H;
  }

  /** H as prepared (K x K, processing order) */
  get hessian(): Float64Array {
    return this.h;
  }

  /** the working weight (K x N, processing order), updated in place by the sweep */
  get weight(): Float32Array {
    return this.w;
  }

  diagonal(): Float64Array {
    const { h, K } = this;
    return Float64Array.from({ length: K }, (_, k) => h[k * K + k]);
  }

  clearDead(dead: readonly number[]): void {
    const { N, K } = this;
    if (dead.length && !this.ownsH) [this.h, this.ownsH] = [this.h.slice(), true];
    for (const k of dead) {
      this.h[k * K + k] = 1;
      this.w.fill(0, k * N, (k + 1) * N);
    }
  }

  permute(perm: Int32Array): void {
    const { N, K, h, w } = this;
    const hp = new Float64Array(K * K);
    const wp = this.steps.allocate?.(K * N) ?? new Float32Array(K * N);
    for (let a = 0; a < K; a++) {
      const pa = perm[a];
      for (let b = 0; b < K; b++) hp[a * K + b] = h[pa * K + perm[b]];
      wp.set(w.subarray(pa * N, (pa + 1) * N), a * N);
    }
    [this.h, this.ownsH] = [hp, true];
    this.w = wp;
  }

  weights(): Float32Array {
    return Float32Array.from(this.w);
  }

  factor(damp: number): GptqFactor {
    const { N, K } = this;
    const { steps } = this;
    const { U, damp: used, damped } = dampedInverseFactor(this.h, K, damp, steps.upperCholeskyOfInverse);
    /** H w of the refine rounds' weight, kept from round to round */
    let reuse: { w: Float32Array; Hw: Float64Array } | undefined;
    return {
      damp: used,
      refit: (r) => {
        const input = { ...r, H: damped() };
        if (!steps.refitSystems) return refitScales(input);
        const systems = steps.refitSystems(input, reuse?.w === r.w ? reuse.Hw : undefined);
        reuse = { w: r.w, Hw: systems.Hw };
        return solveRefit(systems, r.scales, N, r.G);
      },
      sweep: (q, scales, zeros, w) =>
        new Sweep(q, steps.workspace(w ?? this.w), U, N, K, scales, zeros, steps),
    };
  }
}

/**
 * The dense steps of the CPU sweep. The serial ones below run on the calling thread; a parallel set
 * (backend/cpu) runs them on every core with the same results up to float rounding.
 */
export interface CpuDenseSteps {
  /** how clip "mse" and "hessian" search a group's rows (default: one after another, on this thread) */
  searchRows?: RowSearcher;
  /**
   * how the scale refit's normal equations are built (default: refit.ts's, on this thread); Hw, H w from
   * an earlier call with the same H and w, is returned for the next
   */
  refitSystems?: (r: RefitInput, Hw?: Float64Array) => RefitSystems & { Hw: Float64Array };
  /** U with (h + shift I)^-1 = U^T U, or undefined when that is not positive definite (h is not modified) */
  upperCholeskyOfInverse(h: Float64Array, n: number, shift: number): Float64Array | undefined;
  /** the working weight (K x N) the sweep updates in place: w itself, or a copy the steps can reach */
  workspace(w: Float32Array): Float32Array;
  /** a new zeroed array where the steps can reach it, for the problem's own working weight (default: plain) */
  allocate?(length: number): Float32Array;
  /** Columns [i2, end) after block [i1, i2): w[j, :] -= sum_i U[i1 + i, j] err[i, :]. */
  lazyUpdate(
    w: Float32Array,
    err: Float32Array,
    U: Float64Array,
    N: number,
    K: number,
    i1: number,
    i2: number,
    end: number,
  ): void;
}

const SERIAL_STEPS: CpuDenseSteps = {
  upperCholeskyOfInverse,
  workspace: (w) => w,
  lazyUpdate,
};

/** The CPU backend: float64 factorisation, float32 weights, its dense steps serial or on every core. */
export function cpuGptqBackend(steps: CpuDenseSteps = SERIAL_STEPS): GptqBackend {
  return { name: "cpu", problem: (W, H, N, K) => new HostProblem(W, H, N, K, steps) };
}

export const CPU_GPTQ: GptqBackend = cpuGptqBackend();

export interface GptqResult {
  layer: QuantizedLinear;
  /**
   * AutoGPTQ's loss: sum over weights of (w - q)^2 / (2 d^2), d the diagonal of H^-1's Cholesky factor
   * (with refine: of the GPTQ pass kept, before its scales were refit)
   */
  loss: number;
  /** the dampening fraction actually used, after automatic raises */
  damp: number;
  /** the dequantized weight, N x K */
  Q: Float32Array;
}

/** The largest dampening fraction tried: failures double it, starting from 0.01 when 0 was asked for. */
export const DAMP_LIMIT = 100;

export function nextDamp(d: number): number {
  return d <= 0 ? 0.01 : d * 2;
}

/** Factorises with the requested damping, raising it until H + damp * mean(diag) I is positive definite. */
export function dampedInverseFactor(
  H: Float64Array,
  K: number,
  damp: number,
  factorize: CpuDenseSteps["upperCholeskyOfInverse"] = upperCholeskyOfInverse,
): { U: Float64Array; damp: number; damped: () => Float64Array } {
  let mean = 0;
  for (let i = 0; i < K; i++) mean += H[i * K + i];
  mean /= K;
  for (let d = damp; d <= DAMP_LIMIT; d = nextDamp(d)) {
    const U = factorize(H, K, d * mean);
    if (!U) continue;
    let work: Float64Array | undefined;
    const damped = () => {
      if (work) return work;
      work = H.slice();
      for (let i = 0; i < K; i++) work[i * K + i] += d * mean;
      return work;
    };
    return { U, damp: d, damped };
  }
  throw notPositiveDefinite();
}

/** The error when no damping up to DAMP_LIMIT makes the Hessian positive definite. */
export function notPositiveDefinite(): GptqError {
  return new GptqError(
    `the Hessian is not positive definite even with damp ${DAMP_LIMIT} x its mean diagonal: ` +
      "the calibration inputs are degenerate (non-finite or all zero?)",
  );
}

function checkHessian(H: Float64Array, K: number): void {
  if (H.length !== K * K) throw new GptqError(`Hessian has ${H.length} values, expected K x K = ${K} x ${K}`);
}

function checkDiagonal(diag: Float64Array): void {
  diag.forEach((d, i) => {
    if (!(Number.isFinite(d) && d >= 0))
      throw new GptqError(`Hessian diagonal ${i} is ${d}: a Hessian of inputs is finite and non-negative`);
  });
}

/** Descending by value, ties by index (a stable order). */
function argsortDescending(v: Float64Array): Int32Array {
  const idx = Array.from({ length: v.length }, (_, i) => i);
  idx.sort((a, b) => v[b] - v[a] || a - b);
  return Int32Array.from(idx);
}

export function gptqQuantize(
  W: Float32Array,
  N: number,
  K: number,
  H: Float64Array,
  opts: GptqOptions,
): GptqResult {
  checkWeight(W, N, K);
  checkHessian(H, K);
  const backend = opts.backend ?? CPU_GPTQ;
  const problem = backend.problem(W, H, N, K);
  try {
    const r = gptqSolve(problem, opts);
    return { ...r, Q: dequantize(r.layer) };
  } finally {
    problem.dispose?.();
  }
}

/**
 * GPTQ on a prepared problem (weight and Hessian wherever the backend keeps them, left modified); the
 * quantized layer without its dequantized weight, which the caller makes where it needs it.
 */
export function gptqSolve(problem: GptqProblem, opts: GptqOptions): Omit<GptqResult, "Q"> {
  const { N, K } = problem;
  const q = resolveQuantizer(opts, K);
  const descAct = opts.descAct ?? false;
  const staticGroups = opts.staticGroups ?? false;
  const damp = opts.damp ?? 0.01;
  const blockSize = opts.blockSize ?? 128;
  const refine = opts.refine ?? 0;
  if (!(Number.isInteger(refine) && refine >= 0))
    throw new GptqError(`refine must be a non-negative integer, got ${refine}`);
  if (!(damp >= 0 && Number.isFinite(damp))) throw new GptqError(`damp must be >= 0, got ${damp}`);
  if (!(Number.isInteger(blockSize) && blockSize > 0))
    throw new GptqError(`block size must be a positive integer, got ${blockSize}`);

  const gs = q.groupSize === -1 ? K : q.groupSize;
  const G = numGroups(K, q.groupSize);
  const scales = new Float32Array(G * N);
  const zeros = new Float32Array(G * N);
  const needsHessian = q.clip === "hessian" || q.clip === "gptq";

  // One group over all of K: AutoGPTQ takes its parameters from the weight as given, before dead columns.
  if (q.groupSize === -1 && !needsHessian) findParams(q, problem.weights(), 0, K, N, scales, zeros);

  // Dead inputs (never non-zero in calibration): their weights cannot matter, so zero them.
  const diag = problem.diagonal();
  checkDiagonal(diag);
  const dead: number[] = [];
  for (let k = 0; k < K; k++) if (diag[k] === 0) dead.push(k);
  if (dead.length) {
    problem.clearDead(dead);
    for (const k of dead) diag[k] = 1;
  }

  let perm: Int32Array | undefined;
  if (descAct) {
    perm = argsortDescending(diag);
    problem.permute(perm);
  }

  const factor = problem.factor(damp);
  const used = factor.damp;
  const w0 = refine > 0 ? problem.weights() : undefined;
  const sweeps: GptqSweep[] = [];
  const newSweep = (weights?: Float32Array) => {
    const s = factor.sweep(q, scales, zeros, weights);
    sweeps.push(s);
    return s;
  };
  try {
    let sweep = newSweep();

    // Groups fixed before the sweep: static ones on the unpermuted weight, or the single group of -1.
    if (staticGroups && q.groupSize !== -1) {
      const position = new Int32Array(K);
      for (let a = 0; a < K; a++) position[perm ? perm[a] : a] = a;
      for (let g = 0; g < G; g++) {
        const k0 = g * gs;
        const pos = Int32Array.from({ length: Math.min(gs, K - k0) }, (_, i) => position[k0 + i]).sort();
        sweep.fixGroup(g, pos);
      }
    } else if (q.groupSize === -1 && needsHessian) {
      sweep.fixGroup(
        0,
        Int32Array.from({ length: K }, (_, i) => i),
      );
    }

    let loss = sweep.run(blockSize, q.groupSize === -1 || staticGroups ? "fixed" : "dynamic", gs, {
      staticOf: staticGroups && q.groupSize !== -1 ? (c) => Math.floor((perm ? perm[c] : c) / gs) : () => 0,
      fresh: opts.freshGroups ?? false,
    });

    if (w0) {
      const refit = (s: GptqSweep) =>
        factor.refit({
          w: w0,
          codes: s.codes,
          groupOf: s.groupOf,
          scales,
          zeros,
          N,
          K,
          G,
        });
      let best = { error: refit(sweep), sweep, loss, scales: Float32Array.from(scales) };
      for (let round = 0; round < refine; round++) {
        const again = newSweep(Float32Array.from(w0));
        const groupOf = best.sweep.groupOf;
        const l = again.run(blockSize, "fixed", gs, { staticOf: (c) => groupOf[c], fresh: false });
        const error = refit(again);
        if (!(error < best.error)) break;
        best = { error, sweep: again, loss: l, scales: Float32Array.from(scales) };
      }
      scales.set(best.scales);
      sweep = best.sweep;
      loss = best.loss;
    }

    // Back to the original column order.
    const codes = new Uint8Array(K * N);
    const gIdx = new Int32Array(K);
    for (let a = 0; a < K; a++) {
      const k = perm ? perm[a] : a;
      codes.set(sweep.codes.subarray(a * N, (a + 1) * N), k * N);
      gIdx[k] = sweep.groupOf[a];
    }
    const layer: QuantizedLinear = {
      inFeatures: K,
      outFeatures: N,
      bits: q.bits,
      groupSize: q.groupSize,
      codes,
      scales,
      zeros: Uint8Array.from(zeros),
      gIdx,
    };
    return { layer, loss, damp: used };
  } finally {
    for (const s of sweeps) s.dispose?.();
    factor.dispose?.();
  }
}

/** columns per sub-block of a sweep's block: their error feedback to each other column by column */
const SUB_BLOCK = 16;

/**
 * The GPTQ sweep over the columns in processing order: w (K x N) is updated in place, codes and the
 * group used are recorded per processing position, group parameters go to scales/zeros (G x N).
 */
class Sweep implements GptqSweep {
  readonly codes: Uint8Array;
  readonly groupOf: Int32Array;
  /** 1 / d_k^2: the weight GPTQ's loss gives column k's error (d_k = U[k, k]) */
  private readonly colWeight: Float64Array;

  constructor(
    private readonly q: Quantizer,
    private readonly w: Float32Array,
    private readonly U: Float64Array,
    private readonly N: number,
    private readonly K: number,
    private readonly scales: Float32Array,
    private readonly zeros: Float32Array,
    private readonly steps: CpuDenseSteps,
  ) {
    this.codes = new Uint8Array(K * N);
    this.groupOf = new Int32Array(K);
    this.colWeight = new Float64Array(K);
    for (let k = 0; k < K; k++) this.colWeight[k] = 1 / (U[k * K + k] * U[k * K + k]);
  }

  /** Parameters of group g over the columns at processing positions `pos` (ascending), from w as it is. */
  fixGroup(g: number, pos: Int32Array): void {
    const { N } = this;
    const buf = new Float32Array(pos.length * N);
    pos.forEach((p, i) => buf.set(this.w.subarray(p * N, (p + 1) * N), i * N));
    this.findGroup(g, buf, pos);
  }

  /** Group g's parameters from its columns' current values `buf` (in the order of `pos`). */
  private findGroup(g: number, buf: Float32Array, pos: Int32Array): void {
    findGroupParams(
      this.q,
      buf,
      pos,
      this.N,
      this.K,
      this.colWeight,
      () => this.U,
      this.scales,
      this.zeros,
      g,
      this.steps.searchRows,
    );
  }

  run(blockSize: number, groups: "fixed" | "dynamic", gs: number, how: SweepGroups): number {
    const { q, w, U, N, K } = this;
    const { maxq } = q;
    const err = new Float32Array(blockSize * N);
    const blockStart = new Float32Array(blockSize * N);
    const groupBuf = groups === "dynamic" ? new Float32Array(gs * N) : undefined;
    let current = 0;
    let scale = this.scales.subarray(0, N);
    let zero = this.zeros.subarray(0, N);
    let loss = 0;

    for (let i1 = 0; i1 < K; i1 += blockSize) {
      const i2 = Math.min(i1 + blockSize, K);
      const count = i2 - i1;
      if (groupBuf && !how.fresh) blockStart.set(w.subarray(i1 * N, i2 * N));
      // Sub-blocks [s1, s2): each column feeds its error to the rest of its sub-block here, and a
      // finished sub-block to the rest of the block at once (a lazy update); dynamic groups begin one.
      let s1 = i1;
      let s2 = i1;
      for (let i = 0; i < count; i++) {
        const c = i1 + i;
        if (c === s2) {
          if (c > s1) this.steps.lazyUpdate(w, err.subarray((s1 - i1) * N), U, N, K, s1, c, i2);
          s1 = c;
          s2 = Math.min(i2, c + SUB_BLOCK);
          if (groupBuf) s2 = Math.min(s2, (Math.floor(c / gs) + 1) * gs);
        }
        const g = groups === "dynamic" ? Math.floor(c / gs) : how.staticOf(c);
        if (groupBuf && c % gs === 0) {
          const cols = Math.min(gs, K - c);
          this.groupColumns(groupBuf, c, cols, i1, i2, how.fresh ? undefined : blockStart, err);
          this.findGroup(
            g,
            groupBuf.subarray(0, cols * N),
            Int32Array.from({ length: cols }, (_, t) => c + t),
          );
        }
        if (g !== current) {
          scale = this.scales.subarray(g * N, (g + 1) * N);
          zero = this.zeros.subarray(g * N, (g + 1) * N);
          current = g;
        }
        this.groupOf[c] = g;
        const d = U[c * K + c];
        const row = c * N;
        const e = i * N;
        for (let n = 0; n < N; n++) {
          const x = w[row + n];
          const code = quantCode(x, scale[n], zero[n], maxq);
          this.codes[row + n] = code;
          const diff = (x - scale[n] * (code - zero[n])) / d;
          loss += diff * diff;
          err[e + n] = diff;
        }
        // Error feedback to the rest of the sub-block.
        for (let j = c + 1; j < s2; j++) {
          const hj = U[c * K + j];
          if (hj === 0) continue;
          const r = j * N;
          for (let n = 0; n < N; n++) w[r + n] -= hj * err[e + n];
        }
      }
      this.steps.lazyUpdate(w, err, U, N, K, i1, i2, K);
    }
    return loss / 2;
  }

  /**
   * Columns c .. c + cols of a dynamic group into buf: as they stood at the block start (AutoGPTQ), or
   * (blockStart undefined) as updated so far, adding the current block's pending updates to those
   * past its end.
   */
  private groupColumns(
    buf: Float32Array,
    c: number,
    cols: number,
    i1: number,
    i2: number,
    blockStart: Float32Array | undefined,
    err: Float32Array,
  ): void {
    const { w, U, N, K } = this;
    const inBlock = Math.min(cols, i2 - c);
    if (blockStart) buf.set(blockStart.subarray((c - i1) * N, (c - i1 + inBlock) * N));
    else buf.set(w.subarray(c * N, (c + inBlock) * N));
    if (cols === inBlock) return;
    buf.set(w.subarray(i2 * N, (c + cols) * N), inBlock * N);
    if (blockStart) return;
    for (let j = i2; j < c + cols; j++) {
      const r = (j - c) * N;
      for (let t = 0; t < c - i1; t++) {
        const hj = U[(i1 + t) * K + j];
        const e = t * N;
        for (let n = 0; n < N; n++) buf[r + n] -= hj * err[e + n];
      }
    }
  }
}

/**
 * The dense work of a sweep a whole block at a time, where the weights live elsewhere (a GPU): `BlockSweep`
 * runs GPTQ's group logic here and asks the engine for rows, block sweeps and lazy updates.
 */
export interface BlockEngine {
  /** rows [r0, r1) of the working weight (processing order) as they stand */
  rowsOf(r0: number, r1: number): Float32Array;
  /** groups g0 ..= g1 of the host's `scales`/`zeros` (G x N) into the engine */
  setParams(scales: Float32Array, zeros: Float32Array, g0: number, g1: number): void;
  /**
   * Optional: min-max parameters of group g from rows [c, c + cols) as they stand, found by the engine
   * exactly as `findParams` finds them (clip "minmax"), without the rows leaving it.
   */
  minmaxParams?(c: number, cols: number, g: number, maxq: number, sym: boolean): void;
  /**
   * Optional: the same for the searches of clip "mse" and "hessian" (column k's error weighing
   * 1 / U[k, k]^2, k the processing position).
   */
  searchParams?(c: number, cols: number, g: number, search: ClipSearch): void;
  /** groups g0 ..= g1 of the parameters back into the host's arrays (G x N) */
  getParams(scales: Float32Array, zeros: Float32Array, g0: number, g1: number): void;
  /**
   * Quantizes columns [i1, i2) with groups `groupOf[c]`, feeding each column's error into the block's later
   * ones; the sum of squared scaled errors adds up in the engine.
   */
  block(i1: number, i2: number, groupOf: Int32Array, maxq: number): void;
  /** The columns after block [i1, i2) take its errors: W[i2:] -= U[i1:i2, i2:]^T Err. */
  lazy(i1: number, i2: number): void;
  /** the sum of squared scaled errors since the last call */
  takeLoss(): number;
  /** the codes (K x N, processing order) once the sweep has run */
  codes(): Uint8Array;
  dispose(): void;
}

/** findParams' search of clip "mse" or "hessian", for an engine that runs it. */
export interface ClipSearch extends SearchGrid {
  maxq: number;
  sym: boolean;
  clip: "mse" | "hessian";
  norm: number;
  splitRange: boolean;
}

/**
 * A sweep whose block work an engine does: group parameters are found at the start of the block in which a
 * group begins (from the weights as they stood then, as AutoGPTQ does), by the engine where it finds them
 * for the clip, here otherwise. Fresh dynamic groups end blocks at group boundaries, so every group begins
 * a block: the same result up to rounding order.
 */
export class BlockSweep implements GptqSweep {
  readonly groupOf: Int32Array;
  private codesCache?: Uint8Array;
  private whole?: Float32Array;

  constructor(
    private readonly q: Quantizer,
    private readonly engine: BlockEngine,
    /** 1 / U[k, k]^2 */
    private readonly colWeight: Float64Array,
    /** U's rows, for clip "gptq" */
    private readonly U: () => Float64Array,
    private readonly N: number,
    private readonly K: number,
    private readonly scales: Float32Array,
    private readonly zeros: Float32Array,
  ) {
    this.groupOf = new Int32Array(K);
  }

  get codes(): Uint8Array {
    return (this.codesCache ??= this.engine.codes());
  }

  fixGroup(g: number, pos: Int32Array): void {
    const { N } = this;
    const onEngine = this.engineParams();
    if (onEngine && pos.every((p, i) => p === pos[0] + i)) {
      onEngine(pos[0], pos.length, g);
      this.engine.getParams(this.scales, this.zeros, g, g);
      return;
    }
    const w = (this.whole ??= this.engine.rowsOf(0, this.K));
    const buf = new Float32Array(pos.length * N);
    pos.forEach((p, i) => buf.set(w.subarray(p * N, (p + 1) * N), i * N));
    findGroupParams(this.q, buf, pos, N, this.K, this.colWeight, this.U, this.scales, this.zeros, g);
  }

  run(blockSize: number, groups: "fixed" | "dynamic", gs: number, how: SweepGroups): number {
    const { q, engine, N, K, scales, zeros } = this;
    this.whole = undefined;
    this.codesCache = undefined;
    const dynamic = groups === "dynamic";
    if (!dynamic) engine.setParams(scales, zeros, 0, scales.length / N - 1);
    const onEngine = this.engineParams();
    for (let i1 = 0; i1 < K;) {
      let i2 = Math.min(i1 + blockSize, K);
      if (dynamic && how.fresh) i2 = Math.min(i2, (Math.floor(i1 / gs) + 1) * gs);
      const starts: number[] = [];
      for (let c = i1; c < i2; c++) {
        this.groupOf[c] = dynamic ? Math.floor(c / gs) : how.staticOf(c);
        if (dynamic && c % gs === 0) starts.push(c);
      }
      if (starts.length && onEngine) for (const c of starts) onEngine(c, Math.min(gs, K - c), c / gs);
      else if (starts.length) {
        const end = Math.max(...starts.map((c) => c + Math.min(gs, K - c)));
        const rows = engine.rowsOf(i1, end);
        for (const c of starts) {
          const cols = Math.min(gs, K - c);
          const buf = rows.subarray((c - i1) * N, (c - i1 + cols) * N);
          const pos = Int32Array.from({ length: cols }, (_, t) => c + t);
          findGroupParams(q, buf, pos, N, K, this.colWeight, this.U, scales, zeros, c / gs);
        }
        engine.setParams(scales, zeros, starts[0] / gs, starts[starts.length - 1] / gs);
      }
      engine.block(i1, i2, this.groupOf, q.maxq);
      if (i2 < K) engine.lazy(i1, i2);
      i1 = i2;
    }
    engine.getParams(scales, zeros, 0, scales.length / N - 1);
    return engine.takeLoss() / 2;
  }

  /** The engine's finder of a group's parameters over consecutive rows, where it has one for the clip. */
  private engineParams(): ((c: number, cols: number, g: number) => void) | undefined {
    const { q, engine } = this;
    const { minmaxParams, searchParams } = engine;
    if (q.clip === "minmax" && minmaxParams)
      return (c, cols, g) => minmaxParams.call(engine, c, cols, g, q.maxq, q.sym);
    if ((q.clip === "mse" || q.clip === "hessian") && searchParams) {
      const { maxq, sym, clip, norm, splitRange } = q;
      const search: ClipSearch = { ...searchGrid(q), maxq, sym, clip, norm, splitRange };
      return (c, cols, g) => searchParams.call(engine, c, cols, g, search);
    }
    return undefined;
  }

  dispose(): void {
    this.engine.dispose();
  }
}

/**
 * Group g's parameters (into `scales`/`zeros`, G x N) from its columns' values `buf` at processing
 * positions `pos`: column k's error weighs 1 / U[k, k]^2 (`colWeight`); clip "gptq" also reads U's rows.
 */
export function findGroupParams(
  q: Quantizer,
  buf: Float32Array,
  pos: Int32Array,
  N: number,
  K: number,
  colWeight: Float64Array,
  U: () => Float64Array,
  scales: Float32Array,
  zeros: Float32Array,
  g: number,
  rows?: RowSearcher,
): void {
  const weights = Float64Array.from(pos, (p) => colWeight[p]);
  const scorer = q.clip === "gptq" ? gptqLossScorer(buf, pos, N, K, U(), q.maxq) : undefined;
  const scale = scales.subarray(g * N, (g + 1) * N);
  const zero = zeros.subarray(g * N, (g + 1) * N);
  findParams(q, buf, 0, pos.length, N, scale, zero, weights, scorer, rows);
}

/**
 * Scores candidate parameters by GPTQ's loss over one group: its columns (values `buf`, processing
 * positions `pos`) quantized in order, each one's error fed back into the group's later columns through
 * U. Costs cols^2 / 2 x N per candidate.
 */
function gptqLossScorer(
  buf: Float32Array,
  pos: Int32Array,
  N: number,
  K: number,
  U: Float64Array,
  maxq: number,
): Scorer {
  const cols = pos.length;
  const ug = new Float64Array(cols * cols);
  for (let a = 0; a < cols; a++) for (let b = a; b < cols; b++) ug[a * cols + b] = U[pos[a] * K + pos[b]];
  const tmp = new Float32Array(cols * N);
  const e = new Float64Array(N);
  return (s1, z1, out) => {
    tmp.set(buf.subarray(0, cols * N));
    for (let a = 0; a < cols; a++) {
      const d = ug[a * cols + a];
      const base = a * N;
      for (let n = 0; n < N; n++) {
        const x = tmp[base + n];
        const s = s1[n];
        const r = (x - s * (quantCode(x, s, z1[n], maxq) - z1[n])) / d;
        out[n] += r * r;
        e[n] = r;
      }
      for (let b = a + 1; b < cols; b++) {
        const hb = ug[a * cols + b];
        if (hb === 0) continue;
        const rb = b * N;
        for (let n = 0; n < N; n++) tmp[rb + n] -= hb * e[n];
      }
    }
  };
}

/** Columns [i2, end) after the block: w[j, :] -= sum_i U[i1 + i, j] err[i, :], four error rows per pass. */
function lazyUpdate(
  w: Float32Array,
  err: Float32Array,
  U: Float64Array,
  N: number,
  K: number,
  i1: number,
  i2: number,
  end: number,
): void {
  const count = i2 - i1;
  const hcol = new Float64Array(count);
  const TILE = 1024; // output rows per pass, so the error tile stays in cache
  for (let n0 = 0; n0 < N; n0 += TILE) {
    const n1 = Math.min(n0 + TILE, N);
    for (let j = i2; j < end; j++) {
      for (let i = 0; i < count; i++) hcol[i] = U[(i1 + i) * K + j];
      const r = j * N;
      let i = 0;
      for (; i + 4 <= count; i += 4) {
        const h0 = hcol[i];
        const h1 = hcol[i + 1];
        const h2 = hcol[i + 2];
        const h3 = hcol[i + 3];
        const e0 = i * N;
        const e1 = e0 + N;
        const e2 = e1 + N;
        const e3 = e2 + N;
        for (let n = n0; n < n1; n++)
          w[r + n] -= h0 * err[e0 + n] + h1 * err[e1 + n] + h2 * err[e2 + n] + h3 * err[e3 + n];
      }
      for (; i < count; i++) {
        const h0 = hcol[i];
        const e0 = i * N;
        for (let n = n0; n < n1; n++) w[r + n] -= h0 * err[e0 + n];
      }
    }
  }
}
