/**
 * Checkpoint in, checkpoint out: checks the scheme against the output format before any work, plans the
 * MLP padding the packing needs, loads calibration data, runs the layer-by-layer pipeline on the model
 * read one layer at a time, and writes the result.
 */
import { CheckpointFormat } from "../formats/types.js";
import { TensorStore } from "../io/store.js";
import { detectFormat } from "../io/checkpoint.js";
import { checkOutputDir } from "../io/output.js";
import { buildDirAtomic } from "../io/atomic.js";
import { QuantConfig } from "../io/quant-config.js";
import { ModelConfig, readModelConfig } from "../model/config.js";
import { LayerwiseDecoder, storedProjections } from "../model/decoder.js";
import { familyOf } from "../model/families/index.js";
import {
  PadPlan,
  decoderLinearShapes,
  formatTarget,
  fullGroupsTarget,
  planPadding,
} from "../model/pad-plan.js";
import { checkOutputPath } from "../transform/rewrite.js";
import { LayerShape } from "../formats/gptq.js";
import { padLayerIntermediate } from "../model/padding.js";
import { CudaDevice } from "../backend/cuda/device.js";
import { GptqError } from "../util/errors.js";
import { CalibrationRequest, loadCalibration } from "./calibration.js";
import { RuntimeSummary, marlinWarning, runtimeSummary } from "./runtimes.js";
import {
  LinearReport,
  Phase,
  PipelineEvent,
  PipelineOptions,
  PipelineResult,
  quantizeModel,
} from "./quantize-model.js";
import { QualityOptions, QualityPreset, QuantizeOptions, resolveQuality } from "./presets.js";
import { FormatChoice, QuantizedCheckpointWriter, quantizedCheckpointBytes } from "./write-quantized.js";

export interface QuantizeRequest {
  modelDir: string;
  outDir: string;
  /** the scheme, and any quality options that replace the preset's */
  options: QuantizeOptions;
  /** fills in the quality options `options` leaves out (default "balanced"; see QUALITY_PRESETS) */
  preset?: QualityPreset;
  /**
   * where Hessians and GPTQ run: "cuda" (refused before any work without a GPU), "cpu", or "auto" (the GPU
   * when one is found); default "cpu"
   */
  device?: "cpu" | "cuda" | "auto";
  /** calibration data; required for GPTQ */
  calib?: Omit<CalibrationRequest, "modelDir" | "vocabSize">;
  format: FormatChoice;
  /** "auto": pad the MLP intermediate so every layer packs; "none": refuse shapes that do not */
  pad: "auto" | "none";
}

export interface QuantizeResult {
  modelDir: string;
  out: string;
  preset: QualityPreset;
  /** quality options given explicitly, in place of the preset's */
  overridden: (keyof QualityOptions)[];
  /** the options the pipeline ran with */
  options: PipelineOptions;
  /** per projection and layers: data-hungry options switched off for lack of calibration tokens */
  fallbacks: string[];
  format: CheckpointFormat;
  formatNote?: string;
  pad?: PadPlan;
  calibration?: string;
  /** where GPTQ ran, and the device's name */
  device: { kind: "cpu" | "cuda"; name: string };
  layers: number;
  errorOf: "outputs" | "weights";
  meanRelError: number;
  worst: { name: string; relError: number };
  /** peak memory: the process's resident set, and live GPU allocations when GPTQ ran there */
  memory: { hostPeakBytes: number; gpuPeakBytes?: number };
  /** seconds in the layer-by-layer pipeline, and end to end (load, quantize, write) */
  quantizeSeconds: number;
  /**
   * where the time went: opening (the checkpoint's checks, the calibration tokens, the embeddings), the
   * pipeline's phases, and the write's end (headers, index, config)
   */
  phases: Partial<Record<"open" | Phase | "write", number>>;
  seconds: number;
  reports: LinearReport[];
  /** what the user should know about the result (too few calibration tokens...); also sent as notes */
  warnings: string[];
  /** the kernels and loaders (the kernel registry's) that accept every layer written, and the others */
  runtimes: RuntimeSummary;
}

export type QuantizeEvent = PipelineEvent | { type: "note"; text: string };

/** The device a request names, or the reason it cannot be had (before any work). */
export function resolveDevice(requested: "cpu" | "cuda" | "auto"): { kind: "cpu" | "cuda"; name: string } {
  if (requested === "cpu") return { kind: "cpu", name: "cpu" };
  if (!CudaDevice.available()) {
    if (requested === "auto") return { kind: "cpu", name: "cpu (no CUDA GPU found)" };
    throw new GptqError("--device cuda: no CUDA GPU found (no driver, or no device); use --device cpu");
  }
  const info = CudaDevice.get().info;
  return { kind: "cuda", name: `${info.name} (${info.arch})` };
}

export async function quantizeCheckpoint(
  req: QuantizeRequest,
  onEvent: (e: QuantizeEvent) => void = () => {},
): Promise<QuantizeResult> {
  const t0 = Date.now();
  const { options: o, preset, overridden } = resolveQuality(req.options, req.preset);
  const config = readModelConfig(req.modelDir);
  // a preset's fp-target does not apply to a mixture of experts (the fp and quantized models route tokens
  // apart): the family falls back and says so; asked for by name, the pipeline refuses it
  const familyFallbacks: string[] = [];
  if (o.fpTarget && !overridden.includes("fpTarget") && familyOf(config).mlp === "experts") {
    o.fpTarget = false;
    familyFallbacks.push(
      `every projection: no fp-target (a mixture of experts routes the unquantized and the quantized model's tokens apart)`,
    );
  }
  const store = TensorStore.open(req.modelDir);
  /** which projections the checkpoint stores (fused or not), by tensor prefix */
  let has: (prefix: string) => boolean;
  try {
    const stored = detectFormat(store);
    if (stored !== "fp")
      throw new GptqError(
        `${req.modelDir} is already quantized (${stored}); quantize an unquantized checkpoint`,
      );
    const weights = new Set(store.names());
    has = (prefix) => weights.has(`${prefix}.weight`);
  } finally {
    store.close();
  }
  if (o.descAct && !o.staticGroups && req.format === "marlin")
    throw new GptqError("Marlin files cannot hold act-order; drop --desc-act or add --static-groups");
  if (o.fpTarget && o.method !== "gptq") throw new GptqError("--fp-target needs GPTQ (--method gptq)");
  if ((o.freshGroups || o.refine) && o.method !== "gptq")
    throw new GptqError("--fresh-groups and --refine need GPTQ (--method gptq)");
  if (o.method === "gptq" && !req.calib)
    throw new GptqError("GPTQ needs calibration data: pass --calib FILE (or use --method rtn)");
  const device = resolveDevice(req.device ?? "cpu");
  if (device.kind === "cuda") CudaDevice.get().resetPeak();

  // The packing decides which shapes are storable ("auto" writes GPTQ, whose packing v1 and v2 share);
  // a scheme it cannot hold at all (Marlin with group 32, say) fails here too, before any work.
  const packing: CheckpointFormat = req.format === "auto" ? "gptq" : req.format;
  const scheme = { bits: o.bits, groupSize: o.groupSize, sym: o.sym, descAct: o.descAct };
  // and full groups along the intermediate, which the most runtimes accept (see fullGroupsTarget)
  const plan = planPadding(
    config,
    fullGroupsTarget(formatTarget(packing, scheme), scheme.groupSize),
    [],
    has,
  );
  if (req.pad === "none" && plan.to !== plan.from)
    throw new GptqError(
      `intermediate_size ${plan.from} does not fit ${plan.target} (${plan.to} would); use --pad auto to zero-pad it (the model's function is unchanged)`,
    );
  // The output can be written and the result fits the disk: known now, not after hours of work.
  checkOutputPath(req.modelDir, req.outDir);
  checkOutputDir(
    req.outDir,
    quantizedCheckpointBytes(req.modelDir, projectionShapes(config, plan.to, o, has), packing, plan),
  );
  // calibration input is checked before anything is said about the work
  const cal = req.calib
    ? loadCalibration({ ...req.calib, modelDir: req.modelDir, vocabSize: config.vocabSize })
    : undefined;
  if (cal) onEvent({ type: "note", text: `calibration: ${cal.source}` });
  if (plan.to !== plan.from)
    onEvent({
      type: "note",
      text: `padding intermediate_size ${plan.from} -> ${plan.to} with zeros for ${plan.target}`,
    });
  const warnings: string[] = [];
  const checkScheme = { bits: o.bits, groupSize: o.groupSize, sym: o.sym };
  const written = [...projectionShapes(config, plan.to, o, has)].map(([name, sh]) => ({
    name,
    inFeatures: sh.inFeatures,
    outFeatures: sh.outFeatures,
    actOrder: o.descAct && !o.staticGroups,
  }));
  const marlin = req.format === "marlin" ? marlinWarning(written, checkScheme) : undefined;
  if (marlin) {
    warnings.push(marlin);
    onEvent({ type: "note", text: `warning: ${marlin}` });
  }
  const few = cal && o.method === "gptq" ? fewTokensWarning(config, plan.to, cal.sequences, has) : undefined;
  if (few) {
    warnings.push(few);
    onEvent({ type: "note", text: `warning: ${few}` });
  }

  // one layer in memory at a time, padded as it is read; each quantized layer goes to its place in the
  // output's shards as soon as it is done, so neither codes nor packed layers pile up
  const model = LayerwiseDecoder.open(req.modelDir, (layer) =>
    padLayerIntermediate(layer, plan.from, plan.to),
  );
  let run: PipelineResult | undefined;
  let chosen: { format: CheckpointFormat; why?: string } | undefined;
  let meta: QuantConfig["meta"] = {};
  let writeSeconds = 0;
  let openSeconds = 0;
  const shapes = projectionShapes(config, plan.to, o, has);
  try {
    await buildDirAtomic(req.outDir, (tmp) => {
      const out = new QuantizedCheckpointWriter(tmp, req.modelDir, shapes, req.format, plan);
      try {
        openSeconds = (Date.now() - t0) / 1000;
        run = quantizeModel(model, cal?.sequences, { ...o, device: device.kind }, onEvent, (p, l) =>
          out.layers.add(p, l),
        );
        const tWrite = Date.now();
        chosen = out.layers.format();
        meta = {
          quantizer: ["gptq-ts:0.1.0"],
          preset,
          method: o.method,
          clip: o.clip,
          ...(o.fpTarget ? { fp_target: true } : {}),
          ...(o.splitRange ? { split_range: true } : {}),
          ...(o.freshGroups ? { fresh_groups: true } : {}),
          ...(o.refine ? { refine: o.refine } : {}),
          ...(plan.to !== plan.from ? { padded_intermediate_size: { from: plan.from, to: plan.to } } : {}),
        };
        out.finish({
          ...scheme,
          staticGroups: o.staticGroups,
          trueSequential: true,
          dampPercent: o.method === "gptq" ? o.damp : undefined,
          quantMethod: "gptq" as const,
          checkpointFormat: chosen.format,
          meta,
        });
        writeSeconds = (Date.now() - tWrite) / 1000;
      } finally {
        out.close();
      }
    });
  } finally {
    model.close();
  }
  if (!run || !chosen) throw new Error("quantize: the checkpoint was built without a run");
  const reports = run.reports;
  const worst = reports.reduce((a, b) => (b.relError > a.relError ? b : a), reports[0]);
  return {
    modelDir: req.modelDir,
    out: req.outDir,
    preset,
    overridden,
    options: o,
    fallbacks: [...familyFallbacks, ...fallbackLines(reports)],
    format: chosen.format,
    formatNote: chosen.why,
    pad: plan,
    calibration: cal?.source,
    device,
    layers: reports.length,
    errorOf: reports[0]?.relErrorOf ?? "weights",
    meanRelError: reports.reduce((s, r) => s + r.relError, 0) / Math.max(1, reports.length),
    worst: { name: worst.name, relError: worst.relError },
    memory: {
      hostPeakBytes: process.resourceUsage().maxRSS * 1024,
      gpuPeakBytes: device.kind === "cuda" ? CudaDevice.get().memoryStats().peakLiveBytes : undefined,
    },
    quantizeSeconds: run.seconds,
    phases: { open: openSeconds, ...run.phases, write: writeSeconds },
    seconds: (Date.now() - t0) / 1000,
    reports,
    warnings,
    runtimes: runtimeSummary(req.outDir, chosen.format, written, checkScheme, meta),
  };
}

/** "down_proj in layers 0..4: 1024 calibration tokens: no fp-target (needs 1376 tokens)", one per projection and reason. */
export function fallbackLines(reports: readonly LinearReport[]): string[] {
  const layers = new Map<string, number[]>();
  for (const r of reports)
    if (r.fallback) {
      const key = `${r.linear}\0${r.fallback}`;
      layers.set(key, [...(layers.get(key) ?? []), r.layer]);
    }
  return [...layers].map(([key, ls]) => {
    const [linear, why] = key.split("\0");
    return `${linear} in layer${ls.length > 1 ? "s" : ""} ${ls.join(", ")}: ${why}`;
  });
}

/** Every decoder projection the pipeline quantizes, by tensor prefix, with the shape it will have. */
function projectionShapes(
  config: ModelConfig,
  intermediate: number,
  o: PipelineOptions,
  has: (prefix: string) => boolean,
): Map<string, LayerShape> {
  const shapes = new Map<string, LayerShape>();
  const family = familyOf(config);
  for (let i = 0; i < config.numLayers; i++)
    for (const p of storedProjections(family, config, i, has, "config.json", intermediate))
      shapes.set(p.prefix, {
        inFeatures: p.shape[1],
        outFeatures: p.shape[0],
        bits: o.bits,
        groupSize: o.groupSize,
      });
  return shapes;
}

/**
 * GPTQ's Hessian of a projection is X^T X over the calibration tokens: with fewer tokens than its
 * in_features it is rank-deficient (rank at most the token count), and the weights it cannot see are
 * quantized on dampening alone. Says which projections, and how many tokens would do.
 */
export function fewTokensWarning(
  config: ModelConfig,
  intermediate: number,
  sequences: readonly Int32Array[],
  has?: (prefix: string) => boolean,
): string | undefined {
  const tokens = sequences.reduce((n, s) => n + s.length, 0);
  const short = decoderLinearShapes(config, intermediate, has).filter((s) => s.inFeatures > tokens);
  if (!short.length) return undefined;
  const need = Math.max(...short.map((s) => s.inFeatures));
  return `${tokens} calibration tokens are fewer than the in_features of ${short.map((s) => `${s.linear} (${s.inFeatures})`).join(", ")} in every layer: their Hessians are rank-deficient and GPTQ leans on dampening there; give at least ${need} tokens (--nsamples x --seqlen)`;
}
