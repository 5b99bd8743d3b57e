/**
 * Planning the zero-padding of a model's MLP intermediate dimension, which keeps its function exactly
 * (see padding.ts) in the families whose table entry says so. Given a target (a packing format, a kernel's rules or a plain
 * multiple), finds the smallest intermediate size that makes every layer fit; for dimensions padding
 * cannot change (the head dimension) says so and names what would fit instead; hidden_size is padded
 * separately (`gptq pad --hidden-multiple`).
 */
import { GptqError } from "../util/errors.js";
import { KernelQuery, KernelRule } from "../kernels/types.js";
import { ModelConfig } from "./config.js";
import { storedProjections } from "./decoder.js";
import { familyOf } from "./families/index.js";
import { Role } from "./families/types.js";
import { FORMATS } from "../formats/registry.js";
import { CheckpointFormat, QuantScheme } from "../formats/types.js";

export interface LinearShape {
  /** the family's name for the projection */
  linear: string;
  /** what it computes (several roles for a fused projection) */
  roles: readonly Role[];
  inFeatures: number; // K
  outFeatures: number; // N
}

/** Whether a projection is stored under this prefix: by default, the fused projections the family has no separate parts for. */
export type StoredCheck = (prefix: string) => boolean;

/**
 * The linear shapes of one decoder layer (all layers share them): the projections as stored (`has` says
 * which fused ones are present; by default only those the family stores no other way).
 */
export function decoderLinearShapes(
  d: ModelConfig,
  intermediate = d.intermediateSize,
  has?: StoredCheck,
): LinearShape[] {
  const family = familyOf(d);
  const fusedOnly = (p: string) =>
    family.fused.some(
      (f) => p.endsWith(`.${f.module}`) && !family.linears.some((l) => f.parts.includes(l.role)),
    );
  return storedProjections(family, d, 0, has ?? fusedOnly, "config.json", intermediate).map((p) => ({
    linear: p.name,
    roles: p.roles,
    outFeatures: p.shape[0],
    inFeatures: p.shape[1],
  }));
}

const MLP_ROLES: readonly Role[] = ["gate", "up", "down"];

/** whether every role of this projection is in the MLP */
function isMlp(s: LinearShape): boolean {
  return s.roles.every((r) => MLP_ROLES.includes(r));
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
      const I = s.roles.includes("down") ? s.inFeatures : s.outFeatures;
      return isMlp(s) && I % multiple ? `intermediate size ${I} is not a multiple of ${multiple}` : undefined;
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
      (s.roles.includes("down") && s.inFeatures % groupSize
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
  d: ModelConfig,
  s: LinearShape,
  side: "in" | "out",
): { dim: string; why: string; paddable?: string } {
  const headWhy = "attention scales scores by 1/sqrt(head_dim) and rotary frequencies depend on head_dim";
  const hidden = familyOf(d).paddable.hidden
    ? {
        dim: `hidden_size ${d.hiddenSize}`,
        why: "",
        paddable: "add --hidden-multiple N to pad it too (zero channels; RMSNorm is kept exact)",
      }
    : {
        dim: `hidden_size ${d.hiddenSize}`,
        why:
          familyOf(d).norm === "layer"
            ? "LayerNorm subtracts the mean over every hidden channel, so zero channels would not stay zero"
            : "gptq pad pads hidden_size only in Llama, Mistral and Qwen2",
      };
  const inter = {
    dim: "intermediate_size",
    why: familyOf(d).paddable.intermediate
      ? "no padded size within reach fits"
      : `gptq pad does not pad the MLP of ${d.modelType} models`,
  };
  const role = s.roles[0];
  if (s.roles.length > 1 && !isMlp(s))
    return side === "in"
      ? hidden
      : { dim: `the query, key and value heads x head_dim = ${s.outFeatures}`, why: headWhy };
  switch (role) {
    case "q":
      return side === "in"
        ? hidden
        : { dim: `num_attention_heads x head_dim = ${d.numHeads * d.headDim}`, why: headWhy };
    case "k":
    case "v":
      return side === "in"
        ? hidden
        : { dim: `num_key_value_heads x head_dim = ${d.numKvHeads * d.headDim}`, why: headWhy };
    case "o":
      return side === "in"
        ? { dim: `num_attention_heads x head_dim = ${d.numHeads * d.headDim}`, why: headWhy }
        : hidden;
    case "gate":
    case "up":
      return side === "in" ? hidden : inter;
    case "down":
      return side === "in" ? inter : hidden;
  }
}

/** Which side a rule's reason is about (kernel rules say "in_features ..." or "out_features ..."). */
function blame(
  d: ModelConfig,
  s: LinearShape,
  problem: string,
): { dim: string; why: string; paddable?: string } | undefined {
  if (/out_features|\bN\b/.test(problem)) return dimensionOf(d, s, "out");
  if (/in_features|\bK\b/.test(problem)) return dimensionOf(d, s, "in");
  return undefined; // a bits, group or scheme rule: no shape to pad
}

/** The smallest intermediate size >= the model's that makes every layer fit; undefined when none does. */
export function findIntermediateSize(
  d: ModelConfig,
  target: PadTarget,
  has?: StoredCheck,
): number | undefined {
  const problems = (I: number) =>
    decoderLinearShapes(d, I, has).filter((s) => target.problem(s) !== undefined);
  const now = problems(d.intermediateSize);
  if (!now.length) return d.intermediateSize;
  if (now.some((s) => !isMlp(s)) || !familyOf(d).paddable.intermediate) return undefined;
  const limit = searchLimit(d.intermediateSize);
  for (let I = d.intermediateSize; I <= limit; I++) if (!problems(I).length) return I;
  return undefined;
}

/**
 * Plans the padding that makes every layer fit `target`; throws a GptqError naming the dimension that
 * cannot be padded, the layer and rule it breaks, and `alternatives` (other targets) that would accept
 * the model, when there is no such padding.
 */
export function planPadding(
  d: ModelConfig,
  target: PadTarget,
  alternatives: PadTarget[] = [],
  has?: StoredCheck,
): PadPlan {
  const to = findIntermediateSize(d, target, has);
  if (to !== undefined)
    return { dimension: "intermediate_size", from: d.intermediateSize, to, target: target.describe };
  // Diagnose with the shapes at the largest intermediate size we tried (where only non-MLP reasons remain
  // unless the intermediate itself can never fit).
  // (a family whose MLP cannot be padded is diagnosed at its own size)
  const reach = familyOf(d).paddable.intermediate ? searchLimit(d.intermediateSize) : d.intermediateSize;
  const attention = decoderLinearShapes(d, undefined, has).filter((s) => !isMlp(s));
  const mlp = decoderLinearShapes(d, reach, has).filter((s) => isMlp(s));
  const failing = [...attention, ...mlp].find((s) => target.problem(s) !== undefined)!;
  const problem = target.problem(failing)!;
  const b = blame(d, failing, problem);
  const ok = alternatives.filter((t) => findIntermediateSize(d, t, has) !== undefined).map((t) => t.describe);
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
