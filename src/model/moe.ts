/** The router of a mixture-of-experts MLP, as transformers computes it for Mixtral and Qwen3-MoE. */
import { ExpertsConfig } from "./families/types.js";

/** Each token's chosen experts and their weights: token t's k-th pick is at t * topK + k. */
export interface Routing {
  experts: Int32Array;
  weights: Float32Array;
}

/**
 * logits: T x count router outputs. Softmax over all experts (float64), the top k by weight (ties to
 * the lower index, as torch.topk), renormalised to sum to 1 where the family does.
 */
export function routeTokens(logits: Float32Array, T: number, e: ExpertsConfig): Routing {
  const { count: E, topK: k } = e;
  const experts = new Int32Array(T * k);
  const weights = new Float32Array(T * k);
  const p = new Float64Array(E);
  const picked = new Uint8Array(E);
  for (let t = 0; t < T; t++) {
    const row = t * E;
    let max = -Infinity;
    for (let j = 0; j < E; j++) max = Math.max(max, logits[row + j]);
    let sum = 0;
    for (let j = 0; j < E; j++) sum += p[j] = Math.exp(logits[row + j] - max);
    picked.fill(0);
    let kept = 0;
    for (let s = 0; s < k; s++) {
      let best = -1;
      for (let j = 0; j < E; j++) if (!picked[j] && (best < 0 || p[j] > p[best])) best = j;
      picked[best] = 1;
      experts[t * k + s] = best;
      kept += p[best];
    }
    const norm = e.normalizeTopK ? kept : sum;
    for (let s = 0; s < k; s++) weights[t * k + s] = p[experts[t * k + s]] / norm;
  }
  return { experts, weights };
}

/** the tokens routed to each expert, in token order, with their weights */
export function tokensPerExpert(
  r: Routing,
  T: number,
  e: ExpertsConfig,
): { rows: number[]; weights: number[] }[] {
  const out = Array.from({ length: e.count }, () => ({ rows: [] as number[], weights: [] as number[] }));
  for (let t = 0; t < T; t++)
    for (let s = 0; s < e.topK; s++) {
      const x = out[r.experts[t * e.topK + s]];
      x.rows.push(t);
      x.weights.push(r.weights[t * e.topK + s]);
    }
  return out;
}
