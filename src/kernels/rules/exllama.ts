/** ExLlama's GPTQ kernels, v1 and v2 (as AutoGPTQ and GPTQModel call them). N is padded internally. */
import { shapeRule } from "../shape-rule.js";

const EXLLAMA_SHAPE = {
  bits: [4],
  kMultiple: 32,
  groupDividesK: true,
  actOrder: "yes",
} as const;

export const EXLLAMA = shapeRule({
  name: "exllama",
  description: "ExLlama v1: 4-bit GPTQ, the group size must divide in_features",
  ...EXLLAMA_SHAPE,
});

export const EXLLAMA_V2 = shapeRule({
  name: "exllamav2",
  description: "ExLlamaV2's GPTQ kernel: 4-bit, the group size must divide in_features",
  ...EXLLAMA_SHAPE,
});
