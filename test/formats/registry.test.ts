// Every registered format: layout() announces exactly what write() produces, and read(write(x)) = x.
import { test } from "node:test";
import assert from "node:assert/strict";
import { FORMATS, formatTraits, LayerTensor } from "../../src/formats/registry.js";
import { dequantize } from "../../src/formats/dequantize.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { bf16sToFloats, floatsToBf16s } from "../../src/tensor/dtype.js";
import { randomLayer } from "./helpers.js";

for (const traits of Object.values(FORMATS))
  for (const scaleDtype of traits.name === "marlin" ? [undefined] : (["F16", "BF16", "F32"] as const))
    test(`${traits.name}${scaleDtype ? ` (${scaleDtype} scales)` : ""}: layout matches write, read inverts it`, () => {
      const layer = randomLayer({ K: 256, N: 128, bits: 4, groupSize: 128, zeros: "sym", seed: 2 });
      // scales both fp16 and bf16 can hold, so every scale dtype stores them exactly
      if (scaleDtype === "BF16") layer.scales = bf16sToFloats(floatsToBf16s(layer.scales));
      const opts = scaleDtype ? { scaleDtype } : {};
      const written = traits.write(layer, opts);
      assert.deepEqual(
        written.map(({ suffix, dtype, shape }) => ({ suffix, dtype, shape })),
        traits.layout(layer, opts),
      );
      for (const s of traits.suffixes)
        assert.ok(
          written.some((t) => t.suffix === s),
          s,
        );
      const get = (s: string) => written.find((t: LayerTensor) => t.suffix === s) as Tensor | undefined;
      const back = traits.read(get, layer);
      assert.deepEqual(dequantize(back), dequantize(layer));
      assert.equal(traits.layerProblem(layer), undefined);
    });

test("formatTraits names the known formats when asked for another", () => {
  assert.equal(formatTraits("marlin").name, "marlin");
  assert.throws(() => formatTraits("awq"), /unknown format "awq"; known: gptq, gptq_v2, marlin/);
});

test("read reports a tensor of the wrong shape or a missing one", () => {
  const layer = randomLayer({ K: 256, N: 128, bits: 4, groupSize: 128, zeros: "sym" });
  const written = FORMATS.gptq.write(layer);
  const get = (s: string) => written.find((t) => t.suffix === s) as Tensor | undefined;
  assert.throws(
    () => FORMATS.gptq.read(get, { ...layer, groupSize: 64 }),
    /qzeros is \[2,16\], expected \[4,16\]/,
  );
  assert.throws(() => FORMATS.gptq.read((s) => (s === "qzeros" ? undefined : get(s)), layer), /no "qzeros"/);
  assert.throws(() => FORMATS.marlin.read(get, layer), /no "B" tensor/);
});
