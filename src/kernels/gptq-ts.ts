/**
 * The rules of gptq-ts's own CUDA kernels, in the shape `check` lists and our dispatch asks:
 * `gptq-ts-w4a16` (the tensor-core W4A16 GEMM) first, `gptq-ts-dequant` (dequantize to fp16, then
 * cuBLAS) for everything else a GPTQ checkpoint can hold.
 */
import { KernelQuery, KernelRule, KernelVerdict } from "./types.js";

const ok: KernelVerdict = { ok: true };

export const GPTQ_TS_W4A16: KernelRule = {
  name: "gptq-ts-w4a16",
  description: "gptq-ts W4A16 tensor-core GEMM (CUDA, sm_80+): 4-bit symmetric, groups of 16k rows or -1",
  ours: true,
  supports(q: KernelQuery): KernelVerdict {
    if (q.bits !== 4)
      return { ok: false, reason: `${q.bits}-bit weights (runs 4-bit)`, fix: "use kernel gptq-ts-dequant" };
    if (!q.sym)
      return {
        ok: false,
        reason: "asymmetric zero points",
        fix: "quantize with sym=true or use kernel gptq-ts-dequant",
      };
    if (q.inFeatures % 16 !== 0)
      return {
        ok: false,
        reason: `in_features ${q.inFeatures} is not a multiple of 16`,
        fix: `pad in_features to ${Math.ceil(q.inFeatures / 16) * 16}`,
      };
    if (q.groupSize !== -1 && q.groupSize % 16 !== 0)
      return {
        ok: false,
        reason: `group size ${q.groupSize} is not a multiple of 16`,
        fix: "use group size 32, 64, 128 or -1",
      };
    if (q.groupSize !== -1 && q.inFeatures % q.groupSize !== 0)
      return {
        ok: false,
        reason: `in_features ${q.inFeatures} is not a multiple of the group size ${q.groupSize}`,
        fix: `pad in_features to ${Math.ceil(q.inFeatures / q.groupSize) * q.groupSize}`,
      };
    return ok;
  },
};

export const GPTQ_TS_DEQUANT: KernelRule = {
  name: "gptq-ts-dequant",
  description: "gptq-ts GPTQ dequantize-to-fp16 + cuBLAS (CUDA): 2/3/4/8 bits, any group, act-order",
  ours: true,
  supports(q: KernelQuery): KernelVerdict {
    const { bits, inFeatures: K, outFeatures: N } = q;
    if (bits === 3) {
      if (K % 32 !== 0)
        return {
          ok: false,
          reason: `3-bit with in_features ${K} not a multiple of 32`,
          fix: `pad in_features to ${Math.ceil(K / 32) * 32}`,
        };
      if (N % 32 !== 0)
        return {
          ok: false,
          reason: `3-bit with out_features ${N} not a multiple of 32`,
          fix: `pad out_features to ${Math.ceil(N / 32) * 32}`,
        };
      return ok;
    }
    const per = 32 / bits;
    if (K % per !== 0)
      return {
        ok: false,
        reason: `in_features ${K} is not a multiple of ${per}`,
        fix: `pad in_features to ${Math.ceil(K / per) * per}`,
      };
    if (N % per !== 0)
      return {
        ok: false,
        reason: `out_features ${N} is not a multiple of ${per}`,
        fix: `pad out_features to ${Math.ceil(N / per) * per}`,
      };
    return ok;
  },
};

/** Ours, in dispatch order. */
export const GPTQ_TS_KERNELS: KernelRule[] = [GPTQ_TS_W4A16, GPTQ_TS_DEQUANT];

/** The first of our kernels that runs `q`, with every verdict for the error when none does. */
export function pickKernel(q: KernelQuery, only?: string): KernelRule {
  const cands = only ? GPTQ_TS_KERNELS.filter((k) => k.name === only) : GPTQ_TS_KERNELS;
  if (cands.length === 0) throw new Error(`unknown kernel ${only}`);
  const why: string[] = [];
  for (const k of cands) {
    const v = k.supports(q);
    if (v.ok) return k;
    why.push(`${k.name}: ${v.reason}${v.fix ? ` (${v.fix})` : ""}`);
  }
  throw new Error(why.join("; "));
}
