/** ExecuTorch's XNNPACK 8da4w: int8 per-token activations times group-wise symmetric int4 weights. */
import { dividingGroup } from "../remedy.js";
import { GroupRule, shapeRule } from "../shape-rule.js";

const MULTIPLE_OF_32: GroupRule = {
  text: "a multiple of 32",
  accepts: (g, K) => (g === -1 ? K : g) % 32 === 0,
  suggest: (g, K) => [dividingGroup(K, g === -1 ? K : Math.max(g, 32), 32) ?? 32],
};

export const XNNPACK_A8W4 = shapeRule({
  name: "xnnpack-a8w4",
  description: "ExecuTorch XNNPACK 8da4w: 4-bit symmetric weights, int8 dynamic activations, groups of 32k",
  bits: [4],
  symOnly: true,
  groups: MULTIPLE_OF_32,
  groupDividesK: true,
  actOrder: "no",
});
