/**
 * The `pad` command's checkpoint rewrite: a copy of an unquantized Llama-family checkpoint with the MLP
 * intermediate zero-padded as planned by model/pad-plan.ts (the model computes exactly the same function;
 * see model/padding.ts for why only that dimension).
 */
import { copyFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { buildDirAtomic, writeTextAtomic } from "../io/atomic.js";
import { checkOutputDir, tensorFileBytes } from "../io/output.js";
import { TensorEntry } from "../io/safetensors.js";
import { TensorStore, writeCheckpointTensors } from "../io/store.js";
import { Tensor } from "../tensor/tensor.js";
import { GptqError } from "../util/errors.js";
import { readLlamaConfig } from "../model/config.js";
import { PadPlan } from "../model/pad-plan.js";
import { padCols, padRows } from "../model/padding.js";
import { checkOutputPath } from "./rewrite.js";

const MLP_TENSOR = /\.mlp\.(gate_proj|up_proj|down_proj)\.(weight|bias)$/;

/**
 * The padded shape of a stored tensor when the intermediate goes from `from` to `to`; undefined when the
 * tensor is not one that changes. Throws when an MLP tensor does not match `from`.
 */
export function paddedMlpShape(
  name: string,
  shape: number[],
  from: number,
  to: number,
): number[] | undefined {
  const m = MLP_TENSOR.exec(name);
  if (!m || from === to) return undefined;
  const [, linear, kind] = m;
  if (linear === "down_proj" && kind === "bias") return undefined; // length hidden_size
  const ok =
    linear === "down_proj"
      ? shape.length === 2 && shape[1] === from
      : shape[0] === from && shape.length === (kind === "bias" ? 1 : 2);
  if (!ok)
    throw new GptqError(
      `${name} has shape ${JSON.stringify(shape)}, which does not match intermediate_size ${from}`,
    );
  return linear === "down_proj" ? [shape[0], to] : kind === "bias" ? [to] : [to, shape[1]];
}

/** A stored tensor padded for the new intermediate size (the tensor itself when it does not change). */
export function padMlpTensor(name: string, t: Tensor, from: number, to: number): Tensor {
  const shape = paddedMlpShape(name, t.shape, from, to);
  if (!shape) return t;
  return name.includes(".down_proj.") ? padCols(t, to) : padRows(t, to);
}

export interface PadResult {
  plan: PadPlan;
  /** number of tensors changed */
  tensors: number;
}

/**
 * Writes a copy of the unquantized checkpoint `inDir` to `outDir` with the MLP intermediate padded as
 * planned; other files are copied unchanged, config.json gets the new intermediate_size. The input is
 * never modified and nothing is left at `outDir` on failure.
 */
export async function padCheckpoint(inDir: string, outDir: string, plan: PadPlan): Promise<PadResult> {
  const config = readLlamaConfig(inDir);
  if (config.intermediateSize !== plan.from)
    throw new GptqError(
      `${inDir}/config.json: intermediate_size is ${config.intermediateSize}, the plan pads from ${plan.from}`,
    );
  const store = TensorStore.open(inDir);
  try {
    const quantized = store.names().find((n) => /\.(qweight|B)$/.test(n));
    if (quantized)
      throw new GptqError(
        `${inDir} is quantized (${quantized}); pad works on unquantized checkpoints: pad before quantizing, or quantize with --pad auto`,
      );
    let changed = 0;
    const entries: TensorEntry[] = store.names().map((name) => {
      const info = store.info(name);
      const shape = paddedMlpShape(name, info.shape, plan.from, plan.to);
      if (shape) changed++;
      return {
        name,
        dtype: info.dtype,
        shape: shape ?? info.shape,
        data: () => padMlpTensor(name, store.read(name), plan.from, plan.to).data,
      };
    });
    const carried = readdirSync(inDir).filter(
      (f) =>
        !(f.endsWith(".safetensors") || f.endsWith(".safetensors.index.json")) &&
        statSync(join(inDir, f)).isFile(),
    );
    // before any work: the output can be created and the copy fits the disk (config.json is rewritten)
    checkOutputPath(inDir, outDir);
    checkOutputDir(
      outDir,
      tensorFileBytes(entries) + carried.reduce((s, f) => s + statSync(join(inDir, f)).size, 0) + 4096,
    );
    await buildDirAtomic(outDir, (tmp) => {
      for (const f of carried) if (f !== "config.json") copyFileSync(join(inDir, f), join(tmp, f));
      writeCheckpointTensors(tmp, entries, { metadata: store.metadata() });
      writeTextAtomic(
        join(tmp, "config.json"),
        JSON.stringify({ ...config.raw, intermediate_size: plan.to }, null, 2) + "\n",
      );
    });
    return { plan, tensors: changed };
  } finally {
    store.close();
  }
}
