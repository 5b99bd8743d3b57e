// The model on the GPU: stories260K with RTN 4-bit projections gives the CPU's perplexity through our
// CUDA kernels. Runs where a GPU and ../shared are present (node --test dist/test/model/cuda.test.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { CudaDevice } from "../../src/backend/cuda/device.js";
import { moveToCuda } from "../../src/model/cuda.js";
import { DenseLinear, QuantLinear } from "../../src/backend/cpu/linear.js";
import { DecoderModel } from "../../src/model/decoder.js";
import { LLAMA_LINEARS } from "../../src/model/families/llama.js";
import { perplexity } from "../../src/model/perplexity.js";
import { quantizeRtn } from "../../src/quant/rtn.js";
import { readTokenRows } from "../../src/pipeline/calibration.js";
import { sharedPath, skipUnlessShared } from "../helpers/shared.js";

/** the projections of a Llama decoder layer, in true-sequential order */
const LINEAR_NAMES = LLAMA_LINEARS.map((l) => l.name);

const noGpu = CudaDevice.available()
  ? false
  : "SKIPPED: no CUDA device (the CUDA tests run on a GPU machine)";
if (noGpu) console.warn(noGpu);
const skip = noGpu || skipUnlessShared("models", "stories260K", "model.safetensors");

function quantizedModel(): DecoderModel {
  const model = DecoderModel.load(sharedPath("models", "stories260K"));
  for (const layer of model.layers)
    for (const name of LINEAR_NAMES) {
      const d = layer.linears[name] as DenseLinear;
      layer.linears[name] = new QuantLinear(
        quantizeRtn(d.weight, d.outFeatures, d.inFeatures, { bits: 4, groupSize: 32, sym: true }),
      );
    }
  return model;
}

test("stories260K 4-bit: perplexity on CUDA matches the CPU within 1e-3 relative", { skip }, () => {
  const { rows } = readTokenRows(sharedPath("models", "stories260K-eval.safetensors"), "evaluation_tokens");
  const seqs = rows.slice(0, 8);
  const model = quantizedModel();
  const cpu = perplexity(model, seqs);
  const placed = moveToCuda(model);
  // K = 172 (down_proj) packs for no kernel: it stays on the CPU and says so
  assert.equal(placed.kernels["gptq-ts-w4a16"], 30);
  assert.equal(placed.onCpu.length, 5);
  assert.match(placed.onCpu[0].reason, /in_features 172/);
  const gpu = perplexity(model, seqs);
  assert.equal(gpu.tokens, cpu.tokens);
  assert.ok(Math.abs(gpu.ppl - cpu.ppl) / cpu.ppl < 1e-3, `cuda ${gpu.ppl} vs cpu ${cpu.ppl}`);
});
