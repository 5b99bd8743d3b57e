/**
 * vLLM's plain GPTQ method (`quantization="gptq"`, its exllama-derived `gptq_gemm`): what vLLM runs a GPTQ
 * checkpoint with when it does not pick Marlin or Machete. Its `create_weights` refuses a shard whose
 * in_features is not a multiple of the group size (full groups only; group -1 always passes) or whose
 * out_features is not a whole number of packed words (32 / bits outputs a word, 32 for 3-bit).
 */
import { ShapeRules, evaluate } from "../shape-rule.js";
import { KernelRule } from "../types.js";

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

function rules(bits: number): ShapeRules {
  return {
    name: "vllm-gptq",
    description:
      "vLLM gptq (without Marlin): 2/3/4/8-bit, full groups per shard, out_features whole packed words",
    bits: [2, 3, 4, 8],
    groupDividesK: true,
    nMultiple: 32 / gcd(32, bits),
    actOrder: "yes",
  };
}

export const VLLM_GPTQ: KernelRule = {
  name: "vllm-gptq",
  description: rules(4).description,
  ours: false,
  supports: (q) => evaluate(rules(q.bits), q),
};
