/** Every layer against every kernel: what `gptq check` reports and what a loader can ask before it runs. */
import { Bits } from "../formats/types.js";
import { shardShape } from "./parallel.js";
import { checkKernel } from "./registry.js";
import { KernelRule, KernelVerdict } from "./types.js";

export interface CheckScheme {
  bits: Bits;
  groupSize: number;
  sym: boolean;
}

export interface CheckLayer {
  name: string;
  inFeatures: number;
  outFeatures: number;
  /** act-order in use (quantized) or planned (unquantized) */
  actOrder: boolean;
}

export interface LayerReport {
  name: string;
  inFeatures: number;
  outFeatures: number;
  /** one rank's shape, when tp > 1 */
  shard?: { inFeatures: number; outFeatures: number; splits: "in" | "out" };
  kernels: Record<string, KernelVerdict>;
}

export function checkLayers(
  layers: readonly CheckLayer[],
  scheme: CheckScheme,
  kernels: readonly KernelRule[],
  tp = 1,
): LayerReport[] {
  return layers.map((l) => {
    const s = shardShape(l.name, l.inFeatures, l.outFeatures, tp);
    const report: LayerReport = {
      name: l.name,
      inFeatures: l.inFeatures,
      outFeatures: l.outFeatures,
      kernels: {},
    };
    if (tp > 1)
      report.shard = {
        inFeatures: s.inFeatures,
        outFeatures: s.outFeatures,
        splits: s.kSplitAcrossRanks ? "in" : "out",
      };
    for (const k of kernels)
      report.kernels[k.name] = s.problem
        ? { ok: false, ...s.problem }
        : checkKernel(k, {
            inFeatures: s.inFeatures,
            outFeatures: s.outFeatures,
            bits: scheme.bits,
            groupSize: scheme.groupSize,
            sym: scheme.sym,
            actOrder: l.actOrder,
            kSplitAcrossRanks: s.kSplitAcrossRanks,
            tpRanks: s.tpRanks,
          });
    return report;
  });
}
