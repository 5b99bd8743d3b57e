/**
 * PyTorch's CPU int4 matmul (`torch.ops.aten._weight_int4pack_mm`), which transformers and GPTQModel
 * use for 4-bit GPTQ layers on the CPU (GPTQModel's TorchQuantLinear repacks into it). It refuses a
 * partial last group: "expect K to be divisible by qGroupSize, got K:176, qGroupSize:32".
 */
import { GroupRule, shapeRule } from "../shape-rule.js";
import { nearestGroups } from "../remedy.js";

const INT4PACK_GROUPS = [32, 64, 128, 256];

const GROUPS: GroupRule = {
  text: "32, 64, 128 or 256 (-1 only when in_features is one of them)",
  accepts: (g, K) => INT4PACK_GROUPS.includes(g === -1 ? K : g),
  suggest: (g) => nearestGroups(g, INT4PACK_GROUPS),
};

export const TORCH_INT4_CPU = shapeRule({
  name: "torch-int4-cpu",
  description:
    "transformers / GPTQModel on the CPU (torch _weight_int4pack_mm): 4-bit, groups 32/64/128/256, full groups only",
  bits: [4],
  groups: GROUPS,
  groupDividesK: true,
  actOrder: "yes",
});
