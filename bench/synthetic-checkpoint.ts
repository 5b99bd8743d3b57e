// Writes a Llama-shaped 4-bit symmetric GPTQ v1 checkpoint of random codes (for memory and speed
// measurements of whole-checkpoint commands), tensors produced one at a time.
// Run: node dist/bench/synthetic-checkpoint.js <out-dir> [blocks=32] [hidden=4096] [intermediate=11008]
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeQuantConfig } from "../src/io/checkpoint.js";
import { TensorEntry } from "../src/io/safetensors.js";
import { writeCheckpointTensors } from "../src/io/store.js";
import { floatToHalf } from "../src/tensor/dtype.js";

const [out, blocksArg, hiddenArg, interArg] = process.argv.slice(2);
if (!out) throw new Error("usage: synthetic-checkpoint <out-dir> [blocks] [hidden] [intermediate]");
const blocks = Number(blocksArg ?? 32);
const H = Number(hiddenArg ?? 4096);
const I = Number(interArg ?? 11008);
const vocab = 32000;
const group = 128;

let seed = 0x9e3779b9;
function randomWords(n: number): Int32Array {
  const w = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    w[i] = seed;
  }
  return w;
}

function halfs(n: number, value: number): Uint16Array {
  return new Uint16Array(n).fill(floatToHalf(value));
}

const entries: TensorEntry[] = [
  { name: "model.embed_tokens.weight", dtype: "F16", shape: [vocab, H], data: () => halfs(vocab * H, 0.01) },
];
function linear(prefix: string, K: number, N: number): void {
  const G = Math.ceil(K / group);
  entries.push(
    { name: `${prefix}.qweight`, dtype: "I32", shape: [K / 8, N], data: () => randomWords((K / 8) * N) },
    {
      name: `${prefix}.qzeros`,
      dtype: "I32",
      shape: [G, N / 8],
      data: () => new Int32Array(G * (N / 8)).fill(0x77777777),
    },
    { name: `${prefix}.scales`, dtype: "F16", shape: [G, N], data: () => halfs(G * N, 0.0123) },
    {
      name: `${prefix}.g_idx`,
      dtype: "I32",
      shape: [K],
      data: () => Int32Array.from({ length: K }, (_, k) => Math.floor(k / group)),
    },
  );
}
for (let b = 0; b < blocks; b++) {
  const p = `model.layers.${b}`;
  for (const n of ["q_proj", "k_proj", "v_proj", "o_proj"]) linear(`${p}.self_attn.${n}`, H, H);
  linear(`${p}.mlp.gate_proj`, H, I);
  linear(`${p}.mlp.up_proj`, H, I);
  linear(`${p}.mlp.down_proj`, I, H);
  entries.push(
    { name: `${p}.input_layernorm.weight`, dtype: "F16", shape: [H], data: () => halfs(H, 1) },
    { name: `${p}.post_attention_layernorm.weight`, dtype: "F16", shape: [H], data: () => halfs(H, 1) },
  );
}
entries.push(
  { name: "model.norm.weight", dtype: "F16", shape: [H], data: () => halfs(H, 1) },
  { name: "lm_head.weight", dtype: "F16", shape: [vocab, H], data: () => halfs(vocab * H, 0.01) },
);
mkdirSync(out, { recursive: true });
const shards = writeCheckpointTensors(out, entries, { maxShardBytes: 2e9 });
writeFileSync(
  join(out, "config.json"),
  JSON.stringify({ model_type: "llama", hidden_size: H, intermediate_size: I, num_hidden_layers: blocks }),
);
writeQuantConfig(out, {
  bits: 4,
  groupSize: group,
  sym: true,
  descAct: false,
  staticGroups: false,
  trueSequential: true,
  quantMethod: "gptq",
  checkpointFormat: "gptq",
});
console.log(`wrote ${out}: ${blocks} blocks, hidden ${H}, intermediate ${I}, ${shards.length} shards`);
