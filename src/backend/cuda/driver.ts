/**
 * koffi bindings to the CUDA driver API (libcuda.so.1). Every call goes through `check`, which turns a
 * CUresult into its CUDA name and message. Handles are opaque koffi pointers; device addresses are plain
 * numbers (they stay far below 2^53).
 */
import koffi from "koffi";
import { GptqError } from "../../util/errors.js";
import { Lib, loadFirst } from "./library.js";

/** An opaque driver handle (CUcontext, CUstream, CUmodule, ...). */
export type Handle = unknown;

export class CudaError extends GptqError {
  override name = "CudaError";
  constructor(
    readonly call: string,
    readonly code: number,
    readonly cudaName: string,
    detail: string,
  ) {
    super(`${call} failed: ${cudaName} (${code}): ${detail}`);
  }
}

/**
 * cuLaunchKernelEx's config and attribute (cuda.h layouts: the attribute value is a 64-byte union).
 * Used for programmatic dependent launch: a kernel may start while the one before it finishes.
 */
export const LaunchAttribute = koffi.struct("CUlaunchAttribute", {
  id: "int",
  pad: koffi.array("uint8", 4),
  value: koffi.array("uint8", 64),
});
export const LaunchConfig = koffi.struct("CUlaunchConfig", {
  gridDimX: "uint",
  gridDimY: "uint",
  gridDimZ: "uint",
  blockDimX: "uint",
  blockDimY: "uint",
  blockDimZ: "uint",
  sharedMemBytes: "uint",
  hStream: "void*",
  attrs: "void*",
  numAttrs: "uint",
});
export const LAUNCH_ATTR_CLUSTER_DIMENSION = 4;
export const LAUNCH_ATTR_PROGRAMMATIC_STREAM_SERIALIZATION = 6;

const SIGNATURES = [
  "int cuInit(unsigned int flags)",
  "int cuDriverGetVersion(_Out_ int *version)",
  "int cuGetErrorName(int error, _Out_ const char **str)",
  "int cuGetErrorString(int error, _Out_ const char **str)",
  "int cuDeviceGetCount(_Out_ int *count)",
  "int cuDeviceGet(_Out_ int *device, int ordinal)",
  "int cuDeviceGetName(_Out_ char *name, int len, int device)",
  "int cuDeviceGetAttribute(_Out_ int *value, int attrib, int device)",
  "int cuDeviceTotalMem_v2(_Out_ uint64_t *bytes, int device)",
  "int cuDevicePrimaryCtxRetain(_Out_ void **ctx, int device)",
  "int cuCtxSetCurrent(void *ctx)",
  "int cuCtxSynchronize()",
  "int cuMemGetInfo_v2(_Out_ uint64_t *free, _Out_ uint64_t *total)",
  "int cuMemAlloc_v2(_Out_ uint64_t *dptr, size_t bytes)",
  "int cuMemFree_v2(uint64_t dptr)",
  "int cuMemAllocHost_v2(_Out_ void **pp, size_t bytes)",
  "int cuMemFreeHost(void *p)",
  "int cuMemcpyHtoDAsync_v2(uint64_t dst, const void *src, size_t bytes, void *stream)",
  "int cuMemcpyDtoHAsync_v2(void *dst, uint64_t src, size_t bytes, void *stream)",
  "int cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t bytes, void *stream)",
  "int cuMemsetD8Async(uint64_t dst, uint8_t value, size_t count, void *stream)",
  "int cuMemsetD16Async(uint64_t dst, uint16_t value, size_t count, void *stream)",
  "int cuMemsetD32Async(uint64_t dst, uint32_t value, size_t count, void *stream)",
  "int cuStreamCreate(_Out_ void **stream, unsigned int flags)",
  "int cuStreamDestroy_v2(void *stream)",
  "int cuStreamSynchronize(void *stream)",
  "int cuEventCreate(_Out_ void **event, unsigned int flags)",
  "int cuEventDestroy_v2(void *event)",
  "int cuEventRecord(void *event, void *stream)",
  "int cuEventSynchronize(void *event)",
  "int cuEventElapsedTime(_Out_ float *ms, void *start, void *end)",
  "int cuModuleLoadData(_Out_ void **module, const void *image)",
  "int cuModuleUnload(void *module)",
  "int cuModuleGetFunction(_Out_ void **fn, void *module, const char *name)",
  "int cuFuncSetAttribute(void *fn, int attrib, int value)",
  "int cuFuncGetAttribute(_Out_ int *value, int attrib, void *fn)",
  "int cuOccupancyMaxActiveBlocksPerMultiprocessor(_Out_ int *blocks, void *fn, int blockSize, size_t sharedBytes)",
  "int cuLaunchKernelEx(const CUlaunchConfig *config, void *fn, void **params, void **extra)",
  "int cuLaunchKernel(void *fn, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, unsigned int bz, unsigned int shared, void *stream, void **params, void **extra)",
  "int cuStreamBeginCapture_v2(void *stream, int mode)",
  "int cuStreamEndCapture(void *stream, _Out_ void **graph)",
  "int cuGraphInstantiateWithFlags(_Out_ void **exec, void *graph, unsigned long long flags)",
  "int cuGraphLaunch(void *exec, void *stream)",
  "int cuGraphExecDestroy(void *exec)",
  "int cuGraphDestroy(void *graph)",
  "int cuTensorMapEncodeTiled(uint64_t map, int dtype, uint32_t rank, uint64_t address, const uint64_t *dims, const uint64_t *strides, const uint32_t *box, const uint32_t *elementStrides, int interleave, int swizzle, int l2Promotion, int oobFill)",
] as const;

type Fn = (...args: unknown[]) => number;
export type Driver = Record<string, Fn> & { path: string };

let cached: Driver | undefined;

/** Loads libcuda.so.1 once; a GptqError when there is no driver (no NVIDIA GPU on this machine). */
export function driver(): Driver {
  if (cached) return cached;
  const { lib, path } = loadFirst(
    "the CUDA driver (libcuda.so.1)",
    ["libcuda.so.1", "libcuda.so"],
    "an NVIDIA GPU with its driver is needed for --device cuda",
  );
  cached = bind(lib, path);
  return cached;
}

function bind(lib: Lib, path: string): Driver {
  const d: Record<string, unknown> = { path };
  for (const sig of SIGNATURES) {
    const name = /^\w+\s+\**(\w+)\(/.exec(sig)![1];
    d[name] = lib.func(sig);
  }
  return d as Driver;
}

function errorText(d: Driver, code: number): { name: string; text: string } {
  const n: unknown[] = [null];
  const s: unknown[] = [null];
  const name = d.cuGetErrorName(code, n) === 0 && typeof n[0] === "string" ? n[0] : `CUDA_ERROR_${code}`;
  const text = d.cuGetErrorString(code, s) === 0 && typeof s[0] === "string" ? s[0] : "unknown error";
  return { name, text };
}

/** Calls the named driver function and throws a CudaError on a non-zero CUresult. */
export function cu(name: string, ...args: unknown[]): void {
  const d = driver();
  const fn = d[name];
  if (!fn) throw new Error(`driver function ${name} is not bound`);
  const code = fn(...args);
  if (code !== 0) {
    const { name: cudaName, text } = errorText(d, code);
    throw new CudaError(name, code, cudaName, text);
  }
}

/** Calls a driver function whose first argument is a `_Out_ void**` and returns the handle. */
export function cuHandle(name: string, ...args: unknown[]): Handle {
  const out: unknown[] = [null];
  cu(name, out, ...args);
  return out[0];
}

export function cuInt(name: string, ...args: unknown[]): number {
  const out = [0];
  cu(name, out, ...args);
  return out[0];
}

export function cuU64(name: string, ...args: unknown[]): number {
  const out = [0];
  cu(name, out, ...args);
  return Number(out[0]);
}

/** Device attribute numbers (CUdevice_attribute) that we read. */
export const ATTR = {
  MULTIPROCESSOR_COUNT: 16,
  L2_CACHE_SIZE: 38,
  COMPUTE_CAPABILITY_MAJOR: 75,
  COMPUTE_CAPABILITY_MINOR: 76,
  MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: 97,
} as const;

/** CUfunction_attribute numbers. */
export const FUNC_ATTR = { NUM_REGS: 4, MAX_DYNAMIC_SHARED_SIZE_BYTES: 8 } as const;

export { koffi };

let mapScratch: { mem: unknown; at: bigint; off: number } | undefined;

/**
 * A CUtensorMap (128 opaque bytes, to pass by value) for TMA copies of boxes of a 2-D fp16 row-major
 * tensor: `inner` elements per row (contiguous), `outer` rows `rowBytes` apart, boxes of
 * boxInner x boxOuter, 128-byte swizzled in shared memory, zero-filled outside the tensor.
 */
export function tensorMap2dF16(
  address: number,
  inner: number,
  outer: number,
  rowBytes: number,
  boxInner: number,
  boxOuter: number,
): Uint8Array {
  // the driver writes the map to 64-byte-aligned memory: a native buffer aligned by hand, kept
  if (!mapScratch) {
    const mem = koffi.alloc("uint8", 192);
    const raw = koffi.address(mem) as bigint;
    const off = Number((64n - (raw % 64n)) % 64n);
    mapScratch = { mem, at: raw + BigInt(off), off };
  }
  const F16 = 6;
  const SWIZZLE_128B = 3;
  const L2_PROMOTION_128B = 2;
  cu(
    "cuTensorMapEncodeTiled",
    mapScratch.at,
    F16,
    2,
    BigInt(address),
    new BigUint64Array([BigInt(inner), BigInt(outer)]),
    new BigUint64Array([BigInt(rowBytes)]),
    new Uint32Array([boxInner, boxOuter]),
    new Uint32Array([1, 1]),
    0,
    SWIZZLE_128B,
    L2_PROMOTION_128B,
    0,
  );
  return Uint8Array.from(koffi.decode(mapScratch.mem, mapScratch.off, "uint8", 128) as Uint8Array);
}
