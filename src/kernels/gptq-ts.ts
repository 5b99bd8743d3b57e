/**
 * The rules of gptq-ts's own CUDA kernels, in the shape `check` lists and our dispatch asks:
 * `gptq-ts-w4a16` (the tensor-core W4A16 GEMM) first, `gptq-ts-dequant` (dequantize to fp16, then
 * cuBLAS) for everything else a GPTQ checkpoint can hold. Every rule of a kernel is here, the GPU it
 * needs and the checks on a layer's data included: `canRun` asks them all, the CUDA backend only asks.
 */
import { QuantizedLinear } from "../formats/types.js";
import { canRun, layerQuery } from "./can-run.js";
import { GroupRule, ShapeRules, evaluate } from "./shape-rule.js";
import { DeviceCapability, KernelQuery, KernelRule, KernelVerdict } from "./types.js";

/** Group sizes the W4A16 kernel takes: its 128-row chunks of K hold one group, or exactly two or four. */
export function w4a16GroupOk(g: number): boolean {
  return g === -1 || g === 32 || g === 64 || (g > 0 && g % 128 === 0);
}

const W4A16_GROUPS: GroupRule = {
  text: "32, 64, a multiple of 128, or -1",
  accepts: w4a16GroupOk,
  suggest: (g) => [g <= 32 ? 32 : g <= 64 ? 64 : Math.round(g / 128) * 128],
};

const W4A16_RULES: ShapeRules = {
  name: "gptq-ts-w4a16",
  description: "gptq-ts W4A16 tensor-core GEMM (CUDA, sm_90+): 4-bit symmetric, groups 32/64/128k/-1",
  bits: [4],
  symOnly: true,
  groups: W4A16_GROUPS,
  kMultiple: 16,
  groupDividesK: true,
  actOrder: "yes",
};

/**
 * What the W4A16 layout packs and the kernel computes correctly: the rules above with a partial last
 * group too (K is padded to 128 rows of weight 0). Dispatch still asks the rules above first.
 */
const W4A16_LAYOUT_RULES: ShapeRules = { ...W4A16_RULES, groupDividesK: false };

/** The compute capability the W4A16 kernel needs: bulk copies (TMA) and mbarriers. */
export const W4A16_MIN_SM = 90;

const DEQUANT = "gptq-ts-dequant";

/** Whether the W4A16 kernel runs on this GPU (sm_90 and later). */
export function w4a16DeviceVerdict(device: DeviceCapability): KernelVerdict {
  if (device.sm >= W4A16_MIN_SM) return { ok: true };
  return {
    ok: false,
    reason: `needs sm_${W4A16_MIN_SM} or later, this GPU is ${device.arch ?? `sm_${device.sm}`}`,
    fix: `run it on an sm_${W4A16_MIN_SM} or later GPU (H100, H200)`,
  };
}

/**
 * Whether g_idx, sorted, reads 0 (group_size times), 1, 2, ...: every group holds group_size
 * contiguous rows of the sorted order (the last one the rest), as act-order GPTQ assigns them.
 */
export function sortsIntoGroups(gIdx: Int32Array, groupSize: number): boolean {
  const K = gIdx.length;
  const gs = groupSize === -1 ? K : groupSize;
  const G = Math.ceil(K / gs);
  const counts = new Int32Array(G);
  for (let k = 0; k < K; k++) {
    const g = gIdx[k];
    if (!(g >= 0 && g < G)) return false;
    counts[g]++;
  }
  for (let g = 0; g < G; g++) if (counts[g] !== Math.min(gs, K - g * gs)) return false;
  return true;
}

/**
 * Whether the W4A16 kernel computes this very layer: 4-bit, K a multiple of 16, a group size it takes,
 * every zero point 8 (symmetric), and g_idx sorting into contiguous groups (act-order rows are stored
 * sorted by group). What `packW4A16` requires.
 */
export function w4a16LayerVerdict(layer: QuantizedLinear): KernelVerdict {
  const v = evaluate(W4A16_LAYOUT_RULES, layerQuery(layer));
  if (!v.ok) return v;
  if (!sortsIntoGroups(layer.gIdx, layer.groupSize))
    return {
      ok: false,
      reason: "g_idx does not sort into contiguous groups of group_size rows",
      fix: "requantize so that each group holds group_size rows (as act-order GPTQ assigns them)",
    };
  return { ok: true };
}

export const GPTQ_TS_W4A16: KernelRule = {
  name: W4A16_RULES.name,
  description: W4A16_RULES.description,
  ours: true,
  supports: (q) => evaluate(W4A16_RULES, q),
  supportsLayer: w4a16LayerVerdict,
  supportsDevice: w4a16DeviceVerdict,
};

/** The GPTQ packing's own constraints: 32 / bits codes per word along K and N; 3-bit in slabs of 32. */
function dequantRules(bits: number): ShapeRules {
  const per = bits === 3 || ![2, 4, 8].includes(bits) ? 32 : 32 / bits;
  return {
    name: "gptq-ts-dequant",
    description: "gptq-ts GPTQ dequantize-to-fp16 + cuBLAS (CUDA): 2/3/4/8 bits, any group, act-order",
    bits: [2, 3, 4, 8],
    kMultiple: per,
    nMultiple: per,
    actOrder: "yes",
  };
}

export const GPTQ_TS_DEQUANT: KernelRule = {
  name: DEQUANT,
  description: dequantRules(4).description,
  ours: true,
  supports: (q) => evaluate(dequantRules(q.bits), q),
};

/** Ours, in dispatch order. */
export const GPTQ_TS_KERNELS: KernelRule[] = [GPTQ_TS_W4A16, GPTQ_TS_DEQUANT];

/**
 * The first of our kernels that runs `layer` (or `only`), on `device` when given (`canRun`), else an
 * Error with every verdict.
 */
export function pickKernel(
  layer: KernelQuery | QuantizedLinear,
  only?: string,
  device?: DeviceCapability,
): KernelRule {
  const cands = only ? GPTQ_TS_KERNELS.filter((k) => k.name === only) : GPTQ_TS_KERNELS;
  if (cands.length === 0)
    throw new Error(`unknown kernel ${only} (ours: ${GPTQ_TS_KERNELS.map((k) => k.name).join(", ")})`);
  const why: string[] = [];
  for (const k of cands) {
    const v = canRun(k, layer, device);
    if (v.ok) return k;
    why.push(`${k.name}: ${v.reason}${v.fix ? ` (${v.fix})` : ""}`);
  }
  throw new Error(why.join("; "));
}
