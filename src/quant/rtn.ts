/** Round-to-nearest: each group quantized on its own, no error compensation. */
import { QuantizedLinear, numGroups } from "../formats/types.js";
import { GptqError } from "../util/errors.js";
import { checkWeight, transpose } from "./layer.js";
import { QuantizerOptions, findParams, quantCode, resolveQuantizer } from "./quantizer.js";

/** Quantizes W (N x K, the nn.Linear orientation) group by group along K. */
export function quantizeRtn(W: Float32Array, N: number, K: number, opts: QuantizerOptions): QuantizedLinear {
  checkWeight(W, N, K);
  const q = resolveQuantizer(opts, K);
  if (q.clip === "hessian") throw new GptqError('clip "hessian" needs a Hessian: use GPTQ, or clip "mse"');
  const gs = q.groupSize === -1 ? K : q.groupSize;
  const G = numGroups(K, q.groupSize);
  const wt = transpose(W, N, K);
  const scales = new Float32Array(G * N);
  const zeros = new Uint8Array(G * N);
  const codes = new Uint8Array(K * N);
  const gIdx = new Int32Array(K);
  const scale = new Float32Array(N);
  const zero = new Float32Array(N);
  for (let g = 0; g < G; g++) {
    const k0 = g * gs;
    const k1 = Math.min(k0 + gs, K);
    findParams(q, wt, k0 * N, k1 - k0, N, scale, zero);
    scales.set(scale, g * N);
    zeros.set(zero, g * N);
    for (let k = k0; k < k1; k++) {
      gIdx[k] = g;
      const base = k * N;
      for (let n = 0; n < N; n++) codes[base + n] = quantCode(wt[base + n], scale[n], zero[n], q.maxq);
    }
  }
  return { inFeatures: K, outFeatures: N, bits: q.bits, groupSize: q.groupSize, codes, scales, zeros, gIdx };
}
