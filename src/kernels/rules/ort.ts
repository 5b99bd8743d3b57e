/** ONNX Runtime's MatMulNBits: block-wise along K, the last block padded; no g_idx. */
import { GroupRule, shapeRule } from "../shape-rule.js";

const isPow2 = (x: number) => x > 0 && (x & (x - 1)) === 0;

const POW2_BLOCKS: GroupRule = {
  text: "a power of two of at least 16 (-1 only when in_features is one)",
  accepts: (g, K) => {
    const b = g === -1 ? K : g;
    return b >= 16 && isPow2(b);
  },
  suggest: (g) => {
    if (g === -1) return [128];
    let p = 16;
    while (p * 2 <= g) p *= 2;
    return [p];
  },
};

export const ORT = shapeRule({
  name: "ort",
  description: "ONNX Runtime MatMulNBits: 2/4/8-bit, power-of-two blocks >= 16, no act-order",
  bits: [2, 4, 8],
  groups: POW2_BLOCKS,
  actOrder: "no",
});
