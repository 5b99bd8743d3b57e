/**
 * A Llama-family decoder (Llama, Mistral, Qwen2) in fp32 on the CPU, for calibration and evaluation:
 * embeddings, pre-norm decoder layers (RMSNorm, rotary grouped-query causal attention, SwiGLU MLP),
 * final norm and a tied or separate lm_head. Every projection is a replaceable `Linear`, so quantized
 * layers drop in, and a layer's forward reports each projection's input to calibration code.
 */
import { gemmNT } from "../backend/cpu/gemm.js";
import { A8W4Linear, DenseLinear, Linear, QuantLinear } from "../backend/cpu/linear.js";
import { FORMATS } from "../formats/registry.js";
import { splitLayer } from "../formats/split.js";
import { CheckpointFormat, QuantizedLinear } from "../formats/types.js";
import { openCheckpoint } from "../io/checkpoint.js";
import { TensorStore } from "../io/store.js";
import { storedNonFinite } from "../io/finite.js";
import { toFloat32 } from "../tensor/tensor.js";
import { nonFiniteProblem } from "../tensor/finite.js";
import { GptqError } from "../util/errors.js";
import { LlamaConfig, readLlamaConfig } from "./config.js";
import { Rotary } from "./rope.js";

export const LINEAR_NAMES = [
  "q_proj",
  "k_proj",
  "v_proj",
  "o_proj",
  "gate_proj",
  "up_proj",
  "down_proj",
] as const;
export type LinearName = (typeof LINEAR_NAMES)[number];

/** Where each projection sits under a layer's prefix in HF tensor names. */
export const LINEAR_MODULE: Record<LinearName, string> = {
  q_proj: "self_attn.q_proj",
  k_proj: "self_attn.k_proj",
  v_proj: "self_attn.v_proj",
  o_proj: "self_attn.o_proj",
  gate_proj: "mlp.gate_proj",
  up_proj: "mlp.up_proj",
  down_proj: "mlp.down_proj",
};

/**
 * Fused projections, as Phi-3 publishes them and as `gptq merge` writes them: one linear whose outputs
 * are its parts' outputs concatenated in this order along out_features (q, k, v; gate, up).
 */
export const FUSED_LINEARS: readonly { module: string; parts: readonly LinearName[] }[] = [
  { module: "self_attn.qkv_proj", parts: ["q_proj", "k_proj", "v_proj"] },
  { module: "mlp.gate_up_proj", parts: ["gate_proj", "up_proj"] },
];

export type CaptureFn = (linear: string, x: Float32Array, rows: number) => void;

/** y = w * x / sqrt(mean(x^2) + eps) per row of `dim` values (statistics in float64). */
export function rmsNorm(x: Float32Array, rows: number, weight: Float32Array, eps: number): Float32Array {
  const dim = weight.length;
  const out = new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[o + i] * x[o + i];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) out[o + i] = weight[i] * Math.fround(x[o + i] * inv);
  }
  return out;
}

export class DecoderLayer {
  constructor(
    readonly config: LlamaConfig,
    /** tensor-name prefix of this layer, e.g. "model.layers.0" */
    readonly prefix: string,
    readonly linears: Record<LinearName, Linear>,
    readonly inputNorm: Float32Array,
    readonly postAttentionNorm: Float32Array,
    readonly rotary: Rotary,
  ) {}

  /** full tensor-name prefix of one projection, e.g. "model.layers.0.self_attn.q_proj" */
  linearPrefix(name: LinearName): string {
    return `${this.prefix}.${LINEAR_MODULE[name]}`;
  }

  private run(name: LinearName, x: Float32Array, T: number, capture?: CaptureFn): Float32Array {
    capture?.(name, x, T);
    return this.linears[name].forward(x, T);
  }

  /** h: T x hidden (one sequence, positions 0..T-1); returns the layer's output, residuals included. */
  forward(h: Float32Array, T: number, capture?: CaptureFn): Float32Array {
    return this.mlpBlock(this.attentionBlock(h, T, capture), T, capture);
  }

  /** The attention half: h + o_proj(attention(norm(h))), T x hidden. */
  attentionBlock(h: Float32Array, T: number, capture?: CaptureFn): Float32Array {
    const c = this.config;
    const D = c.hiddenSize;
    if (h.length !== T * D)
      throw new GptqError(`decoder layer: input has ${h.length} values, expected ${T} x ${D}`);
    const x = rmsNorm(h, T, this.inputNorm, c.rmsNormEps);
    const q = this.run("q_proj", x, T, capture);
    const k = this.run("k_proj", x, T, capture);
    const v = this.run("v_proj", x, T, capture);
    this.rotary.apply(q, T, c.numHeads);
    this.rotary.apply(k, T, c.numKvHeads);
    const attn = attention(q, k, v, T, c);
    const o = this.run("o_proj", attn, T, capture);
    const h1 = new Float32Array(T * D);
    for (let i = 0; i < h1.length; i++) h1[i] = h[i] + o[i];
    return h1;
  }

  /** The MLP half: h1 + down_proj(silu(gate_proj(y)) * up_proj(y)), y = norm(h1); T x hidden. */
  mlpBlock(h1: Float32Array, T: number, capture?: CaptureFn): Float32Array {
    const c = this.config;
    const y = rmsNorm(h1, T, this.postAttentionNorm, c.rmsNormEps);
    const gate = this.run("gate_proj", y, T, capture);
    const up = this.run("up_proj", y, T, capture);
    for (let i = 0; i < gate.length; i++) {
      const g = gate[i];
      gate[i] = (g / (1 + Math.exp(-g))) * up[i]; // silu(gate) * up
    }
    const down = this.run("down_proj", gate, T, capture);
    const out = Float32Array.from(h1);
    for (let i = 0; i < out.length; i++) out[i] += down[i];
    return out;
  }
}

/** query rows handled per block: scores for a block are (rows x keys so far), never T x T */
const ATTN_BLOCK = 64;

/**
 * Causal grouped-query attention: query head h reads key/value head h / (heads / kvHeads).
 * q: T x heads*hd, k and v: T x kvHeads*hd; returns T x heads*hd. Per head, scores and the weighted sum
 * of values are two matrix products over contiguous copies of the head; softmax is taken in float64.
 */
export function attention(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  T: number,
  c: LlamaConfig,
): Float32Array {
  const { numHeads: H, numKvHeads: KV, headDim: hd } = c;
  const group = H / KV;
  const scale = 1 / Math.sqrt(hd);
  const window = c.slidingWindow ?? Infinity;
  const out = new Float32Array(T * H * hd);
  const qh = new Float32Array(T * hd);
  const kh = new Float32Array(T * hd);
  const vt = new Float32Array(hd * T); // hd x T: values transposed so P x V is a dot-product kernel
  const s = new Float32Array(ATTN_BLOCK * T);
  const o = new Float32Array(ATTN_BLOCK * hd);
  const p = new Float64Array(T);
  for (let head = 0; head < H; head++) {
    const kvh = Math.floor(head / group);
    if (head % group === 0) {
      for (let t = 0; t < T; t++) {
        const src = (t * KV + kvh) * hd;
        for (let d = 0; d < hd; d++) {
          kh[t * hd + d] = k[src + d];
          vt[d * T + t] = v[src + d];
        }
      }
    }
    for (let t = 0; t < T; t++) qh.set(q.subarray((t * H + head) * hd, (t * H + head + 1) * hd), t * hd);
    for (let i0 = 0; i0 < T; i0 += ATTN_BLOCK) {
      const rows = Math.min(ATTN_BLOCK, T - i0);
      const keys = i0 + rows; // causal: this block sees keys [0, keys)
      gemmNT(qh, i0 * hd, hd, rows, kh, hd, keys, hd, s, false);
      for (let r = 0; r < rows; r++) {
        const i = i0 + r;
        const row = r * keys;
        const j0 = Math.max(0, i - window + 1);
        let max = -Infinity;
        for (let j = j0; j <= i; j++) if (s[row + j] > max) max = s[row + j];
        let sum = 0;
        for (let j = j0; j <= i; j++) {
          const e = Math.exp((s[row + j] - max) * scale);
          p[j] = e;
          sum += e;
        }
        const inv = 1 / sum;
        s.fill(0, row, row + keys);
        for (let j = j0; j <= i; j++) s[row + j] = p[j] * inv;
      }
      gemmNT(s, 0, keys, rows, vt, T, hd, keys, o, false);
      for (let r = 0; r < rows; r++) out.set(o.subarray(r * hd, (r + 1) * hd), ((i0 + r) * H + head) * hd);
    }
  }
  return out;
}

export interface LoadOptions {
  /**
   * How quantized projections run: "none" (default) dequantizes group by group to fp32; "int8" runs
   * A8W4 (int8 per-token activations x int4 weights), which needs 4-bit symmetric layers.
   */
  actQuant?: "none" | "int8";
}

/** Checks a float tensor's header (dtype, the shape config.json implies) before its data is read. */
function checkFloats(store: TensorStore, name: string, shape: number[]): void {
  const t = store.info(name);
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
    throw new GptqError(
      `${store.dir}: tensor ${name} has shape [${t.shape}], config.json implies [${shape}]`,
    );
  if (t.dtype !== "F32" && t.dtype !== "F16" && t.dtype !== "BF16")
    throw new GptqError(`${store.dir}: tensor ${name} is ${t.dtype}, expected F32, F16 or BF16`);
}

/** A float tensor checked (header, then every value finite) and widened to fp32. */
function readFloats(store: TensorStore, name: string, shape: number[]): Float32Array {
  checkFloats(store, name, shape);
  const t = store.read(name);
  const problem = nonFiniteProblem(`${store.dir}: tensor ${name}`, t.dtype, t.shape, t.data);
  if (problem) throw new GptqError(problem);
  return toFloat32(t);
}

/** An unquantized projection: `<prefix>.weight` [N, K] and an optional `<prefix>.bias` [N]. */
export function loadDenseLinear(store: TensorStore, prefix: string, N: number, K: number): DenseLinear {
  const weight = readFloats(store, `${prefix}.weight`, [N, K]);
  const bias = store.has(`${prefix}.bias`) ? readFloats(store, `${prefix}.bias`, [N]) : undefined;
  return new DenseLinear(weight, N, K, bias);
}

/** The tensors of decoder layer `i` of an unquantized checkpoint: name and shape. */
function denseLayerTensors(config: LlamaConfig, store: TensorStore, i: number): [string, number[]][] {
  const shapes = LlamaModel.linearShapes(config);
  const D = config.hiddenSize;
  const prefix = `model.layers.${i}`;
  const out: [string, number[]][] = [
    [`${prefix}.input_layernorm.weight`, [D]],
    [`${prefix}.post_attention_layernorm.weight`, [D]],
  ];
  for (const name of LINEAR_NAMES) {
    const p = `${prefix}.${LINEAR_MODULE[name]}`;
    out.push([`${p}.weight`, shapes[name]]);
    if (store.has(`${p}.bias`)) out.push([`${p}.bias`, [shapes[name][0]]]);
  }
  return out;
}

/** Where a decoder layer's projections come from: one stored projection, or a fused one in parts. */
interface LinearSource {
  /** whether a projection (quantized or not) is stored under this tensor prefix */
  has(prefix: string): boolean;
  /** the projection at `prefix`, N x K */
  linear(prefix: string, N: number, K: number): Linear;
  /** the fused projection at `prefix`, sum(sizes) x K, split along out_features into parts of these sizes */
  fused(prefix: string, sizes: readonly number[], K: number): Linear[];
}

/**
 * Decoder layer `i` of a checkpoint. A fused `qkv_proj` or `gate_up_proj` stands for its parts (and
 * must not be stored beside them); every other projection is read on its own.
 */
function readDecoderLayer(
  store: TensorStore,
  config: LlamaConfig,
  i: number,
  rotary: Rotary,
  source: LinearSource,
): DecoderLayer {
  const shapes = LlamaModel.linearShapes(config);
  const D = config.hiddenSize;
  const prefix = `model.layers.${i}`;
  const linears = {} as Record<LinearName, Linear>;
  for (const f of FUSED_LINEARS) {
    const fusedPrefix = `${prefix}.${f.module}`;
    if (!source.has(fusedPrefix)) continue;
    const both = f.parts.find((p) => source.has(`${prefix}.${LINEAR_MODULE[p]}`));
    if (both)
      throw new GptqError(
        `${store.dir}: both ${fusedPrefix} and ${prefix}.${LINEAR_MODULE[both]} are stored; a projection is either fused or separate`,
      );
    const parts = source.fused(
      fusedPrefix,
      f.parts.map((p) => shapes[p][0]),
      shapes[f.parts[0]][1],
    );
    f.parts.forEach((p, j) => (linears[p] = parts[j]));
  }
  for (const name of LINEAR_NAMES) {
    if (linears[name]) continue;
    const [N, K] = shapes[name];
    linears[name] = source.linear(`${prefix}.${LINEAR_MODULE[name]}`, N, K);
  }
  return new DecoderLayer(
    config,
    prefix,
    linears,
    readFloats(store, `${prefix}.input_layernorm.weight`, [D]),
    readFloats(store, `${prefix}.post_attention_layernorm.weight`, [D]),
    rotary,
  );
}

/** "config.json implies 128 x 64 (q_proj 64 + k_proj 32 + v_proj 32)" for a fused projection */
function fusedShape(prefix: string, sizes: readonly number[], K: number): string {
  const f = FUSED_LINEARS.find((x) => prefix.endsWith(`.${x.module}`));
  const N = sizes.reduce((a, b) => a + b, 0);
  const parts = f ? ` (${f.parts.map((p, j) => `${p} ${sizes[j]}`).join(" + ")})` : "";
  return `${N} x ${K}${parts}`;
}

/** A dense fused projection split into dense parts (rows of its weight and bias). */
function splitDense(whole: DenseLinear, sizes: readonly number[]): DenseLinear[] {
  const K = whole.inFeatures;
  let at = 0;
  return sizes.map((n) => {
    const from = at;
    at += n;
    return new DenseLinear(whole.weight.slice(from * K, at * K), n, K, whole.bias?.slice(from, at));
  });
}

/** tokens -> T x hidden rows of the embedding table (vocab x hidden) */
function embedRows(config: LlamaConfig, table: Float32Array, tokens: Int32Array): Float32Array {
  const V = config.vocabSize;
  for (let t = 0; t < tokens.length; t++)
    if (tokens[t] < 0 || tokens[t] >= V)
      throw new GptqError(`token ${tokens[t]} at position ${t} is outside the vocabulary [0, ${V})`);
  const D = config.hiddenSize;
  const out = new Float32Array(tokens.length * D);
  for (let t = 0; t < tokens.length; t++) out.set(table.subarray(tokens[t] * D, (tokens[t] + 1) * D), t * D);
  return out;
}

/** What layer-by-layer quantization reads of a model: its embeddings, then one decoder layer at a time. */
export interface LayerSource {
  readonly numLayers: number;
  embed(tokens: Int32Array): Float32Array;
  layer(i: number): DecoderLayer;
}

export class LlamaModel implements LayerSource {
  constructor(
    readonly config: LlamaConfig,
    /** vocab x hidden */
    readonly embedTokens: Float32Array,
    readonly layers: DecoderLayer[],
    readonly finalNorm: Float32Array,
    public lmHead: Linear,
  ) {}

  /** shapes [N, K] of each projection of a decoder layer */
  static linearShapes(c: LlamaConfig): Record<LinearName, [number, number]> {
    const D = c.hiddenSize;
    const I = c.intermediateSize;
    const q = c.numHeads * c.headDim;
    const kv = c.numKvHeads * c.headDim;
    return {
      q_proj: [q, D],
      k_proj: [kv, D],
      v_proj: [kv, D],
      o_proj: [D, q],
      gate_proj: [I, D],
      up_proj: [I, D],
      down_proj: [D, I],
    };
  }

  /**
   * Loads a checkpoint directory (config.json + safetensors), unquantized (F32/F16/BF16) or quantized
   * (gptq, gptq_v2, marlin: config and tensors are checked against each other first). Quantized
   * projections run from their codes; projections a checkpoint left unquantized run in fp32. Fused
   * `self_attn.qkv_proj` and `mlp.gate_up_proj` (quantized or not) are split into their parts on load.
   */
  static load(dir: string, opts: LoadOptions = {}): LlamaModel {
    const actQuant = opts.actQuant ?? "none";
    if (actQuant !== "none" && actQuant !== "int8")
      throw new GptqError(`actQuant must be "none" or "int8", not ${JSON.stringify(actQuant)}`);
    const config = readLlamaConfig(dir);
    const ckpt = openCheckpoint(dir);
    try {
      const store = ckpt.store;
      if (actQuant === "int8" && ckpt.format === "fp")
        throw new GptqError(
          `${dir}: int8 activations (A8W4) need a 4-bit symmetric quantized checkpoint; this one is unquantized`,
        );
      const quantized = new Map(ckpt.layers.map((l) => [l.name, l]));
      /** the quantized layer at `prefix` (bias included), checked against the shape config.json implies */
      const readQuantized = (prefix: string, N: number, K: number, implied: string): QuantizedLinear => {
        const info = quantized.get(prefix)!;
        if (info.outFeatures !== N || info.inFeatures !== K)
          throw new GptqError(
            `${dir}: ${prefix} is ${info.outFeatures} x ${info.inFeatures} (out x in), config.json implies ${implied}`,
          );
        const format = ckpt.format as CheckpointFormat;
        // the config's group size: a partial last group makes the tensors' own count ambiguous
        const groupSize = ckpt.config?.groupSize ?? info.groupSize;
        const get = (suffix: string) =>
          store.has(`${prefix}.${suffix}`) ? store.read(`${prefix}.${suffix}`) : undefined;
        let layer: QuantizedLinear;
        try {
          layer = FORMATS[format].read(get, {
            inFeatures: info.inFeatures,
            outFeatures: info.outFeatures,
            bits: info.bits,
            groupSize,
          });
        } catch (e) {
          if (e instanceof GptqError) throw new GptqError(`${dir}: layer ${prefix}: ${e.message}`);
          throw e;
        }
        if (store.has(`${prefix}.bias`)) layer.bias = readFloats(store, `${prefix}.bias`, [info.outFeatures]);
        return layer;
      };
      /** how a quantized layer runs: dequantized group by group, or A8W4 */
      const run = (prefix: string, layer: QuantizedLinear): Linear => {
        if (actQuant === "int8") {
          const mid = 1 << (layer.bits - 1);
          const sym = layer.zeros.every((z) => z === mid);
          if (layer.bits !== 4 || !sym)
            throw new GptqError(
              `${dir}: layer ${prefix} is ${layer.bits}-bit ${sym ? "symmetric" : "asymmetric"}; int8 activations (A8W4) need 4-bit symmetric weights`,
            );
          return A8W4Linear.fromQuantized(layer);
        }
        return new QuantLinear(layer);
      };
      const linear = (prefix: string, N: number, K: number): Linear =>
        quantized.has(prefix)
          ? run(prefix, readQuantized(prefix, N, K, `${N} x ${K}`))
          : loadDenseLinear(store, prefix, N, K);
      // A fused projection is split into its parts before it runs: a quantized one moves its codes,
      // scales and zeros column by column (splitLayer), a dense one its weight rows, so each part is
      // exactly the projection an unfused checkpoint would hold, and the model runs as one.
      const source: LinearSource = {
        has: (prefix) => quantized.has(prefix) || store.has(`${prefix}.weight`),
        linear,
        fused(prefix, sizes, K) {
          const N = sizes.reduce((a, b) => a + b, 0);
          if (quantized.has(prefix))
            return splitLayer(readQuantized(prefix, N, K, fusedShape(prefix, sizes, K)), sizes).map((p) =>
              run(prefix, p),
            );
          const t = store.info(`${prefix}.weight`);
          if (t.shape.length !== 2 || t.shape[0] !== N || t.shape[1] !== K)
            throw new GptqError(
              `${dir}: tensor ${prefix}.weight has shape [${t.shape}], config.json implies ${fusedShape(prefix, sizes, K)}`,
            );
          return splitDense(loadDenseLinear(store, prefix, N, K), sizes);
        },
      };
      const D = config.hiddenSize;
      const embed = readFloats(store, "model.embed_tokens.weight", [config.vocabSize, D]);
      const rotary = Rotary.fromConfig(config);
      const layers: DecoderLayer[] = [];
      for (let i = 0; i < config.numLayers; i++)
        layers.push(readDecoderLayer(store, config, i, rotary, source));
      const finalNorm = readFloats(store, "model.norm.weight", [D]);
      // a checkpoint without lm_head.weight ties it to the embeddings whatever the config says;
      // some quantizers also quantize lm_head (GPTQModel's lm_head option)
      const lmHead = quantized.has("lm_head")
        ? linear("lm_head", config.vocabSize, D)
        : config.tieWordEmbeddings || !store.has("lm_head.weight")
          ? new DenseLinear(embed, config.vocabSize, D)
          : loadDenseLinear(store, "lm_head", config.vocabSize, D);
      return new LlamaModel(config, embed, layers, finalNorm, lmHead);
    } finally {
      ckpt.close();
    }
  }

  get numLayers(): number {
    return this.layers.length;
  }

  layer(i: number): DecoderLayer {
    return this.layers[i];
  }

  /** tokens -> T x hidden embeddings */
  embed(tokens: Int32Array): Float32Array {
    return embedRows(this.config, this.embedTokens, tokens);
  }

  /** the last decoder layer's output for one sequence: T x hidden */
  hidden(tokens: Int32Array): Float32Array {
    let h = this.embed(tokens);
    for (const layer of this.layers) h = layer.forward(h, tokens.length);
    return h;
  }

  /** final norm + lm_head: T x hidden -> T x vocab */
  logits(h: Float32Array, T: number): Float32Array {
    return this.lmHead.forward(rmsNorm(h, T, this.finalNorm, this.config.rmsNormEps), T);
  }

  /** tokens of one sequence -> T x vocab logits */
  forward(tokens: Int32Array): Float32Array {
    return this.logits(this.hidden(tokens), tokens.length);
  }
}

/**
 * An unquantized checkpoint read one decoder layer at a time, for quantization: the embeddings, the
 * layer at work and what has been quantized stay in memory, not every fp32 weight of the model (a 7B
 * model's layer is 0.8 GB in fp32, the model 27 GB). `prepare` runs on each layer as it is read (the
 * MLP padding, say). Close it when done.
 */
export class LayerwiseLlama implements LayerSource {
  private constructor(
    readonly config: LlamaConfig,
    private readonly store: TensorStore,
    private readonly embedTokens: Float32Array,
    private readonly rotary: Rotary,
    private readonly prepare: (layer: DecoderLayer) => void,
  ) {}

  static open(dir: string, prepare: (layer: DecoderLayer) => void = () => {}): LayerwiseLlama {
    const config = readLlamaConfig(dir);
    const store = TensorStore.open(dir);
    try {
      // quantized projections are written in place of their own `.weight`: a fused one is refused now,
      // with the reason, rather than after the work
      for (let i = 0; i < config.numLayers; i++)
        for (const f of FUSED_LINEARS) {
          const name = `model.layers.${i}.${f.module}.weight`;
          if (store.has(name))
            throw new GptqError(
              `${dir}: ${name} is a fused projection; quantize reads ${f.parts.join(", ")} as separate tensors (eval loads fused checkpoints)`,
            );
        }
      // every layer's headers now: a missing or mis-shaped tensor fails before hours of work, not at
      // its layer
      for (let i = 0; i < config.numLayers; i++)
        for (const [name, shape] of denseLayerTensors(config, store, i)) checkFloats(store, name, shape);
      // and every value finite: a NaN weight would otherwise surface as NaN losses layers later
      for (let i = 0; i < config.numLayers; i++)
        for (const [name] of denseLayerTensors(config, store, i)) {
          const problem = storedNonFinite(store, name, `${dir}: tensor ${name}`);
          if (problem) throw new GptqError(problem);
        }
      const embed = readFloats(store, "model.embed_tokens.weight", [config.vocabSize, config.hiddenSize]);
      return new LayerwiseLlama(config, store, embed, Rotary.fromConfig(config), prepare);
    } catch (e) {
      store.close();
      throw e;
    }
  }

  get numLayers(): number {
    return this.config.numLayers;
  }

  embed(tokens: Int32Array): Float32Array {
    return embedRows(this.config, this.embedTokens, tokens);
  }

  /** reads decoder layer `i` now */
  layer(i: number): DecoderLayer {
    const store = this.store;
    const source: LinearSource = {
      has: (prefix) => store.has(`${prefix}.weight`),
      linear: (prefix, N, K) => loadDenseLinear(store, prefix, N, K),
      fused: (prefix) => {
        throw new GptqError(`${store.dir}: ${prefix} is fused; quantization reads separate projections`);
      },
    };
    const layer = readDecoderLayer(store, this.config, i, this.rotary, source);
    this.prepare(layer);
    return layer;
  }

  close(): void {
    this.store.close();
  }
}
