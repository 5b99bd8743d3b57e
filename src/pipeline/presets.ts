/**
 * Quality presets: the one table of how hard quantization works for quality, and the one place that turns
 * a preset plus the user's own flags into pipeline options. The scheme (bits, group size, symmetry,
 * act-order, damping) is always the user's; a preset sets only the quality options, and any of those
 * given explicitly wins over it. BENCHMARKS.md ("Quality presets") has the measurements behind the choice.
 */
import { GptqError } from "../util/errors.js";
import { PipelineOptions } from "./quantize-model.js";

/** The options a preset decides. */
export type QualityOptions = Required<
  Pick<PipelineOptions, "clip" | "fpTarget" | "splitRange" | "freshGroups" | "refine">
>;

export type QualityPreset = "fast" | "balanced" | "best";

export const DEFAULT_PRESET: QualityPreset = "balanced";

export const QUALITY_PRESETS: Record<QualityPreset, { summary: string; options: QualityOptions }> = {
  fast: {
    summary: "AutoGPTQ's GPTQ (min/max ranges), bit for bit",
    options: { clip: "minmax", fpTarget: false, splitRange: false, freshGroups: false, refine: 0 },
  },
  balanced: {
    summary: "fp-target GPTQ with Hessian-weighted ranges, fresh groups and split ranges (1.3-2x fast)",
    options: { clip: "hessian", fpTarget: true, splitRange: true, freshGroups: true, refine: 0 },
  },
  best: {
    summary: "balanced plus 2 rounds of least-squares scale refits (2-2.2x fast on the CPU)",
    options: { clip: "hessian", fpTarget: true, splitRange: true, freshGroups: true, refine: 2 },
  },
};

export const PRESET_NAMES = Object.keys(QUALITY_PRESETS) as QualityPreset[];

export function isQualityPreset(name: string): name is QualityPreset {
  return Object.hasOwn(QUALITY_PRESETS, name);
}

/** What GPTQ-only options mean for round-to-nearest: none of them applies. */
const RTN_QUALITY: Partial<QualityOptions> = { fpTarget: false, freshGroups: false, refine: 0 };

/** Pipeline options whose quality options may be left out: the preset fills them in. */
export type QuantizeOptions = Omit<PipelineOptions, keyof QualityOptions> & Partial<QualityOptions>;

export interface ResolvedQuality {
  options: PipelineOptions;
  preset: QualityPreset;
  /** the quality options given explicitly, which replaced the preset's */
  overridden: (keyof QualityOptions)[];
}

const QUALITY_KEYS = Object.keys(QUALITY_PRESETS.fast.options) as (keyof QualityOptions)[];

/**
 * `options` with the quality options it leaves out taken from `preset`. RTN takes only the preset's range
 * choice where RTN has it (min/max or mse), nothing GPTQ-only.
 */
export function resolveQuality(
  options: QuantizeOptions,
  preset: QualityPreset = DEFAULT_PRESET,
): ResolvedQuality {
  if (!isQualityPreset(preset))
    throw new GptqError(`unknown preset "${String(preset)}"; use one of ${PRESET_NAMES.join(", ")}`);
  const overridden = QUALITY_KEYS.filter((k) => options[k] !== undefined);
  let quality: QualityOptions = { ...QUALITY_PRESETS[preset].options };
  if (options.method === "rtn") {
    quality = { ...quality, ...RTN_QUALITY };
    if (quality.clip === "hessian" || quality.clip === "gptq") quality.clip = "minmax";
  }
  const given = Object.fromEntries(overridden.map((k) => [k, options[k]]));
  return { options: { ...options, ...quality, ...given }, preset, overridden };
}
