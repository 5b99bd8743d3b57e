/** Model configs the tests share. */
import { parseLlamaConfig } from "../../src/model/config.js";

/** stories260K's shapes (hidden 64, intermediate 172, 8 heads over 4 kv heads of 8) in one layer. */
export const STORIES_CONFIG = parseLlamaConfig({
  model_type: "llama",
  hidden_size: 64,
  intermediate_size: 172,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  head_dim: 8,
  num_hidden_layers: 1,
  vocab_size: 32,
});
