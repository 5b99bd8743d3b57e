/** Stored float tensors checked for NaN and ±Inf a piece at a time, never holding a large one whole. */
import { DType, DTYPE_BYTES } from "../tensor/dtype.js";
import { FLOAT_TENSOR_DTYPES, nonFiniteProblem } from "../tensor/finite.js";
import { viewAs } from "../tensor/tensor.js";
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
