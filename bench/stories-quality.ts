/**
 * Perplexity of stories260K quantized by the calibration pipeline at the three reference configurations,
 * evaluated in memory on the dequantized weights (what the written checkpoint holds).
 *   node dist/bench/stories-quality.js [method ...]   methods: see METHODS (default: all)
 * CONFIGS=0,2 picks configurations by index; GPTQ_SHARED_DIR points at the reference data.
 */
import { readTokenRows } from "../src/pipeline/calibration.js";
import { DecoderModel } from "../src/model/decoder.js";
import { perplexity } from "../src/model/perplexity.js";
import { formatTarget, planPadding } from "../src/model/pad-plan.js";
import { padModelIntermediate } from "../src/model/padding.js";
import { PipelineOptions, quantizeModel } from "../src/pipeline/quantize-model.js";
import { Bits } from "../src/formats/types.js";
import { sharedPath } from "../test/helpers/shared.js";

const MODEL = sharedPath("models", "stories260K");
const TOKENS = sharedPath("models", "stories260K-eval.safetensors");
const CONFIGS: { bits: Bits; groupSize: number; sym: boolean; descAct: boolean; ref: number[] }[] = [
  { bits: 4, groupSize: 32, sym: true, descAct: false, ref: [232.7, 144.8, 116.8] },
  { bits: 4, groupSize: 64, sym: false, descAct: true, ref: [265.7, 130.7, 113.3] },
  { bits: 3, groupSize: 32, sym: false, descAct: true, ref: [1383.8, 599.4, 468.7] },
];
const METHODS: Record<string, Partial<PipelineOptions>> = {
  rtn: { method: "rtn" },
  gptq: {},
  mse: { clip: "mse" },
  hessian: { clip: "hessian" },
  static: { clip: "hessian", staticGroups: true },
  fp: { fpTarget: true },
  "fp-hessian": { fpTarget: true, clip: "hessian" },
};

const calib = readTokenRows(TOKENS, "calibration_tokens").rows;
const evalSeqs = readTokenRows(TOKENS, "evaluation_tokens").rows;
const methods = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(METHODS);
console.log(
  "| bits | group | sym | act-order | method | ppl | reference RTN / GPTQ / GPTQ+MSE | quantize s |",
);
console.log("|---|---|---|---|---|---|---|---|");
const picked = process.env.CONFIGS?.split(",").map(Number) ?? CONFIGS.map((_, i) => i);
for (const c of CONFIGS.filter((_, i) => picked.includes(i))) {
  for (const m of methods) {
    const opts: PipelineOptions = {
      method: "gptq",
      bits: c.bits,
      groupSize: c.groupSize,
      sym: c.sym,
      descAct: c.descAct,
      staticGroups: false,
      damp: 0.01,
      clip: "minmax",
      ...METHODS[m],
    };
    const model = DecoderModel.load(MODEL);
    const plan = planPadding(model.config, formatTarget("gptq", { ...c }));
    padModelIntermediate(model, plan.to);
    const run = quantizeModel(model, opts.method === "rtn" ? undefined : calib, opts);
    const { ppl } = perplexity(model, evalSeqs);
    console.log(
      `| ${c.bits} | ${c.groupSize} | ${c.sym ? "yes" : "no"} | ${c.descAct ? "yes" : "no"} | ${m} | ${ppl.toFixed(1)} | ${c.ref.join(" / ")} | ${run.seconds.toFixed(1)} |`,
    );
  }
}
