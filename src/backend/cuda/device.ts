/**
 * One CUDA device behind its primary context (shared with cuBLAS): a stream, a caching allocator, copies
 * through pinned host memory, events, modules compiled by NVRTC, kernel launches and CUDA graphs.
 */
import { fileURLToPath } from "node:url";
import { GptqError } from "../../util/errors.js";
import {
  ATTR,
  FUNC_ATTR,
  Handle,
  LAUNCH_ATTR_CLUSTER_DIMENSION,
  LAUNCH_ATTR_PROGRAMMATIC_STREAM_SERIALIZATION,
  LaunchAttribute,
  cu,
  cuHandle,
  cuInt,
  cuU64,
  driver,
  koffi,
} from "./driver.js";
import { compile } from "./nvrtc.js";

/** A device allocation; `bytes` is what was asked for, the block behind it may be larger. */
export interface DeviceBuffer {
  readonly ptr: number;
  readonly bytes: number;
  readonly capacity: number;
}

/** A kernel argument: a device pointer, a 32-bit int, a float, or bytes passed by value. */
export type KernelArg = { ptr: number } | { i32: number } | { f32: number } | { bytes: Uint8Array };
export const ptr = (b: DeviceBuffer | number): KernelArg => ({ ptr: typeof b === "number" ? b : b.ptr });
export const i32 = (v: number): KernelArg => ({ i32: v });
export const f32 = (v: number): KernelArg => ({ f32: v });
/** a 64-bit integer (a size_t parameter): passed as pointers are */
export const u64 = (v: number): KernelArg => ({ ptr: v });
/** A parameter passed by value as raw bytes (a CUtensorMap). */
export const bytes = (b: Uint8Array): KernelArg => ({ bytes: b });
/** a double, passed by value as its 8 bytes */
export const f64 = (v: number): KernelArg => bytes(new Uint8Array(Float64Array.of(v).buffer));

export interface DeviceInfo {
  name: string;
  arch: string;
  smCount: number;
  l2Bytes: number;
  totalBytes: number;
  maxSharedOptin: number;
  driverVersion: number;
}

export interface Kernel {
  fn: Handle;
  name: string;
  maxDynamicShared: number;
}

/** Blocks are rounded up to these steps so that freed blocks get reused by similar requests. */
function roundCapacity(bytes: number): number {
  const min = 512;
  if (bytes <= min) return min;
  const step = bytes < 1 << 20 ? 4096 : bytes < 64 << 20 ? 1 << 20 : 16 << 20;
  return Math.ceil(bytes / step) * step;
}

export class CudaDevice {
  readonly info: DeviceInfo;
  readonly stream: Handle;
  private readonly ctx: Handle;
  private readonly pool = new Map<number, number[]>();
  private readonly live = new Map<number, number>();
  private liveBytes = 0;
  private peakLive = 0;
  private readonly modules = new Map<string, Handle>();
  private pinned?: { host: Handle; view: Uint8Array; bytes: number };
  private static instance?: CudaDevice;

  /** The process-wide device 0 (or `GPTQ_CUDA_DEVICE`). */
  static get(): CudaDevice {
    return (CudaDevice.instance ??= new CudaDevice(Number(process.env.GPTQ_CUDA_DEVICE ?? 0)));
  }

  /** True when a CUDA driver and at least one device are present (never throws). */
  static available(): boolean {
    try {
      driver();
      cu("cuInit", 0);
      return cuInt("cuDeviceGetCount") > 0;
    } catch {
      return false;
    }
  }

  private constructor(ordinal: number) {
    cu("cuInit", 0);
    const count = cuInt("cuDeviceGetCount");
    if (ordinal >= count) throw new GptqError(`CUDA device ${ordinal} requested, ${count} present`);
    const dev = cuInt("cuDeviceGet", ordinal);
    const nameBuf = Buffer.alloc(256);
    cu("cuDeviceGetName", nameBuf, 256, dev);
    const attr = (a: number) => cuInt("cuDeviceGetAttribute", a, dev);
    const major = attr(ATTR.COMPUTE_CAPABILITY_MAJOR);
    const minor = attr(ATTR.COMPUTE_CAPABILITY_MINOR);
    this.info = {
      name: nameBuf.toString("utf8").replace(/\0.*$/s, ""),
      // sm_90a unlocks Hopper-only instructions; the arch-specific target exists from 9.0 on
      arch: `sm_${major}${minor}${major >= 9 ? "a" : ""}`,
      smCount: attr(ATTR.MULTIPROCESSOR_COUNT),
      l2Bytes: attr(ATTR.L2_CACHE_SIZE),
      totalBytes: cuU64("cuDeviceTotalMem_v2", dev),
      maxSharedOptin: attr(ATTR.MAX_SHARED_MEMORY_PER_BLOCK_OPTIN),
      driverVersion: cuInt("cuDriverGetVersion"),
    };
    this.ctx = cuHandle("cuDevicePrimaryCtxRetain", dev);
    cu("cuCtxSetCurrent", this.ctx);
    this.stream = cuHandle("cuStreamCreate", 1 /* CU_STREAM_NON_BLOCKING */);
  }

  // ---- memory ----

  alloc(bytes: number): DeviceBuffer {
    const capacity = roundCapacity(bytes);
    const free = this.pool.get(capacity);
    let p = free?.pop();
    if (p === undefined) {
      try {
        p = cuU64("cuMemAlloc_v2", capacity);
      } catch {
        this.releaseCached(); // give cached blocks back to the driver and try once more
        p = cuU64("cuMemAlloc_v2", capacity);
      }
    }
    this.live.set(p, capacity);
    this.liveBytes += capacity;
    this.peakLive = Math.max(this.peakLive, this.liveBytes);
    return { ptr: p, bytes, capacity };
  }

  /** Returns the block to the cache (stream-ordered: later work on our one stream may reuse it). */
  free(b: DeviceBuffer): void {
    const cap = this.live.get(b.ptr);
    if (cap === undefined) throw new Error(`double free of device pointer ${b.ptr}`);
    this.live.delete(b.ptr);
    this.liveBytes -= cap;
    let list = this.pool.get(cap);
    if (!list) this.pool.set(cap, (list = []));
    list.push(b.ptr);
  }

  releaseCached(): void {
    this.synchronize();
    for (const list of this.pool.values()) for (const p of list) cu("cuMemFree_v2", p);
    this.pool.clear();
  }

  /** Bytes held by live allocations (now, and at most since the last `resetPeak`) and by the cache. */
  memoryStats(): { liveBytes: number; peakLiveBytes: number; cachedBytes: number } {
    let cachedBytes = 0;
    for (const [c, l] of this.pool) cachedBytes += c * l.length;
    return { liveBytes: this.liveBytes, peakLiveBytes: this.peakLive, cachedBytes };
  }

  resetPeak(): void {
    this.peakLive = this.liveBytes;
  }

  /** A pinned staging area of at least `bytes`, reused across copies. */
  private staging(bytes: number): { host: Handle; view: Uint8Array } {
    if (!this.pinned || this.pinned.bytes < bytes) {
      if (this.pinned) {
        this.synchronize();
        cu("cuMemFreeHost", this.pinned.host);
      }
      const size = Math.max(bytes, 4 << 20);
      const host = cuHandle("cuMemAllocHost_v2", size);
      this.pinned = { host, view: new Uint8Array(koffi.view(host, size)), bytes: size };
    }
    return this.pinned;
  }

  /** Host -> device through pinned memory (the copy overlaps nothing else, so chunks go one by one). */
  upload(data: ArrayBufferView, dst?: DeviceBuffer): DeviceBuffer {
    const bytes = data.byteLength;
    const buf = dst ?? this.alloc(bytes);
    if (buf.bytes < bytes) throw new Error(`upload of ${bytes} bytes into a buffer of ${buf.bytes}`);
    const src = new Uint8Array(data.buffer, data.byteOffset, bytes);
    const chunk = 64 << 20;
    const st = this.staging(Math.min(bytes, chunk));
    for (let off = 0; off < bytes; off += chunk) {
      const n = Math.min(chunk, bytes - off);
      st.view.set(src.subarray(off, off + n));
      cu("cuMemcpyHtoDAsync_v2", buf.ptr + off, st.host, n, this.stream);
      this.synchronize(); // the staging area is refilled next round
    }
    return buf;
  }

  /** Device -> host into `out` (or a new Uint8Array of `bytes`). Waits for the stream. */
  download<T extends ArrayBufferView>(src: DeviceBuffer | number, out: T, bytes = out.byteLength): T {
    const p = typeof src === "number" ? src : src.ptr;
    const dst = new Uint8Array(out.buffer, out.byteOffset, bytes);
    const chunk = 64 << 20;
    const st = this.staging(Math.min(bytes, chunk));
    for (let off = 0; off < bytes; off += chunk) {
      const n = Math.min(chunk, bytes - off);
      cu("cuMemcpyDtoHAsync_v2", st.host, p + off, n, this.stream);
      this.synchronize();
      dst.set(st.view.subarray(0, n), off);
    }
    return out;
  }

  /** A new buffer holding a copy of `src` (stream-ordered, as every copy here). */
  duplicate(src: DeviceBuffer): DeviceBuffer {
    const out = this.alloc(src.bytes);
    this.copy(out, src, src.bytes);
    return out;
  }

  copy(dst: DeviceBuffer | number, src: DeviceBuffer | number, bytes: number): void {
    const d = typeof dst === "number" ? dst : dst.ptr;
    const s = typeof src === "number" ? src : src.ptr;
    cu("cuMemcpyDtoDAsync_v2", d, s, bytes, this.stream);
  }

  fill16(dst: DeviceBuffer, value: number, count = dst.bytes / 2): void {
    cu("cuMemsetD16Async", dst.ptr, value, count, this.stream);
  }

  fill32(dst: DeviceBuffer, value: number, count = dst.bytes / 4): void {
    cu("cuMemsetD32Async", dst.ptr, value >>> 0, count, this.stream);
  }

  synchronize(): void {
    cu("cuStreamSynchronize", this.stream);
  }

  // ---- kernels ----

  /**
   * Compiles (or loads from the cache) a .cu file that lives beside `importMetaUrl`'s module, with
   * `generated` appended (the kernels a configuration table instantiates).
   */
  kernel(importMetaUrl: string, file: string, name: string, generated = ""): Kernel {
    const path = fileURLToPath(new URL(file, importMetaUrl));
    const key = generated ? `${path}\0${generated}` : path;
    let mod = this.modules.get(key);
    if (!mod) {
      const { cubin } = compile({ file: path, generated }, this.info.arch, this.info.driverVersion);
      mod = cuHandle("cuModuleLoadData", cubin);
      this.modules.set(key, mod);
    }
    const fn = cuHandle("cuModuleGetFunction", mod, name);
    return { fn, name, maxDynamicShared: 48 * 1024 };
  }

  registers(k: Kernel): number {
    return cuInt("cuFuncGetAttribute", FUNC_ATTR.NUM_REGS, k.fn);
  }

  /** Blocks of `block` threads using `shared` dynamic bytes that fit one multiprocessor at once. */
  occupancy(k: Kernel, block: number, shared: number): number {
    this.allowShared(k, shared);
    return cuInt("cuOccupancyMaxActiveBlocksPerMultiprocessor", k.fn, block, shared);
  }

  private allowShared(k: Kernel, shared: number): void {
    if (shared <= k.maxDynamicShared) return;
    if (shared > this.info.maxSharedOptin)
      throw new GptqError(
        `${k.name} needs ${shared} bytes of shared memory, the device has ${this.info.maxSharedOptin}`,
      );
    cu("cuFuncSetAttribute", k.fn, FUNC_ATTR.MAX_DYNAMIC_SHARED_SIZE_BYTES, shared);
    k.maxDynamicShared = shared;
  }

  /**
   * Launches `k` on the stream. `overlap`: programmatic dependent launch, so the kernel's blocks may start
   * (and run up to their `griddepcontrol.wait`) while the previous kernel finishes. `cluster`: blocks
   * per thread block cluster along z (the grid's z must be a multiple; up to 8, the portable size).
   */
  launch(
    k: Kernel,
    grid: [number, number, number],
    block: number,
    shared: number,
    args: KernelArg[],
    opts: { overlap?: boolean; cluster?: number } = {},
  ): void {
    this.allowShared(k, shared);
    const params = args.map((a) =>
      "ptr" in a
        ? new BigUint64Array([BigInt(a.ptr)])
        : "i32" in a
          ? new Int32Array([a.i32])
          : "bytes" in a
            ? a.bytes
            : new Float32Array([a.f32]),
    );
    const cluster = opts.cluster ?? 1;
    if (!opts.overlap && cluster === 1) {
      cu("cuLaunchKernel", k.fn, grid[0], grid[1], grid[2], block, 1, 1, shared, this.stream, params, null);
      return;
    }
    if (grid[2] % cluster !== 0 || cluster > 8)
      throw new GptqError(`${k.name}: a grid of ${grid[2]} along z cannot be made of clusters of ${cluster}`);
    const { attrs, count } = launchAttributes(!!opts.overlap, cluster);
    const config = {
      gridDimX: grid[0],
      gridDimY: grid[1],
      gridDimZ: grid[2],
      blockDimX: block,
      blockDimY: 1,
      blockDimZ: 1,
      sharedMemBytes: shared,
      hStream: this.stream,
      attrs,
      numAttrs: count,
    };
    cu("cuLaunchKernelEx", config, k.fn, params, null);
  }

  // ---- timing and graphs ----

  event(): Handle {
    return cuHandle("cuEventCreate", 0);
  }

  record(ev: Handle): void {
    cu("cuEventRecord", ev, this.stream);
  }

  elapsedMs(start: Handle, end: Handle): number {
    cu("cuEventSynchronize", end);
    const ms = [0];
    cu("cuEventElapsedTime", ms, start, end);
    return ms[0];
  }

  destroyEvent(ev: Handle): void {
    cu("cuEventDestroy_v2", ev);
  }

  /** Captures what `body` enqueues on the stream into an instantiated graph. */
  capture(body: () => void): Graph {
    cu("cuStreamBeginCapture_v2", this.stream, 2 /* CU_STREAM_CAPTURE_MODE_RELAXED */);
    const out: unknown[] = [null];
    try {
      body();
    } finally {
      cu("cuStreamEndCapture", this.stream, out);
    }
    const graph = out[0];
    const exec = cuHandle("cuGraphInstantiateWithFlags", graph, 0);
    return new Graph(this, graph, exec);
  }
}

const attributeSets = new Map<string, { attrs: unknown; count: number }>();
/** The launch attributes `launch` passes (programmatic serialization, cluster shape), allocated once each. */
export function launchAttributes(overlap: boolean, cluster: number): { attrs: unknown; count: number } {
  const key = `${overlap}:${cluster}`;
  let set = attributeSets.get(key);
  if (!set) {
    const list: { id: number; value: number[] }[] = [];
    if (overlap) list.push({ id: LAUNCH_ATTR_PROGRAMMATIC_STREAM_SERIALIZATION, value: [1, 0, 0, 0] });
    // clusterDim {x, y, z}: three unsigned ints
    if (cluster > 1)
      list.push({ id: LAUNCH_ATTR_CLUSTER_DIMENSION, value: [1, 0, 0, 0, 1, 0, 0, 0, cluster, 0, 0, 0] });
    const attrs = list.length ? koffi.alloc(LaunchAttribute, list.length) : null;
    list.forEach((a, i) => {
      const value = new Array(64).fill(0);
      a.value.forEach((b, j) => (value[j] = b));
      koffi.encode(attrs, i * koffi.sizeof(LaunchAttribute), LaunchAttribute, {
        id: a.id,
        pad: [0, 0, 0, 0],
        value,
      });
    });
    attributeSets.set(key, (set = { attrs, count: list.length }));
  }
  return set;
}

export class Graph {
  constructor(
    private readonly dev: CudaDevice,
    private readonly graph: Handle,
    private readonly exec: Handle,
  ) {}

  launch(): void {
    cu("cuGraphLaunch", this.exec, this.dev.stream);
  }

  destroy(): void {
    cu("cuGraphExecDestroy", this.exec);
    cu("cuGraphDestroy", this.graph);
  }
}
