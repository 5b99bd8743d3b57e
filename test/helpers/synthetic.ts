/** Token sequences for the synthetic Llama of src/pipeline/synthetic.ts, to calibrate and evaluate on. */
import { Rng, SyntheticSpec } from "../../src/pipeline/synthetic.js";

/**
 * `n` sequences of `seqlen` tokens from a fixed sparse Markov chain over the vocabulary (each token has a
 * few likely successors), each starting with BOS 0.
 */
export function syntheticTokens(spec: SyntheticSpec, n: number, seqlen: number, seed: number): Int32Array[] {
  const table = new Rng(spec.seed + 7919);
  const V = spec.vocabSize;
  const next = Array.from({ length: V }, () =>
    Array.from({ length: 4 }, () => Math.floor(table.uniform() * V)),
  );
  const rng = new Rng(seed);
  const out: Int32Array[] = [];
  for (let s = 0; s < n; s++) {
    const seq = new Int32Array(seqlen);
    for (let t = 1; t < seqlen; t++) {
      const u = rng.uniform();
      seq[t] = u < 0.9 ? next[seq[t - 1]][Math.floor(u * 4.44) % 4] : Math.floor(rng.uniform() * V);
    }
    out.push(seq);
  }
  return out;
}

/** A one-layer synthetic Llama small enough for CLI tests to quantize in a second. */
export const TINY_SPEC: SyntheticSpec = {
  hiddenSize: 32,
  intermediateSize: 48,
  numLayers: 1,
  numHeads: 4,
  numKvHeads: 2,
  vocabSize: 64,
  seed: 5,
};
