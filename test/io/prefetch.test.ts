/**
 * Reading ahead: tensors prefetched on the reader thread come back as a plain read gives them (any dtype,
 * several shards), a later prefetch replaces an earlier one's untaken tensors, and a file cut short after
 * the request fails the read with the file's name.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, truncateSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Prefetcher } from "../../src/io/prefetch.js";
import { TensorEntry } from "../../src/io/safetensors.js";
import { TensorStore, writeCheckpointTensors } from "../../src/io/store.js";

function entries(): TensorEntry[] {
  const f = (n: number, s: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i + s));
  return [
    { name: "a.weight", dtype: "F32", shape: [40, 80], data: f(3200, 1) },
    {
      name: "b.weight",
      dtype: "F16",
      shape: [3, 8],
      data: Uint16Array.from({ length: 24 }, (_, i) => 0x3c00 + i),
    },
    {
      name: "c.qweight",
      dtype: "I32",
      shape: [2, 8],
      data: Int32Array.from({ length: 16 }, (_, i) => i * 77 - 300),
    },
    { name: "d.weight", dtype: "F32", shape: [5, 7], data: f(35, 2) },
  ];
}

function withCheckpoint(maxShardBytes: number | undefined, fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), "gptq-prefetch-"));
  try {
    writeCheckpointTensors(dir, entries(), { maxShardBytes });
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("prefetched tensors read back as a plain read gives them, from one shard or several", () => {
  for (const maxShardBytes of [undefined, 200])
    withCheckpoint(maxShardBytes, (dir) => {
      const plain = TensorStore.open(dir);
      const ahead = TensorStore.open(dir);
      try {
        const names = entries().map((e) => e.name);
        ahead.prefetch(names);
        for (const name of names) assert.deepEqual(ahead.read(name), plain.read(name), name);
        // taken once: a second read goes to the file again, with the same result
        assert.deepEqual(ahead.read("a.weight"), plain.read("a.weight"));
      } finally {
        plain.close();
        ahead.close();
      }
    });
});

test("a later prefetch replaces the untaken tensors of an earlier one", () => {
  withCheckpoint(undefined, (dir) => {
    const ahead = new Prefetcher();
    try {
      const path = join(dir, "model.safetensors");
      ahead.request("a", path, 0, 8);
      ahead.request("b", path, 8, 8);
      assert.deepEqual(ahead.take("a"), new Uint8Array(readFileSync(path).subarray(0, 8)));
      ahead.forget();
      assert.equal(ahead.has("b"), false);
      assert.equal(ahead.take("b"), undefined);
    } finally {
      ahead.close();
    }
  });
});

test("a file cut short after the prefetch fails the read, naming the file", () => {
  withCheckpoint(undefined, (dir) => {
    const store = TensorStore.open(dir);
    try {
      truncateSync(join(dir, "model.safetensors"), 100);
      store.prefetch(["d.weight"]);
      assert.throws(
        () => store.read("d.weight"),
        /model\.safetensors: read failed at byte \d+: file ends at byte/,
      );
    } finally {
      store.close();
    }
  });
});
