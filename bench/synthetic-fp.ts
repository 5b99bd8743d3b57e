// Writes an unquantized (fp32) Llama-shaped checkpoint of trained-like random weights and a token file
// to calibrate it with (for memory and speed measurements of `gptq quantize`).
// Run: node dist/bench/synthetic-fp.js <out-dir> <tokens.safetensors> [blocks=8] [hidden=1024] [intermediate=2816]
import { SyntheticSpec, writeSyntheticLlama, writeTokenFile } from "../src/pipeline/synthetic.js";
import { syntheticTokens } from "../test/helpers/synthetic.js";

const [out, tokens, blocks, hidden, inter] = process.argv.slice(2);
if (!out || !tokens)
  throw new Error("usage: synthetic-fp <out-dir> <tokens.safetensors> [blocks] [hidden] [intermediate]");
const spec: SyntheticSpec = {
  hiddenSize: Number(hidden ?? 1024),
  intermediateSize: Number(inter ?? 2816),
  numLayers: Number(blocks ?? 8),
  numHeads: 8,
  numKvHeads: 8,
  vocabSize: 2048,
  seed: 1,
};
writeSyntheticLlama(out, spec);
// 16 sequences of 128 tokens
writeTokenFile(tokens, { calibration_tokens: syntheticTokens(spec, 16, 128, 7) });
