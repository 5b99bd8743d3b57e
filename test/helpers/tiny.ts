/**
 * The tiny checkpoints of ../shared/models/tiny/ (one per family, saved by transformers) and their
 * reference: transformers' fp32 logits for fixed tokens, the perplexity of those tokens, and calibration
 * tokens.
 */
import { readAllTensors } from "../../src/io/safetensors.js";
import { sharedPath, skipUnlessShared } from "./shared.js";

export const TINY_REFERENCE = sharedPath("models", "tiny", "reference.safetensors");

/** the checkpoint folder of a family */
export function tinyModel(family: string): string {
  return sharedPath("models", "tiny", family);
}

/** false when the family's checkpoint and the reference are present, else the skip reason */
export function skipUnlessTiny(family: string): string | false {
  return (
    skipUnlessShared("models", "tiny", family) || skipUnlessShared("models", "tiny", "reference.safetensors")
  );
}

export interface TinyReference {
  /** the evaluation sequences */
  tokens: Int32Array[];
  /** transformers' logits for each sequence, T x vocab */
  logits: Float32Array[];
  /** calibration sequences */
  calibration: Int32Array[];
  /** the perplexity of `tokens` under the reference logits */
  ppl: number;
}

function rows<T extends Int32Array | Float32Array>(data: T, n: number): T[] {
  const size = data.length / n;
  return Array.from({ length: n }, (_, i) => data.subarray(i * size, (i + 1) * size) as T);
}

export function tinyReference(family: string): TinyReference {
  const { tensors, metadata } = readAllTensors(TINY_REFERENCE);
  const report = JSON.parse(metadata.report) as { families: Record<string, { ppl_tokens: number }> };
  const tokens = tensors.get("tokens")!;
  const calibration = tensors.get("calibration")!;
  const logits = tensors.get(`logits.${family}`)!;
  return {
    tokens: rows(tokens.data as Int32Array, tokens.shape[0]),
    logits: rows(logits.data as Float32Array, logits.shape[0]),
    calibration: rows(calibration.data as Int32Array, calibration.shape[0]),
    ppl: report.families[family].ppl_tokens,
  };
}
