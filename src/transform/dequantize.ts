/** A quantized checkpoint to an unquantized one: `<prefix>.weight` [N, K] per layer, no quantization config. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { CONFIG_FILE, clearQuantConfig, openCheckpoint } from "../io/checkpoint.js";
import { writeTextAtomic } from "../io/atomic.js";
import { FloatDType, dequantizeAs, dequantizeRows } from "../formats/dequantize.js";
import { QuantizedLinear } from "../formats/types.js";
import { DType } from "../tensor/dtype.js";
import { firstNonFinite, indexText, nonFiniteKind } from "../tensor/finite.js";
import { fromFloat32 } from "../tensor/tensor.js";
import { GptqError } from "../util/errors.js";
import { layerShape, layerTensorNames, readLayer } from "./layers.js";
import { Rewrite, rewriteCheckpoint } from "./rewrite.js";

export interface DequantizeResult {
  from: string;
  dtype: FloatDType;
  layers: number;
  verifiedLayers: number;
  tensorsCopied: number;
  shards: string[];
}

const TORCH_DTYPE: Record<FloatDType, string> = { F16: "float16", BF16: "bfloat16", F32: "float32" };

export async function dequantizeCheckpoint(
  input: string,
  output: string,
  requested: DType,
): Promise<DequantizeResult> {
  if (!(requested in TORCH_DTYPE))
    throw new GptqError(`cannot dequantize to ${requested}; use float16, bfloat16 or float32`);
  const dtype = requested as FloatDType;
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
          const layer = readLayer(ckpt.store, format, info.name, layerShape(ckpt, info));
          return new Map([[name, dequantizeAs(layer, dtype)]]);
        },
      };
    });
    let verifiedLayers = 0;
    const r = await rewriteCheckpoint(input, output, ckpt.store, {
      rewrites,
      finish(dir) {
        clearQuantConfig(dir);
        setTorchDtype(dir, TORCH_DTYPE[dtype]);
      },
      verify(dir) {
        const out = openCheckpoint(dir);
        try {
          if (out.format !== "fp")
            throw new GptqError("verification failed: the output still holds quantized tensors");
          for (const info of ckpt.layers) {
            const name = `${info.name}.weight`;
            const layer = readLayer(ckpt.store, format, info.name, layerShape(ckpt, info));
            const t = out.store.read(name);
            if (t.dtype !== dtype || !sameAsStored(layer, t.data as ArrayLike<number>, dtype))
              throw new GptqError(`verification failed: ${name} differs from the dequantized source`);
            // the scales were finite when read; a product can still overflow a 16-bit dtype
            const bad = firstNonFinite(t.dtype, t.data);
            if (bad >= 0)
              throw new GptqError(
                `${name} dequantizes to a non-finite value (${nonFiniteKind(t.dtype, t.data, bad)}) at ${indexText(t.shape, bad)}: scale x (code - zero) overflows ${TORCH_DTYPE[dtype]}; use --dtype float32`,
              );
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

/**
 * Compares a stored N x K weight with the layer dequantized a block of K rows at a time and converted
 * by the generic dtype path (not the transposing writer's), so the check is independent of the write.
 */
function sameAsStored(layer: QuantizedLinear, stored: ArrayLike<number>, dtype: FloatDType): boolean {
  const { inFeatures: K, outFeatures: N } = layer;
  if (stored.length !== K * N) return false;
  const B = 64;
  const rows = new Float32Array(B * N);
  for (let k0 = 0; k0 < K; k0 += B) {
    const k1 = Math.min(K, k0 + B);
    dequantizeRows(layer, k0, k1, rows);
    const want = fromFloat32(rows.subarray(0, (k1 - k0) * N), dtype, [k1 - k0, N]).data as ArrayLike<number>;
    for (let k = k0; k < k1; k++)
      for (let n = 0; n < N; n++) if (stored[n * K + k] !== want[(k - k0) * N + n]) return false;
  }
  return true;
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
