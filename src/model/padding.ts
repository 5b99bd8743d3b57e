/**
 * Zero-padding that keeps a Llama-family model's function exactly: the MLP intermediate dimension.
 * Extra gate/up rows are zero, so their outputs are silu(0) * 0 = 0, and the matching extra down
 * columns are zero, so those zeros add nothing. Other dimensions cannot be padded this way: hidden_size
 * feeds RMSNorm (its mean runs over every channel, so zero channels change it) and the head dimension
 * sets the attention scale and the rotary frequencies. For those we say so and name what would fit.
 */
import { copyFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { buildDirAtomic, writeTextAtomic } from "../io/atomic.js";
import { TensorEntry } from "../io/safetensors.js";
import { TensorStore, writeCheckpointTensors } from "../io/store.js";
import { DTYPE_BYTES } from "../tensor/dtype.js";
import { Tensor, bytesOf, viewAs } from "../tensor/tensor.js";
import { GptqError } from "../util/errors.js";
import { KernelQuery, KernelRule } from "../kernels/types.js";
import { LlamaConfig, readLlamaConfig } from "./config.js";
import { DecoderLayer, LINEAR_NAMES, LinearName, LlamaModel } from "./llama.js";
import { DenseLinear } from "../backend/cpu/linear.js";
import { FORMATS } from "../formats/registry.js";
import { CheckpointFormat, QuantScheme } from "../formats/types.js";

export interface LinearShape {
  linear: LinearName;
  inFeatures: number; // K
  outFeatures: number; // N
}

/** The seven linear shapes of one decoder layer (all layers share them). */
export function decoderLinearShapes(d: LlamaConfig, intermediate = d.intermediateSize): LinearShape[] {
  const shapes = LlamaModel.linearShapes({ ...d, intermediateSize: intermediate });
  return LINEAR_NAMES.map((linear) => ({
    linear,
    outFeatures: shapes[linear][0],
    inFeatures: shapes[linear][1],
  }));
}

/**
 * What the padded shapes must satisfy: a packing format, a kernel's rules, or a plain multiple.
 * `problem` returns why a layer shape fails, or undefined when it fits.
 */
export interface PadTarget {
  /** e.g. "kernel marlin", "gptq 4-bit packing", "a multiple of 64" */
  describe: string;
  problem(shape: LinearShape): string | undefined;
}

export function multipleTarget(multiple: number): PadTarget {
  if (!Number.isInteger(multiple) || multiple < 1)
    throw new GptqError(`the padding multiple must be a positive integer, got ${multiple}`);
  return {
    describe: `a multiple of ${multiple}`,
    // Only the intermediate dimension is asked to be a multiple; other dimensions are left as they are.
    problem: (s) => {
      const I = s.linear === "down_proj" ? s.inFeatures : s.outFeatures;
      const mlp = s.linear === "gate_proj" || s.linear === "up_proj" || s.linear === "down_proj";
      return mlp && I % multiple ? `intermediate size ${I} is not a multiple of ${multiple}` : undefined;
    },
  };
}

/** A kernel's rules for layers quantized with `scheme` (bits, group size, symmetry, act-order). */
export function kernelTarget(
  rule: KernelRule,
  scheme: Omit<KernelQuery, "inFeatures" | "outFeatures">,
): PadTarget {
  return {
    describe: `kernel ${rule.name}`,
    problem: (s) => {
      const v = rule.supports({ ...scheme, inFeatures: s.inFeatures, outFeatures: s.outFeatures });
      return v.ok ? undefined : (v.reason ?? `refused by ${rule.name}`);
    },
  };
}

/** What a stored format's packing can hold (GPTQ: K and N multiples of 32/bits words; Marlin: tiles). */
export function formatTarget(format: CheckpointFormat, scheme: QuantScheme): PadTarget {
  const traits = FORMATS[format];
  return {
    describe: `${format} ${scheme.bits}-bit packing`,
    problem: (s) => traits.schemeProblem(scheme, s),
  };
}

export interface PadPlan {
  dimension: "intermediate_size";
  from: number;
  to: number;
  /** what was asked: the target's description */
  target: string;
}

/** How far past the original size we look for a padded intermediate size before giving up. */
function searchLimit(I: number): number {
  return Math.max(2 * I, I + 4096);
}

/** The model dimension behind a layer's in (K) or out (N) side. */
function dimensionOf(d: LlamaConfig, s: LinearShape, side: "in" | "out"): { dim: string; why: string } {
  const headWhy = "attention scales scores by 1/sqrt(head_dim) and rotary frequencies depend on head_dim";
  const hidden = {
    dim: `hidden_size ${d.hiddenSize}`,
    why: "RMSNorm averages over every hidden channel, so zero channels would change its output",
  };
  const q = { dim: `num_attention_heads x head_dim = ${d.numHeads * d.headDim}`, why: headWhy };
  const kv = { dim: `num_key_value_heads x head_dim = ${d.numKvHeads * d.headDim}`, why: headWhy };
  const inter = { dim: "intermediate_size", why: "no padded size within reach fits" };
  switch (s.linear) {
    case "q_proj":
      return side === "in" ? hidden : q;
    case "k_proj":
    case "v_proj":
      return side === "in" ? hidden : kv;
    case "o_proj":
      return side === "in" ? q : hidden;
    case "gate_proj":
    case "up_proj":
      return side === "in" ? hidden : inter;
    case "down_proj":
      return side === "in" ? inter : hidden;
  }
}

/** Which side a rule's reason is about (kernel rules say "in_features ..." or "out_features ..."). */
function blame(d: LlamaConfig, s: LinearShape, problem: string): { dim: string; why: string } | undefined {
  if (/out_features|\bN\b/.test(problem)) return dimensionOf(d, s, "out");
  if (/in_features|\bK\b/.test(problem)) return dimensionOf(d, s, "in");
  return undefined; // a bits, group or scheme rule: no shape to pad
}

/** The smallest intermediate size >= the model's that makes every layer fit; undefined when none does. */
export function findIntermediateSize(d: LlamaConfig, target: PadTarget): number | undefined {
  const problems = (I: number) => decoderLinearShapes(d, I).filter((s) => target.problem(s) !== undefined);
  if (problems(d.intermediateSize).some((s) => !isMlp(s.linear))) return undefined;
  const limit = searchLimit(d.intermediateSize);
  for (let I = d.intermediateSize; I <= limit; I++) if (!problems(I).length) return I;
  return undefined;
}

function isMlp(l: LinearName): boolean {
  return l === "gate_proj" || l === "up_proj" || l === "down_proj";
}

/**
 * Plans the padding that makes every layer fit `target`; throws a GptqError naming the dimension that
 * cannot be padded, the layer and rule it breaks, and `alternatives` (other targets) that would accept
 * the model, when there is no such padding.
 */
export function planPadding(d: LlamaConfig, target: PadTarget, alternatives: PadTarget[] = []): PadPlan {
  const to = findIntermediateSize(d, target);
  if (to !== undefined)
    return { dimension: "intermediate_size", from: d.intermediateSize, to, target: target.describe };
  // Diagnose with the shapes at the largest intermediate size we tried (where only non-MLP reasons remain
  // unless the intermediate itself can never fit).
  const attention = decoderLinearShapes(d).filter((s) => !isMlp(s.linear));
  const mlp = decoderLinearShapes(d, searchLimit(d.intermediateSize)).filter((s) => isMlp(s.linear));
  const failing = [...attention, ...mlp].find((s) => target.problem(s) !== undefined)!;
  const problem = target.problem(failing)!;
  const b = blame(d, failing, problem);
  const ok = alternatives.filter((t) => findIntermediateSize(d, t) !== undefined).map((t) => t.describe);
  throw new GptqError(
    `cannot pad for ${target.describe}: ${failing.linear} (${failing.inFeatures} -> ${failing.outFeatures}) fails: ${problem}; ` +
      (b
        ? `that is ${b.dim}, which padding cannot change without changing the model (${b.why})`
        : "padding does not change that") +
      (alternatives.length
        ? ok.length
          ? `; these accept the model (after intermediate padding where needed): ${ok.join(", ")}`
          : "; no other known target accepts it either"
        : ""),
  );
}

/** A [rows, cols] tensor with zero rows appended to `newRows` (any dtype: zero bits are zero). */
export function padRows(t: Tensor, newRows: number): Tensor {
  const rows = t.shape[0];
  const cols = t.shape.length === 1 ? 1 : t.shape[1];
  if (newRows < rows) throw new GptqError(`cannot pad ${rows} rows down to ${newRows}`);
  const size = DTYPE_BYTES[t.dtype];
  const out = new Uint8Array(new ArrayBuffer(newRows * cols * size));
  out.set(bytesOf(t.data));
  return {
    dtype: t.dtype,
    shape: t.shape.length === 1 ? [newRows] : [newRows, cols],
    data: viewAs(t.dtype, out),
  };
}

/** A [rows, cols] tensor with zero columns appended to `newCols`. */
export function padCols(t: Tensor, newCols: number): Tensor {
  const [rows, cols] = t.shape;
  if (newCols < cols) throw new GptqError(`cannot pad ${cols} columns down to ${newCols}`);
  const size = DTYPE_BYTES[t.dtype];
  const src = bytesOf(t.data);
  const out = new Uint8Array(new ArrayBuffer(rows * newCols * size));
  for (let r = 0; r < rows; r++)
    out.set(src.subarray(r * cols * size, (r + 1) * cols * size), r * newCols * size);
  return { dtype: t.dtype, shape: [rows, newCols], data: viewAs(t.dtype, out) };
}

const MLP_TENSOR = /\.mlp\.(gate_proj|up_proj|down_proj)\.(weight|bias)$/;

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
  if (linear === "down_proj" && kind === "bias") return undefined; // length hidden_size
  const ok =
    linear === "down_proj"
      ? shape.length === 2 && shape[1] === from
      : shape[0] === from && shape.length === (kind === "bias" ? 1 : 2);
  if (!ok)
    throw new GptqError(
      `${name} has shape ${JSON.stringify(shape)}, which does not match intermediate_size ${from}`,
    );
  return linear === "down_proj" ? [shape[0], to] : kind === "bias" ? [to] : [to, shape[1]];
}

/** A stored tensor padded for the new intermediate size (the tensor itself when it does not change). */
export function padMlpTensor(name: string, t: Tensor, from: number, to: number): Tensor {
  const shape = paddedMlpShape(name, t.shape, from, to);
  if (!shape) return t;
  return name.includes(".down_proj.") ? padCols(t, to) : padRows(t, to);
}

export interface PadResult {
  plan: PadPlan;
  /** number of tensors changed */
  tensors: number;
}

/**
 * Writes a copy of the unquantized checkpoint `inDir` to `outDir` with the MLP intermediate padded as
 * planned; other files are copied unchanged, config.json gets the new intermediate_size. The input is
 * never modified and nothing is left at `outDir` on failure.
 */
export async function padCheckpoint(inDir: string, outDir: string, plan: PadPlan): Promise<PadResult> {
  const config = readLlamaConfig(inDir);
  if (config.intermediateSize !== plan.from)
    throw new GptqError(
      `${inDir}/config.json: intermediate_size is ${config.intermediateSize}, the plan pads from ${plan.from}`,
    );
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
      const shape = paddedMlpShape(name, info.shape, plan.from, plan.to);
      if (shape) changed++;
      return {
        name,
        dtype: info.dtype,
        shape: shape ?? info.shape,
        data: () => padMlpTensor(name, store.read(name), plan.from, plan.to).data,
      };
    });
    await buildDirAtomic(outDir, (tmp) => {
      for (const f of readdirSync(inDir)) {
        const p = join(inDir, f);
        if (f === "config.json" || f.endsWith(".safetensors") || f.endsWith(".safetensors.index.json"))
          continue;
        if (statSync(p).isFile()) copyFileSync(p, join(tmp, f));
      }
      writeCheckpointTensors(tmp, entries, { metadata: store.metadata() });
      writeTextAtomic(
        join(tmp, "config.json"),
        JSON.stringify({ ...config.raw, intermediate_size: plan.to }, null, 2) + "\n",
      );
    });
    return { plan, tensors: changed };
  } finally {
    store.close();
  }
}

/**
 * Pads a loaded model's MLP intermediate in memory (the same zeros `padCheckpoint` writes), so layers can
 * be quantized at a packable size. Changes `model.config.intermediateSize`; every layer must be dense.
 */
export function padModelIntermediate(model: LlamaModel, to: number): void {
  const from = model.config.intermediateSize;
  if (to === from) return;
  for (const layer of model.layers) padLayerIntermediate(layer, from, to);
  model.config.intermediateSize = to;
}

/** One decoder layer's MLP zero-padded from `from` to `to` intermediate features (see padModelIntermediate). */
export function padLayerIntermediate(layer: DecoderLayer, from: number, to: number): void {
  if (to === from) return;
  const f32 = (data: Float32Array, shape: number[]): Tensor => ({ dtype: "F32", shape, data });
  for (const name of ["gate_proj", "up_proj", "down_proj"] as const) {
    const l = layer.linears[name];
    if (!(l instanceof DenseLinear))
      throw new GptqError(`${layer.linearPrefix(name)} is quantized; only unquantized layers can be padded`);
    const w = f32(l.weight, [l.outFeatures, l.inFeatures]);
    layer.linears[name] =
      name === "down_proj"
        ? new DenseLinear(padCols(w, to).data as Float32Array, l.outFeatures, to, l.bias)
        : new DenseLinear(
            padRows(w, to).data as Float32Array,
            to,
            l.inFeatures,
            l.bias && (padRows(f32(l.bias, [from]), to).data as Float32Array),
          );
  }
}
