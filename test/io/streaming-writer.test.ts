import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TensorEntry } from "../../src/io/safetensors.js";
import { StreamingCheckpointWriter, TensorStore, writeCheckpointTensors } from "../../src/io/store.js";

function entries(): TensorEntry[] {
  const f = (n: number, s: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i + s));
  return [
    { name: "a.weight", dtype: "F32", shape: [4, 8], data: f(32, 1) },
    {
      name: "b.qweight",
      dtype: "I32",
      shape: [2, 8],
      data: Int32Array.from({ length: 16 }, (_, i) => i * 77 - 300),
    },
    {
      name: "b.scales",
      dtype: "F16",
      shape: [3, 8],
      data: Uint16Array.from({ length: 24 }, (_, i) => 0x3c00 + i),
    },
    { name: "c.weight", dtype: "F32", shape: [5, 7], data: f(35, 2) },
  ];
}

const files = (dir: string) =>
  Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f))]));

test("the streaming writer, fed tensors in any order, writes the same shards and index as writeCheckpointTensors", () => {
  const root = mkdtempSync(join(tmpdir(), "gptq-stream-"));
  try {
    for (const maxShardBytes of [undefined, 150]) {
      const ref = join(root, `ref-${maxShardBytes}`);
      const got = join(root, `got-${maxShardBytes}`);
      for (const d of [ref, got]) rmSync(d, { recursive: true, force: true });
      makeDir(ref);
      makeDir(got);
      const opts = { maxShardBytes, metadata: { source: "test" } };
      const names = writeCheckpointTensors(ref, entries(), opts);
      const w = new StreamingCheckpointWriter(got, entries(), opts);
      for (const e of entries().reverse()) w.write(e.name, e.data as Float32Array);
      assert.deepEqual(w.finish(), names);
      assert.equal(names.length, maxShardBytes ? 3 : 1, "the small shard size splits the checkpoint");
      assert.deepEqual(files(got), files(ref));
      const store = TensorStore.open(got);
      assert.deepEqual(
        [...(store.read("c.weight").data as Float32Array)],
        [...(entries()[3].data as Float32Array)],
      );
      store.close();
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("the streaming writer refuses unknown, repeated, wrongly sized and missing tensors", () => {
  const dir = mkdtempSync(join(tmpdir(), "gptq-stream-bad-"));
  try {
    const e = entries();
    const w = new StreamingCheckpointWriter(dir, e);
    assert.throws(() => w.write("z.weight", new Float32Array(1)), /no tensor "z.weight" was planned/);
    assert.throws(() => w.write("a.weight", new Float32Array(31)), /"a.weight": 124 bytes given for 128/);
    w.write("a.weight", e[0].data as Float32Array);
    assert.throws(() => w.write("a.weight", e[0].data as Float32Array), /"a.weight" written twice/);
    w.write("b.qweight", e[1].data as Int32Array);
    w.write("c.weight", e[3].data as Float32Array);
    assert.throws(() => w.finish(), /tensor "b.scales" was never written/);
    w.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function makeDir(d: string): void {
  mkdirSync(d, { recursive: true });
}
