/** Moves a model's quantized projections onto ONNX Runtime's MatMulNBits (see backend/cpu/ort.ts). */
import { DecoderModel } from "./decoder.js";
import { QuantLinear } from "../backend/cpu/linear.js";
import { OrtLinear, nbitsBlockSize, nbitsGraph } from "../backend/cpu/ort.js";

export interface OrtPlacement {
  /** projections now run by ONNX Runtime */
  moved: number;
  /** projections left on our kernels, and why */
  kept: { name: string; reason: string }[];
}

/**
 * Replaces every QuantLinear (fp32 activations) that MatMulNBits can hold with an OrtLinear using
 * `threads` intra-op threads. A8W4 layers stay: ONNX Runtime's int8 activations are quantized per block
 * of K, not per token, so its results differ from the torchao semantics A8W4Linear reproduces.
 */
export async function moveToOrt(model: DecoderModel, threads: number): Promise<OrtPlacement> {
  const placement: OrtPlacement = { moved: 0, kept: [] };
  for (const layer of model.layers)
    for (const name of Object.keys(layer.linears)) {
      const lin = layer.linears[name];
      if (!(lin instanceof QuantLinear)) continue;
      const q = lin.toQuantized();
      if (nbitsBlockSize(q) === undefined) {
        const reason = `${q.bits}-bit, group ${q.groupSize}: MatMulNBits takes 2, 4 or 8 bits in blocks of 16 to 256`;
        placement.kept.push({ name: layer.linearPrefix(name), reason });
        continue;
      }
      layer.linears[name] = await OrtLinear.create(nbitsGraph(q, 0), q.inFeatures, q.outFeatures, threads);
      placement.moved++;
    }
  return placement;
}
