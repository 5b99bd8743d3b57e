/** Deterministic test data with LLM-like statistics: outlier input channels, a few heavy weight columns. */
import { readAllTensors } from "../../src/io/safetensors.js";
import { toFloat32, toInt32 } from "../../src/tensor/tensor.js";

export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function gaussian(rand: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

/** rows x cols with every `every`-th column scaled by `heavy`. */
export function llmLike(rows: number, cols: number, seed: number, every = 17, heavy = 8): Float32Array {
  const g = gaussian(rng(seed));
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) out[r * cols + c] = g() * (c % every === 3 ? heavy : 1);
  return out;
}

/** ||X Q^T - XW W^T||^2 / ||XW W^T||^2 for X and XW (default X) rows x K, W and Q N x K. */
export function relativeOutputError(
  X: Float32Array,
  rows: number,
  W: ArrayLike<number>,
  Q: ArrayLike<number>,
  N: number,
  K: number,
  /** the inputs W sees, when they differ from Q's (fp-target: the fp model's) */
  XW: Float32Array = X,
): number {
  let num = 0;
  let den = 0;
  for (let r = 0; r < rows; r++) {
    for (let n = 0; n < N; n++) {
      let a = 0;
      let b = 0;
      for (let k = 0; k < K; k++) {
        a += X[r * K + k] * Q[n * K + k];
        b += XW[r * K + k] * W[n * K + k];
      }
      num += (a - b) ** 2;
      den += b * b;
    }
  }
  return num / den;
}

export interface AlgorithmCase {
  name: string;
  bits: 2 | 3 | 4 | 8;
  group_size: number;
  sym: boolean;
  desc_act: boolean;
  static_groups: boolean;
  rel_output_error: number;
  rtn_rel_output_error: number;
  Q: Float32Array;
  gIdx: Int32Array;
}

export interface AlgorithmFixture {
  W: Float32Array;
  X: Float32Array;
  N: number;
  K: number;
  rows: number;
  cases: AlgorithmCase[];
}

/** public-gptq-algorithm.safetensors: W [N, K], X [rows, K] and one entry per reference case. */
export function loadAlgorithmFixture(path: string): AlgorithmFixture {
  const { tensors, metadata } = readAllTensors(path);
  const w = tensors.get("gptq/W");
  const x = tensors.get("gptq/X");
  if (!w || !x) throw new Error(`${path}: no gptq/W or gptq/X`);
  const cases = (JSON.parse(metadata.cases) as Omit<AlgorithmCase, "Q" | "gIdx">[]).map((c) => {
    const q = tensors.get(`${c.name}/out.Q`);
    const g = tensors.get(`${c.name}/out.g_idx`);
    if (!q || !g) throw new Error(`${path}: case ${c.name} lacks out.Q or out.g_idx`);
    return { ...c, Q: toFloat32(q), gIdx: toInt32(g) };
  });
  return { W: toFloat32(w), X: toFloat32(x), N: w.shape[0], K: w.shape[1], rows: x.shape[0], cases };
}

/** X^T X in float64, computed directly (K x K). */
export function gram(X: Float32Array, rows: number, K: number): Float64Array {
  const g = new Float64Array(K * K);
  for (let r = 0; r < rows; r++)
    for (let i = 0; i < K; i++) {
      const xi = X[r * K + i];
      if (xi === 0) continue;
      for (let j = 0; j < K; j++) g[i * K + j] += xi * X[r * K + j];
    }
  return g;
}

/** The same relative output error through the Gram matrix: sum_n e_n^T G e_n / sum_n w_n^T G w_n. */
export function relativeOutputErrorGram(
  G: Float64Array,
  W: ArrayLike<number>,
  Q: ArrayLike<number>,
  N: number,
  K: number,
): number {
  let num = 0;
  let den = 0;
  const e = new Float64Array(K);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) e[k] = Q[n * K + k] - W[n * K + k];
    for (let i = 0; i < K; i++) {
      let se = 0;
      let sw = 0;
      for (let j = 0; j < K; j++) {
        se += G[i * K + j] * e[j];
        sw += G[i * K + j] * W[n * K + j];
      }
      num += e[i] * se;
      den += W[n * K + i] * sw;
    }
  }
  return num / den;
}
