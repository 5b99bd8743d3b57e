/**
 * GPTQModel's loader (`GPTQModel.load`). Its kernels between them take any 2/3/4/8-bit layer (the
 * torch kernel takes every shape), so the loader's own rule is about the file: it reads GPTQ v1 files
 * it did not write as `gptq_v2` internally, and refuses asymmetric ones, whose zero points it cannot
 * trust (a v1 zero of 0 wraps when stored as zero − 1).
 *
 * Who wrote a file: GPTQModel records itself in the quantization config's `meta.quantizer`, a list of
 * "name:version" strings such as ["gptqmodel:2.1.0"] (several when a file went through several tools).
 * A file whose `meta.quantizer` names no `gptqmodel:` entry (AutoGPTQ's files have no `meta` at all,
 * gptq-ts writes "gptq-ts:<version>") is taken as not written by GPTQModel. That is a heuristic: a
 * config rewritten by hand can say anything.
 */
import { CheckpointFacts, KernelRule, KernelVerdict } from "../types.js";
import { evaluate } from "../shape-rule.js";

/** Whether `meta.quantizer` says GPTQModel wrote the file. */
export function writtenByGptqModel(quantizer: readonly string[]): boolean {
  return quantizer.some((q) => /^gptqmodel(:|$)/i.test(q.trim()));
}

export const GPTQMODEL_LOADER: KernelRule = {
  name: "gptqmodel",
  description:
    "GPTQModel.load: 2/3/4/8-bit GPTQ; asymmetric GPTQ v1 files only when GPTQModel wrote them (meta.quantizer)",
  ours: false,
  supports: (q) => evaluate({ name: "gptqmodel", description: "", bits: [2, 3, 4, 8], actOrder: "yes" }, q),
  supportsCheckpoint(ck: CheckpointFacts): KernelVerdict {
    if (ck.format !== "gptq" || ck.sym || writtenByGptqModel(ck.quantizer)) return { ok: true };
    const by = ck.quantizer.length ? `meta.quantizer says ${ck.quantizer.join(", ")}` : "no meta.quantizer";
    return {
      ok: false,
      reason: `asymmetric GPTQ v1 written by another tool (${by}): GPTQModel refuses it (it loads v1 files it did not write as gptq_v2)`,
      fix: `gptq convert ${ck.dir} <out> --to gptq_v2`,
    };
  },
};
