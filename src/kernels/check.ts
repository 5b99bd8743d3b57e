/** Every layer against every kernel: what `gptq check` reports and what a loader can ask before it runs. */
import { Bits, StoredFormat } from "../formats/types.js";
import { shardShape } from "./parallel.js";
import { FixContext, actionableVerdict } from "./fixes.js";
import { KERNELS, checkKernel } from "./registry.js";
import { KernelQuery, KernelRule, KernelVerdict } from "./types.js";

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

export function checkpointProblems(
  ck: {
    dir: string;
    format: StoredFormat;
    missingKeysBySource: Record<string, string[]>;
    config?: { sym: boolean; meta?: Record<string, unknown> };
  },
  kernels: readonly KernelRule[] = KERNELS,
): CheckpointProblem[] {
  const problems: CheckpointProblem[] = [];
  // the loaders' own rules on the whole file (GPTQModel and who wrote an asymmetric v1 file)
  const quantizer = ck.config?.meta?.quantizer;
  const facts = {
    dir: ck.dir,
    format: ck.format,
    sym: ck.config?.sym ?? true,
    quantizer: Array.isArray(quantizer)
      ? quantizer.map(String)
      : typeof quantizer === "string"
        ? [quantizer]
        : [],
  };
  for (const k of kernels) {
    const v = ck.format === "fp" ? undefined : k.supportsCheckpoint?.(facts);
    if (v && !v.ok)
      problems.push({
        applies: (x) => x.name === k.name,
        reason: v.reason ?? `${k.name} refuses this checkpoint`,
        fix: v.fix ?? "",
      });
  }
  if (ck.format === "marlin")
    problems.push({
      applies: (k) => !k.ours && !MARLIN_FILE_KERNELS.includes(k.name),
      reason:
        "the checkpoint is Marlin-packed (B, s); this kernel's loader reads GPTQ tensors (qweight, qzeros, scales)",
      fix: `gptq convert ${ck.dir} <out> --to gptq`,
    });
  const m =
    ck.missingKeysBySource["config.json#quantization_config"] ??
    ck.missingKeysBySource["quantize_config.json"];
  if (ck.format !== "fp" && ck.format !== "marlin" && m?.length)
    problems.push({
      applies: (k) => VLLM_GPTQ_MARLIN_KERNELS.includes(k.name),
      reason: `the quantization config does not spell out ${m.join(", ")}, so vLLM will not choose its gptq_marlin kernels`,
      fix: `gptq fix-config ${ck.dir}`,
    });
  return problems;
}

export function checkLayers(
  layers: readonly CheckLayer[],
  scheme: CheckScheme,
  kernels: readonly KernelRule[],
  tp = 1,
  problems: readonly CheckpointProblem[] = [],
  fixes?: FixContext,
): LayerReport[] {
  return layers.map((l) => {
    const s = shardShape(l.name, l.inFeatures, l.outFeatures, tp, fixes?.rowParallel?.(l.name));
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
    const q: KernelQuery = {
      inFeatures: s.inFeatures,
      outFeatures: s.outFeatures,
      bits: scheme.bits,
      groupSize: scheme.groupSize,
      sym: scheme.sym,
      actOrder: l.actOrder,
      kSplitAcrossRanks: s.kSplitAcrossRanks,
      tpRanks: s.tpRanks,
    };
    for (const k of kernels) {
      let v: KernelVerdict;
      if (s.problem) {
        // the split is of the whole layer: its fix pads the whole dimension
        const { reason, fix, pad } = s.problem;
        v = {
          ok: false,
          reason,
          fix,
          remedies: [pad.side === "in" ? { padIn: pad.to } : { padOut: pad.to }],
        };
        if (fixes) v = actionableVerdict(v, { ...q, tpRanks: 1 }, l, fixes);
      } else {
        v = checkKernel(k, q);
        if (fixes) v = actionableVerdict(v, q, l, fixes);
      }
      // A checkpoint problem comes first (the loader never reaches the shape rules), then any shape fix.
      const p = problems.find((x) => x.applies(k));
      report.kernels[k.name] = p ? withProblem(p, v) : plain(v);
    }
    return report;
  });
}

/** A verdict as reported: ok, reason, fix and note (the structured remedies stay inside). */
function plain(v: KernelVerdict): KernelVerdict {
  const out: KernelVerdict = { ok: v.ok };
  if (v.reason !== undefined) out.reason = v.reason;
  if (v.fix !== undefined) out.fix = v.fix;
  if (v.note !== undefined) out.note = v.note;
  return out;
}

/** A checkpoint problem first; its fix, then the shape fix when the shapes fail too. */
function withProblem(p: CheckpointProblem, v: KernelVerdict): KernelVerdict {
  const out: KernelVerdict = { ok: false, reason: p.reason };
  if (v.ok) {
    if (p.fix) out.fix = p.fix;
  } else if (v.fix && p.fix) out.fix = `${p.fix}, then ${v.fix}`;
  else out.note = `and then: ${v.reason}${v.note ? ` (${v.note})` : ""}`;
  return out;
}
