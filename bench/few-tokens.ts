/**
 * How many calibration tokens per input fp-target needs: stories260K 4-bit g16 sym act-order calibrated on
 * the first N sequences (256 tokens each) of its shipped calibration tokens, perplexity on 16 evaluation
 * sequences, for the balanced preset without fp-target, with fp-target on every projection, and with
 * fp-target only where there are at least FLOOR tokens per input (down_proj has 176 inputs, the rest 64).
 *   node dist/bench/few-tokens.js [N,N,...] [FLOOR]     (default 2,4,8,16 and 32)
 */
import { DecoderModel } from "../src/model/decoder.js";
import { perplexity } from "../src/model/perplexity.js";
import { formatTarget, planPadding } from "../src/model/pad-plan.js";
import { padModelIntermediate } from "../src/model/padding.js";
import { TOKENS_PER_INPUT, quantizeModel } from "../src/pipeline/quantize-model.js";
import { resolveQuality } from "../src/pipeline/presets.js";
import { readTokenRows } from "../src/pipeline/calibration.js";
import { sharedPath } from "../test/helpers/shared.js";

const tokens = sharedPath("models", "stories260K-eval.safetensors");
const calib = readTokenRows(tokens, "calibration_tokens").rows;
const evalSeqs = readTokenRows(tokens, "evaluation_tokens").rows.slice(0, 16);
const counts = (process.argv[2] ?? "2,4,8,16").split(",").map(Number);
const floor = Number(process.argv[3] ?? 32);
const scheme = {
  method: "gptq",
  bits: 4,
  groupSize: 16,
  sym: true,
  descAct: true,
  staticGroups: false,
  damp: 0.01,
} as const;
// the floor is the pipeline's constant; the measurement moves it (this process only)
const floors = TOKENS_PER_INPUT as { fpTarget: number };
const variants: [string, boolean, number][] = [
  ["no fp-target", false, 0],
  ["fp-target everywhere", true, 0],
  [`fp-target from ${floor} per input`, true, floor],
];
console.log(`| calibration tokens | ${variants.map((v) => v[0]).join(" | ")} |`);
console.log(`| --- | ${variants.map(() => "---").join(" | ")} |`);
for (const n of counts) {
  const cells = variants.map(([, fpTarget, f]) => {
    floors.fpTarget = f;
    const model = DecoderModel.load(sharedPath("models", "stories260K"));
    padModelIntermediate(model, planPadding(model.config, formatTarget("gptq", scheme)).to);
    quantizeModel(model, calib.slice(0, n), resolveQuality({ ...scheme, fpTarget }).options);
    return perplexity(model, evalSeqs).ppl.toFixed(1);
  });
  console.log(`| ${n} x 256 | ${cells.join(" | ")} |`);
}
