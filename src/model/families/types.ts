/**
 * The model-family table's vocabulary: what one decoder family is (its config keys, tensor names, norms,
 * attention and MLP blocks, fused projections and the true-sequential order of its projections), and the
 * normalised config every family's parser produces. Adding a family is one entry in families/ plus any
 * block it needs; the forward pass (decoder.ts), quantization, padding and the checks read only this.
 */

export type RopeScaling =
  | { type: "default" }
  | { type: "linear"; factor: number }
  | {
      type: "llama3";
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    }
  | {
      /** Phi-3's: per-frequency divisors, short up to the original context and long past it, and cos/sin scaled */
      type: "longrope";
      shortFactor: number[];
      longFactor: number[];
      originalMaxPositionEmbeddings: number;
      attentionFactor: number;
    };

/** What a projection does in the decoder, whatever the family calls it. */
export type Role = "q" | "k" | "v" | "o" | "gate" | "up" | "down";

/** Where a norm sits: before attention / the MLP, after them (Gemma's sandwich), or on q and k per head. */
export type NormRole = "attentionIn" | "mlpIn" | "attentionOut" | "mlpOut" | "q" | "k";

export type Activation = "silu" | "gelu" | "gelu_tanh" | "relu";

export type AttentionKind = "full_attention" | "sliding_attention";

/** A family's config.json, normalised: defaults filled in as transformers fills them. */
export interface ModelConfig {
  /** the family-table entry that read it */
  family: string;
  modelType: string;
  hiddenSize: number;
  /** the MLP's inner width (intermediate_size, ffn_dim, ffn_hidden_size) */
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** dimensions of each head that are rotated (head_dim x partial_rotary_factor); 0 without rotary */
  rotaryDim: number;
  vocabSize: number;
  normEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  /** rotary base of sliding-window layers when it differs from ropeTheta (Gemma 3's local layers) */
  localRopeTheta?: number;
  tieWordEmbeddings: boolean;
  /** attend only to the last `slidingWindow` positions in the layers `layerTypes` marks sliding (all when absent) */
  slidingWindow?: number;
  /** per layer: full or sliding-window attention */
  layerTypes?: AttentionKind[];
  hiddenAct: Activation;
  /** what q.k is multiplied by before the softmax (1/sqrt(head_dim) unless the family says otherwise) */
  attentionScale: number;
  /** scores become cap * tanh(scores / cap) (Gemma 2) */
  attentionSoftcap?: number;
  /** logits become cap * tanh(logits / cap) (Gemma 2) */
  finalSoftcap?: number;
  /** embeddings are multiplied by this (Gemma: sqrt(hidden_size)) */
  embedScale?: number;
  /** learned absolute positions: rows of the position table = max positions + offset (OPT: offset 2) */
  learnedPositions?: { offset: number; maxPositions: number };
  /** a mixture-of-experts MLP in every layer (intermediateSize is then each expert's width) */
  experts?: ExpertsConfig;
  /** the parsed config.json, for fields the family does not interpret */
  raw: Record<string, unknown>;
}

/** The routing of a mixture-of-experts MLP: each token goes to its top `topK` of `count` experts. */
export interface ExpertsConfig {
  count: number;
  topK: number;
  /** the top-k softmax weights are rescaled to sum to 1 (Mixtral always; Qwen3-MoE with norm_topk_prob) */
  normalizeTopK: boolean;
}

/** One projection of a decoder layer: its key in the layer, its tensor path under the layer prefix, its role. */
export interface LinearSpec {
  name: string;
  module: string;
  role: Role;
}

/**
 * A run of rows of a fused projection: rows [from, from + count) of part `part` sit next in the fused
 * weight. Concatenation (Phi-3's qkv_proj: q, then k, then v) is one segment per part; Falcon's grouped
 * layouts interleave them.
 */
export interface Segment {
  part: Role;
  from: number;
  count: number;
}

/** A projection stored fused: several roles' weights in one tensor, and how its rows map onto them. */
export interface FusedSpec {
  name: string;
  module: string;
  parts: readonly Role[];
  segments(c: ModelConfig): Segment[];
}

export interface NormSpec {
  role: NormRole;
  /** tensor path under the layer prefix, without .weight */
  module: string;
}

/** One true-sequential step: projections that share one input (one Hessian), in the attention or MLP half. */
export interface SequentialGroup {
  roles: readonly Role[];
  block: "attention" | "mlp";
}

/**
 * The MLP block of a family. "gated": down(act(gate(x)) * up(x)) (SwiGLU, GeGLU); "plain":
 * down(act(up(x))) (OPT's fc1/fc2, Falcon's dense_h_to_4h/dense_4h_to_h); "experts": a router and
 * experts (`FamilySpec.experts`), each a gated MLP with its own linears, run and captured on the rows
 * routed to it (see decoder.ts, `expertsForward`).
 */
export type MlpKind = "gated" | "plain" | "experts";

/** Where a mixture-of-experts MLP's tensors are: the router (never quantized) and each expert's projections. */
export interface ExpertsSpec {
  /** the router's path under the layer prefix, without .weight */
  router: string;
  /** expert e's path under the layer prefix */
  expert(e: number): string;
  /** each expert's gated-MLP projections: name under the expert's path, and role */
  linears: readonly { name: string; role: "gate" | "up" | "down" }[];
}

export interface FamilySpec {
  /** the table key, e.g. "llama" */
  name: string;
  /** config.json model_type values this entry reads */
  modelTypes: readonly string[];
  /** one line for the README and `inspect` */
  summary: string;
  parseConfig(raw: Record<string, unknown>, where: string): ModelConfig;
  tensors: {
    /** decoder layer i is at `${layers}.${i}` */
    layers: string;
    embed: string;
    /** learned position table (OPT) */
    positions?: string;
    finalNorm: string;
    lmHead: string;
  };
  /** "sequential": x + attn, then + mlp; "parallel": x + attn(norm(x)) + mlp(norm(x)) (Falcon) */
  layout(c: ModelConfig): "sequential" | "parallel";
  /** RMSNorm w * x, Gemma's (1 + w) * x, or LayerNorm with weight and bias */
  norm: "rms" | "rms_offset" | "layer";
  norms(c: ModelConfig): NormSpec[];
  /** the projections, each under its own name, in true-sequential order */
  linears: readonly LinearSpec[];
  /**
   * fused projections this family's checkpoints may store instead of the parts; a fused projection is
   * loaded, quantized and written as stored (its rows split into the parts only as its outputs are used)
   */
  fused: readonly FusedSpec[];
  groups: readonly SequentialGroup[];
  mlp: MlpKind;
  /** the router and experts, for mlp "experts" */
  experts?: ExpertsSpec;
  /** rotary positions (the default) or a learned position table */
  positions: "rope" | "learned";
  /** what gptq pad and quantize --pad auto can zero-pad exactly */
  paddable: { intermediate: boolean; hidden: boolean };
}
