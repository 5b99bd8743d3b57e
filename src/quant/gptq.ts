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
import { GptqError } from "../util/errors.js";
import { checkWeight, transpose } from "./layer.js";
import { Quantizer, QuantizerOptions, findParams, quantCode, resolveQuantizer } from "./quantizer.js";

export interface GptqOptions extends QuantizerOptions {
  /** act-order: quantize columns by descending Hessian diagonal */
  descAct?: boolean;
  /** compute every group's parameters up front on the unpermuted weight */
  staticGroups?: boolean;
  /** dampening as a fraction of the mean Hessian diagonal (default 0.01); raised when Cholesky fails */
  damp?: number;
  /** columns per lazy-update block (default 128) */
  blockSize?: number;
}

export interface GptqResult {
  layer: QuantizedLinear;
  /** AutoGPTQ's loss: sum over weights of (w - q)^2 / (2 d^2), d the diagonal of H^-1's Cholesky factor */
  loss: number;
  /** the dampening fraction actually used, after automatic raises */
  damp: number;
  /** the dequantized weight, N x K */
  Q: Float32Array;
}

/** Damping fractions tried after `damp` fails, until one factorises. */
const DAMP_LIMIT = 100;

function nextDamp(d: number): number {
  return d <= 0 ? 0.01 : d * 2;
}

/** Factorises with the requested damping, raising it until H + damp * mean(diag) I is positive definite. */
function dampedInverseFactor(H: Float64Array, K: number, damp: number): { U: Float64Array; damp: number } {
  let mean = 0;
  for (let i = 0; i < K; i++) mean += H[i * K + i];
  mean /= K;
  const work = new Float64Array(H.length);
  for (let d = damp; d <= DAMP_LIMIT; d = nextDamp(d)) {
    work.set(H);
    for (let i = 0; i < K; i++) work[i * K + i] += d * mean;
    const U = upperCholeskyOfInverse(work, K);
    if (U) return { U, damp: d };
  }
  throw new GptqError(
    `the Hessian is not positive definite even with damp ${DAMP_LIMIT} x its mean diagonal: ` +
      "the calibration inputs are degenerate (non-finite or all zero?)",
  );
}

function checkHessian(H: Float64Array, K: number): void {
  if (H.length !== K * K) throw new GptqError(`Hessian has ${H.length} values, expected K x K = ${K} x ${K}`);
  for (let i = 0; i < K; i++) {
    const d = H[i * K + i];
    if (!(Number.isFinite(d) && d >= 0))
      throw new GptqError(`Hessian diagonal ${i} is ${d}: a Hessian of inputs is finite and non-negative`);
  }
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
  const q = resolveQuantizer(opts, K);
  const descAct = opts.descAct ?? false;
  const staticGroups = opts.staticGroups ?? false;
  const damp = opts.damp ?? 0.01;
  const blockSize = opts.blockSize ?? 128;
  if (!(damp >= 0 && Number.isFinite(damp))) throw new GptqError(`damp must be >= 0, got ${damp}`);
  if (!(Number.isInteger(blockSize) && blockSize > 0))
    throw new GptqError(`block size must be a positive integer, got ${blockSize}`);

  const gs = q.groupSize === -1 ? K : q.groupSize;
  const G = numGroups(K, q.groupSize);
  const wt = transpose(W, N, K); // K x N
  const h = Float64Array.from(H);

  // One group over all of K: AutoGPTQ takes its parameters from the weight as given, before dead columns.
  const fullScale = new Float32Array(N);
  const fullZero = new Float32Array(N);
  if (q.groupSize === -1 && q.clip !== "hessian") findParams(q, wt, 0, K, N, fullScale, fullZero);

  // Dead inputs (never non-zero in calibration): their weights cannot matter, so zero them.
  for (let k = 0; k < K; k++) {
    if (h[k * K + k] === 0) {
      h[k * K + k] = 1;
      wt.fill(0, k * N, (k + 1) * N);
    }
  }

  const scales = new Float32Array(G * N);
  const zeros = new Float32Array(G * N);
  if (staticGroups && q.clip !== "hessian") {
    for (let g = 0; g < G; g++) {
      const k0 = g * gs;
      findParams(q, wt, k0 * N, Math.min(gs, K - k0), N, scales.subarray(g * N), zeros.subarray(g * N));
    }
  }

  let perm: Int32Array | undefined;
  let hp = h;
  let w = wt;
  if (descAct) {
    const diag = new Float64Array(K);
    for (let k = 0; k < K; k++) diag[k] = h[k * K + k];
    perm = argsortDescending(diag);
    hp = new Float64Array(K * K);
    w = new Float32Array(K * N);
    for (let a = 0; a < K; a++) {
      const pa = perm[a];
      for (let b = 0; b < K; b++) hp[a * K + b] = h[pa * K + perm[b]];
      w.set(wt.subarray(pa * N, (pa + 1) * N), a * N);
    }
  }

  const { U, damp: used } = dampedInverseFactor(hp, K, damp);

  // Hessian-weighted clipping weighs column k's error by 1 / d_k^2, the weight GPTQ's loss gives it.
  const colWeight = new Float64Array(K);
  for (let k = 0; k < K; k++) colWeight[k] = 1 / (U[k * K + k] * U[k * K + k]);
  if (q.clip === "hessian") {
    if (q.groupSize === -1) findParams(q, w, 0, K, N, fullScale, fullZero, colWeight);
    if (staticGroups) staticHessianGroups(q, wt, N, K, gs, G, perm, colWeight, scales, zeros);
  }

  const codesP = new Uint8Array(K * N); // codes in the permuted (processing) order
  const groupOf = new Int32Array(K); // group used at each processing position
  const loss = runColumns(q, w, U, N, K, blockSize, gs, staticGroups, perm, fullScale, fullZero, {
    scales,
    zeros,
    codesP,
    groupOf,
    colWeight,
  });

  // Back to the original column order.
  const codes = new Uint8Array(K * N);
  const gIdx = new Int32Array(K);
  for (let a = 0; a < K; a++) {
    const k = perm ? perm[a] : a;
    codes.set(codesP.subarray(a * N, (a + 1) * N), k * N);
    gIdx[k] = groupOf[a];
  }
  if (q.groupSize === -1) {
    scales.set(fullScale);
    zeros.set(fullZero);
  }
  const zeros8 = Uint8Array.from(zeros);
  const layer: QuantizedLinear = {
    inFeatures: K,
    outFeatures: N,
    bits: q.bits,
    groupSize: q.groupSize,
    codes,
    scales,
    zeros: zeros8,
    gIdx,
  };
  return { layer, loss, damp: used, Q: dequantize(layer) };
}

/**
 * Static groups with Hessian-weighted clipping: each group's columns weighted by their GPTQ weights at
 * the positions act-order puts them.
 */
function staticHessianGroups(
  q: Quantizer,
  wt: Float32Array,
  N: number,
  K: number,
  gs: number,
  G: number,
  perm: Int32Array | undefined,
  colWeight: Float64Array,
  scales: Float32Array,
  zeros: Float32Array,
): void {
  const weightOf = new Float64Array(K);
  for (let a = 0; a < K; a++) weightOf[perm ? perm[a] : a] = colWeight[a];
  for (let g = 0; g < G; g++) {
    const k0 = g * gs;
    const cols = Math.min(gs, K - k0);
    findParams(q, wt, k0 * N, cols, N, scales.subarray(g * N), zeros.subarray(g * N), weightOf.subarray(k0));
  }
}

interface Outputs {
  scales: Float32Array;
  zeros: Float32Array;
  codesP: Uint8Array;
  groupOf: Int32Array;
  colWeight: Float64Array;
}

/** The GPTQ sweep over columns (in processing order); returns the loss. */
function runColumns(
  q: Quantizer,
  w: Float32Array,
  U: Float64Array,
  N: number,
  K: number,
  blockSize: number,
  gs: number,
  staticGroups: boolean,
  perm: Int32Array | undefined,
  fullScale: Float32Array,
  fullZero: Float32Array,
  out: Outputs,
): number {
  const { maxq } = q;
  const grouped = q.groupSize !== -1;
  const err = new Float32Array(blockSize * N);
  const blockStart = new Float32Array(blockSize * N);
  const groupBuf = grouped && !staticGroups ? new Float32Array(gs * N) : undefined;
  const hcol = new Float64Array(blockSize);
  let scale = fullScale;
  let zero = fullZero;
  let loss = 0;

  for (let i1 = 0; i1 < K; i1 += blockSize) {
    const i2 = Math.min(i1 + blockSize, K);
    const count = i2 - i1;
    // AutoGPTQ finds a dynamic group's parameters on the weight as it stood when the block began.
    blockStart.set(w.subarray(i1 * N, i2 * N));
    for (let i = 0; i < count; i++) {
      const c = i1 + i;
      if (grouped) {
        if (staticGroups) {
          const g = Math.floor((perm ? perm[c] : c) / gs);
          scale = out.scales.subarray(g * N, (g + 1) * N);
          zero = out.zeros.subarray(g * N, (g + 1) * N);
          out.groupOf[c] = g;
        } else {
          const g = Math.floor(c / gs);
          if (c % gs === 0) {
            const cols = Math.min(gs, K - c);
            const buf = groupBuf as Float32Array;
            const inBlock = Math.min(cols, i2 - c);
            buf.set(blockStart.subarray(i * N, (i + inBlock) * N));
            if (cols > inBlock) buf.set(w.subarray(i2 * N, (c + cols) * N), inBlock * N);
            scale = out.scales.subarray(g * N, (g + 1) * N);
            zero = out.zeros.subarray(g * N, (g + 1) * N);
            findParams(q, buf, 0, cols, N, scale, zero, out.colWeight.subarray(c, c + cols));
          }
          out.groupOf[c] = g;
        }
      }
      const d = U[c * K + c];
      const row = c * N;
      const e = i * N;
      for (let n = 0; n < N; n++) {
        const x = w[row + n];
        const code = quantCode(x, scale[n], zero[n], maxq);
        out.codesP[row + n] = code;
        const diff = (x - scale[n] * (code - zero[n])) / d;
        loss += diff * diff;
        err[e + n] = diff;
      }
      // Error feedback to the rest of the block.
      for (let j = c + 1; j < i2; j++) {
        const hj = U[c * K + j];
        if (hj === 0) continue;
        const r = j * N;
        for (let n = 0; n < N; n++) w[r + n] -= hj * err[e + n];
      }
    }
    lazyUpdate(w, err, U, N, K, i1, i2, hcol);
  }
  return loss / 2;
}

/** Columns after the block: w[j, :] -= sum_i U[i1 + i, j] err[i, :], four error rows per pass. */
function lazyUpdate(
  w: Float32Array,
  err: Float32Array,
  U: Float64Array,
  N: number,
  K: number,
  i1: number,
  i2: number,
  hcol: Float64Array,
): void {
  const count = i2 - i1;
  const TILE = 1024; // output rows per pass, so the error tile stays in cache
  for (let n0 = 0; n0 < N; n0 += TILE) {
    const n1 = Math.min(n0 + TILE, N);
    for (let j = i2; j < K; j++) {
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
