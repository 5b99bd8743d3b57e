// Relative output error ||X Q^T - X W^T||^2 / ||X W^T||^2 on the public GPTQ algorithm fixture: AutoGPTQ's
// reference and its RTN against ours with each scale search.
// Run: npm run build --silent && node dist/bench/gptq-quality.js [path/to/public-gptq-algorithm.safetensors]
import { HessianAccumulator, gptqQuantize } from "../src/quant/index.js";
import type { GptqOptions } from "../src/quant/index.js";
import { gram, loadAlgorithmFixture, relativeOutputErrorGram } from "../test/quant/data.js";
import { sharedPath } from "../test/helpers/shared.js";

const path = process.argv[2] ?? sharedPath("fixtures", "public-gptq-algorithm.safetensors");
const f = loadAlgorithmFixture(path);
const acc = new HessianAccumulator(f.K);
for (let r = 0; r < f.rows; r += 128) acc.add(f.X.subarray(r * f.K, (r + 128) * f.K), 128);
const xtx = gram(f.X, f.rows, f.K);

const METHODS: [string, Partial<GptqOptions>][] = [
  ["ours, min/max", {}],
  ["ours, mse", { clip: "mse" }],
  ["ours, hessian", { clip: "hessian" }],
  [
    "ours, hessian + fresh + split + refine 2",
    { clip: "hessian", freshGroups: true, splitRange: true, refine: 2 },
  ],
  ["ours, gptq + fresh + split + refine 2", { clip: "gptq", freshGroups: true, splitRange: true, refine: 2 }],
];

console.log(`| case | RTN (ref.) | AutoGPTQ | ${METHODS.map((m) => m[0]).join(" | ")} |`);
console.log(`| --- | --- | --- | ${METHODS.map(() => "---").join(" | ")} |`);
for (const c of f.cases) {
  const base: GptqOptions = {
    bits: c.bits,
    groupSize: c.group_size,
    sym: c.sym,
    descAct: c.desc_act,
    staticGroups: c.static_groups,
  };
  const cells = METHODS.map(([, extra]) => {
    const r = gptqQuantize(f.W, f.N, f.K, acc.H, { ...base, ...extra });
    if (r.layer.gIdx.some((g, k) => g !== c.gIdx[k])) throw new Error(`${c.name}: g_idx differs`);
    return relativeOutputErrorGram(xtx, f.W, r.Q, f.N, f.K).toPrecision(4);
  });
  const fmt = (x: number) => x.toPrecision(4);
  console.log(
    `| ${c.name} | ${fmt(c.rtn_rel_output_error)} | ${fmt(c.rel_output_error)} | ${cells.join(" | ")} |`,
  );
}
