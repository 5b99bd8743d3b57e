/** Every layer against every kernel: what `gptq check` reports and what a loader can ask before it runs. */
import { Bits, StoredFormat } from "../formats/types.js";
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

/** A checkpoint-level reason some kernels cannot be used, whatever the shapes. */
export interface CheckpointProblem {
  applies(kernel: KernelRule): boolean;
  reason: string;
  fix: string;
}

/** vLLM picks gptq_marlin (Marlin, Machete) only when config.json's section spells out all four keys. */
export const VLLM_GPTQ_MARLIN_KERNELS: readonly string[] = ["marlin", "machete"];

/** The kernel that reads Marlin-serialised files (B, s) as they are: AutoGPTQ's, and vLLM's legacy `marlin`. */
export const MARLIN_FILE_KERNELS: readonly string[] = ["marlin-ist"];

export function checkpointProblems(ck: {
  dir: string;
  format: StoredFormat;
  missingKeysBySource: Record<string, string[]>;
}): CheckpointProblem[] {
  const problems: CheckpointProblem[] = [];
  if (ck.format === "marlin")
    problems.push({
      applies: (k) => !k.ours && !MARLIN_FILE_KERNELS.includes(k.name),
      reason:
        "the checkpoint is Marlin-packed (B, s); this kernel's loader reads GPTQ tensors (qweight, qzeros, scales)",
      fix: `convert it first: gptq convert ${ck.dir} <out> --to gptq`,
    });
  const m =
    ck.missingKeysBySource["config.json#quantization_config"] ??
    ck.missingKeysBySource["quantize_config.json"];
  if (ck.format !== "fp" && ck.format !== "marlin" && m?.length)
    problems.push({
      applies: (k) => VLLM_GPTQ_MARLIN_KERNELS.includes(k.name),
      reason: `the quantization config does not spell out ${m.join(", ")}, so vLLM will not choose its gptq_marlin kernels`,
      fix: `run \`gptq fix-config ${ck.dir}\``,
    });
  return problems;
}

export function checkLayers(
  layers: readonly CheckLayer[],
  scheme: CheckScheme,
  kernels: readonly KernelRule[],
  tp = 1,
  problems: readonly CheckpointProblem[] = [],
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
      // A checkpoint problem comes first (the loader never reaches the shape rules), then any shape fix.
      const p = problems.find((x) => x.applies(k));
      report.kernels[k.name] = p
        ? { ok: false, reason: p.reason, fix: v.ok ? p.fix : `${p.fix}, then ${v.fix ?? v.reason}` }
        : v;
    }
    return report;
  });
}
