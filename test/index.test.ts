import { test } from "node:test";
import assert from "node:assert/strict";
import * as gptq from "../src/index.js";

test("the package entry exposes each room's API, and it works end to end", () => {
  // a 4-bit layer quantized by RTN, packed as GPTQ v1, repacked to Marlin and back, all through the entry
  const N = 64;
  const K = 128;
  const W = Float32Array.from({ length: N * K }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 7)));
  const layer = gptq.quantizeRtn(W, N, K, { bits: 4, groupSize: 128, sym: true });
  const packed = gptq.packGptq(layer, "v1");
  const marlin = gptq.gptqToMarlin(packed, { inFeatures: K, outFeatures: N, bits: 4, groupSize: 128 }, "v1");
  const back = gptq.marlinToGptq(marlin, { inFeatures: K, outFeatures: N, groupSize: 128 }, "v1");
  assert.deepEqual(back.qweight, packed.qweight);
  assert.deepEqual(
    gptq.dequantize(gptq.unpackGptq(back, { inFeatures: K, outFeatures: N, bits: 4, groupSize: 128 }, "v1")),
    gptq.dequantize(layer),
  );
  assert.ok(gptq.KERNELS.some((k) => k.name === "marlin"));
  assert.equal(typeof gptq.DecoderModel.load, "function");
  assert.equal(typeof gptq.exportOnnx, "function");
});
