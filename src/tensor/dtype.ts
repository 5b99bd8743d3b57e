/** Element types as safetensors names them, and fast fp16/bf16 <-> fp32 conversion on TypedArrays. */

export type DType = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

export const DTYPE_BYTES: Record<DType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

export function isDType(name: string): name is DType {
  return Object.prototype.hasOwnProperty.call(DTYPE_BYTES, name);
}

/** User-facing names (`--dtype float16`) to safetensors dtypes. */
export const FLOAT_DTYPE_NAMES: Record<string, DType> = {
  float32: "F32",
  fp32: "F32",
  float16: "F16",
  fp16: "F16",
  half: "F16",
  bfloat16: "BF16",
  bf16: "BF16",
};

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** fp16 bits -> fp32 value via a 64K-entry table (built once, 256 KiB). */
let HALF_TABLE: Float32Array | undefined;
function halfTable(): Float32Array {
  if (HALF_TABLE) return HALF_TABLE;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    let v: number;
    if (exp === 0) v = sign * mant * 2 ** -24;
    else if (exp === 31) v = mant ? NaN : sign * Infinity;
    else v = sign * (1 + mant / 1024) * 2 ** (exp - 15);
    t[h] = v;
  }
  HALF_TABLE = t;
  return t;
}

export function halfToFloat(h: number): number {
  return halfTable()[h & 0xffff];
}

/** fp32 -> fp16 bits, round to nearest even (as PyTorch's `.half()`). */
export function floatToHalf(value: number): number {
  f32[0] = value;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let m = mant >>> shift;
    if (rest > half || (rest === half && m & 1)) m++;
    return sign | m;
  }
  const rest = mant & 0x1fff;
  let m = mant >>> 13;
  if (rest > 0x1000 || (rest === 0x1000 && m & 1)) {
    m++;
    if (m === 0x400) {
      m = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | m;
}

export function halfsToFloats(src: Uint16Array, dst = new Float32Array(src.length)): Float32Array {
  const t = halfTable();
  for (let i = 0; i < src.length; i++) dst[i] = t[src[i]];
  return dst;
}

export function floatsToHalfs(src: ArrayLike<number>, dst = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) dst[i] = floatToHalf(src[i]);
  return dst;
}

/** Rounds every value to the nearest fp16 (what storing as F16 and reading back gives). */
export function roundToHalf(src: Float32Array): Float32Array {
  const t = halfTable();
  for (let i = 0; i < src.length; i++) src[i] = t[floatToHalf(src[i])];
  return src;
}

export function bf16sToFloats(src: Uint16Array, dst = new Float32Array(src.length)): Float32Array {
  const out = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i] << 16;
  return dst;
}

/** fp32 -> bf16 bits, round to nearest even; NaN stays NaN. */
export function floatsToBf16s(src: Float32Array, dst = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const x = bits[i];
    if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) {
      dst[i] = (x >>> 16) | 0x40;
      continue;
    }
    dst[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return dst;
}
