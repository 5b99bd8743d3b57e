/** A checkpoint from one stored format to another, a layer at a time, verified by dequantizing both. */
import { Checkpoint, openCheckpoint, writeQuantConfig } from "../io/checkpoint.js";
import { unpackCols } from "../formats/bitpack.js";
import { FORMATS, WriteOptions } from "../formats/registry.js";
import { CheckpointFormat, numGroups } from "../formats/types.js";
import { DType } from "../tensor/dtype.js";
import { toInt32 } from "../tensor/tensor.js";
import { GptqError } from "../util/errors.js";
import { assertSameWeights, layerShape, layerTensorNames, readLayer } from "./layers.js";
import { Rewrite, rewriteCheckpoint } from "./rewrite.js";

export interface ConvertResult {
  from: CheckpointFormat;
  to: CheckpointFormat;
  layers: number;
  /** layers whose dequantized weights were compared, source against the written output */
  verifiedLayers: number;
  tensorsCopied: number;
  shards: string[];
  filesCopied: string[];
}

export async function convertCheckpoint(
  input: string,
  output: string,
  to: CheckpointFormat,
): Promise<ConvertResult> {
  const ckpt = openCheckpoint(input);
  try {
    if (ckpt.format === "fp")
      throw new GptqError(`${input} is not quantized (no GPTQ or Marlin tensors); quantize it first`);
    const from = ckpt.format;
    if (from === to) throw new GptqError(`${input} is already ${to}; nothing to convert`);
    refuseImpossible(ckpt, to);
    const target = FORMATS[to];
    const rewrites: Rewrite[] = ckpt.layers.map((info) => {
      const shape = layerShape(ckpt, info);
      const opts = writeOptions(ckpt, info.name, to);
      return {
        consumes: layerTensorNames(ckpt.store, from, info.name),
        outputs: target.layout(shape, opts).map((t) => ({ ...t, name: `${info.name}.${t.suffix}` })),
        produce() {
          const layer = readLayer(ckpt.store, from, info.name, shape);
          const problem = target.layerProblem(layer);
          if (problem) throw new GptqError(`cannot convert layer ${info.name} to ${to}: ${problem}`);
          return new Map(target.write(layer, opts).map((t) => [`${info.name}.${t.suffix}`, t.data]));
        },
      };
    });
    const config = ckpt.config!;
    let verifiedLayers = 0;
    const r = await rewriteCheckpoint(input, output, ckpt.store, {
      rewrites,
      finish: (dir) =>
        writeQuantConfig(dir, {
          ...config,
          checkpointFormat: to,
          // Marlin files hold no g_idx; a static-groups act-order model is plain grouped once there
          descAct: to === "marlin" ? false : config.descAct,
        }),
      verify(dir) {
        const out = openCheckpoint(dir);
        try {
          const names = out.layers.map((l) => l.name).join();
          if (names !== ckpt.layers.map((l) => l.name).join())
            throw new GptqError("verification failed: the output's quantized layers differ from the input's");
          for (const info of ckpt.layers) {
            const shape = layerShape(ckpt, info);
            const a = readLayer(ckpt.store, from, info.name, shape);
            const b = readLayer(
              out.store,
              to,
              info.name,
              layerShape(
                out,
                out.layers.find((l) => l.name === info.name)!,
              ),
            );
            assertSameWeights(a, b, `layer ${info.name}`);
            verifiedLayers++;
          }
        } finally {
          out.close();
        }
      },
    });
    return {
      from,
      to,
      layers: ckpt.layers.length,
      verifiedLayers,
      tensorsCopied: r.tensorsCopied,
      shards: r.shards,
      filesCopied: r.filesCopied,
    };
  } finally {
    ckpt.close();
  }
}

/** Refuses, before anything is written, what the target format cannot hold, with the reason. */
function refuseImpossible(ckpt: Checkpoint, to: CheckpointFormat): void {
  const config = ckpt.config!;
  const target = FORMATS[to];
  for (const info of ckpt.layers) {
    const shape = layerShape(ckpt, info);
    const problem = target.schemeProblem(config, shape);
    if (problem) throw new GptqError(`cannot convert to ${to}: layer ${info.name}: ${problem}`);
    if (to === "marlin" && info.actOrder)
      throw new GptqError(
        `cannot convert to marlin: layer ${info.name} uses act-order (g_idx reorders rows), which Marlin files cannot hold; requantize with desc_act false or static_groups`,
      );
    if (to === "gptq" && ckpt.format === "gptq_v2" && !config.sym) {
      const G = numGroups(info.inFeatures, shape.groupSize);
      const zeros = unpackCols(
        toInt32(ckpt.store.read(`${info.name}.qzeros`)),
        G,
        info.outFeatures,
        info.bits,
      );
      const at = zeros.indexOf(0);
      if (at >= 0)
        throw new GptqError(
          `cannot convert to gptq (v1): layer ${info.name} has a zero point of 0 (group ${Math.floor(at / info.outFeatures)}, output ${at % info.outFeatures}), which v1 cannot store; keep gptq_v2`,
        );
    }
  }
}

/** GPTQ keeps the source's scale dtype (fp16, bf16 or fp32); Marlin stores fp16. */
function writeOptions(ckpt: Checkpoint, layer: string, to: CheckpointFormat): WriteOptions {
  if (to === "marlin") return {};
  const name = ckpt.store.has(`${layer}.scales`) ? `${layer}.scales` : `${layer}.s`;
  const dtype: DType = ckpt.store.info(name).dtype;
  return { scaleDtype: dtype === "BF16" || dtype === "F32" ? dtype : "F16" };
}
