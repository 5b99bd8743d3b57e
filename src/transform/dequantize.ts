/** A quantized checkpoint to an unquantized one: `<prefix>.weight` [N, K] per layer, no quantization config. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { CONFIG_FILE, clearQuantConfig, openCheckpoint } from "../io/checkpoint.js";
import { writeTextAtomic } from "../io/atomic.js";
import { dequantize } from "../formats/dequantize.js";
import { DType } from "../tensor/dtype.js";
import { fromFloat32 } from "../tensor/tensor.js";
import { GptqError } from "../util/errors.js";
import { layerShape, layerTensorNames, readLayer } from "./layers.js";
import { Rewrite, rewriteCheckpoint } from "./rewrite.js";

export interface DequantizeResult {
  from: string;
  dtype: DType;
  layers: number;
  verifiedLayers: number;
  tensorsCopied: number;
  shards: string[];
}

const TORCH_DTYPE: Partial<Record<DType, string>> = { F16: "float16", BF16: "bfloat16", F32: "float32" };

export async function dequantizeCheckpoint(
  input: string,
  output: string,
  dtype: DType,
): Promise<DequantizeResult> {
  if (!TORCH_DTYPE[dtype])
    throw new GptqError(`cannot dequantize to ${dtype}; use float16, bfloat16 or float32`);
  const ckpt = openCheckpoint(input);
  try {
    if (ckpt.format === "fp") throw new GptqError(`${input} is not quantized; nothing to dequantize`);
    const format = ckpt.format;
    const rewrites: Rewrite[] = ckpt.layers.map((info) => {
      const name = `${info.name}.weight`;
      if (ckpt.store.has(name))
        throw new GptqError(`${input}: layer ${info.name} stores both packed tensors and ${name}`);
      return {
        consumes: layerTensorNames(ckpt.store, format, info.name),
        outputs: [{ name, dtype, shape: [info.outFeatures, info.inFeatures] }],
        produce: () => {
          const W = dequantize(readLayer(ckpt.store, format, info.name, layerShape(ckpt, info)));
          return new Map([[name, fromFloat32(W, dtype, [info.outFeatures, info.inFeatures]).data]]);
        },
      };
    });
    let verifiedLayers = 0;
    const r = await rewriteCheckpoint(input, output, ckpt.store, {
      rewrites,
      finish(dir) {
        clearQuantConfig(dir);
        setTorchDtype(dir, TORCH_DTYPE[dtype]!);
      },
      verify(dir) {
        const out = openCheckpoint(dir);
        try {
          if (out.format !== "fp")
            throw new GptqError("verification failed: the output still holds quantized tensors");
          for (const info of ckpt.layers) {
            const name = `${info.name}.weight`;
            const want = fromFloat32(
              dequantize(readLayer(ckpt.store, format, info.name, layerShape(ckpt, info))),
              dtype,
              [info.outFeatures, info.inFeatures],
            ).data;
            const got = out.store.read(name).data;
            if (got.length !== want.length || got.some((v, i) => v !== want[i]))
              throw new GptqError(`verification failed: ${name} differs from the dequantized source`);
            verifiedLayers++;
          }
        } finally {
          out.close();
        }
      },
    });
    return {
      from: format,
      dtype,
      layers: ckpt.layers.length,
      verifiedLayers,
      tensorsCopied: r.tensorsCopied,
      shards: r.shards,
    };
  } finally {
    ckpt.close();
  }
}

/** config.json's `torch_dtype`, when there is a config.json, follows the stored weights. */
function setTorchDtype(dir: string, name: string): void {
  const path = join(dir, CONFIG_FILE);
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  } catch {
    return; // no config.json (or one the input already had unreadable): leave it as copied
  }
  cfg.torch_dtype = name;
  writeTextAtomic(path, JSON.stringify(cfg, null, 2) + "\n");
}
