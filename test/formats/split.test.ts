import { test } from "node:test";
import assert from "node:assert/strict";
import { splitLayer, mergeLayers, splitStored, mergeStored, splitProblem } from "../../src/formats/split.js";
import { FORMATS, LayerTensor } from "../../src/formats/registry.js";
import { dequantize } from "../../src/formats/dequantize.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { CheckpointFormat } from "../../src/formats/types.js";
import { GptqError } from "../../src/util/errors.js";
import { randomLayer } from "./helpers.js";

const bySuffix = (ts: LayerTensor[]) => (s: string) => ts.find((t) => t.suffix === s) as Tensor | undefined;

test("split parts dequantize to the whole's rows (nn.Linear outputs), merge restores it", () => {
  const layer = randomLayer({
    K: 128,
    N: 96,
    bits: 3,
    groupSize: 48,
    zeros: "asym0",
    actOrder: true,
    seed: 5,
  });
  layer.bias = Float32Array.from({ length: 96 }, (_, i) => i / 7);
  const W = dequantize(layer);
  const parts = splitLayer(layer, [32, 64]);
  let row = 0;
  for (const p of parts) {
    const Wp = dequantize(p);
    assert.deepEqual(Wp, W.subarray(row * 128, (row + p.outFeatures) * 128));
    assert.deepEqual(p.bias, layer.bias.subarray(row, row + p.outFeatures));
    row += p.outFeatures;
  }
  assert.deepEqual(mergeLayers(parts), layer);
});

const stored: [CheckpointFormat, 2 | 3 | 4 | 8, number, number[], "sym" | "asym" | "asym0"][] = [
  ["gptq", 4, 128, [16, 64, 48], "asym"],
  ["gptq_v2", 2, 128, [32, 96], "asym0"],
  ["gptq_v2", 3, 128, [64, 64], "asym0"],
  ["gptq", 8, 128, [4, 124], "asym"],
  ["marlin", 4, 192, [64, 128], "sym"],
];
for (const [format, bits, N, sizes, zeros] of stored)
  test(`${format} ${bits}-bit: splitStored / mergeStored round trip on stored tensors`, () => {
    const layer = randomLayer({ K: 256, N, bits, groupSize: 128, zeros, seed: N + bits });
    const traits = FORMATS[format];
    const whole = traits.write(layer);
    const shape = { inFeatures: 256, outFeatures: N, bits, groupSize: 128 };
    const parts = splitStored(format, { get: bySuffix(whole), shape }, sizes);
    const W = dequantize(layer);
    let row = 0;
    const asStored = parts.map((p, i) => ({ get: bySuffix(p), shape: { ...shape, outFeatures: sizes[i] } }));
    asStored.forEach((p, i) => {
      const Wp = dequantize(traits.read(p.get, p.shape));
      assert.deepEqual(Wp, W.subarray(row * 256, (row + sizes[i]) * 256));
      row += sizes[i];
    });
    const merged = mergeStored(format, asStored);
    for (const t of whole) assert.deepEqual(bySuffix(merged)(t.suffix)?.data, t.data, t.suffix);
  });

test("split points that cut a packed word or Marlin block are refused", () => {
  assert.match(splitProblem("gptq", 4, 96, [36, 60]) ?? "", /split point 36 is not a multiple of 8.*qzeros/);
  assert.match(splitProblem("gptq_v2", 3, 96, [48, 48]) ?? "", /not a multiple of 32/);
  assert.match(splitProblem("gptq", 2, 96, [8, 88]) ?? "", /not a multiple of 16/);
  assert.match(splitProblem("marlin", 4, 192, [32, 160]) ?? "", /not a multiple of 64.*Marlin/);
  assert.match(splitProblem("gptq", 4, 96, [32, 32]) ?? "", /add up to 64, but the layer has 96/);
  assert.match(splitProblem("gptq", 4, 96, [0, 96]) ?? "", /not a positive integer/);
  assert.equal(splitProblem("gptq", 8, 96, [4, 92]), undefined);
  const layer = randomLayer({ K: 64, N: 96, bits: 4, groupSize: 32 });
  const get = bySuffix(FORMATS.gptq.write(layer));
  assert.throws(
    () => splitStored("gptq", { get, shape: layer }, [36, 60]),
    (e: Error) => e instanceof GptqError && /cannot split: split point 36/.test(e.message),
  );
});

test("merge refuses parts that differ in in_features, bits, group size or g_idx", () => {
  const a = randomLayer({ K: 64, N: 32, bits: 4, groupSize: 32 });
  const cases: [ReturnType<typeof randomLayer>, RegExp][] = [
    [randomLayer({ K: 128, N: 32, bits: 4, groupSize: 32 }), /part 2 has in_features 128, part 1 has 64/],
    [randomLayer({ K: 64, N: 32, bits: 8, groupSize: 32 }), /part 2 has bits 8, part 1 has 4/],
    [randomLayer({ K: 64, N: 32, bits: 4, groupSize: 16 }), /part 2 has group size 16, part 1 has 32/],
    [randomLayer({ K: 64, N: 32, bits: 4, groupSize: 32, actOrder: true, seed: 4 }), /g_idx\[\d+\]/],
  ];
  for (const [b, re] of cases) assert.throws(() => mergeLayers([a, b]), re);
});
