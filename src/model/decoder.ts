/**
 * A decoder-only transformer in fp32 on the CPU, for calibration and evaluation, built from the
 * model-family table (families/): embeddings (scaled, plus learned positions where the family has them),
 * decoder layers whose norms, attention and MLP the family picks, final norm and a tied or separate
 * lm_head. Every projection is a replaceable `Linear` stored as the checkpoint stores it (a fused
 * projection stays fused; its output rows are split among q, k, v or gate, up as they are used), so
 * quantized layers drop in, and a layer's forward reports each projection's input to calibration code.
 */
import { gemmNT } from "../backend/cpu/gemm.js";
import { A8W4Linear, DenseLinear, Linear, QuantLinear } from "../backend/cpu/linear.js";
import { FORMATS } from "../formats/registry.js";
import { CheckpointFormat, QuantizedLinear } from "../formats/types.js";
import { openCheckpoint } from "../io/checkpoint.js";
import { TensorStore } from "../io/store.js";
import { checkFloatTensor, readFloatTensor } from "../io/finite.js";
import { scanNonFinite } from "../io/finite-scan.js";
import { GptqError } from "../util/errors.js";
import { readModelConfig } from "./config.js";
import { expertLinears } from "./families/experts.js";
import { familyOf } from "./families/index.js";
import { fusedShape, roleShape } from "./families/shapes.js";
import { Activation, FamilySpec, ModelConfig, NormRole, Role, Segment } from "./families/types.js";
import { routeTokens, tokensPerExpert } from "./moe.js";
import { Rotary } from "./rope.js";

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

/** y = w * (x - mean) / sqrt(var + eps) + b per row (statistics in float64). */
export function layerNorm(
  x: Float32Array,
  rows: number,
  weight: Float32Array,
  bias: Float32Array,
  eps: number,
): Float32Array {
  const dim = weight.length;
  const out = new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    let sum = 0;
    for (let i = 0; i < dim; i++) sum += x[o + i];
    const mean = sum / dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += (x[o + i] - mean) ** 2;
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) out[o + i] = weight[i] * Math.fround((x[o + i] - mean) * inv) + bias[i];
  }
  return out;
}

/**
 * A norm over rows of `weight.length` values: RMSNorm (Gemma's 1 + w is folded into `weight` on load)
 * or, with a bias, LayerNorm.
 */
export class Norm {
  constructor(
    readonly weight: Float32Array,
    readonly eps: number,
    readonly bias?: Float32Array,
  ) {}

  apply(x: Float32Array, rows: number): Float32Array {
    return this.bias
      ? layerNorm(x, rows, this.weight, this.bias, this.eps)
      : rmsNorm(x, rows, this.weight, this.eps);
  }
}

/** erf to about 1e-7 relative (Numerical Recipes' erfc, Chebyshev fit), enough for fp32 GELU. */
function erf(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const erfc =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t *
          (1.00002368 +
            t *
              (0.37409196 +
                t *
                  (0.09678418 +
                    t *
                      (-0.18628806 +
                        t *
                          (0.27886807 +
                            t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? 1 - erfc : erfc - 1;
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/** the MLP activation of one value (in float64) */
export function activation(v: number, act: Activation): number {
  return act === "silu"
    ? v / (1 + Math.exp(-v))
    : act === "relu"
      ? Math.max(0, v)
      : act === "gelu"
        ? 0.5 * v * (1 + erf(v / Math.SQRT2))
        : 0.5 * v * (1 + Math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)));
}

/** cap * tanh(x / cap), in place (Gemma 2's soft-capping) */
function softcap(x: Float32Array, cap: number): void {
  for (let i = 0; i < x.length; i++) x[i] = cap * Math.tanh(x[i] / cap);
}

/**
 * The state between a layer's two halves: the residual stream after attention and, in a parallel layer,
 * the layer's input, which the MLP reads instead.
 */
export interface HalfState {
  residual: Float32Array;
  mlpInput?: Float32Array;
}

/** How a stored projection's output rows map onto roles: one segment for a plain one, several fused. */
interface StoredLinear {
  module: string;
  segments: Segment[];
}

export class DecoderLayer {
  private readonly stored = new Map<string, StoredLinear>();

  constructor(
    readonly config: ModelConfig,
    readonly family: FamilySpec,
    /** tensor-name prefix of this layer, e.g. "model.layers.0" */
    readonly prefix: string,
    /** the projections by the family's names ("q_proj", "qkv_proj", "query_key_value", ...) */
    readonly linears: Record<string, Linear>,
    readonly norms: Partial<Record<NormRole, Norm>>,
    readonly rotary: Rotary | undefined,
    /** attend only to the last `window` positions (sliding-window layers) */
    readonly window: number,
    /** a mixture-of-experts layer's router (count x hidden), never quantized */
    readonly router?: Linear,
  ) {
    const c = config;
    const experts = expertLinears(family, c);
    for (const name of Object.keys(linears)) {
      const fused = family.fused.find((f) => f.name === name);
      const plain = family.linears.find((l) => l.name === name) ?? experts.find((l) => l.name === name);
      if (fused) this.stored.set(name, { module: fused.module, segments: fused.segments(c) });
      else if (plain)
        this.stored.set(name, {
          module: plain.module,
          segments: [{ part: plain.role, from: 0, count: roleShape(c, plain.role)[0] }],
        });
      else throw new GptqError(`${prefix}: "${name}" is not a projection of the ${family.name} family`);
    }
  }

  /** full tensor-name prefix of one projection, e.g. "model.layers.0.self_attn.q_proj" */
  linearPrefix(name: string): string {
    const s = this.stored.get(name);
    if (!s) throw new GptqError(`${this.prefix} has no projection "${name}"`);
    return `${this.prefix}.${s.module}`;
  }

  /** how projection `name`'s output rows map onto roles */
  segmentsOf(name: string): readonly Segment[] {
    const s = this.stored.get(name);
    if (!s) throw new GptqError(`${this.prefix} has no projection "${name}"`);
    return s.segments;
  }

  /** this layer with other projections and the config they were shaped by (the MLP padded, say) */
  withLinears(config: ModelConfig, linears: Record<string, Linear>): DecoderLayer {
    return new DecoderLayer(
      config,
      this.family,
      this.prefix,
      linears,
      this.norms,
      this.rotary,
      this.window,
      this.router,
    );
  }

  /** the layer's projections that compute these roles, in the family's order */
  linearsFor(roles: readonly Role[]): string[] {
    return [...this.stored.entries()]
      .filter(([, s]) => s.segments.some((g) => roles.includes(g.part)))
      .map(([n]) => n);
  }

  /** the outputs of `roles` for input x (T rows), each T x its rows; fused projections are split here */
  private project(
    roles: readonly Role[],
    x: Float32Array,
    T: number,
    capture?: CaptureFn,
  ): Record<Role, Float32Array> {
    const out = {} as Record<Role, Float32Array>;
    for (const name of this.linearsFor(roles)) {
      capture?.(name, x, T);
      const y = this.linears[name].forward(x, T);
      const { segments } = this.stored.get(name)!;
      if (segments.length === 1) {
        out[segments[0].part] = y;
        continue;
      }
      const N = this.linears[name].outFeatures;
      const width = (part: Role) =>
        Math.max(...segments.filter((g) => g.part === part).map((g) => g.from + g.count));
      let at = 0;
      for (const g of segments) {
        const w = width(g.part);
        const dst = (out[g.part] ??= new Float32Array(T * w));
        for (let t = 0; t < T; t++) dst.set(y.subarray(t * N + at, t * N + at + g.count), t * w + g.from);
        at += g.count;
      }
    }
    for (const r of roles) if (!out[r]) throw new GptqError(`${this.prefix}: no projection computes ${r}`);
    return out;
  }

  /** h: T x hidden (one sequence, positions 0..T-1); returns the layer's output, residuals included. */
  forward(h: Float32Array, T: number, capture?: CaptureFn): Float32Array {
    return this.mlpBlock(this.attentionBlock(h, T, capture), T, capture);
  }

  /** The attention half: attention(norm(h)) added to the residual (after its own norm in Gemma's sandwich). */
  attentionBlock(h: Float32Array, T: number, capture?: CaptureFn): HalfState {
    return this.attentionOutput(h, this.attentionCore(h, T, capture), T, capture);
  }

  /** The attention half up to o's input: norm, q/k/v (and their norms), rotary, attention (T x heads * headDim). */
  attentionCore(h: Float32Array, T: number, capture?: CaptureFn): Float32Array {
    const c = this.config;
    const D = c.hiddenSize;
    if (h.length !== T * D)
      throw new GptqError(`decoder layer: input has ${h.length} values, expected ${T} x ${D}`);
    const x = this.norms.attentionIn!.apply(h, T);
    const { q, k, v } = this.project(["q", "k", "v"], x, T, capture);
    const hd = c.headDim;
    if (this.norms.q) q.set(this.norms.q.apply(q, (q.length / hd) | 0));
    if (this.norms.k) k.set(this.norms.k.apply(k, (k.length / hd) | 0));
    if (this.rotary) {
      this.rotary.apply(q, T, c.numHeads);
      this.rotary.apply(k, T, c.numKvHeads);
    }
    return attention(q, k, v, T, {
      heads: c.numHeads,
      kvHeads: c.numKvHeads,
      headDim: hd,
      scale: c.attentionScale,
      softcap: c.attentionSoftcap,
      window: this.window,
    });
  }

  /** The rest of the attention half: o's projection of `attn` (and the norm after it) added to the residual h. */
  attentionOutput(h: Float32Array, attn: Float32Array, T: number, capture?: CaptureFn): HalfState {
    const c = this.config;
    let { o } = this.project(["o"], attn, T, capture);
    if (this.norms.attentionOut) o = this.norms.attentionOut.apply(o, T);
    const residual = new Float32Array(T * c.hiddenSize);
    for (let i = 0; i < residual.length; i++) residual[i] = h[i] + o[i];
    return this.family.layout(c) === "parallel" ? { residual, mlpInput: h } : { residual };
  }

  /** The MLP half: mlp(norm(input)) added to the residual; the input is the residual, or the layer's input in a parallel layer. */
  mlpBlock(state: HalfState, T: number, capture?: CaptureFn): Float32Array {
    if (this.family.mlp === "experts") {
      const y = this.norms.mlpIn!.apply(state.mlpInput ?? state.residual, T);
      return this.mlpOutput(state, this.expertsForward(y, T, capture), T);
    }
    return this.mlpOutput(state, this.project(["down"], this.mlpCore(state, T, capture), T, capture).down, T);
  }

  /** A dense MLP half up to down's input: norm, gate and up (or up alone), activation (T x intermediate). */
  mlpCore(state: HalfState, T: number, capture?: CaptureFn): Float32Array {
    if (this.family.mlp === "experts")
      throw new GptqError(`${this.prefix}: the experts' MLP has no single down input`);
    const y = this.norms.mlpIn!.apply(state.mlpInput ?? state.residual, T);
    const act = this.config.hiddenAct;
    if (this.family.mlp === "gated") {
      const { gate, up } = this.project(["gate", "up"], y, T, capture);
      for (let i = 0; i < gate.length; i++) gate[i] = activation(gate[i], act) * up[i]; // one rounding
      return gate;
    }
    const { up } = this.project(["up"], y, T, capture);
    for (let i = 0; i < up.length; i++) up[i] = activation(up[i], act);
    return up;
  }

  /** The rest of a dense MLP half from down's input `act`: down (and the norm after it) added to the residual. */
  mlpDown(state: HalfState, act: Float32Array, T: number, capture?: CaptureFn): Float32Array {
    return this.mlpOutput(state, this.project(["down"], act, T, capture).down, T);
  }

  /** The MLP's output (T x hidden) after the family's norm, added to the residual. */
  private mlpOutput(state: HalfState, down: Float32Array, T: number): Float32Array {
    if (this.norms.mlpOut) down = this.norms.mlpOut.apply(down, T);
    const out = Float32Array.from(state.residual);
    for (let i = 0; i < out.length; i++) out[i] += down[i];
    return out;
  }

  /**
   * A mixture-of-experts MLP on y: T x hidden. The router picks each token's experts; each expert runs as
   * a gated MLP on the rows routed to it (and reports those rows to `capture`), its output added to the
   * token's, scaled by the router's weight.
   */
  private expertsForward(y: Float32Array, T: number, capture?: CaptureFn): Float32Array {
    const c = this.config;
    const spec = this.family.experts!;
    const D = c.hiddenSize;
    if (!this.router || !c.experts) throw new GptqError(`${this.prefix}: no router for the experts`);
    const routing = routeTokens(this.router.forward(y, T), T, c.experts);
    const out = new Float32Array(T * D);
    tokensPerExpert(routing, T, c.experts).forEach(({ rows, weights }, e) => {
      if (!rows.length) return;
      const n = rows.length;
      const x = new Float32Array(n * D);
      rows.forEach((t, i) => x.set(y.subarray(t * D, (t + 1) * D), i * D));
      const run = (role: "gate" | "up" | "down", input: Float32Array) => {
        const name = `experts.${e}.${spec.linears.find((l) => l.role === role)!.name}`;
        capture?.(name, input, n);
        return this.linears[name].forward(input, n);
      };
      const gate = run("gate", x);
      const up = run("up", x);
      for (let i = 0; i < gate.length; i++) gate[i] = activation(gate[i], c.hiddenAct) * up[i];
      const down = run("down", gate);
      rows.forEach((t, i) => {
        for (let d = 0; d < D; d++) out[t * D + d] += weights[i] * down[i * D + d];
      });
    });
    return out;
  }
}

/** query rows handled per block: scores for a block are (rows x keys so far), never T x T */
const ATTN_BLOCK = 64;

export interface AttentionShape {
  heads: number;
  kvHeads: number;
  headDim: number;
  /** what q.k is multiplied by */
  scale: number;
  /** scores become cap * tanh(scores / cap) before the softmax */
  softcap?: number;
  /** each query sees at most this many positions, itself included (Infinity: all before it) */
  window: number;
}

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
  a: AttentionShape,
): Float32Array {
  const { heads: H, kvHeads: KV, headDim: hd, scale, softcap: cap, window } = a;
  const group = H / KV;
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
        // a cap applies to scaled scores; without one the scale is folded into the exponent
        if (cap !== undefined)
          for (let j = j0; j <= i; j++) s[row + j] = cap * Math.tanh((s[row + j] * scale) / cap);
        const expScale = cap !== undefined ? 1 : scale;
        let max = -Infinity;
        for (let j = j0; j <= i; j++) if (s[row + j] > max) max = s[row + j];
        let sum = 0;
        for (let j = j0; j <= i; j++) {
          const e = Math.exp((s[row + j] - max) * expScale);
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

/** An unquantized projection: `<prefix>.weight` [N, K] and an optional `<prefix>.bias` [N]. */
export function loadDenseLinear(store: TensorStore, prefix: string, N: number, K: number): DenseLinear {
  const weight = readFloatTensor(store, `${prefix}.weight`, [N, K]);
  const bias = store.has(`${prefix}.bias`) ? readFloatTensor(store, `${prefix}.bias`, [N]) : undefined;
  return new DenseLinear(weight, N, K, bias);
}

/** tensor-name prefix of decoder layer i */
export function layerPrefix(family: FamilySpec, i: number): string {
  return `${family.tensors.layers}.${i}`;
}

/** A stored projection of a decoder layer: the family's name for it, its tensor prefix and [N, K]. */
export interface StoredProjection {
  name: string;
  prefix: string;
  shape: [number, number];
  /** the roles it computes (several for a fused one) */
  roles: readonly Role[];
}

/**
 * The projections decoder layer `i` stores: a fused one wherever the checkpoint has it (and then none of
 * its parts), the separate ones for every other role. `intermediate` overrides the MLP width (padding).
 */
export function storedProjections(
  family: FamilySpec,
  c: ModelConfig,
  i: number,
  has: (prefix: string) => boolean,
  where: string,
  intermediate = c.intermediateSize,
): StoredProjection[] {
  const prefix = layerPrefix(family, i);
  const out: StoredProjection[] = [];
  const covered = new Set<Role>();
  for (const f of family.fused) {
    const p = `${prefix}.${f.module}`;
    if (!has(p)) continue;
    const both = family.linears.find((l) => f.parts.includes(l.role) && has(`${prefix}.${l.module}`));
    if (both)
      throw new GptqError(
        `${where}: both ${p} and ${prefix}.${both.module} are stored; a projection is either fused or separate`,
      );
    out.push({ name: f.name, prefix: p, shape: fusedShape(c, f, intermediate), roles: f.parts });
    f.parts.forEach((r) => covered.add(r));
  }
  for (const l of expertLinears(family, c)) {
    out.push({
      name: l.name,
      prefix: `${prefix}.${l.module}`,
      shape: roleShape(c, l.role, intermediate),
      roles: [l.role],
    });
    covered.add(l.role);
  }
  for (const l of family.linears)
    if (!covered.has(l.role)) {
      out.push({
        name: l.name,
        prefix: `${prefix}.${l.module}`,
        shape: roleShape(c, l.role, intermediate),
        roles: [l.role],
      });
      covered.add(l.role);
    }
  const missing = (["q", "k", "v", "o", "up", "down"] as Role[]).find((r) => !covered.has(r));
  if (missing) {
    const f = family.fused.find((x) => x.parts.includes(missing));
    throw new GptqError(
      `${where}: layer ${i} stores no ${missing} projection${f ? ` (expected ${prefix}.${f.module})` : ""}`,
    );
  }
  return out;
}

/** The norms of decoder layer i: tensor prefix and length (q/k norms run over one head). */
function layerNorms(
  family: FamilySpec,
  c: ModelConfig,
  i: number,
): { role: NormRole; prefix: string; dim: number }[] {
  return family.norms(c).map((n) => ({
    role: n.role,
    prefix: `${layerPrefix(family, i)}.${n.module}`,
    dim: n.role === "q" || n.role === "k" ? c.headDim : c.hiddenSize,
  }));
}

/** A norm's tensors: `.weight` (plus 1 for Gemma's), and `.bias` for LayerNorm. */
function readNorm(store: TensorStore, family: FamilySpec, c: ModelConfig, prefix: string, dim: number): Norm {
  const w = readFloatTensor(store, `${prefix}.weight`, [dim]);
  if (family.norm === "rms_offset") for (let i = 0; i < dim; i++) w[i] = 1 + w[i];
  const bias = family.norm === "layer" ? readFloatTensor(store, `${prefix}.bias`, [dim]) : undefined;
  return new Norm(w, c.normEps, bias);
}

/** The tensors of decoder layer `i` of an unquantized checkpoint: name and shape. */
function denseLayerTensors(
  family: FamilySpec,
  c: ModelConfig,
  store: TensorStore,
  i: number,
): [string, number[]][] {
  const out: [string, number[]][] = [];
  for (const n of layerNorms(family, c, i)) {
    out.push([`${n.prefix}.weight`, [n.dim]]);
    if (family.norm === "layer") out.push([`${n.prefix}.bias`, [n.dim]]);
  }
  const has = (p: string) => store.has(`${p}.weight`);
  for (const p of storedProjections(family, c, i, has, store.dir)) {
    out.push([`${p.prefix}.weight`, p.shape]);
    if (store.has(`${p.prefix}.bias`)) out.push([`${p.prefix}.bias`, [p.shape[0]]]);
  }
  const router = routerOf(family, c, i);
  if (router) out.push([`${router.prefix}.weight`, router.shape]);
  return out;
}

/** The rotary embedding of each layer: none with learned positions, Gemma 3's local one on sliding layers. */
function layerRotaries(c: ModelConfig, family: FamilySpec): (i: number) => Rotary | undefined {
  if (family.positions === "learned") return () => undefined;
  const global = Rotary.fromConfig(c);
  const local =
    c.localRopeTheta !== undefined
      ? new Rotary(c.headDim, c.rotaryDim, c.localRopeTheta, { type: "default" })
      : undefined;
  return (i) => (local && c.layerTypes?.[i] === "sliding_attention" ? local : global);
}

/** The attention window of layer i: the sliding window where it applies, otherwise every earlier position. */
function layerWindow(c: ModelConfig, i: number): number {
  const sliding = c.layerTypes ? c.layerTypes[i] === "sliding_attention" : true;
  return sliding && c.slidingWindow !== undefined ? c.slidingWindow : Infinity;
}

/** A mixture-of-experts layer's router: tensor prefix and [experts, hidden]; undefined for a dense MLP. */
function routerOf(
  family: FamilySpec,
  c: ModelConfig,
  i: number,
): { prefix: string; shape: [number, number] } | undefined {
  if (!family.experts || !c.experts) return undefined;
  return {
    prefix: `${layerPrefix(family, i)}.${family.experts.router}`,
    shape: [c.experts.count, c.hiddenSize],
  };
}

/** Where a decoder layer's projections come from. */
interface LinearSource {
  /** whether a projection (quantized or not) is stored under this tensor prefix */
  has(prefix: string): boolean;
  /** the projection at `prefix`, N x K */
  linear(prefix: string, N: number, K: number): Linear;
}

/** Decoder layer `i` of a checkpoint, every projection as stored. */
function readDecoderLayer(
  store: TensorStore,
  family: FamilySpec,
  config: ModelConfig,
  i: number,
  rotary: Rotary | undefined,
  source: LinearSource,
): DecoderLayer {
  const linears: Record<string, Linear> = {};
  for (const p of storedProjections(family, config, i, (x) => source.has(x), store.dir))
    linears[p.name] = source.linear(p.prefix, p.shape[0], p.shape[1]);
  const norms: Partial<Record<NormRole, Norm>> = {};
  for (const n of layerNorms(family, config, i))
    norms[n.role] = readNorm(store, family, config, n.prefix, n.dim);
  const router = routerOf(family, config, i);
  return new DecoderLayer(
    config,
    family,
    layerPrefix(family, i),
    linears,
    norms,
    rotary,
    layerWindow(config, i),
    router && loadDenseLinear(store, router.prefix, ...router.shape),
  );
}

/** The embedding front of a model: token rows (scaled where the family scales them) plus learned positions. */
class Embeddings {
  constructor(
    readonly config: ModelConfig,
    /** vocab x hidden */
    readonly table: Float32Array,
    /** (max positions + offset) x hidden, for learned positions */
    readonly positions?: Float32Array,
  ) {}

  static read(store: TensorStore, family: FamilySpec, c: ModelConfig): Embeddings {
    const D = c.hiddenSize;
    const table = readFloatTensor(store, family.tensors.embed, [c.vocabSize, D]);
    const lp = c.learnedPositions;
    const positions =
      lp && family.tensors.positions
        ? readFloatTensor(store, family.tensors.positions, [lp.maxPositions + lp.offset, D])
        : undefined;
    return new Embeddings(c, table, positions);
  }

  /** tokens -> T x hidden */
  rows(tokens: Int32Array): Float32Array {
    const c = this.config;
    const V = c.vocabSize;
    for (let t = 0; t < tokens.length; t++)
      if (tokens[t] < 0 || tokens[t] >= V)
        throw new GptqError(`token ${tokens[t]} at position ${t} is outside the vocabulary [0, ${V})`);
    const D = c.hiddenSize;
    const out = new Float32Array(tokens.length * D);
    for (let t = 0; t < tokens.length; t++)
      out.set(this.table.subarray(tokens[t] * D, (tokens[t] + 1) * D), t * D);
    if (c.embedScale !== undefined) for (let i = 0; i < out.length; i++) out[i] *= c.embedScale;
    const lp = c.learnedPositions;
    if (lp && this.positions) {
      if (tokens.length > lp.maxPositions)
        throw new GptqError(
          `a sequence of ${tokens.length} tokens is longer than the model's ${lp.maxPositions} learned positions`,
        );
      for (let t = 0; t < tokens.length; t++) {
        const row = (t + lp.offset) * D;
        for (let d = 0; d < D; d++) out[t * D + d] += this.positions[row + d];
      }
    }
    return out;
  }
}

/** What layer-by-layer quantization reads of a model: its embeddings, then one decoder layer at a time. */
export interface LayerSource {
  readonly family: FamilySpec;
  readonly config: ModelConfig;
  readonly numLayers: number;
  /** the token embedding table, vocab x hidden */
  readonly embedTokens: Float32Array;
  embed(tokens: Int32Array): Float32Array;
  layer(i: number): DecoderLayer;
}

export class DecoderModel implements LayerSource {
  constructor(
    public config: ModelConfig,
    readonly family: FamilySpec,
    private readonly embeddings: Embeddings,
    readonly layers: DecoderLayer[],
    readonly finalNorm: Norm,
    public lmHead: Linear,
  ) {}

  /** vocab x hidden */
  get embedTokens(): Float32Array {
    return this.embeddings.table;
  }

  /**
   * Loads a checkpoint directory (config.json + safetensors), unquantized (F32/F16/BF16) or quantized
   * (gptq, gptq_v2, marlin: config and tensors are checked against each other first). Quantized
   * projections run from their codes; projections a checkpoint left unquantized run in fp32. Fused
   * projections (Phi-3's qkv_proj, Falcon's query_key_value, ...) run fused, quantized or not.
   */
  static load(dir: string, opts: LoadOptions = {}): DecoderModel {
    const actQuant = opts.actQuant ?? "none";
    if (actQuant !== "none" && actQuant !== "int8")
      throw new GptqError(`actQuant must be "none" or "int8", not ${JSON.stringify(actQuant)}`);
    const config = readModelConfig(dir);
    const family = familyOf(config);
    const ckpt = openCheckpoint(dir);
    try {
      const store = ckpt.store;
      if (actQuant === "int8" && ckpt.format === "fp")
        throw new GptqError(
          `${dir}: int8 activations (A8W4) need a 4-bit symmetric quantized checkpoint; this one is unquantized`,
        );
      const quantized = new Map(ckpt.layers.map((l) => [l.name, l]));
      /** the quantized layer at `prefix` (bias included), checked against the shape config.json implies */
      const readQuantized = (prefix: string, N: number, K: number): QuantizedLinear => {
        const info = quantized.get(prefix)!;
        if (info.outFeatures !== N || info.inFeatures !== K)
          throw new GptqError(
            `${dir}: ${prefix} is ${info.outFeatures} x ${info.inFeatures} (out x in), config.json implies ${N} x ${K}`,
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
        if (store.has(`${prefix}.bias`))
          layer.bias = readFloatTensor(store, `${prefix}.bias`, [info.outFeatures]);
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
          ? run(prefix, readQuantized(prefix, N, K))
          : loadDenseLinear(store, prefix, N, K);
      const source: LinearSource = {
        has: (prefix) => quantized.has(prefix) || store.has(`${prefix}.weight`),
        linear,
      };
      const D = config.hiddenSize;
      const embeddings = Embeddings.read(store, family, config);
      const rotary = layerRotaries(config, family);
      const layers: DecoderLayer[] = [];
      for (let i = 0; i < config.numLayers; i++)
        layers.push(readDecoderLayer(store, family, config, i, rotary(i), source));
      const finalNorm = readNorm(store, family, config, family.tensors.finalNorm, D);
      // a checkpoint without lm_head.weight ties it to the embeddings whatever the config says;
      // some quantizers also quantize lm_head (GPTQModel's lm_head option)
      const head = family.tensors.lmHead;
      const lmHead = quantized.has(head)
        ? linear(head, config.vocabSize, D)
        : config.tieWordEmbeddings || !store.has(`${head}.weight`)
          ? new DenseLinear(embeddings.table, config.vocabSize, D)
          : loadDenseLinear(store, head, config.vocabSize, D);
      return new DecoderModel(config, family, embeddings, layers, finalNorm, lmHead);
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
    return this.embeddings.rows(tokens);
  }

  /** the last decoder layer's output for one sequence: T x hidden */
  hidden(tokens: Int32Array): Float32Array {
    let h = this.embed(tokens);
    for (const layer of this.layers) h = layer.forward(h, tokens.length);
    return h;
  }

  /** final norm + lm_head (+ the final soft-cap): T x hidden -> T x vocab */
  logits(h: Float32Array, T: number): Float32Array {
    const out = this.lmHead.forward(this.finalNorm.apply(h, T), T);
    if (this.config.finalSoftcap !== undefined) softcap(out, this.config.finalSoftcap);
    return out;
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
export class LayerwiseDecoder implements LayerSource {
  private constructor(
    readonly config: ModelConfig,
    readonly family: FamilySpec,
    private readonly store: TensorStore,
    private readonly embeddings: Embeddings,
    private readonly rotary: (i: number) => Rotary | undefined,
    private readonly prepare: (layer: DecoderLayer) => DecoderLayer,
  ) {}

  static open(dir: string, prepare: (layer: DecoderLayer) => DecoderLayer = (l) => l): LayerwiseDecoder {
    const config = readModelConfig(dir);
    const family = familyOf(config);
    const store = TensorStore.open(dir);
    try {
      // every layer's headers now: a missing or mis-shaped tensor fails before hours of work, not at
      // its layer
      for (let i = 0; i < config.numLayers; i++)
        for (const [name, shape] of denseLayerTensors(family, config, store, i))
          checkFloatTensor(store, name, shape);
      // and every value finite: a NaN weight would otherwise surface as NaN losses layers later
      const names = Array.from({ length: config.numLayers }, (_, i) =>
        denseLayerTensors(family, config, store, i).map(([name]) => name),
      ).flat();
      const bad = scanNonFinite(store, names, (name) => `${dir}: tensor ${name}`).find((p) => p);
      if (bad) throw new GptqError(bad.problem);
      const embeddings = Embeddings.read(store, family, config);
      return new LayerwiseDecoder(config, family, store, embeddings, layerRotaries(config, family), prepare);
    } catch (e) {
      store.close();
      throw e;
    }
  }

  get numLayers(): number {
    return this.config.numLayers;
  }

  /** vocab x hidden */
  get embedTokens(): Float32Array {
    return this.embeddings.table;
  }

  embed(tokens: Int32Array): Float32Array {
    return this.embeddings.rows(tokens);
  }

  /**
   * Reads decoder layer `i` now. Its projections keep their weights as stored (checked finite when the
   * model was opened) until the CPU widens them, so a GPU takes fp16 weights as they are.
   */
  layer(i: number): DecoderLayer {
    const store = this.store;
    const source: LinearSource = {
      has: (prefix) => store.has(`${prefix}.weight`),
      linear: (prefix, N, K) => {
        checkFloatTensor(store, `${prefix}.weight`, [N, K]);
        const bias = store.has(`${prefix}.bias`) ? readFloatTensor(store, `${prefix}.bias`, [N]) : undefined;
        return new DenseLinear(store.read(`${prefix}.weight`), N, K, bias);
      },
    };
    const layer = this.prepare(readDecoderLayer(store, this.family, this.config, i, this.rotary(i), source));
    // the next layer's tensors are read on a thread of their own while this one computes
    if (i + 1 < this.config.numLayers)
      store.prefetch(denseLayerTensors(this.family, this.config, store, i + 1).map(([name]) => name));
    return layer;
  }

  close(): void {
    this.store.close();
  }
}
