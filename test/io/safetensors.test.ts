import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SafetensorsFile, writeSafetensors, readAllTensors } from "../../src/io/safetensors.js";
import { TensorStore, writeCheckpointTensors } from "../../src/io/store.js";
import { floatToHalf, halfToFloat, floatsToBf16s, bf16sToFloats } from "../../src/tensor/dtype.js";
import { sharedPath, skipUnlessShared } from "../helpers/shared.js";

function tmp(): string {
  return mkdtempSync(join(tmpdir(), "gptq-st-"));
}

test("round-trips every dtype through a file", () => {
  const dir = tmp();
  try {
    const p = join(dir, "a.safetensors");
    const entries = [
      { name: "f32", dtype: "F32" as const, shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, -6.5]) },
      { name: "f16", dtype: "F16" as const, shape: [2], data: new Uint16Array([0x3c00, 0xc000]) },
      { name: "i64", dtype: "I64" as const, shape: [2], data: new BigInt64Array([1n, -(2n ** 40n)]) },
      { name: "i8", dtype: "I8" as const, shape: [3], data: new Int8Array([-128, 0, 127]) },
      { name: "b", dtype: "BOOL" as const, shape: [1], data: new Uint8Array([1]) },
      { name: "empty", dtype: "I32" as const, shape: [0, 4], data: new Int32Array(0) },
    ];
    writeSafetensors(p, entries, { format: "pt" });
    assert.deepEqual(readdirSync(dir), ["a.safetensors"], "no temporary file left behind");
    const { tensors, metadata } = readAllTensors(p);
    assert.equal(metadata.format, "pt");
    for (const e of entries) {
      const t = tensors.get(e.name)!;
      assert.equal(t.dtype, e.dtype);
      assert.deepEqual(t.shape, e.shape);
      assert.deepEqual([...t.data], [...e.data]);
    }
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test("fp16 and bf16 conversions round to nearest even", () => {
  assert.equal(floatToHalf(1), 0x3c00);
  assert.equal(floatToHalf(65504), 0x7bff);
  assert.equal(floatToHalf(65520), 0x7c00); // rounds up to infinity
  assert.equal(floatToHalf(2 ** -24), 1); // smallest subnormal
  assert.equal(floatToHalf(2 ** -25), 0); // ties to even -> 0
  assert.equal(floatToHalf(1 + 2 ** -11), 0x3c00); // tie -> even
  assert.equal(floatToHalf(1 + 3 * 2 ** -11), 0x3c02);
  for (let h = 0; h < 0x7c00; h += 7) assert.equal(floatToHalf(halfToFloat(h)), h);
  const bf = floatsToBf16s(new Float32Array([1, -2.5, 3.1415927]));
  assert.deepEqual([...bf16sToFloats(bf)], [1, -2.5, 3.140625]);
});

test("sharded writes produce an index that the store reads back", () => {
  const dir = tmp();
  try {
    const entries = Array.from({ length: 5 }, (_, i) => ({
      name: `layer.${i}.weight`,
      dtype: "F32" as const,
      shape: [256],
      data: () => new Float32Array(256).fill(i),
    }));
    const shards = writeCheckpointTensors(dir, entries, { maxShardBytes: 2048 });
    assert.equal(shards.length, 3);
    const store = TensorStore.open(dir);
    assert.equal(store.names().length, 5);
    assert.equal((store.read("layer.3.weight").data as Float32Array)[7], 3);
    store.close();
    rmSync(join(dir, shards[1]));
    assert.throws(() => TensorStore.open(dir), /shard model-00002-of-00003.safetensors is missing/);
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test(
  "reads the reference fixtures",
  { skip: skipUnlessShared("fixtures", "public-gptq-pack.safetensors") },
  () => {
    const f = SafetensorsFile.open(sharedPath("fixtures", "public-gptq-pack.safetensors"));
    const cases = JSON.parse(f.metadata.cases) as { name: string }[];
    assert.equal(cases.length, 24);
    const t = f.read(`${cases[0].name}/out.qweight`);
    assert.equal(t.dtype, "I32");
    f.close();
  },
);

test("rejects a header whose length runs past the end", () => {
  const dir = tmp();
  try {
    const p = join(dir, "bad.safetensors");
    const b = Buffer.alloc(16);
    b.writeBigUInt64LE(1000n, 0);
    writeFileSync(p, b);
    assert.throws(() => SafetensorsFile.open(p), /header length 1000 runs past the end/);
  } finally {
    rmSync(dir, { recursive: true });
  }
});
