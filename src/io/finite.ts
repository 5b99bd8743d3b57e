/** Stored float tensors checked for NaN and ±Inf a piece at a time, never holding a large one whole. */
import { DType, DTYPE_BYTES } from "../tensor/dtype.js";
import { FLOAT_TENSOR_DTYPES, nonFiniteProblem } from "../tensor/finite.js";
import { toFloat32, viewAs } from "../tensor/tensor.js";
import { GptqError } from "../util/errors.js";
import { SafetensorsFile } from "./safetensors.js";
import { TensorStore } from "./store.js";

/** What a tensor's check reads: a store, or one safetensors file. */
export type ChunkReader = Pick<TensorStore | SafetensorsFile, "info" | "readChunks">;

/**
 * Why tensor `name` of `store` is not all finite ("<what> has a non-finite value (NaN) at [3, 17]; the
 * checkpoint is corrupt: ..."), or undefined (integer tensors: always). Reads it in pieces of
 * `chunkBytes` (a multiple of 8); `onBytes` hears how many bytes each piece held.
 */
export function storedNonFinite(
  store: ChunkReader,
  name: string,
  what: string = name,
  opts: { chunkBytes?: number; onBytes?: (bytes: number) => void } = {},
): string | undefined {
  const info = store.info(name);
  const dtype: DType = info.dtype;
  if (!FLOAT_TENSOR_DTYPES.includes(dtype)) return undefined;
  let offset = 0;
  for (const chunk of store.readChunks(name, opts.chunkBytes)) {
    const problem = nonFiniteProblem(what, dtype, info.shape, viewAs(dtype, chunk), offset);
    if (problem) return problem;
    offset += chunk.byteLength / DTYPE_BYTES[dtype];
    opts.onBytes?.(chunk.byteLength);
  }
  return undefined;
}

/** Tensor `name` of `store` exists with the given shape and a float dtype (F32, F16, BF16); one error line otherwise. */
export function checkFloatTensor(store: TensorStore, name: string, shape: readonly number[]): void {
  if (!store.has(name)) throw new GptqError(`${store.dir}: tensor ${name} is missing`);
  const info = store.info(name);
  if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i]))
    throw new GptqError(
      `${store.dir}: tensor ${name} has shape [${info.shape}], config.json implies [${shape}]`,
    );
  if (info.dtype !== "F32" && info.dtype !== "F16" && info.dtype !== "BF16")
    throw new GptqError(`${store.dir}: tensor ${name} is ${info.dtype}, expected F32, F16 or BF16`);
}

/**
 * A float tensor (F32, F16 or BF16) of the given shape, checked (header first, then every value finite)
 * and widened to fp32; one error line naming the tensor otherwise.
 */
export function readFloatTensor(store: TensorStore, name: string, shape: readonly number[]): Float32Array {
  checkFloatTensor(store, name, shape);
  const t = store.read(name);
  const problem = nonFiniteProblem(`${store.dir}: tensor ${name}`, t.dtype, t.shape, t.data);
  if (problem) throw new GptqError(problem);
  return toFloat32(t);
}
