/**
 * Tiny random checkpoints of each supported architecture against a float64 forward written out plainly
 * here: GQA, q/k/v bias (Qwen2), a sliding window (Mistral), llama3 rope scaling, a head_dim that is not
 * hidden / heads, F16 and BF16 weights, tied and separate lm_head, sequences longer than one block.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TensorEntry } from "../../src/io/safetensors.js";
import { writeCheckpointTensors } from "../../src/io/store.js";
import { DecoderModel } from "../../src/model/decoder.js";
import { DType, bf16sToFloats, floatsToBf16s, floatsToHalfs, halfsToFloats } from "../../src/tensor/dtype.js";
import { tmpDir } from "../helpers/checkpoints.js";

/** the config.json fields the tests read */
interface HfConfig {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim?: number;
  vocab_size: number;
  rms_norm_eps: number;
}

interface Arch {
  config: HfConfig & Record<string, unknown>;
  dtype: DType;
  bias: boolean;
  tied: boolean;
  /** rotary inverse frequencies the config implies, computed independently */
  invFreq: (i: number, dim: number) => number;
  window?: number;
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

const base = (theta: number) => (i: number, dim: number) => theta ** (-(2 * i) / dim);

function llama3(theta: number, factor: number, low: number, high: number, ctx: number) {
  return (i: number, dim: number) => {
    const f = theta ** (-(2 * i) / dim);
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < ctx / high) return f;
    if (wavelen > ctx / low) return f / factor;
    const smooth = (ctx / wavelen - low) / (high - low);
    return ((1 - smooth) * f) / factor + smooth * f;
  };
}

/** writes a random checkpoint; returns its dir and the weights as the file stores them (fp32 values) */
function build(arch: Arch, seed: number): { dir: string; w: Map<string, Float64Array> } {
  const c = arch.config;
  const D = c.hidden_size;
  const hd = c.head_dim ?? D / c.num_attention_heads;
  const qd = c.num_attention_heads * hd;
  const kvd = c.num_key_value_heads * hd;
  const I = c.intermediate_size;
  const r = rng(seed);
  const entries: TensorEntry[] = [];
  const w = new Map<string, Float64Array>();
  const add = (name: string, shape: number[], scale: number, offset = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const v = Float32Array.from({ length: n }, () => offset + r() * scale);
    const data = arch.dtype === "BF16" ? floatsToBf16s(v) : arch.dtype === "F16" ? floatsToHalfs(v) : v;
    const stored =
      arch.dtype === "BF16"
        ? bf16sToFloats(data as Uint16Array)
        : arch.dtype === "F16"
          ? halfsToFloats(data as Uint16Array)
          : v;
    entries.push({ name, dtype: arch.dtype, shape, data });
    w.set(name, Float64Array.from(stored));
  };
  add("model.embed_tokens.weight", [c.vocab_size, D], 2);
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [D], 0.4, 1);
    add(`${p}.post_attention_layernorm.weight`, [D], 0.4, 1);
    add(`${p}.self_attn.q_proj.weight`, [qd, D], 1.5);
    add(`${p}.self_attn.k_proj.weight`, [kvd, D], 1.5);
    add(`${p}.self_attn.v_proj.weight`, [kvd, D], 1);
    if (arch.bias) {
      add(`${p}.self_attn.q_proj.bias`, [qd], 0.5);
      add(`${p}.self_attn.k_proj.bias`, [kvd], 0.5);
      add(`${p}.self_attn.v_proj.bias`, [kvd], 0.5);
    }
    add(`${p}.self_attn.o_proj.weight`, [D, qd], 0.6);
    add(`${p}.mlp.gate_proj.weight`, [I, D], 0.8);
    add(`${p}.mlp.up_proj.weight`, [I, D], 0.8);
    add(`${p}.mlp.down_proj.weight`, [D, I], 0.5);
  }
  add("model.norm.weight", [D], 0.4, 1);
  if (!arch.tied) add("lm_head.weight", [c.vocab_size, D], 1);
  const dir = tmpDir("arch");
  writeFileSync(join(dir, "config.json"), JSON.stringify(arch.config));
  writeCheckpointTensors(dir, entries);
  return { dir, w };
}

/** the float64 forward, one loop per formula */
function referenceLogits(arch: Arch, w: Map<string, Float64Array>, tokens: number[]): Float64Array {
  const c = arch.config;
  const D = c.hidden_size;
  const H = c.num_attention_heads;
  const KV = c.num_key_value_heads;
  const hd = c.head_dim ?? D / H;
  const I = c.intermediate_size;
  const V = c.vocab_size;
  const T = tokens.length;
  const get = (n: string) => w.get(n)!;
  const matvec = (W: Float64Array, b: Float64Array | undefined, x: number[], N: number) =>
    Array.from({ length: N }, (_, n) => x.reduce((s, xv, k) => s + xv * W[n * x.length + k], b ? b[n] : 0));
  const norm = (x: number[], g: Float64Array) => {
    const rms = Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length + c.rms_norm_eps);
    return x.map((v, i) => (g[i] * v) / rms);
  };
  const rope = (v: number[], t: number) => {
    const half = hd / 2;
    const out = v.slice();
    for (let h = 0; h < v.length / hd; h++)
      for (let i = 0; i < half; i++) {
        const a = t * arch.invFreq(i, hd);
        const x1 = v[h * hd + i];
        const x2 = v[h * hd + i + half];
        out[h * hd + i] = x1 * Math.cos(a) - x2 * Math.sin(a);
        out[h * hd + i + half] = x2 * Math.cos(a) + x1 * Math.sin(a);
      }
    return out;
  };
  let hs = tokens.map((t) => Array.from(get("model.embed_tokens.weight").subarray(t * D, (t + 1) * D)));
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    const xs = hs.map((h) => norm(h, get(`${p}.input_layernorm.weight`)));
    const q = xs.map((x, t) =>
      rope(matvec(get(`${p}.self_attn.q_proj.weight`), w.get(`${p}.self_attn.q_proj.bias`), x, H * hd), t),
    );
    const k = xs.map((x, t) =>
      rope(matvec(get(`${p}.self_attn.k_proj.weight`), w.get(`${p}.self_attn.k_proj.bias`), x, KV * hd), t),
    );
    const v = xs.map((x) =>
      matvec(get(`${p}.self_attn.v_proj.weight`), w.get(`${p}.self_attn.v_proj.bias`), x, KV * hd),
    );
    const attn = xs.map(() => new Array<number>(H * hd).fill(0));
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / (H / KV));
      for (let i = 0; i < T; i++) {
        const js = [...Array(i + 1).keys()].filter((j) => arch.window === undefined || i - j < arch.window);
        const s = js.map((j) => {
          let d = 0;
          for (let e = 0; e < hd; e++) d += q[i][h * hd + e] * k[j][kvh * hd + e];
          return d / Math.sqrt(hd);
        });
        const m = Math.max(...s);
        const e = s.map((x) => Math.exp(x - m));
        const z = e.reduce((a, b) => a + b, 0);
        js.forEach((j, n) => {
          for (let d = 0; d < hd; d++) attn[i][h * hd + d] += (e[n] / z) * v[j][kvh * hd + d];
        });
      }
    }
    hs = hs.map((h, t) => {
      const o = matvec(get(`${p}.self_attn.o_proj.weight`), undefined, attn[t], D);
      const h1 = h.map((x, i) => x + o[i]);
      const y = norm(h1, get(`${p}.post_attention_layernorm.weight`));
      const g = matvec(get(`${p}.mlp.gate_proj.weight`), undefined, y, I);
      const u = matvec(get(`${p}.mlp.up_proj.weight`), undefined, y, I);
      const a = g.map((gv, i) => (gv / (1 + Math.exp(-gv))) * u[i]);
      const dn = matvec(get(`${p}.mlp.down_proj.weight`), undefined, a, D);
      return h1.map((x, i) => x + dn[i]);
    });
  }
  const head = arch.tied ? get("model.embed_tokens.weight") : get("lm_head.weight");
  const out = new Float64Array(T * V);
  hs.forEach((h, t) => out.set(matvec(head, undefined, norm(h, get("model.norm.weight")), V), t * V));
  return out;
}

const common = {
  hidden_size: 24,
  intermediate_size: 40,
  num_hidden_layers: 2,
  vocab_size: 37,
  rms_norm_eps: 1e-5,
};
const ARCHS: Record<string, Arch> = {
  "Llama 3 (llama3 rope scaling in all three bands, BF16, separate lm_head)": {
    config: {
      ...common,
      model_type: "llama",
      num_attention_heads: 3,
      num_key_value_heads: 1,
      rope_theta: 10, // wavelengths 6.3, 11.2, 19.9, 35.3: all three bands of a 32-position context
      rope_scaling: {
        rope_type: "llama3",
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 32,
      },
      tie_word_embeddings: false,
    },
    dtype: "BF16",
    bias: false,
    tied: false,
    invFreq: llama3(10, 8, 1, 4, 32),
  },
  "Qwen2 (q/k/v bias, head_dim 8 with hidden 24 / 4 heads, F16, tied)": {
    config: {
      ...common,
      model_type: "qwen2",
      num_attention_heads: 4,
      num_key_value_heads: 1,
      head_dim: 8,
      rope_theta: 1e6,
      tie_word_embeddings: true,
      sliding_window: 4,
      use_sliding_window: false,
    },
    dtype: "F16",
    bias: true,
    tied: true,
    invFreq: base(1e6),
  },
  "Mistral (sliding window 5, F32)": {
    config: {
      ...common,
      model_type: "mistral",
      num_attention_heads: 4,
      num_key_value_heads: 2,
      rope_theta: 10000,
      sliding_window: 5,
    },
    dtype: "F32",
    bias: false,
    tied: false,
    invFreq: base(10000),
    window: 5,
  },
};

for (const [name, arch] of Object.entries(ARCHS))
  test(`${name}: logits match a float64 reference forward`, () => {
    const { dir, w } = build(arch, name.length);
    try {
      const model = DecoderModel.load(dir);
      const r = rng(7);
      const tokens = Array.from({ length: 70 }, () => Math.floor((r() + 0.5) * 37)); // > one 64-row block
      const got = model.forward(Int32Array.from(tokens));
      const want = referenceLogits(arch, w, tokens);
      let err = 0;
      let mag = 0;
      for (let i = 0; i < want.length; i++) {
        err = Math.max(err, Math.abs(got[i] - want[i]));
        mag = Math.max(mag, Math.abs(want[i]));
      }
      assert.ok(err <= 1e-5 * mag + 1e-5, `max abs error ${err} (logits up to ${mag})`);
    } finally {
      rmSync(dir, { recursive: true });
    }
  });
