import { formatBytes } from "../../io/output.js";
import {
  Command,
  floatOption,
  groupSizeOption,
  intOption,
  parse,
  printJson,
  threadsOption,
} from "../command.js";
import { prepareOutput } from "../output.js";
import { ProgressBar, formatSeconds } from "../progress.js";
import { UsageError } from "../../util/errors.js";
import { quantizeCheckpoint, QuantizeRequest } from "../../pipeline/quantize-checkpoint.js";
import { LinearReport, PipelineEvent, TOKENS_PER_INPUT } from "../../pipeline/quantize-model.js";
import { DEFAULT_CALIB_KEY } from "../../pipeline/calibration.js";
import { Bits } from "../../formats/types.js";
import { RuntimeSummary } from "../../pipeline/runtimes.js";
import {
  DEFAULT_PRESET,
  PRESET_NAMES,
  QUALITY_PRESETS,
  QualityOptions,
  isQualityPreset,
} from "../../pipeline/presets.js";
import { expertOf } from "../../model/families/experts.js";

const USAGE = `usage: gptq quantize <model-dir> --out <dir> [options]

Quantizes an unquantized checkpoint of a family in the model-family table (Llama, Mistral, Qwen2, Qwen3,
Phi-3, Gemma 2/3, OPT, Falcon) layer by layer, true-sequential in the family's order (Llama: q/k/v, then
o, then gate/up, then down), each projection calibrated on the outputs of the already
quantized projections before it, and writes a GPTQ or Marlin checkpoint.

  --out DIR             output directory (must not exist or be empty)
  --bits N              2, 3, 4 or 8 (default 4)
  --group-size N        input rows per scale, -1 for one group (default 128)
  --sym | --asym        symmetric (default) or asymmetric zero points
  --desc-act            act-order: quantize columns by decreasing Hessian diagonal (writes g_idx)
  --static-groups       with --desc-act: fix group parameters before reordering (g_idx stays k // group)
  --damp F              dampening, fraction of the mean Hessian diagonal (default 0.01; raised if needed)
  --method M            gptq (default) or rtn (round-to-nearest, no calibration needed)
  --preset P            ${PRESET_NAMES.map((p) => `${p}${p === DEFAULT_PRESET ? " (default)" : ""}`).join(" | ")}: the quality options below,
${PRESET_NAMES.map((p) => `                          ${p.padEnd(9)} ${QUALITY_PRESETS[p].summary}`).join("\n")}
                        each option below given explicitly replaces the preset's
  --mse                 search each group's scale over a shrink grid (AutoGPTQ's mse option)
  --clip C              minmax | mse (same as --mse) | hessian (grid weighted by the Hessian)
                        | gptq (grid scored by GPTQ's own loss over each group; slower)
  --split-range         asymmetric grids: search the lower and upper ends of each range separately
  --fresh-groups        GPTQ: each dynamic group's parameters from the weights as updated so far
  --refine N            GPTQ: N rounds of least-squares scale refit with codes fixed, then GPTQ again
  --fp-target           aim each projection at the unquantized model's outputs: quantize the least-squares
                        weights for the drifted inputs (runs the fp model alongside)
  --no-fp-target, --no-fresh-groups, --no-split-range   turn the option off
                        fp-target and refine need calibration tokens: ${TOKENS_PER_INPUT.fpTarget} and ${TOKENS_PER_INPUT.refine} per input feature of a
                        projection; with fewer, that projection runs without them and the summary says so
  --calib FILE          calibration data: a .safetensors token file ([n, seqlen] int ids) or a text file
                        tokenized with <model-dir>/tokenizer.json
  --calib-key K         tensor name in a token file (default ${DEFAULT_CALIB_KEY})
  --nsamples N          calibration sequences (default 128)
  --seqlen N            tokens per sequence (token file: its width; text: 2048)
  --format F            gptq (v1) | gptq_v2 | marlin (default: gptq, or gptq_v2 when zero points of 0 need it)
  --pad P               auto (default): zero-pad the MLP intermediate so every layer packs; none: refuse instead
  --device D            cuda | cpu | auto (default: the GPU when one is found): where calibration runs
                        (GPTQ: each layer's forward in fp16, Hessians, GPTQ, with --fp-target the fp
                        model's forward and its target too); cuda without a GPU is refused before any work
  --threads N           CPU threads for Hessians, GPTQ and the forward passes (default: every core)
  --json                print the result as JSON on stdout

Progress and one line per projection go to stderr; the summary to stdout. Decoder layers are numbered
from 0, as in the tensor names (model.layers.0, ...), in both.
`;

/** The progress bar's label: "layer 3 of 0..4 gate/up  elapsed 2.1s  left 1.4s". */
export function stepLabel(e: Extract<PipelineEvent, { type: "step" }>): string {
  return `layer ${e.layer} of 0..${e.layers - 1} ${e.step}  elapsed ${formatSeconds(e.elapsed)}  left ${formatSeconds(e.eta)}`;
}

/** One projection's line: "layer  3 gate_proj 64->176  rel. output error 7.312e-3  loss 1.126e+0". */
export function linearLine(r: LinearReport): string {
  const loss = r.loss !== undefined ? `  loss ${r.loss.toExponential(3)}` : "";
  const damp = r.damp !== undefined ? `  damp raised to ${r.damp}` : "";
  const tokens = r.tokens !== undefined ? `  ${r.tokens} tokens` : "";
  const rtn = r.rounded ? "  RTN (too few tokens for GPTQ)" : "";
  return `layer ${String(r.layer).padStart(2)} ${r.linear.padEnd(9)} ${r.inFeatures}->${r.outFeatures}  rel. ${r.relErrorOf === "outputs" ? "output" : "weight"} error ${r.relError.toExponential(3)}${loss}${damp}${tokens}${rtn}`;
}

/**
 * A mixture-of-experts model's calibration tokens per expert, layer by layer, and the experts rounded
 * for want of tokens: "experts: tokens per expert: layer 0: 371 402 ...; RTN (too few tokens): none".
 */
export function expertsLine(reports: readonly LinearReport[]): string | undefined {
  const experts = reports.filter((r) => r.tokens !== undefined && expertOf(r.linear) !== undefined);
  if (!experts.length) return undefined;
  // an expert's projections all see the rows routed to it: one count per expert
  const perLayer = new Map<number, Map<number, number>>();
  for (const r of experts)
    perLayer.set(r.layer, (perLayer.get(r.layer) ?? new Map()).set(expertOf(r.linear)!, r.tokens!));
  const layers = [...perLayer].map(([l, m]) => `layer ${l}: ${[...m.values()].join(" ")}`);
  // which of each expert's projections were rounded: gate/up and down have different input widths
  const rounded = new Map<string, string[]>();
  for (const r of experts.filter((x) => x.rounded)) {
    const key = `layer ${r.layer} expert ${expertOf(r.linear)}`;
    rounded.set(key, [...(rounded.get(key) ?? []), r.linear.split(".").pop()!]);
  }
  return `experts: tokens per expert (expert 0 first): ${layers.join("; ")}; RTN (too few tokens for GPTQ): ${rounded.size ? [...rounded].map(([e, names]) => `${e} (${names.join(", ")})`).join(", ") : "none"}`;
}

/** "runtimes: every layer runs in a, b; not in c (3/35), d (0/35) (gptq check <out> says why)". */
export function runtimesLine(r: RuntimeSummary, out: string): string {
  const not = r.refuse.map((x) => `${x.name} (${x.layersOk}/${x.layers})`);
  return `runtimes: every layer runs in ${r.accept.length ? r.accept.join(", ") : "none of the known kernels"}${not.length ? `; not in ${not.join(", ")} (gptq check ${out} says why)` : ""}`;
}

const FLAG_OF: Record<keyof QualityOptions, string> = {
  clip: "--clip",
  fpTarget: "--fp-target",
  splitRange: "--split-range",
  freshGroups: "--fresh-groups",
  refine: "--refine",
};

export const quantizeCommand: Command = {
  name: "quantize",
  summary: "quantize a checkpoint with GPTQ or RTN (calibration layer by layer)",
  usage: USAGE,
  async run(argv) {
    const { values: v, positionals } = parse(argv, {
      out: { type: "string" },
      bits: { type: "string" },
      "group-size": { type: "string" },
      sym: { type: "boolean" },
      asym: { type: "boolean" },
      "desc-act": { type: "boolean" },
      "static-groups": { type: "boolean" },
      damp: { type: "string" },
      method: { type: "string" },
      mse: { type: "boolean" },
      clip: { type: "string" },
      preset: { type: "string" },
      "fp-target": { type: "boolean" },
      "no-fp-target": { type: "boolean" },
      "split-range": { type: "boolean" },
      "no-split-range": { type: "boolean" },
      "fresh-groups": { type: "boolean" },
      "no-fresh-groups": { type: "boolean" },
      refine: { type: "string" },
      calib: { type: "string" },
      "calib-key": { type: "string" },
      nsamples: { type: "string" },
      seqlen: { type: "string" },
      format: { type: "string" },
      pad: { type: "string" },
      device: { type: "string" },
      threads: { type: "string" },
      json: { type: "boolean" },
    });
    if (positionals.length !== 1) throw new UsageError("expected one <model-dir>");
    threadsOption(v.threads);
    if (!v.out) throw new UsageError("--out DIR is required");
    if (v.sym && v.asym) throw new UsageError("--sym and --asym exclude each other");
    const bits = intOption(v.bits, "bits", 4)!;
    if (![2, 3, 4, 8].includes(bits)) throw new UsageError(`--bits must be 2, 3, 4 or 8, got ${bits}`);
    const method = v.method ?? "gptq";
    if (method !== "gptq" && method !== "rtn")
      throw new UsageError(`--method must be gptq or rtn, got "${method}"`);
    const clip = v.clip ?? (v.mse ? "mse" : undefined);
    if (clip !== undefined && clip !== "minmax" && clip !== "mse" && clip !== "hessian" && clip !== "gptq")
      throw new UsageError(`--clip must be minmax, mse, hessian or gptq, got "${clip}"`);
    if (v.mse && clip !== "mse") throw new UsageError("--mse and --clip disagree");
    const preset = v.preset ?? DEFAULT_PRESET;
    if (!isQualityPreset(preset))
      throw new UsageError(`--preset must be ${PRESET_NAMES.join(", ")}, got "${preset}"`);
    /** a boolean option and its --no- form: true, false, or undefined (the preset's) */
    const toggle = (name: "fp-target" | "split-range" | "fresh-groups") => {
      if (v[name] && v[`no-${name}`]) throw new UsageError(`--${name} and --no-${name} exclude each other`);
      return v[name] ? true : v[`no-${name}`] ? false : undefined;
    };
    const format = v.format ?? "auto";
    if (!["auto", "gptq", "gptq_v2", "marlin"].includes(format))
      throw new UsageError(`--format must be gptq, gptq_v2 or marlin, got "${format}"`);
    const pad = v.pad ?? "auto";
    if (pad !== "auto" && pad !== "none") throw new UsageError(`--pad must be auto or none, got "${pad}"`);
    const device = v.device ?? "auto";
    if (device !== "auto" && device !== "cuda" && device !== "cpu")
      throw new UsageError(`--device must be cuda, cpu or auto, got "${device}"`);
    const nsamples = intOption(v.nsamples, "nsamples", undefined, 1);
    const seqlen = intOption(v.seqlen, "seqlen", undefined, 2);
    if (v.calib === undefined && (v["calib-key"] ?? v.nsamples ?? v.seqlen) !== undefined)
      throw new UsageError("--calib-key, --nsamples and --seqlen describe --calib FILE; give it too");
    const req: QuantizeRequest = {
      modelDir: positionals[0],
      outDir: v.out,
      options: {
        method,
        bits: bits as Bits,
        groupSize: groupSizeOption(v["group-size"], "group-size", 128)!,
        sym: !v.asym,
        descAct: v["desc-act"] ?? false,
        staticGroups: v["static-groups"] ?? false,
        damp: floatOption(v.damp, "damp", 0.01, 0)!,
        clip,
        fpTarget: toggle("fp-target"),
        splitRange: toggle("split-range"),
        freshGroups: toggle("fresh-groups"),
        refine: intOption(v.refine, "refine", undefined, 0),
      },
      preset,
      calib:
        v.calib === undefined
          ? undefined
          : {
              file: v.calib,
              key: v["calib-key"],
              nsamples,
              seqlen,
            },
      format: format as QuantizeRequest["format"],
      pad,
      device,
    };
    prepareOutput("quantize", req.outDir);
    const bar = new ProgressBar();
    // the bar is cleared on failure too, so the error is a line of its own
    const res = await quantizeCheckpoint(req, (e) => {
      if (e.type === "note") bar.log(e.text);
      else if (e.type === "step") bar.update(e.done / e.total, stepLabel(e));
      else bar.log(linearLine(e.report));
    }).finally(() => bar.done());
    if (v.json) printJson(res);
    else {
      const o = res.options;
      const given = res.overridden.map((k) => FLAG_OF[k]);
      const lines = [
        `preset: ${res.preset}${given.length ? ` (given explicitly: ${given.join(", ")})` : ""}${o.method === "rtn" ? " (RTN: its GPTQ options do not apply)" : ""}`,
        ...res.fallbacks.map((f) => `fallback: ${f}`),
        `quantized ${res.layers} projections of ${res.modelDir} with ${o.method}${o.clip !== "minmax" ? ` (${o.clip} clipping)` : ""}${o.fpTarget ? " aimed at fp outputs" : ""}: ${o.bits}-bit, group ${o.groupSize}, ${o.sym ? "sym" : "asym"}${o.descAct ? ", act-order" : ""}${o.staticGroups ? ", static groups" : ""}`,
        `calibration: ${res.calibration ?? "none"}`,
        `device: ${res.device.name}${o.method === "rtn" ? " (RTN runs on the CPU)" : ""}`,
        res.pad
          ? res.pad.from === res.pad.to
            ? `padding: none needed (${res.pad.target})`
            : `padding: intermediate_size ${res.pad.from} -> ${res.pad.to} with zeros for ${res.pad.target} (function unchanged)`
          : "padding: off",
        `mean relative ${res.errorOf === "outputs" ? "output" : "weight"} error ${res.meanRelError.toExponential(3)}, worst ${res.worst.name} ${res.worst.relError.toExponential(3)}`,
        expertsLine(res.reports),
        runtimesLine(res.runtimes, res.out),
        `memory: host peak ${formatBytes(res.memory.hostPeakBytes)}${res.memory.gpuPeakBytes !== undefined ? `, GPU peak ${formatBytes(res.memory.gpuPeakBytes)}` : ""}`,
        `time: ${Object.entries(res.phases)
          .map(([phase, s]) => `${phase} ${formatSeconds(s)}`)
          .join(", ")}`,
        `wrote ${res.out} as ${res.format}${res.formatNote ? ` (${res.formatNote})` : ""} in ${formatSeconds(res.seconds)} (quantization ${formatSeconds(res.quantizeSeconds)})`,
      ];
      process.stdout.write(lines.filter((l) => l !== undefined).join("\n") + "\n");
    }
  },
};
