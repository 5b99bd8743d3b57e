// Writes an unquantized Llama-shaped checkpoint of trained-like random weights (heavy weight columns,
// outlier activation channels: pipeline/synthetic.ts) and a token file to calibrate it with, for memory and
// speed measurements of `gptq quantize`. Tensors are generated as they are written (memory stays at the
// largest one), in shards of 5 GB.
// Run: node dist/bench/synthetic-fp.js <out-dir> <tokens.safetensors> [blocks=8] [hidden=1024] [intermediate=2816]
//      node dist/bench/synthetic-fp.js <out-dir> <tokens.safetensors> --shape llama2-7b|llama2-13b
//        [--dtype f16|bf16|f32] [--nsamples 128] [--seqlen 2048]
import {
  SCALE_SPECS,
  SyntheticSpec,
  writeSyntheticLlama,
  writeTokenFile,
} from "../src/pipeline/synthetic.js";
import { syntheticTokens } from "../test/helpers/synthetic.js";

const args = process.argv.slice(2);
const flag = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args.splice(i, 2)[1] : undefined;
};
const shape = flag("shape");
const dtype = (flag("dtype") ?? (shape ? "f16" : "f32")).toUpperCase();
const nsamples = Number(flag("nsamples") ?? (shape ? 128 : 16));
const seqlen = Number(flag("seqlen") ?? (shape ? 2048 : 128));
const [out, tokens, blocks, hidden, inter] = args;
if (!out || !tokens || (shape && !(shape in SCALE_SPECS)) || !["F16", "BF16", "F32"].includes(dtype))
  throw new Error(
    "usage: synthetic-fp <out-dir> <tokens.safetensors> [blocks] [hidden] [intermediate] | --shape llama2-7b|llama2-13b [--dtype f16|bf16|f32] [--nsamples N] [--seqlen N]",
  );
const spec: SyntheticSpec = shape
  ? SCALE_SPECS[shape as keyof typeof SCALE_SPECS]
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
writeSyntheticLlama(out, spec, { dtype: dtype as "F16" | "BF16" | "F32" });
writeTokenFile(tokens, { calibration_tokens: syntheticTokens(spec, nsamples, seqlen, 7) });
console.log(
  `wrote ${out} (${shape ?? "custom"}, ${dtype}) and ${nsamples} x ${seqlen} tokens in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
);
