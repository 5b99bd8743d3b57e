import { DType, DTYPE_BYTES, bf16sToFloats, halfsToFloats, floatsToHalfs, floatsToBf16s } from "./dtype.js";
import { GptqError } from "../util/errors.js";

export type TypedArray =
  | Float64Array
  | Float32Array
  | Uint16Array
  | Int32Array
  | BigInt64Array
  | Int16Array
  | Int8Array
  | Uint8Array;

/**
 * A host tensor: dtype, shape (row-major) and its elements. F16 and BF16 hold raw bits in a Uint16Array.
 */
export interface Tensor {
  dtype: DType;
  shape: number[];
  data: TypedArray;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** A typed view over bytes (copied if misaligned). */
export function viewAs(dtype: DType, bytes: Uint8Array): TypedArray {
  const size = DTYPE_BYTES[dtype];
  if (bytes.byteOffset % size !== 0) bytes = bytes.slice();
  const { buffer, byteOffset, byteLength } = bytes;
  const n = byteLength / size;
  switch (dtype) {
    case "F64":
      return new Float64Array(buffer, byteOffset, n);
    case "F32":
      return new Float32Array(buffer, byteOffset, n);
    case "F16":
    case "BF16":
      return new Uint16Array(buffer, byteOffset, n);
    case "I64":
      return new BigInt64Array(buffer, byteOffset, n);
    case "I32":
      return new Int32Array(buffer, byteOffset, n);
    case "I16":
      return new Int16Array(buffer, byteOffset, n);
    case "I8":
      return new Int8Array(buffer, byteOffset, n);
    case "U8":
    case "BOOL":
      return new Uint8Array(buffer, byteOffset, n);
  }
}

export function bytesOf(data: TypedArray): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** Any numeric tensor as fp32 values (I64 must fit in a double). */
export function toFloat32(t: Tensor): Float32Array {
  switch (t.dtype) {
    case "F32":
      return t.data as Float32Array;
    case "F16":
      return halfsToFloats(t.data as Uint16Array);
    case "BF16":
      return bf16sToFloats(t.data as Uint16Array);
    case "I64":
      return Float32Array.from(t.data as BigInt64Array, (v) => Number(v));
    default:
      return Float32Array.from(t.data as ArrayLike<number>);
  }
}

/** Any integer tensor as int32 (refusing I64 values out of range). */
export function toInt32(t: Tensor): Int32Array {
  if (t.dtype === "I32") return t.data as Int32Array;
  if (t.dtype === "I64") {
    const src = t.data as BigInt64Array;
    const out = new Int32Array(src.length);
    for (let i = 0; i < src.length; i++) {
      const v = src[i];
      if (v > 2147483647n || v < -2147483648n) throw new GptqError(`int64 value ${v} does not fit in int32`);
      out[i] = Number(v);
    }
    return out;
  }
  if (t.dtype === "I16" || t.dtype === "I8" || t.dtype === "U8" || t.dtype === "BOOL")
    return Int32Array.from(t.data as ArrayLike<number>);
  throw new GptqError(`expected an integer tensor, got ${t.dtype}`);
}

/** fp32 values stored as the given float dtype. */
export function fromFloat32(values: Float32Array, dtype: DType, shape: number[]): Tensor {
  switch (dtype) {
    case "F32":
      return { dtype, shape, data: values };
    case "F16":
      return { dtype, shape, data: floatsToHalfs(values) };
    case "BF16":
      return { dtype, shape, data: floatsToBf16s(values) };
    case "F64":
      return { dtype, shape, data: Float64Array.from(values) };
    default:
      throw new GptqError(`cannot store float values as ${dtype}`);
  }
}

/** Checks calibration inputs (rows x K row-major) before a Hessian takes them: the shape, and every value finite. */
export function checkCalibrationRows(x: Float32Array, rows: number, K: number): void {
  if (!(Number.isInteger(rows) && rows >= 0) || x.length !== rows * K)
    throw new GptqError(`Hessian input has ${x.length} values, expected rows x K = ${rows} x ${K}`);
  for (let i = 0; i < x.length; i++)
    if (!Number.isFinite(x[i]))
      throw new GptqError(`calibration input has a non-finite value at row ${Math.floor(i / K)}`);
}
