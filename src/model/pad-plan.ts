/**
 * Planning the zero-padding of a Llama-family model's MLP intermediate dimension, which keeps its function
 * exactly (see padding.ts). Given a target (a packing format, a kernel's rules or a plain
 * multiple), finds the smallest intermediate size that makes every layer fit; for dimensions padding
 * cannot change (the head dimension) says so and names what would fit instead; hidden_size is padded
 * separately (`gptq pad --hidden-multiple`).
 */
import { GptqError } from "../util/errors.js";
import { KernelQuery, KernelRule } from "../kernels/types.js";
import { LlamaConfig } from "./config.js";
import { LINEAR_NAMES, LinearName, LlamaModel } from "./llama.js";
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

/**
 * `target` and full groups: the group size divides the intermediate size, so down_proj has no partial
 * last group (torch's CPU int4 kernel, ExLlama, Machete and ExecuTorch refuse one). Other dimensions
 * are left as they are: padding cannot change them.
 */
export function fullGroupsTarget(target: PadTarget, groupSize: number): PadTarget {
  if (groupSize === -1) return target;
  return {
    describe: `${target.describe} and full groups of ${groupSize}`,
    problem: (s) =>
      target.problem(s) ??
      (s.linear === "down_proj" && s.inFeatures % groupSize
        ? `group size ${groupSize} does not divide in_features ${s.inFeatures} (a partial last group)`
        : undefined),
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
function dimensionOf(
  d: LlamaConfig,
  s: LinearShape,
  side: "in" | "out",
): { dim: string; why: string; paddable?: string } {
  const headWhy = "attention scales scores by 1/sqrt(head_dim) and rotary frequencies depend on head_dim";
  const hidden = {
    dim: `hidden_size ${d.hiddenSize}`,
    why: "",
    paddable: "add --hidden-multiple N to pad it too (zero channels; RMSNorm is kept exact)",
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
function blame(
  d: LlamaConfig,
  s: LinearShape,
  problem: string,
): { dim: string; why: string; paddable?: string } | undefined {
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
        ? b.paddable
          ? `that is ${b.dim}: ${b.paddable}`
          : `that is ${b.dim}, which padding cannot change without changing the model (${b.why})`
        : "padding does not change that") +
      (alternatives.length
        ? ok.length
          ? `; these accept the model (after intermediate padding where needed): ${ok.join(", ")}`
          : "; no other known target accepts it either"
        : ""),
  );
}
