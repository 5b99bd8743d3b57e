/**
 * The W4A16 launcher: a layer's prepared weights on the device, and for each batch size the block shape
 * (tuning.ts), its grid and k-splits (launch.ts), and the kernel compiled from mma.cu or wgmma.cu with
 * the instantiations configs.ts generates.
 */
import { QuantizedLinear } from "../../../formats/types.js";
import { deviceCapability } from "../../../kernels/can-run.js";
import { GPTQ_TS_W4A16, w4a16DeviceVerdict } from "../../../kernels/gptq-ts.js";
import { GptqError } from "../../../util/errors.js";
import { CudaDevice, DeviceBuffer, Kernel, KernelArg, bytes, i32, ptr } from "../device.js";
import { tensorMap2dF16 } from "../driver.js";
import type { CudaLinear } from "../linear.js";
import { scratchOf } from "../scratch.js";
import {
  W4A16Config,
  blockThreads,
  configName,
  instantiations,
  kernelName,
  kernelSource,
  sharedBytes,
} from "./configs.js";
import { W4A16Layout, packW4A16 } from "./layout.js";
import { W4A16Launch, geometry } from "./launch.js";
import { DeviceTuning, chooseConfig, tuningFor } from "./tuning.js";

/** A W4A16 kernel (or the act-order permutation, in mma.cu) of a device, compiled with its instantiations. */
export function w4a16Kernel(dev: CudaDevice, kind: W4A16Config["kind"], name: string): Kernel {
  const c = { kind } as W4A16Config;
  return dev.kernel(import.meta.url, kernelSource(c), name, instantiations(kind));
}

const untunedNoted = new Set<string>();

/**
 * The tuning table a device uses, and whether one was fitted on its class; a device without one is
 * named on stderr once, since its block shapes are a guess.
 */
export function deviceTuning(dev: CudaDevice): { tuning: DeviceTuning; fitted: boolean } {
  const t = tuningFor(dev.info.arch, dev.info.name);
  const id = `${dev.info.name} (${dev.info.arch})`;
  if (!t.fitted && !untunedNoted.has(id)) {
    untunedNoted.add(id);
    process.stderr.write(`gptq: W4A16 on ${id}: ${t.tuning.fittedOn}\n`);
  }
  return t;
}

/** Why this GPU cannot run the W4A16 kernel (bulk copies (TMA) and mbarriers: sm_90 and later), or null. */
export function w4a16DeviceUnsupported(dev: CudaDevice): string | null {
  return w4a16DeviceVerdict(deviceCapability(dev.info.arch)).reason ?? null;
}

/** Whether the GPU has Hopper's warpgroup MMA (sm_90 only: later architectures dropped it). */
export function hasWgmma(dev: CudaDevice): boolean {
  return deviceCapability(dev.info.arch).sm === 90;
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
  /** the device's tuning table (tuning.ts) */
  readonly tuning: DeviceTuning;
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
    this.tuning = deviceTuning(dev).tuning;
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
    const { K, N } = this.layout;
    return chooseConfig(M, K, N, hasWgmma(this.dev), this.dev.info.smCount, this.tuning);
  }

  /** The kernel and launch geometry for M rows. */
  plan(M: number): { kernel: Kernel; launch: W4A16Launch; config: W4A16Config; name: string } {
    const { Kpad, N, groupSize } = this.layout;
    const c = this.configFor(M);
    if (c.kind === "wgmma" && !hasWgmma(this.dev))
      throw new GptqError(
        `W4A16 ${configName(c)}: warpgroup MMA needs sm_90, this GPU is ${this.dev.info.arch}`,
      );
    const kernel = w4a16Kernel(this.dev, c.kind, kernelName(c, groupSize));
    // (shared memory depends on M below a block's rows)
    const shared = sharedBytes(c, groupSize, M);
    const perSm = (this.occupancy[`${kernel.name}:${shared}`] ??= this.dev.occupancy(
      kernel,
      blockThreads(c),
      shared,
    ));
    const launch = geometry(c, M, N, Kpad, groupSize, this.dev.info.smCount, perSm, this.tuning.splitModel);
    return { kernel, launch, config: c, name: `${kernel.name.slice(6)}_s${launch.grid[2]}` };
  }

  forward(a: DeviceBuffer, M: number, out: DeviceBuffer): void {
    const { K, Kpad, N, groupSize } = this.layout;
    if (M < 1) throw new GptqError(`batch of ${M} rows`);
    const s = scratchOf(this.dev);
    let act = a;
    if (this.perm) {
      act = s.act.get(M * K * 2);
      const pk = w4a16Kernel(this.dev, "mma", "permute_columns");
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
