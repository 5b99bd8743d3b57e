/**
 * The compatibility rules of a matmul kernel (ours or the ecosystem's), in one shape: `check` lists
 * every registered kernel's verdict for every layer, and our own dispatch asks the same question.
 */
import { Bits } from "../formats/types.js";

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

export interface KernelVerdict {
  ok: boolean;
  /** the first rule that fails, in words ("in_features 4544 is not a multiple of 128") */
  reason?: string;
  /** what makes it pass ("pad in_features to 4608", "use group size 64", "use kernel exllama") */
  fix?: string;
}

export interface KernelRule {
  /** the name users pass to `--kernel` */
  name: string;
  /** one line: whose kernel, what it runs */
  description: string;
  /** our own kernels (runnable by gptq-ts) vs rules of other projects' kernels */
  ours: boolean;
  supports(q: KernelQuery): KernelVerdict;
}
