/** Marlin kernels: vLLM's gptq_marlin, and the original IST-DASLab kernel that AutoGPTQ ships. */
import { oneOf, shapeRule } from "../shape-rule.js";

export const VLLM_MARLIN = shapeRule({
  name: "marlin",
  description: "vLLM gptq_marlin: 4/8-bit symmetric GPTQ, groups -1/32/64/128, act-order",
  bits: [4, 8],
  symOnly: true,
  groups: oneOf([-1, 32, 64, 128]),
  kMultiple: 128,
  groupDividesK: true,
  nMultiple: 64,
  actOrder: "no-k-split-channelwise",
});

export const IST_MARLIN = shapeRule({
  name: "marlin-ist",
  description:
    "AutoGPTQ / IST-DASLab Marlin (also vLLM's legacy marlin method): 4-bit symmetric, group 128 or -1",
  bits: [4],
  symOnly: true,
  groups: oneOf([128, -1]),
  kMultiple: 128,
  groupDividesK: true,
  nMultiple: 256,
  actOrder: "no",
});
