/**
 * A small deterministic Llama checkpoint with the statistics that make quantization hard in real LLMs:
 * a few heavy input columns in every weight matrix, and outlier activation channels (a few hidden
 * channels carried large through the embeddings and the norms). Also token files in the layout calibration
 * reads. For the demo, the benchmarks and tests; not a trained model. Token sequences from a fixed Markov
 * chain over its vocabulary, for tests and benchmarks, are in test/helpers/synthetic.ts.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { writeTextAtomic } from "../io/atomic.js";
import { TensorEntry, writeSafetensors } from "../io/safetensors.js";
import { writeCheckpointTensors } from "../io/store.js";
import { floatsToBf16s, floatsToHalfs } from "../tensor/dtype.js";

export interface SyntheticSpec {
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  vocabSize: number;
  seed: number;
}

/** Shapes every packing and Marlin accept (K % 128, N % 64), small enough to run in a second. */
export const DEMO_SPEC: SyntheticSpec = {
  hiddenSize: 128,
  intermediateSize: 384,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  vocabSize: 256,
  seed: 1,
};

/** Llama-2 shapes (vocabulary 32000) for measurements at scale: write them with `bench/synthetic-fp.ts`. */
export const SCALE_SPECS: Record<"llama2-7b" | "llama2-13b", SyntheticSpec> = {
  "llama2-7b": {
    hiddenSize: 4096,
    intermediateSize: 11008,
    numLayers: 32,
    numHeads: 32,
    numKvHeads: 32,
    vocabSize: 32000,
    seed: 1,
  },
  "llama2-13b": {
    hiddenSize: 5120,
    intermediateSize: 13824,
    numLayers: 40,
    numHeads: 40,
    numKvHeads: 40,
    vocabSize: 32000,
    seed: 1,
  },
};

export interface SyntheticWriteOptions {
  /** stored dtype (default F32) */
  dtype?: "F32" | "F16" | "BF16";
  /** bytes per shard (default 5 GB, as Hugging Face writes them) */
  maxShardBytes?: number;
}

/** A small deterministic generator (mulberry32) with a Gaussian sampler. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  uniform(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  normal(): number {
    const u = Math.max(this.uniform(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.uniform());
  }
}

/** N x K Gaussian weights with std 1/sqrt(K), a few input columns scaled up (heavy columns). */
function weight(rng: Rng, N: number, K: number, heavy: number): Float32Array {
  const w = new Float32Array(N * K);
  const std = 1 / Math.sqrt(K);
  for (let i = 0; i < w.length; i++) w[i] = rng.normal() * std;
  for (let h = 0; h < heavy; h++) {
    const k = Math.floor(rng.uniform() * K);
    const f = 4 + 4 * rng.uniform();
    for (let n = 0; n < N; n++) w[n * K + k] *= f;
  }
  return w;
}

function scaled(w: Float32Array, f: number): Float32Array {
  for (let i = 0; i < w.length; i++) w[i] *= f;
  return w;
}

/** RMSNorm weights near 1 with a few outlier channels (large activations, as in LLMs). */
function norm(rng: Rng, D: number, outliers: readonly number[]): Float32Array {
  const w = Float32Array.from({ length: D }, () => 1 + 0.1 * rng.normal());
  for (const c of outliers) w[c] = 8 + 4 * rng.uniform();
  return w;
}

export function syntheticConfig(spec: SyntheticSpec): Record<string, unknown> {
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: spec.hiddenSize,
    intermediate_size: spec.intermediateSize,
    num_hidden_layers: spec.numLayers,
    num_attention_heads: spec.numHeads,
    num_key_value_heads: spec.numKvHeads,
    head_dim: spec.hiddenSize / spec.numHeads,
    vocab_size: spec.vocabSize,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    max_position_embeddings: 2048,
    tie_word_embeddings: false,
    hidden_act: "silu",
    bos_token_id: 0,
    torch_dtype: "float32",
  };
}

/** The synthetic model's tensors in writing order: embeddings, then each layer's, then the final norm and head. */
export interface SyntheticTensors {
  embed: TensorEntry[];
  layer(l: number): TensorEntry[];
  final: TensorEntry[];
}

/**
 * The tensors of the synthetic model, each generated when the writer asks for its data. `rngOf(l)` is the
 * generator of layer l (-1 for the embeddings, norm and head): one shared generator consumed in writing
 * order (`writeSyntheticLlama`), or one per layer so layers can be written independently (in parallel).
 */
export function syntheticTensors(
  spec: SyntheticSpec,
  dtype: "F32" | "F16" | "BF16",
  rngOf: (layer: number) => Rng,
): SyntheticTensors {
  const { hiddenSize: D, intermediateSize: I, vocabSize: V } = spec;
  const hd = D / spec.numHeads;
  const outliers = [3, Math.floor(D / 2) + 1];
  const stored = (w: Float32Array) =>
    dtype === "F32" ? w : dtype === "F16" ? floatsToHalfs(w) : floatsToBf16s(w);
  const entry = (name: string, shape: number[], make: () => Float32Array): TensorEntry => ({
    name,
    dtype,
    shape,
    data: () => stored(make()),
  });
  const outer = rngOf(-1);
  return {
    embed: [
      entry("model.embed_tokens.weight", [V, D], () => {
        const embed = weight(outer, V, D, 0);
        for (let v = 0; v < V; v++) for (const c of outliers) embed[v * D + c] *= 6;
        return embed;
      }),
    ],
    layer(l) {
      const rng = rngOf(l);
      const p = `model.layers.${l}`;
      const q = spec.numHeads * hd;
      const kv = spec.numKvHeads * hd;
      return [
        entry(`${p}.input_layernorm.weight`, [D], () => norm(rng, D, outliers)),
        entry(`${p}.self_attn.q_proj.weight`, [q, D], () => weight(rng, q, D, 3)),
        entry(`${p}.self_attn.k_proj.weight`, [kv, D], () => weight(rng, kv, D, 3)),
        entry(`${p}.self_attn.v_proj.weight`, [kv, D], () => weight(rng, kv, D, 3)),
        // Residual branches scaled down, as deep-network initialisations do, so each layer refines the stream.
        entry(`${p}.self_attn.o_proj.weight`, [D, q], () => scaled(weight(rng, D, q, 2), 0.1)),
        entry(`${p}.post_attention_layernorm.weight`, [D], () => norm(rng, D, outliers)),
        entry(`${p}.mlp.gate_proj.weight`, [I, D], () => weight(rng, I, D, 3)),
        entry(`${p}.mlp.up_proj.weight`, [I, D], () => weight(rng, I, D, 3)),
        entry(`${p}.mlp.down_proj.weight`, [D, I], () => scaled(weight(rng, D, I, 4), 0.1)),
      ];
    },
    final: [
      entry("model.norm.weight", [D], () => norm(outer, D, [])),
      // A scaled head gives peaked next-token distributions, so quantization damage shows in perplexity.
      entry("lm_head.weight", [V, D], () => scaled(weight(outer, V, D, 0), 2)),
    ],
  };
}

/** config.json of the synthetic model stored as `dtype`. */
export function syntheticConfigFor(spec: SyntheticSpec, dtype: "F32" | "F16" | "BF16"): string {
  const config = {
    ...syntheticConfig(spec),
    torch_dtype: { F32: "float32", F16: "float16", BF16: "bfloat16" }[dtype],
  };
  return JSON.stringify(config, null, 2) + "\n";
}

/**
 * Writes config.json and the tensors (model.safetensors, or shards and an index) of the synthetic model
 * into `dir` (created if absent). Each tensor is generated as the writer reaches it, so memory stays at the
 * largest one (a 7B model's 500 MB embeddings in fp32), and the values are the same whatever the dtype
 * and sharding (one generator, consumed in writing order).
 */
export function writeSyntheticLlama(
  dir: string,
  spec: SyntheticSpec = DEMO_SPEC,
  opts: SyntheticWriteOptions = {},
): void {
  const rng = new Rng(spec.seed);
  const dtype = opts.dtype ?? "F32";
  const t = syntheticTensors(spec, dtype, () => rng);
  const entries = [...t.embed];
  for (let l = 0; l < spec.numLayers; l++) entries.push(...t.layer(l));
  entries.push(...t.final);
  mkdirSync(dir, { recursive: true });
  writeCheckpointTensors(dir, entries, { maxShardBytes: opts.maxShardBytes });
  writeTextAtomic(join(dir, "config.json"), syntheticConfigFor(spec, dtype));
}

/** A token file in the layout `--calib` and `eval --tokens` read: named int32 [n, seqlen] tensors. */
export function writeTokenFile(path: string, sets: Record<string, Int32Array[]>): void {
  writeSafetensors(
    path,
    Object.entries(sets).map(([name, seqs]) => {
      const L = seqs[0].length;
      const data = new Int32Array(seqs.length * L);
      seqs.forEach((s, i) => data.set(s, i * L));
      return { name, dtype: "I32" as const, shape: [seqs.length, L], data };
    }),
  );
}
