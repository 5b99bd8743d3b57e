/** vLLM's Machete mixed-input GEMM (Hopper, sm_90 only). */
import { oneOf, shapeRule } from "../shape-rule.js";

export const MACHETE = shapeRule({
  name: "machete",
  description: "vLLM Machete (sm_90 only): 4/8-bit, groups -1/64/128",
  bits: [4, 8],
  groups: oneOf([-1, 64, 128]),
  kMultiple: 64,
  groupDividesK: true,
  nMultiple: 128,
  actOrder: "no-k-split",
});
