/**
 * Every kernel whose rules gptq-ts knows, ours and the ecosystem's. `check` asks each for a verdict
 * per layer; our own dispatch asks the same question before it runs a layer.
 */
import { GptqError } from "../util/errors.js";
import { CUDA_OLD, TRITON } from "./rules/autogptq.js";
import { XNNPACK_A8W4 } from "./rules/executorch.js";
import { EXLLAMA, EXLLAMA_V2 } from "./rules/exllama.js";
import { MACHETE } from "./rules/machete.js";
import { IST_MARLIN, VLLM_MARLIN } from "./rules/marlin.js";
import { ORT } from "./rules/ort.js";
import { VLLM_GPTQ } from "./rules/vllm.js";
import { TORCH_INT4_CPU } from "./rules/torch.js";
import { GPTQMODEL_LOADER } from "./rules/gptqmodel.js";
import { QuantizedLinear } from "../formats/types.js";
import { canRun } from "./can-run.js";
import { GPTQ_TS_KERNELS } from "./gptq-ts.js";
import { DeviceCapability, KernelQuery, KernelRule, KernelVerdict } from "./types.js";

/** In registration order: the order `check` lists them. */
export const KERNELS: KernelRule[] = [];

export function registerKernel(rule: KernelRule): void {
  if (!/^[a-z0-9][a-z0-9._-]*$/.test(rule.name))
    throw new Error(`kernel name "${rule.name}" is not a lower-case identifier`);
  if (KERNELS.some((k) => k.name === rule.name))
    throw new Error(`a kernel named "${rule.name}" is already registered`);
  KERNELS.push(rule);
}

export function findKernel(name: string): KernelRule | undefined {
  return KERNELS.find((k) => k.name === name);
}

/** findKernel, or a GptqError that lists the known names. */
export function getKernel(name: string): KernelRule {
  const k = findKernel(name);
  if (!k)
    throw new GptqError(`unknown kernel "${name}"; known kernels: ${KERNELS.map((x) => x.name).join(", ")}`);
  return k;
}

/**
 * A kernel's verdict (`canRun`), with the kernels that accept the layer as it is added to a failing
 * verdict's fix ("... ; or use kernel exllama").
 */
export function checkKernel(
  rule: KernelRule,
  q: KernelQuery | QuantizedLinear,
  alternatives: readonly KernelRule[] = KERNELS,
  device?: DeviceCapability,
): KernelVerdict {
  const v = canRun(rule, q, device);
  if (v.ok) return v;
  const others = alternatives
    .filter((k) => k.name !== rule.name && canRun(k, q, device).ok)
    .map((k) => k.name);
  if (!others.length) return v;
  const use = `use kernel ${others.slice(0, 3).join(" or ")}`;
  return { ...v, fix: v.fix ? `${v.fix}; or ${use}` : use, alternatives: others };
}

for (const rule of [
  VLLM_MARLIN,
  IST_MARLIN,
  MACHETE,
  VLLM_GPTQ,
  EXLLAMA,
  EXLLAMA_V2,
  CUDA_OLD,
  TRITON,
  TORCH_INT4_CPU,
  GPTQMODEL_LOADER,
  ORT,
  XNNPACK_A8W4,
  ...GPTQ_TS_KERNELS,
])
  registerKernel(rule);
