/**
 * Quality and cost of the quantize presets (and of candidate method mixes) on data sampled fresh for the
 * run: stories260K with calibration and evaluation tokens drawn from the fp32 model with seeds of one's
 * choice, or the synthetic Llama (LLM-like statistics) at two sizes. Perplexity of the dequantized model
 * on the evaluation tokens; time and CPU time of the layer-by-layer pipeline alone.
 *   node dist/bench/presets-quality.js MODEL SEED [method ...]
 * MODEL: stories | syn-small | syn-large; SEED: calibration tokens use seed 2 x SEED, evaluation 2 x SEED + 1
 * (stories with SEED 0: the calibration and evaluation tokens shipped in stories260K-eval.safetensors).
 * Methods: the presets (fast, balanced, best) and the mixes in MIXES (default: the presets).
 * CONFIGS=0,2 picks configurations by index; GPTQ_SHARED_DIR points at the reference data.
 */
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DecoderModel } from "../src/model/decoder.js";
import { perplexity } from "../src/model/perplexity.js";
import { formatTarget, planPadding } from "../src/model/pad-plan.js";
import { padModelIntermediate } from "../src/model/padding.js";
import { PipelineOptions, quantizeModel } from "../src/pipeline/quantize-model.js";
import { QUALITY_PRESETS, QualityPreset, resolveQuality } from "../src/pipeline/presets.js";
import { SyntheticSpec, writeSyntheticLlama, writeTokenFile } from "../src/pipeline/synthetic.js";
import { readTokenRows } from "../src/pipeline/calibration.js";
import { Bits } from "../src/formats/types.js";
import { sharedPath } from "../test/helpers/shared.js";
import { decoderMismatch, sampleTokens } from "./sampling.js";

/** The three configurations. */
const CONFIGS: { bits: Bits; groupSize: number; sym: boolean; descAct: boolean }[] = [
  { bits: 4, groupSize: 16, sym: true, descAct: true },
  { bits: 3, groupSize: 64, sym: true, descAct: false },
  { bits: 2, groupSize: 16, sym: false, descAct: true },
];

/** Candidate mixes, beside the presets. */
const MIXES: Record<string, Partial<PipelineOptions>> = {
  hessian: { clip: "hessian" },
  fp: { fpTarget: true },
  "fp-hessian": { fpTarget: true, clip: "hessian" },
  "fp-hessian-fresh": { fpTarget: true, clip: "hessian", freshGroups: true, splitRange: true },
  "fp-hessian-fresh-r1": { fpTarget: true, clip: "hessian", freshGroups: true, splitRange: true, refine: 1 },
  "fp-hessian-fresh-r2": { fpTarget: true, clip: "hessian", freshGroups: true, splitRange: true, refine: 2 },
  "hessian-fresh": { clip: "hessian", freshGroups: true, splitRange: true },
  "hessian-fresh-r1": { clip: "hessian", freshGroups: true, splitRange: true, refine: 1 },
  "hessian-fresh-r2": { clip: "hessian", freshGroups: true, splitRange: true, refine: 2 },
  "fp-gptq-fresh": { fpTarget: true, clip: "gptq", freshGroups: true, splitRange: true },
  "fp-gptq-fresh-r2": { fpTarget: true, clip: "gptq", freshGroups: true, splitRange: true, refine: 2 },
};

const SYNTHETIC: Record<string, SyntheticSpec> = {
  "syn-small": {
    hiddenSize: 128,
    intermediateSize: 384,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    vocabSize: 256,
    seed: 5,
  },
  "syn-large": {
    hiddenSize: 256,
    intermediateSize: 768,
    numLayers: 4,
    numHeads: 8,
    numKvHeads: 4,
    vocabSize: 512,
    seed: 6,
  },
};

const [modelName, seedArg, ...picked] = process.argv.slice(2);
const seed = Number(seedArg);
if (!(modelName === "stories" || modelName in SYNTHETIC) || !Number.isInteger(seed))
  throw new Error("usage: node dist/bench/presets-quality.js stories|syn-small|syn-large SEED [method ...]");
let dir: string;
if (modelName === "stories") dir = sharedPath("models", "stories260K");
else {
  dir = join(tmpdir(), `gptq-presets-${modelName}`);
  if (!existsSync(join(dir, "config.json"))) writeSyntheticLlama(dir, SYNTHETIC[modelName]);
}
// stories260K's own token files: 128 x 256 calibration, 64 x 256 evaluation, BOS 1
const shape =
  modelName === "stories"
    ? { calib: 128, eval: 64, seqlen: 256, bos: 1 }
    : { calib: 128, eval: 32, seqlen: 128, bos: 0 };
const fp = DecoderModel.load(dir);
// sampled once per model and seed, then read back; stories seed 0: the tokens shipped with the model
const tokenFile =
  modelName === "stories" && seed === 0
    ? sharedPath("models", "stories260K-eval.safetensors")
    : join(tmpdir(), `gptq-presets-tokens-${modelName}-${seed}.safetensors`);
if (!existsSync(tokenFile)) {
  const sampled = {
    calibration_tokens: sampleTokens(fp, shape.calib, shape.seqlen, 2 * seed, shape.bos),
    evaluation_tokens: sampleTokens(fp, shape.eval, shape.seqlen, 2 * seed + 1, shape.bos),
  };
  const mismatch = decoderMismatch(fp, sampled.evaluation_tokens[0]);
  if (mismatch > 1e-3) throw new Error(`the sampler's decoder is off the model's forward by ${mismatch}`);
  writeTokenFile(tokenFile, sampled);
}
const calib = readTokenRows(tokenFile, "calibration_tokens").rows;
const evalSeqs = readTokenRows(tokenFile, "evaluation_tokens").rows;
console.log(`${modelName} seed ${seed}: fp32 perplexity ${perplexity(fp, evalSeqs).ppl.toFixed(3)}`);

const methods = picked.length ? picked : Object.keys(QUALITY_PRESETS);
console.log("| model | seed | bits | group | sym | act-order | method | ppl | quantize s | CPU s |");
console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
const configs = process.env.CONFIGS?.split(",").map(Number) ?? CONFIGS.map((_, i) => i);
for (const c of CONFIGS.filter((_, i) => configs.includes(i))) {
  for (const m of methods) {
    const scheme = { method: "gptq" as const, ...c, staticGroups: false, damp: 0.01 };
    const opts: PipelineOptions =
      m in QUALITY_PRESETS
        ? resolveQuality(scheme, m as QualityPreset).options
        : resolveQuality({ ...scheme, ...MIXES[m] }, "fast").options;
    const model = DecoderModel.load(dir);
    const plan = planPadding(model.config, formatTarget("gptq", { ...c }));
    padModelIntermediate(model, plan.to);
    const cpu0 = process.cpuUsage();
    const run = quantizeModel(model, calib, opts);
    const cpu = process.cpuUsage(cpu0);
    const { ppl } = perplexity(model, evalSeqs);
    console.log(
      `| ${modelName} | ${seed} | ${c.bits} | ${c.groupSize} | ${c.sym ? "yes" : "no"} | ${c.descAct ? "yes" : "no"} | ${m} | ${ppl.toFixed(1)} | ${run.seconds.toFixed(1)} | ${((cpu.user + cpu.system) / 1e6).toFixed(1)} |`,
    );
  }
}
