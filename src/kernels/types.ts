/**
 * The compatibility rules of a matmul kernel (ours or the ecosystem's), in one shape: `check` lists
 * every registered kernel's verdict for every layer, and our own dispatch asks the same question.
 */
import { Bits, QuantizedLinear, StoredFormat } from "../formats/types.js";

/** What a kernel is asked to run: one layer's shape (of one tensor-parallel shard) and its scheme. */
export interface KernelQuery {
  inFeatures: number; // K
  outFeatures: number; // N
  bits: Bits;
  /** -1 = one group over all of K */
  groupSize: number;
  sym: boolean;
  /** act-order in use (a `g_idx` that is not k // group) */
  actOrder: boolean;
  /** true when K is split across tensor-parallel ranks (row-parallel layer with tp > 1) */
  kSplitAcrossRanks?: boolean;
  /**
   * tensor-parallel ranks the layer is split over (default 1); the shapes above are already one rank's.
   * Only used to phrase fixes for the whole layer ("pad in_features to 13824 (6912 per rank)").
   */
  tpRanks?: number;
}

/** One complete way to make a layer pass; every field set is a change to make. */
export interface Remedy {
  bits?: readonly number[];
  sym?: boolean;
  groupSize?: number;
  /** pad in_features (of one shard) to this */
  padIn?: number;
  /** pad out_features (of one shard) to this */
  padOut?: number;
  /** drop act-order: quantize without desc_act, or with static groups */
  noActOrder?: boolean;
  /** a free-form change no field above covers */
  other?: string;
}

export interface KernelVerdict {
  ok: boolean;
  /** the first rule that fails, in words ("in_features 4544 is not a multiple of 128") */
  reason?: string;
  /** what makes it pass ("pad in_features to 4608", "use group size 64", "use kernel exllama") */
  fix?: string;
  /**
   * the changes behind `fix`, best first, for callers that know the model and can spell each as a
   * command (`check`); `fix` says them in words without that knowledge
   */
  remedies?: Remedy[];
  /** other kernels that accept the layer as it is (set by `checkKernel`) */
  alternatives?: string[];
  /** why no change can be offered, or what a fix cannot do (printed after the fix) */
  note?: string;
}

/**
 * What a loader sees of a whole quantized checkpoint beyond its layers' shapes: the stored format,
 * the scheme and who wrote it (GPTQModel's `meta.quantizer`).
 */
export interface CheckpointFacts {
  dir: string;
  format: StoredFormat;
  sym: boolean;
  /** `meta.quantizer` of the quantization config, as written (e.g. ["gptqmodel:2.1.0"]); [] when absent */
  quantizer: string[];
}

/** The GPU a kernel would run on. */
export interface DeviceCapability {
  /** compute capability as one number, major * 10 + minor: 80 (A100), 86, 89, 90 (H100, H200), 100 */
  sm: number;
  /** the architecture as the driver names it ("sm_90a"), for messages; default `sm_<sm>` */
  arch?: string;
}

export interface KernelRule {
  /** the name users pass to `--kernel` */
  name: string;
  /** one line: whose kernel, what it runs */
  description: string;
  /** our own kernels (runnable by gptq-ts) vs rules of other projects' kernels */
  ours: boolean;
  /** the rules on a layer's shape and scheme: what `check` lists */
  supports(q: KernelQuery): KernelVerdict;
  /**
   * The rules on a layer's own data that its query does not show (zero points, g_idx order), with the
   * shape rules that data needs; absent when the query says all. Asked by `canRun` for an unpacked layer.
   */
  supportsLayer?(layer: QuantizedLinear): KernelVerdict;
  /** the GPU it needs; absent when any GPU it is built for will do. Asked by `canRun` given a device. */
  supportsDevice?(device: DeviceCapability): KernelVerdict;
  /**
   * A loader's rules on the checkpoint as a whole (the format, who wrote it), whatever the shapes;
   * absent when it has none. Asked by `check` for a quantized checkpoint.
   */
  supportsCheckpoint?(ck: CheckpointFacts): KernelVerdict;
}
