// Writes an unquantized Llama-shaped checkpoint of trained-like random weights (heavy weight columns,
// outlier activation channels: pipeline/synthetic.ts) and a token file to calibrate it with, for memory and
// speed measurements of `gptq quantize`. Tensors are generated as they are written (memory stays at the
// largest one), in shards of 5 GB. With --workers W, W processes write the layers (a shard each, every layer
// from its own seed: the same statistics, other values) beside one for the embeddings and head.
// Run: node dist/bench/synthetic-fp.js <out-dir> <tokens.safetensors> [blocks=8] [hidden=1024] [intermediate=2816]
//      node dist/bench/synthetic-fp.js <out-dir> <tokens.safetensors> --shape llama2-7b|llama2-13b
//        [--dtype f16|bf16|f32] [--nsamples 128] [--seqlen 2048] [--workers W] [--layers N]
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TensorEntry, writeSafetensors } from "../src/io/safetensors.js";
import {
  Rng,
  SCALE_SPECS,
  SyntheticSpec,
  syntheticConfigFor,
  syntheticTensors,
  writeSyntheticLlama,
  writeTokenFile,
} from "../src/pipeline/synthetic.js";
import { syntheticTokens } from "../test/helpers/synthetic.js";

const args = process.argv.slice(2);
const flag = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args.splice(i, 2)[1] : undefined;
};
const argv = [...args];
const shape = flag("shape");
const workers = Number(flag("workers") ?? 1);
const layers = flag("layers"); // a shape with fewer decoder layers, for per-layer timings
const shard = flag("shard"); // a worker's own "i/W"
const dtype = (flag("dtype") ?? (shape ? "f16" : "f32")).toUpperCase();
const nsamples = Number(flag("nsamples") ?? (shape ? 128 : 16));
const seqlen = Number(flag("seqlen") ?? (shape ? 2048 : 128));
const [out, tokens, blocks, hidden, inter] = args;
if (!out || !tokens || (shape && !(shape in SCALE_SPECS)) || !["F16", "BF16", "F32"].includes(dtype))
  throw new Error(
    "usage: synthetic-fp <out-dir> <tokens.safetensors> [blocks] [hidden] [intermediate] | --shape llama2-7b|llama2-13b [--dtype f16|bf16|f32] [--nsamples N] [--seqlen N]",
  );
const spec: SyntheticSpec = shape
  ? { ...SCALE_SPECS[shape as keyof typeof SCALE_SPECS], ...(layers ? { numLayers: Number(layers) } : {}) }
  : {
      hiddenSize: Number(hidden ?? 1024),
      intermediateSize: Number(inter ?? 2816),
      numLayers: Number(blocks ?? 8),
      numHeads: 8,
      numKvHeads: 8,
      vocabSize: 2048,
      seed: 1,
    };
const t0 = Date.now();
const storedAs = dtype as "F16" | "BF16" | "F32";
if (workers > 1 || shard) await writeParallel();
else writeSyntheticLlama(out, spec, { dtype: storedAs });
if (shard) process.exit(0);
writeTokenFile(tokens, { calibration_tokens: syntheticTokens(spec, nsamples, seqlen, 7) });
console.log(
  `wrote ${out} (${shape ?? "custom"}, ${dtype}) and ${nsamples} x ${seqlen} tokens in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
);

/** Shard 1: embeddings, final norm and head; shards 2 .. W + 1: contiguous runs of layers, one per worker. */
async function writeParallel(): Promise<void> {
  const tensors = syntheticTensors(spec, storedAs, (l) =>
    l < 0 ? new Rng(spec.seed) : new Rng((Math.imul(spec.seed, 0x9e3779b1) + l + 1) >>> 0),
  );
  const W = shard ? Number(shard.split("/")[1]) : Math.min(workers, spec.numLayers);
  const name = (i: number) =>
    `model-${String(i).padStart(5, "0")}-of-${String(W + 1).padStart(5, "0")}.safetensors`;
  const layersOf = (i: number) => {
    const [from, to] = [Math.floor((i * spec.numLayers) / W), Math.floor(((i + 1) * spec.numLayers) / W)];
    return Array.from({ length: to - from }, (_, j) => from + j);
  };
  const write = (i: number, entries: TensorEntry[]) =>
    writeSafetensors(join(out, name(i)), entries, { format: "pt" });
  if (shard) {
    const i = Number(shard.split("/")[0]);
    write(
      i + 2,
      layersOf(i).flatMap((l) => tensors.layer(l)),
    );
    return;
  }
  mkdirSync(out, { recursive: true });
  const children = Array.from(
    { length: W },
    (_, i) =>
      new Promise<void>((resolve, reject) => {
        const child = spawn(process.execPath, [process.argv[1], ...argv, "--shard", `${i}/${W}`], {
          stdio: "inherit",
        });
        child.on("exit", (code) =>
          code === 0 ? resolve() : reject(new Error(`worker ${i} exited with ${code}`)),
        );
      }),
  );
  write(1, [...tensors.embed, ...tensors.final]);
  await Promise.all(children);
  const weightMap: Record<string, string> = {};
  for (const e of [...tensors.embed, ...tensors.final]) weightMap[e.name] = name(1);
  for (let i = 0; i < W; i++)
    for (const l of layersOf(i)) for (const e of tensors.layer(l)) weightMap[e.name] = name(i + 2);
  const index = { metadata: {}, weight_map: weightMap };
  writeFileSync(join(out, "model.safetensors.index.json"), JSON.stringify(index, null, 2) + "\n");
  writeFileSync(join(out, "config.json"), syntheticConfigFor(spec, storedAs));
}
