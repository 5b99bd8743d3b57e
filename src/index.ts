/**
 * gptq-ts as a library: the public surface of each room (io, formats, kernels, quant, model, backends,
 * transform, export, pipeline).
 * The CLI (`src/cli/`) is a thin layer over exactly these.
 */

// io: safetensors files, sharded stores, checkpoint directories and their config files
export { SafetensorsFile, writeSafetensors, readAllTensors } from "./io/safetensors.js";
export type { TensorInfo, TensorEntry } from "./io/safetensors.js";
export { TensorStore, writeCheckpointTensors } from "./io/store.js";
export { openCheckpoint, detectFormat, listQuantizedLayers, listLinearWeights } from "./io/checkpoint.js";
export type { Checkpoint, QuantizedLayerInfo, LinearWeightInfo } from "./io/checkpoint.js";
export { readQuantConfig, writeQuantConfig } from "./io/quant-config.js";
export type { QuantConfig } from "./io/quant-config.js";

// formats: GPTQ v1/v2 and Marlin, one registry
export * from "./formats/types.js";
export { FORMATS, formatTraits, detectLayers, resolveFormat } from "./formats/registry.js";
export type { FormatTraits } from "./formats/registry.js";
export { packGptq, unpackGptq, qzerosV1ToV2, qzerosV2ToV1 } from "./formats/gptq.js";
export { packMarlin, unpackMarlin } from "./formats/marlin.js";
export { gptqToMarlin, marlinToGptq } from "./formats/repack.js";
export { dequantize, dequantizeAs } from "./formats/dequantize.js";
export { splitLayer, mergeLayers } from "./formats/split.js";

// whole-checkpoint rewrites behind convert / dequantize / split / merge / pad
export { convertCheckpoint } from "./transform/convert.js";
export { dequantizeCheckpoint } from "./transform/dequantize.js";
export { splitCheckpoint, mergeCheckpoint } from "./transform/split.js";
export { padCheckpoint } from "./transform/pad.js";
export { verifyCheckpoint } from "./transform/verify.js";
export { exportOnnx } from "./export/onnx-export.js";
export type { OnnxExportOptions, OnnxExportResult } from "./export/onnx-export.js";
export type { VerifyReport, VerifyProblem } from "./transform/verify.js";

// kernels: every kernel's compatibility rules, queried by `check` and by our dispatch
export type { KernelRule, KernelQuery, KernelVerdict, DeviceCapability } from "./kernels/types.js";
export { KERNELS, registerKernel, findKernel, checkKernel } from "./kernels/registry.js";
export { canRun, layerQuery } from "./kernels/can-run.js";
export { checkLayers } from "./kernels/check.js";

// quant: RTN, GPTQ and the Hessian they share
export * from "./quant/index.js";

// pipeline: calibration, the layer-by-layer driver, checkpoint in -> quantized checkpoint out
export { quantizeCheckpoint } from "./pipeline/quantize-checkpoint.js";
export type { QuantizeRequest, QuantizeResult } from "./pipeline/quantize-checkpoint.js";
// quality presets: quantizeCheckpoint's `preset` (default balanced), or resolveQuality for quantizeModel
export { QUALITY_PRESETS, DEFAULT_PRESET, PRESET_NAMES, resolveQuality } from "./pipeline/presets.js";
export type { QualityPreset, QualityOptions, QuantizeOptions } from "./pipeline/presets.js";
export { quantizeModel, TOKENS_PER_INPUT } from "./pipeline/quantize-model.js";
export type { PipelineOptions } from "./pipeline/quantize-model.js";

// model: the model-family table, the decoder forward, perplexity, padding plans, tokenizer
export { DecoderModel, DecoderLayer } from "./model/decoder.js";
export { perplexity } from "./model/perplexity.js";
export { planPadding } from "./model/pad-plan.js";
export { Tokenizer } from "./model/tokenizer.js";

// backends: CPU linears (the CUDA backend loads its driver lazily: import src/backend/cuda/* directly)
export { DenseLinear } from "./backend/cpu/linear.js";
export type { Linear } from "./backend/cpu/linear.js";
export { QuantLinear } from "./backend/cpu/quant-linear.js";
export { A8W4Linear } from "./backend/cpu/a8w4.js";

export { GptqError } from "./util/errors.js";
