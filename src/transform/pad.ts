/**
 * The `pad` command's checkpoint rewrite: a copy of an unquantized checkpoint (of a family whose table entry
 * allows it) with the MLP
 * intermediate zero-padded as planned by model/pad-plan.ts, and optionally the hidden size (the residual
 * stream) zero-padded too. Either way the model computes the same function (to rounding):
 * - intermediate: zero rows in gate/up, zero columns in down; SiLU(0) * 0 = 0 adds nothing.
 * - hidden D -> D': zero channels in the embeddings, zero input columns of every projection reading the
 *   stream (q/k/v, gate/up, lm_head), zero output rows of those writing it (o, down), so the new channels
 *   stay 0. RMSNorm averages over D' channels: with eps' = eps D / D' its denominator is sqrt(D / D') times
 *   the old one, which norm weights scaled by sqrt(D / D') undo. head_dim is written out (it was D / heads).
 *   LayerNorm models cannot be padded so: it subtracts the mean, which turns the zero channels non-zero.
 */
import { copyFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { buildDirAtomic, writeTextAtomic } from "../io/atomic.js";
import { checkOutputDir, tensorFileBytes } from "../io/output.js";
import { TensorEntry } from "../io/safetensors.js";
import { TensorStore, writeCheckpointTensors } from "../io/store.js";
import { Tensor, fromFloat32, toFloat32 } from "../tensor/tensor.js";
import { GptqError } from "../util/errors.js";
import { ModelConfig, readModelConfig } from "../model/config.js";
import { familyOf } from "../model/families/index.js";
import { PadPlan } from "../model/pad-plan.js";
import { padCols, padRows } from "../model/padding.js";
import { checkOutputPath } from "./rewrite.js";

/** MLP projections, Mixtral's experts included (w1/w3 gate/up, w2 down) */
const MLP_TENSOR =
  /\.(?:mlp|block_sparse_moe\.experts\.\d+)\.(gate_proj|up_proj|down_proj|w1|w3|w2)\.(weight|bias)$/;
/** the MLP projections that read the intermediate (the others write it) */
const MLP_DOWN = new Set(["down_proj", "w2"]);

/**
 * The padded shape of a stored tensor when the intermediate goes from `from` to `to`; undefined when the
 * tensor is not one that changes. Throws when an MLP tensor does not match `from`.
 */
export function paddedMlpShape(
  name: string,
  shape: number[],
  from: number,
  to: number,
): number[] | undefined {
  const m = MLP_TENSOR.exec(name);
  if (!m || from === to) return undefined;
  const [, linear, kind] = m;
  if (MLP_DOWN.has(linear) && kind === "bias") return undefined; // length hidden_size
  const ok = MLP_DOWN.has(linear)
    ? shape.length === 2 && shape[1] === from
    : shape[0] === from && shape.length === (kind === "bias" ? 1 : 2);
  if (!ok)
    throw new GptqError(
      `${name} has shape ${JSON.stringify(shape)}, which does not match intermediate_size ${from}`,
    );
  return MLP_DOWN.has(linear) ? [shape[0], to] : kind === "bias" ? [to] : [to, shape[1]];
}

/** A stored tensor padded for the new intermediate size (the tensor itself when it does not change). */
export function padMlpTensor(name: string, t: Tensor, from: number, to: number): Tensor {
  const shape = paddedMlpShape(name, t.shape, from, to);
  if (!shape) return t;
  return MLP_DOWN.has(MLP_TENSOR.exec(name)![1]) ? padCols(t, to) : padRows(t, to);
}

/** Stored tensors that read the residual stream (hidden is their last dimension). */
const READS_HIDDEN =
  /^(model\.embed_tokens\.weight|lm_head\.weight|.*\.self_attn\.(q_proj|k_proj|v_proj)\.weight|.*\.mlp\.(gate_proj|up_proj)\.weight)$/;
/** Stored tensors that write it (hidden is their first dimension). */
const WRITES_HIDDEN = /\.(self_attn\.o_proj|mlp\.down_proj)\.(weight|bias)$/;
/** RMSNorm weights over the stream. */
const HIDDEN_NORM = /^(model\.norm\.weight|.*\.(input_layernorm|post_attention_layernorm)\.weight)$/;

/** The padded shape of a stored tensor when hidden_size goes from `from` to `to`, or undefined. */
export function paddedHiddenShape(
  name: string,
  shape: number[],
  from: number,
  to: number,
): number[] | undefined {
  if (from === to) return undefined;
  const read = READS_HIDDEN.test(name);
  const write = WRITES_HIDDEN.test(name) || HIDDEN_NORM.test(name);
  if (!read && !write) return undefined;
  const dim = read ? shape.length - 1 : 0;
  if (shape[dim] !== from)
    throw new GptqError(
      `${name} has shape ${JSON.stringify(shape)}, which does not match hidden_size ${from}`,
    );
  const out = [...shape];
  out[dim] = to;
  return out;
}

/** A stored tensor padded for the new hidden size: zeros, and RMSNorm weights scaled by sqrt(from / to). */
export function padHiddenTensor(name: string, t: Tensor, from: number, to: number): Tensor {
  if (!paddedHiddenShape(name, t.shape, from, to)) return t;
  if (READS_HIDDEN.test(name)) return padCols(t, to);
  if (!HIDDEN_NORM.test(name)) return padRows(t, to);
  const w = toFloat32(t);
  const f = Math.sqrt(from / to);
  const out = new Float32Array(to);
  for (let i = 0; i < from; i++) out[i] = w[i] * f;
  return fromFloat32(out, t.dtype, [to]);
}

/** Refuses to pad hidden_size where the family table says it cannot stay exact (LayerNorm, Gemma's norms...). */
export function assertHiddenPaddable(config: ModelConfig, where: string): void {
  const family = familyOf(config);
  if (family.paddable.hidden) return;
  throw new GptqError(
    `${where}: gptq pad pads hidden_size only in Llama, Mistral and Qwen2 (RMSNorm kept exact), not ${config.modelType}${
      family.norm === "layer" ? ": LayerNorm subtracts the mean, so zero channels would not stay zero" : ""
    }`,
  );
}

/** The hidden size padded from `from` to `to` (absent or equal: unchanged). */
export interface HiddenPad {
  from: number;
  to: number;
}

export interface PadResult {
  plan: PadPlan;
  hidden?: HiddenPad;
  /** number of tensors changed */
  tensors: number;
}

/**
 * Writes a copy of the unquantized checkpoint `inDir` to `outDir` with the MLP intermediate padded as
 * planned; other files are copied unchanged, config.json gets the new intermediate_size. The input is
 * never modified and nothing is left at `outDir` on failure.
 */
export async function padCheckpoint(
  inDir: string,
  outDir: string,
  plan: PadPlan,
  hidden?: HiddenPad,
): Promise<PadResult> {
  const config = readModelConfig(inDir);
  if (config.intermediateSize !== plan.from)
    throw new GptqError(
      `${inDir}/config.json: intermediate_size is ${config.intermediateSize}, the plan pads from ${plan.from}`,
    );
  if (plan.to !== plan.from && !familyOf(config).paddable.intermediate)
    throw new GptqError(`${inDir}: gptq pad does not pad the MLP of ${config.modelType} models`);
  const D = config.hiddenSize;
  const D2 = hidden?.to ?? D;
  if (D2 !== D) assertHiddenPaddable(config, inDir);
  if (hidden && hidden.from !== D)
    throw new GptqError(`${inDir}/config.json: hidden_size is ${D}, the plan pads from ${hidden.from}`);
  if (D2 < D) throw new GptqError(`cannot pad hidden_size ${D} down to ${D2}`);
  const store = TensorStore.open(inDir);
  try {
    const quantized = store.names().find((n) => /\.(qweight|B)$/.test(n));
    if (quantized)
      throw new GptqError(
        `${inDir} is quantized (${quantized}); pad works on unquantized checkpoints: pad before quantizing, or quantize with --pad auto`,
      );
    let changed = 0;
    const entries: TensorEntry[] = store.names().map((name) => {
      const info = store.info(name);
      const mlp = paddedMlpShape(name, info.shape, plan.from, plan.to) ?? info.shape;
      const shape = paddedHiddenShape(name, mlp, D, D2) ?? mlp;
      if (shape !== info.shape) changed++;
      return {
        name,
        dtype: info.dtype,
        shape,
        data: () =>
          padHiddenTensor(name, padMlpTensor(name, store.read(name), plan.from, plan.to), D, D2).data,
      };
    });
    const carried = readdirSync(inDir).filter(
      (f) =>
        !(f.endsWith(".safetensors") || f.endsWith(".safetensors.index.json")) &&
        statSync(join(inDir, f)).isFile(),
    );
    // before any work: the output can be created and the copy fits the disk (config.json is rewritten)
    checkOutputPath(inDir, outDir);
    checkOutputDir(
      outDir,
      tensorFileBytes(entries) + carried.reduce((s, f) => s + statSync(join(inDir, f)).size, 0) + 4096,
    );
    await buildDirAtomic(outDir, (tmp) => {
      for (const f of carried) if (f !== "config.json") copyFileSync(join(inDir, f), join(tmp, f));
      writeCheckpointTensors(tmp, entries, { metadata: store.metadata() });
      writeTextAtomic(
        join(tmp, "config.json"),
        JSON.stringify(
          {
            ...config.raw,
            intermediate_size: plan.to,
            ...(D2 !== D
              ? { hidden_size: D2, head_dim: config.headDim, rms_norm_eps: (config.normEps * D) / D2 }
              : {}),
          },
          null,
          2,
        ) + "\n",
      );
    });
    return { plan, ...(hidden ? { hidden } : {}), tensors: changed };
  } finally {
    store.close();
  }
}
