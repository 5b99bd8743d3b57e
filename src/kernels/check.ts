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

/** A checkpoint-level reason some kernels will not be chosen, whatever the shapes. */
export interface ConfigProblem {
  kernels: readonly string[];
  reason: string;
  fix: string;
}

/** vLLM picks gptq_marlin (Marlin, Machete) only when config.json's section spells out all four keys. */
export const VLLM_GPTQ_MARLIN_KERNELS = ["marlin", "machete"] as const;

export function vllmConfigProblem(
  dir: string,
  missingBySource: Record<string, string[]>,
): ConfigProblem | undefined {
  const section =
    missingBySource["config.json#quantization_config"] ?? missingBySource["quantize_config.json"];
  if (!section?.length) return undefined;
  return {
    kernels: VLLM_GPTQ_MARLIN_KERNELS,
    reason: `the quantization config does not spell out ${section.join(", ")}, so vLLM will not choose its gptq_marlin kernels`,
    fix: `run \`gptq fix-config ${dir}\``,
  };
}

export function checkLayers(
  layers: readonly CheckLayer[],
  scheme: CheckScheme,
  kernels: readonly KernelRule[],
  tp = 1,
  config?: ConfigProblem,
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
    for (const k of kernels) {
      const v: KernelVerdict = s.problem
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
      // The config problem comes first (vLLM never reaches the shape rules), then any shape fix.
      report.kernels[k.name] =
        config && config.kernels.includes(k.name)
          ? {
              ok: false,
              reason: config.reason,
              fix: v.ok ? config.fix : `${config.fix}, then ${v.fix ?? v.reason}`,
            }
          : v;
    }
    return report;
  });
}
