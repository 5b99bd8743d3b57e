/**
 * stories260K on the CPU: perplexity on the 64 evaluation sequences and the time it takes, in fp32,
 * with int4 weights dequantized group by group (QuantLinear), and as A8W4 (int8 per-token activations,
 * the same int4 weights) — torchao 8da4w weight quantization (scale max|w| / 7.5) at group 32 and 64.
 * Run: npm run build --silent && node dist/bench/model.bench.js [../shared]
 */
import { join } from "node:path";
import { A8W4Linear, DenseLinear, Linear, QuantLinear } from "../src/backend/cpu/linear.js";
import { readAllTensors } from "../src/io/safetensors.js";
import { DecoderModel } from "../src/model/decoder.js";
import { LLAMA_LINEARS } from "../src/model/families/llama.js";
import { perplexity } from "../src/model/perplexity.js";

/** the projections of a Llama decoder layer, in true-sequential order */
const LINEAR_NAMES = LLAMA_LINEARS.map((l) => l.name);

const shared = process.argv[2] ?? "../shared";
const modelDir = join(shared, "models", "stories260K");
const t = readAllTensors(join(shared, "models", "stories260K-eval.safetensors")).tensors.get(
  "evaluation_tokens",
)!;
const [n, T] = t.shape;
const seqs = Array.from({ length: n }, (_, i) => (t.data as Int32Array).subarray(i * T, (i + 1) * T));

/** every decoder projection replaced by make(fp weight) */
function withLinears(make: (w: Float32Array, N: number, K: number) => Linear): DecoderModel {
  const m = DecoderModel.load(modelDir);
  for (const layer of m.layers)
    for (const name of LINEAR_NAMES) {
      const l = layer.linears[name];
      if (!(l instanceof DenseLinear)) throw new Error(`${layer.linearPrefix(name)} is not an fp layer`);
      layer.linears[name] = make(l.weight, l.outFeatures, l.inFeatures);
    }
  return m;
}

function run(label: string, m: DecoderModel): void {
  const t0 = performance.now();
  const { ppl, tokens } = perplexity(m, seqs);
  const s = (performance.now() - t0) / 1000;
  console.log(`| ${label} | ${ppl.toFixed(3)} | ${tokens} | ${s.toFixed(2)} | ${(tokens / s).toFixed(0)} |`);
}

console.log("| model | ppl | predictions | seconds | tokens/s |");
console.log("|---|---|---|---|---|");
run("fp32", DecoderModel.load(modelDir));
for (const g of [32, 64]) {
  run(
    `int4 sym g${g} weights, fp32 activations (QuantLinear)`,
    withLinears((w, N, K) => new QuantLinear(A8W4Linear.fromWeight(w, N, K, g).toQuantized())),
  );
  run(
    `A8W4 g${g} (int8 per-token activations)`,
    withLinears((w, N, K) => A8W4Linear.fromWeight(w, N, K, g)),
  );
}
