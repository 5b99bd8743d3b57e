/**
 * Perplexity over all next-token predictions: exp of the mean negative log-likelihood of token t+1 given
 * tokens 0..t, over every position of every sequence (a sequence of T tokens contributes T - 1).
 */
import { firstNonFinite, nonFiniteKind } from "../tensor/finite.js";
import { GptqError } from "../util/errors.js";
import { DecoderModel } from "./decoder.js";

/** rows of logits materialised at once, so a large vocabulary never needs T x vocab floats */
const LOGIT_ROWS = 64;

export interface PerplexityResult {
  ppl: number;
  /** number of predictions scored */
  tokens: number;
  /** sum of the negative log-likelihoods (nats) */
  nll: number;
}

/** -log softmax(logits)[target] for one row, with a float64 log-sum-exp. */
export function tokenNll(logits: Float32Array, offset: number, vocab: number, target: number): number {
  let max = -Infinity;
  for (let i = 0; i < vocab; i++) if (logits[offset + i] > max) max = logits[offset + i];
  let sum = 0;
  for (let i = 0; i < vocab; i++) sum += Math.exp(logits[offset + i] - max);
  return max + Math.log(sum) - logits[offset + target];
}

export function perplexity(model: DecoderModel, sequences: readonly Int32Array[]): PerplexityResult {
  const D = model.config.hiddenSize;
  const V = model.config.vocabSize;
  let nll = 0;
  let tokens = 0;
  for (const [s, seq] of sequences.entries()) {
    const T = seq.length;
    if (T < 2) continue;
    const h = model.hidden(seq);
    for (let r0 = 0; r0 < T - 1; r0 += LOGIT_ROWS) {
      const rows = Math.min(LOGIT_ROWS, T - 1 - r0);
      const logits = model.logits(h.subarray(r0 * D, (r0 + rows) * D), rows);
      const bad = firstNonFinite("F32", logits);
      if (bad >= 0) {
        const at = r0 + Math.floor(bad / V);
        throw new GptqError(
          `the logits of sequence ${s}, position ${at} hold a non-finite value (${nonFiniteKind("F32", logits, bad)}) at token ${bad % V}: the forward pass overflowed or the model's weights are corrupt; run \`gptq verify\` on the checkpoint`,
        );
      }
      for (let r = 0; r < rows; r++) nll += tokenNll(logits, r * V, V, seq[r0 + r + 1]);
    }
    tokens += T - 1;
  }
  if (tokens === 0) throw new GptqError("perplexity needs at least one sequence of two or more tokens");
  return { ppl: Math.exp(nll / tokens), tokens, nll };
}
