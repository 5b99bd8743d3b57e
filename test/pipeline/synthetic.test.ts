import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { TensorStore } from "../../src/io/store.js";
import { SCALE_SPECS, SyntheticSpec, writeSyntheticLlama } from "../../src/pipeline/synthetic.js";
import { halfToFloat } from "../../src/tensor/dtype.js";
import { toFloat32 } from "../../src/tensor/tensor.js";
import { tmpDir } from "../helpers/checkpoints.js";

const SPEC: SyntheticSpec = {
  hiddenSize: 64,
  intermediateSize: 160,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  vocabSize: 96,
  seed: 5,
};

test("the synthetic model writes the same values in fp16 and in shards, streamed tensor by tensor", () => {
  const dir = tmpDir("synthetic");
  try {
    writeSyntheticLlama(join(dir, "f32"), SPEC);
    writeSyntheticLlama(join(dir, "f16"), SPEC, { dtype: "F16", maxShardBytes: 40_000 });
    const a = TensorStore.open(join(dir, "f32"));
    const b = TensorStore.open(join(dir, "f16"));
    try {
      assert.ok(existsSync(join(dir, "f16", "model.safetensors.index.json")), "sharded with an index");
      assert.ok(b.names().length > 0 && b.names().length === a.names().length);
      for (const name of a.names()) {
        const x = toFloat32(a.read(name));
        const t = b.read(name);
        assert.equal(t.dtype, "F16", name);
        assert.deepEqual(t.shape, a.read(name).shape, name);
        const y = new Uint16Array(t.data.buffer, t.data.byteOffset, t.data.length);
        for (let i = 0; i < x.length; i++) {
          const want = x[i];
          assert.ok(
            Math.abs(halfToFloat(y[i]) - want) <= Math.abs(want) * 2 ** -10 + 2 ** -24,
            `${name}[${i}]`,
          );
        }
      }
    } finally {
      a.close();
      b.close();
    }
    const cfg = JSON.parse(readFileSync(join(dir, "f16", "config.json"), "utf8"));
    assert.equal(cfg.torch_dtype, "float16");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the scale presets have Llama-2 7B's and 13B's shapes", () => {
  const s7 = SCALE_SPECS["llama2-7b"];
  const s13 = SCALE_SPECS["llama2-13b"];
  const params = (s: SyntheticSpec) =>
    2 * s.vocabSize * s.hiddenSize +
    s.numLayers * (4 * s.hiddenSize ** 2 + 3 * s.hiddenSize * s.intermediateSize);
  assert.ok(Math.abs(params(s7) / 6.74e9 - 1) < 0.01, `${params(s7)}`);
  assert.ok(Math.abs(params(s13) / 13.0e9 - 1) < 0.01, `${params(s13)}`);
});
