/**
 * All the export reads of src/model/, in one place: the config of the families it writes (Llama, Mistral,
 * Qwen2), each projection's shape and the fused projections, the rotary frequencies, and the project's
 * own forward pass, which the check compares with.
 */
import { LlamaConfig, readLlamaConfig } from "../model/config.js";
import { FUSED_LINEARS, LINEAR_MODULE, LinearName, LlamaModel } from "../model/llama.js";
import { inverseFrequencies } from "../model/rope.js";
import { GptqError } from "../util/errors.js";

export type DecoderConfig = LlamaConfig;
export type { LinearName };
export { FUSED_LINEARS, LINEAR_MODULE, inverseFrequencies };

/** model_type values the decoder graph is written for */
export const EXPORTABLE_TYPES = ["llama", "mistral", "qwen2"];

export function readDecoderConfig(dir: string): DecoderConfig {
  const c = readLlamaConfig(dir);
  if (!EXPORTABLE_TYPES.includes(c.modelType))
    throw new GptqError(
      `${dir}: model_type "${c.modelType}" cannot be exported to ONNX (${EXPORTABLE_TYPES.join(", ")} can)`,
    );
  return c;
}

/** shapes [N, K] of each projection of a decoder layer, as config.json implies them */
export function linearShapes(c: DecoderConfig): Record<LinearName, [number, number]> {
  return LlamaModel.linearShapes(c);
}

/** the project's forward of one sequence from the start (what `gptq eval` runs): T x vocab logits */
export function referenceLogits(dir: string, tokens: Int32Array): Float32Array {
  return LlamaModel.load(dir).forward(tokens);
}
