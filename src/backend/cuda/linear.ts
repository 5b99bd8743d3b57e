/**
 * Quantized linear layers on the GPU. `cudaLinear` picks our kernel by the same rules `check` reports:
 * the W4A16 tensor-core GEMM on its prepared layout when it applies, else the GPTQ tensors stay as they
 * are and each call dequantizes them to an fp16 scratch that cuBLAS multiplies.
 */
import { QuantizedLinear } from "../../formats/types.js";
import { layerQuery } from "../../kernels/can-run.js";
import { GPTQ_TS_W4A16, pickKernel, w4a16DeviceVerdict } from "../../kernels/gptq-ts.js";
import { GptqError } from "../../util/errors.js";
import { Cublas } from "./cublas.js";
import { CudaDevice, DeviceBuffer, Kernel, KernelArg, bytes, i32, ptr } from "./device.js";
import { tensorMap2dF16 } from "./driver.js";
import { DeviceGptq, dequantGptq } from "./dequant.js";
import {
  W4A16Config,
  W4A16Launch,
  W4A16Layout,
  blockThreads,
  chooseConfig,
  configName,
  geometry,
  kernelName,
  kernelSource,
  packW4A16,
  sharedBytes,
  w4a16Unsupported,
} from "./layout.js";

/** fp16 activations in, fp16 outputs out, all on the device. */
export interface CudaLinear {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly kernel: string;
  /** out[M, N] = a[M, K] · W (+ bias); both fp16 row-major device buffers */
  forward(a: DeviceBuffer, M: number, out: DeviceBuffer): void;
  /** weight (+scale) bytes one forward reads */
  readonly weightBytes: number;
  dispose(): void;
}

/** Scratch that grows to the largest request and is shared by every layer of a device. */
class Scratch {
  private buf?: DeviceBuffer;
  constructor(private readonly dev: CudaDevice) {}
  get(bytes: number, zero = false): DeviceBuffer {
    if (!this.buf || this.buf.bytes < bytes) {
      if (this.buf) {
        this.dev.synchronize();
        this.dev.free(this.buf);
      }
      this.buf = this.dev.alloc(Math.max(bytes, 4096));
      if (zero) this.dev.fill32(this.buf, 0);
    }
    return this.buf;
  }
}

const scratch = new WeakMap<CudaDevice, { ws: Scratch; counters: Scratch; act: Scratch; dense: Scratch }>();
function scratchOf(dev: CudaDevice) {
  let s = scratch.get(dev);
  if (!s)
    scratch.set(
      dev,
      (s = {
        ws: new Scratch(dev),
        counters: new Scratch(dev),
        act: new Scratch(dev),
        dense: new Scratch(dev),
      }),
    );
  return s;
}

function smVersion(dev: CudaDevice): number {
  return Number(/sm_(\d+)/.exec(dev.info.arch)?.[1] ?? 0);
}

/** Why this GPU cannot run the W4A16 kernel (bulk copies (TMA) and mbarriers: sm_90 and later), or null. */
export function w4a16DeviceUnsupported(dev: CudaDevice): string | null {
  return w4a16DeviceVerdict({ sm: smVersion(dev), arch: dev.info.arch }).reason ?? null;
}

/** Whether the GPU has Hopper's warpgroup MMA (sm_90 only: later architectures dropped it). */
export function hasWgmma(dev: CudaDevice): boolean {
  return smVersion(dev) === 90;
}

/** Tensor maps of activation buffers, by address and shape (encoding one takes a driver call). */
const activationMaps = new Map<string, Uint8Array>();
function activationMap(address: number, M: number, K: number, rows: number): Uint8Array {
  const key = `${address}:${M}:${K}:${rows}`;
  let map = activationMaps.get(key);
  if (!map) {
    if (activationMaps.size >= 256) activationMaps.clear();
    map = tensorMap2dF16(address, K, M, K * 2, 64, rows);
    activationMaps.set(key, map);
  }
  return map;
}

export class W4A16Linear implements CudaLinear {
  readonly kernel = GPTQ_TS_W4A16.name;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly weightBytes: number;
  private readonly B: DeviceBuffer;
  private readonly S: DeviceBuffer;
  private readonly perm: DeviceBuffer | null;
  private readonly bias: DeviceBuffer | null;
  /** a fixed configuration (benchmarks, tests); else chosen per M */
  config?: W4A16Config;
  /**
   * Programmatic dependent launch: the weights stream in while the previous kernel finishes. Off by
   * default: on the H200 it gained 4 % on the Llama-2-70B layers at batch 1 and lost 5 % on the 7B ones.
   */
  overlap = false;
  /** blocks per multiprocessor of each kernel, as the driver reports */
  private readonly occupancy: Record<string, number> = {};

  constructor(
    private readonly dev: CudaDevice,
    readonly layout: W4A16Layout,
  ) {
    this.inFeatures = layout.K;
    this.outFeatures = layout.N;
    this.B = dev.upload(layout.B);
    this.S = dev.upload(layout.S);
    this.perm = layout.perm ? dev.upload(layout.perm) : null;
    this.bias = layout.bias ? dev.upload(layout.bias) : null;
    this.weightBytes = layout.B.byteLength + layout.S.byteLength;
  }

  static fromLayer(dev: CudaDevice, layer: QuantizedLinear): W4A16Linear {
    const why = w4a16DeviceUnsupported(dev);
    if (why) throw new GptqError(`W4A16 kernel: ${why}`);
    return new W4A16Linear(dev, packW4A16(layer));
  }

  /** The same layer reading other copies of B and S (rotated through in benchmarks). */
  withWeights(B: DeviceBuffer, S: DeviceBuffer): W4A16Linear {
    const c = Object.create(W4A16Linear.prototype) as W4A16Linear;
    Object.assign(c, this, { B, S });
    return c;
  }

  get buffers(): { B: DeviceBuffer; S: DeviceBuffer } {
    return { B: this.B, S: this.S };
  }

  configFor(M: number): W4A16Config {
    if (this.config) return this.config;
    return chooseConfig(M, this.layout.K, this.layout.N, hasWgmma(this.dev), this.dev.info.smCount);
  }

  /** The kernel and launch geometry for M rows. */
  plan(M: number): { kernel: Kernel; launch: W4A16Launch; config: W4A16Config; name: string } {
    const { Kpad, N, groupSize } = this.layout;
    const c = this.configFor(M);
    if (c.kind === "wgmma" && !hasWgmma(this.dev))
      throw new GptqError(
        `W4A16 ${configName(c)}: warpgroup MMA needs sm_90, this GPU is ${this.dev.info.arch}`,
      );
    const kernel = this.dev.kernel(import.meta.url, kernelSource(c), kernelName(c, groupSize));
    // (shared memory depends on M below a block's rows)
    const shared = sharedBytes(c, groupSize, M);
    const perSm = (this.occupancy[`${kernel.name}:${shared}`] ??= this.dev.occupancy(
      kernel,
      blockThreads(c),
      shared,
    ));
    const launch = geometry(c, M, N, Kpad, groupSize, this.dev.info.smCount, perSm);
    return { kernel, launch, config: c, name: `${kernel.name.slice(6)}_s${launch.grid[2]}` };
  }

  forward(a: DeviceBuffer, M: number, out: DeviceBuffer): void {
    const { K, Kpad, N, groupSize } = this.layout;
    if (M < 1) throw new GptqError(`batch of ${M} rows`);
    const s = scratchOf(this.dev);
    let act = a;
    if (this.perm) {
      act = s.act.get(M * K * 2);
      const pk = this.dev.kernel(import.meta.url, "kernels/w4a16.cu", "permute_columns");
      this.dev.launch(pk, [Math.ceil(K / 256), M, 1], 256, 0, [
        ptr(a),
        ptr(this.perm),
        ptr(act),
        i32(M),
        i32(K),
      ]);
    }
    const { kernel: k, launch: g, config } = this.plan(M);
    // zeroed once; every launch leaves it zero again
    const ws = g.workspaceBytes > 0 ? s.ws.get(g.workspaceBytes, true) : null;
    const counters = g.counters > 0 ? s.counters.get(g.counters * 4, true) : null;
    const tail: KernelArg[] = [
      ptr(this.bias ? this.bias.ptr : 0),
      ptr(ws ? ws.ptr : 0),
      ptr(counters ? counters.ptr : 0),
      i32(M),
      i32(N),
    ];
    const split = [i32(Kpad / 16), i32(groupSize / 16), i32(g.chunksPerSplit)];
    const args =
      config.kind === "wgmma"
        ? // the activations come through TMA: boxes of 64 k x rows, zero past M and K
          [
            bytes(activationMap(act.ptr, M, K, config.rows)),
            ptr(this.B),
            ptr(this.S),
            ptr(out),
            ...tail,
            ...split,
          ]
        : [ptr(this.B), ptr(this.S), ptr(act), ptr(out), ...tail, i32(K), ...split];
    this.dev.launch(k, g.grid, g.block, g.sharedBytes, args, {
      overlap: this.overlap,
      cluster: g.cluster,
    });
  }

  dispose(): void {
    for (const b of [this.B, this.S, this.perm, this.bias]) if (b) this.dev.free(b);
  }
}

/** Any GPTQ layer: dequantize to fp16 (K x N) per call, then cuBLAS. No bias. */
export class DequantLinear implements CudaLinear {
  readonly kernel = "gptq-ts-dequant";
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly weightBytes: number;
  constructor(
    private readonly dev: CudaDevice,
    private readonly g: DeviceGptq,
  ) {
    this.inFeatures = g.shape.inFeatures;
    this.outFeatures = g.shape.outFeatures;
    this.weightBytes = g.qweight.bytes + g.qzeros.bytes + g.scales.bytes;
  }

  forward(a: DeviceBuffer, M: number, out: DeviceBuffer): void {
    const K = this.inFeatures;
    const N = this.outFeatures;
    const w = scratchOf(this.dev).dense.get(K * N * 2);
    dequantGptq(this.dev, this.g, w);
    Cublas.get(this.dev).matmul(a, w, out, M, N, K);
  }

  dispose(): void {
    for (const b of [this.g.qweight, this.g.qzeros, this.g.scales, this.g.gIdx]) this.dev.free(b);
  }
}

/**
 * The layer on the GPU with the first of our kernels whose rules it passes (`kernel` forces one).
 * `gptq` gives the stored tensors for the generic path (it is only needed when W4A16 does not apply).
 */
export function cudaLinear(
  dev: CudaDevice,
  layer: QuantizedLinear,
  gptq: () => DeviceGptq,
  kernel?: string,
): CudaLinear {
  const q = layerQuery(layer);
  let rule;
  try {
    rule = pickKernel(q, kernel);
  } catch (e) {
    throw new GptqError(
      `no CUDA kernel runs ${layer.inFeatures}x${layer.outFeatures}: ${(e as Error).message}`,
    );
  }
  const why = w4a16DeviceUnsupported(dev) ?? w4a16Unsupported(layer);
  if (rule === GPTQ_TS_W4A16 && !why) return W4A16Linear.fromLayer(dev, layer);
  if (kernel === GPTQ_TS_W4A16.name) throw new GptqError(`W4A16 kernel: ${why}`);
  if (layer.bias)
    throw new GptqError(
      "the dequant + cuBLAS path takes no bias: add it to the output (as CudaModelLinear does)",
    );
  return new DequantLinear(dev, gptq());
}
