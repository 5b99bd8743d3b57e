/**
 * The model-family table: every decoder family gptq-ts reads, one entry per file. `inspect`, `check`,
 * `quantize`, `eval`, `pad`, `convert` and `split`/`merge` find a model's structure here.
 */
import { GptqError } from "../../util/errors.js";
import { falcon } from "./falcon.js";
import { gemma2, gemma3 } from "./gemma.js";
import { llama } from "./llama.js";
import { mixtral } from "./mixtral.js";
import { opt } from "./opt.js";
import { phi3 } from "./phi3.js";
import { qwen3 } from "./qwen3.js";
import { qwen3Moe } from "./qwen3-moe.js";
import { FamilySpec, ModelConfig, Role } from "./types.js";

export const FAMILIES: readonly FamilySpec[] = [
  llama,
  qwen3,
  phi3,
  gemma2,
  gemma3,
  opt,
  falcon,
  mixtral,
  qwen3Moe,
];

/** every model_type the table reads */
export function supportedModelTypes(): string[] {
  return FAMILIES.flatMap((f) => f.modelTypes);
}

/** The entry that reads this model_type, or undefined. */
export function familyForModelType(modelType: string): FamilySpec | undefined {
  return FAMILIES.find((f) => f.modelTypes.includes(modelType));
}

/** The entry a parsed config came from. */
export function familyOf(c: ModelConfig): FamilySpec {
  const f = FAMILIES.find((x) => x.name === c.family);
  if (!f) throw new GptqError(`no model family "${c.family}"`);
  return f;
}

/** What a projection computes, from its tensor prefix (e.g. "transformer.h.3.mlp.dense_4h_to_h"); undefined when not a decoder projection of the family. */
export function rolesOfLayer(family: FamilySpec, layer: string): readonly Role[] | undefined {
  const within = (module: string) =>
    layer.startsWith(`${family.tensors.layers}.`) && layer.endsWith(`.${module}`);
  const fused = family.fused.find((f) => within(f.module));
  if (fused) return fused.parts;
  const plain = family.linears.find((l) => within(l.module));
  return plain && [plain.role];
}
