/**
 * Finding NaN and ±Inf in stored float data (F16 and BF16 as raw bits), so a corrupt checkpoint is
 * refused where it is read, with the tensor and the first bad index, instead of running on.
 */
import { DType } from "./dtype.js";
import { TypedArray } from "./tensor.js";

export const FLOAT_TENSOR_DTYPES: readonly DType[] = ["F64", "F32", "F16", "BF16"];

/** The first element of float data that is NaN or ±Inf, or -1 (integer dtypes: always -1). */
export function firstNonFinite(dtype: DType, data: TypedArray): number {
  if (dtype === "F16" || dtype === "BF16") {
    // all-ones exponent: Inf (zero mantissa) or NaN
    const exp = dtype === "F16" ? 0x7c00 : 0x7f80;
    const h = data as Uint16Array;
    let i = 0;
    if (h.byteOffset % 4 === 0) {
      // two values a word (a checkpoint holds billions): adding the exponent's lowest bit to an all-ones
      // exponent carries into the bit above it, in both halves at once
      const words = new Uint32Array(h.buffer, h.byteOffset, h.length >>> 1);
      const low = exp & -exp;
      const mask = exp * 0x10001;
      const carry = ((exp + low) & ~exp) * 0x10001;
      let w = 0;
      while (w < words.length && !(((words[w] & mask) + low * 0x10001) & carry)) w++;
      i = 2 * w; // the pair holding the first non-finite value, or the odd last value
    }
    for (; i < h.length; i++) if ((h[i] & exp) === exp) return i;
    return -1;
  }
  if (dtype === "F32" || dtype === "F64") {
    const f = data as Float32Array | Float64Array;
    // x - x is 0 for finite x, NaN for NaN and ±Inf
    for (let i = 0; i < f.length; i++) if (f[i] - f[i] !== 0) return i;
    return -1;
  }
  return -1;
}

/** "NaN", "Inf" or "-Inf": what element `i` of float data is. */
export function nonFiniteKind(dtype: DType, data: TypedArray, i: number): string {
  if (dtype === "F16" || dtype === "BF16") {
    const h = (data as Uint16Array)[i];
    const mant = dtype === "F16" ? h & 0x3ff : h & 0x7f;
    if (mant) return "NaN";
    return h & 0x8000 ? "-Inf" : "Inf";
  }
  const v = Number((data as Float32Array)[i]);
  return Number.isNaN(v) ? "NaN" : v < 0 ? "-Inf" : "Inf";
}

/** Row-major multi-index of flat index `i` in `shape`, as messages print it: "[3, 17]". */
export function indexText(shape: readonly number[], i: number): string {
  const idx: number[] = [];
  for (let d = shape.length - 1; d >= 0; d--) {
    const n = shape[d];
    idx.unshift(n > 0 ? i % n : 0);
    i = n > 0 ? Math.floor(i / n) : 0;
  }
  return `[${idx.join(", ")}]`;
}

/** What a checkpoint with a non-finite stored value is, and what to do about it. */
export const CORRUPT_CHECKPOINT = "the checkpoint is corrupt: re-quantize or re-download it";

/**
 * `<what> has a non-finite value (NaN) at [3, 17]; the checkpoint is corrupt: ...` for the first bad
 * element of a tensor, or undefined when every element is finite.
 */
export function nonFiniteProblem(
  what: string,
  dtype: DType,
  shape: readonly number[],
  data: TypedArray,
  offset = 0,
): string | undefined {
  const i = firstNonFinite(dtype, data);
  if (i < 0) return undefined;
  return `${what} has a non-finite value (${nonFiniteKind(dtype, data, i)}) at ${indexText(shape, offset + i)}; ${CORRUPT_CHECKPOINT}`;
}
