/** Model configs the tests share. */
import { parseModelConfig } from "../../src/model/config.js";
import { PipelineOptions } from "../../src/pipeline/quantize-model.js";
import { QUALITY_PRESETS } from "../../src/pipeline/presets.js";

/** stories260K's shapes (hidden 64, intermediate 172, 8 heads over 4 kv heads of 8) in one layer. */
export const STORIES_CONFIG = parseModelConfig({
  model_type: "llama",
  hidden_size: 64,
  intermediate_size: 172,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  head_dim: 8,
  num_hidden_layers: 1,
  vocab_size: 32,
});

/**
 * Plain GPTQ (AutoGPTQ's defaults: 4-bit, group 128, symmetric, min/max ranges: the fast preset), every
 * option given so no preset fills any in; tests override a field or two.
 */
export const PLAIN_GPTQ: PipelineOptions = {
  method: "gptq",
  bits: 4,
  groupSize: 128,
  sym: true,
  descAct: false,
  staticGroups: false,
  damp: 0.01,
  ...QUALITY_PRESETS.fast.options,
};
