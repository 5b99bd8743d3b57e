/**
 * All the export reads of src/model/, in one place: the config of the families it writes (Llama, Mistral,
 * Qwen2: the model-family table's "llama" entry), each projection's module and shape and the fused
 * projections, the rotary frequencies, and the project's own forward pass, which the check compares with.
 */
import { readModelConfig } from "../model/config.js";
import { DecoderModel } from "../model/decoder.js";
import { LLAMA_FUSED, LLAMA_LINEARS } from "../model/families/llama.js";
import { roleShape } from "../model/families/shapes.js";
import { ModelConfig, Role } from "../model/families/types.js";
import { inverseFrequencies } from "../model/rope.js";
import { GptqError } from "../util/errors.js";

export type DecoderConfig = ModelConfig;
export type LinearName = "q_proj" | "k_proj" | "v_proj" | "o_proj" | "gate_proj" | "up_proj" | "down_proj";
export { inverseFrequencies };

const NAME_OF_ROLE = Object.fromEntries(LLAMA_LINEARS.map((l) => [l.role, l.name])) as Record<
  Role,
  LinearName
>;

/** each projection's module under its layer prefix, e.g. "self_attn.q_proj" */
export const LINEAR_MODULE = Object.fromEntries(LLAMA_LINEARS.map((l) => [l.name, l.module])) as Record<
  LinearName,
  string
>;

/** the fused projections a checkpoint may store, and the projections each holds, in row order */
export const FUSED_LINEARS: readonly { module: string; parts: readonly LinearName[] }[] = LLAMA_FUSED.map(
  (f) => ({
    module: f.module,
    parts: f.parts.map((r) => NAME_OF_ROLE[r]),
  }),
);

/** model_type values the decoder graph is written for */
export const EXPORTABLE_TYPES = ["llama", "mistral", "qwen2"];

export function readDecoderConfig(dir: string): DecoderConfig {
  const c = readModelConfig(dir);
  if (!EXPORTABLE_TYPES.includes(c.modelType))
    throw new GptqError(
      `${dir}: model_type "${c.modelType}" cannot be exported to ONNX (${EXPORTABLE_TYPES.join(", ")} can)`,
    );
  return c;
}

/** shapes [N, K] of each projection of a decoder layer, as config.json implies them */
export function linearShapes(c: DecoderConfig): Record<LinearName, [number, number]> {
  return Object.fromEntries(LLAMA_LINEARS.map((l) => [l.name, roleShape(c, l.role)])) as Record<
    LinearName,
    [number, number]
  >;
}

/** the project's forward of one sequence from the start (what `gptq eval` runs): T x vocab logits */
export function referenceLogits(dir: string, tokens: Int32Array): Float32Array {
  return DecoderModel.load(dir).forward(tokens);
}
