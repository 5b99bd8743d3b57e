/**
 * The rules of gptq-ts's own CUDA kernels, in the shape `check` lists and our dispatch asks:
 * `gptq-ts-w4a16` (the tensor-core W4A16 GEMM) first, `gptq-ts-dequant` (dequantize to fp16, then
 * cuBLAS) for everything else a GPTQ checkpoint can hold.
 */
import { GroupRule, ShapeRules, evaluate } from "./shape-rule.js";
import { KernelQuery, KernelRule } from "./types.js";

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

export const GPTQ_TS_W4A16: KernelRule = {
  name: W4A16_RULES.name,
  description: W4A16_RULES.description,
  ours: true,
  supports: (q) => evaluate(W4A16_RULES, q),
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
  name: "gptq-ts-dequant",
  description: dequantRules(4).description,
  ours: true,
  supports: (q) => evaluate(dequantRules(q.bits), q),
};

/** Ours, in dispatch order. */
export const GPTQ_TS_KERNELS: KernelRule[] = [GPTQ_TS_W4A16, GPTQ_TS_DEQUANT];

/** The first of our kernels that runs `q` (or `only`), else an Error with every verdict. */
export function pickKernel(q: KernelQuery, only?: string): KernelRule {
  const cands = only ? GPTQ_TS_KERNELS.filter((k) => k.name === only) : GPTQ_TS_KERNELS;
  if (cands.length === 0)
    throw new Error(`unknown kernel ${only} (ours: ${GPTQ_TS_KERNELS.map((k) => k.name).join(", ")})`);
  const why: string[] = [];
  for (const k of cands) {
    const v = k.supports(q);
    if (v.ok) return k;
    why.push(`${k.name}: ${v.reason}${v.fix ? ` (${v.fix})` : ""}`);
  }
  throw new Error(why.join("; "));
}
