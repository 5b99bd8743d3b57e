/**
 * scanNonFinite on several threads against storedNonFinite one tensor at a time: the same problem text for
 * every tensor (NaN and ±Inf in F32, F16 and BF16, integer tensors skipped), and a file cut short named.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, truncateSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { scanNonFinite } from "../../src/io/finite-scan.js";
import { storedNonFinite } from "../../src/io/finite.js";
import { TensorEntry } from "../../src/io/safetensors.js";
import { TensorStore, writeCheckpointTensors } from "../../src/io/store.js";
import { floatsToBf16s, floatsToHalfs } from "../../src/tensor/dtype.js";

function entries(): TensorEntry[] {
  const f = (n: number, s: number, bad?: [number, number]) => {
    const x = Float32Array.from({ length: n }, (_, i) => Math.sin(i + s));
    if (bad) x[bad[0]] = bad[1];
    return x;
  };
  return [
    { name: "a", dtype: "F32", shape: [300, 70], data: f(21000, 1) },
    { name: "b", dtype: "F32", shape: [300, 70], data: f(21000, 2, [20999, NaN]) },
    { name: "c", dtype: "F16", shape: [64, 33], data: floatsToHalfs(f(2112, 3, [700, Infinity])) },
    { name: "d", dtype: "BF16", shape: [64, 33], data: floatsToBf16s(f(2112, 4, [0, -Infinity])) },
    { name: "e", dtype: "I32", shape: [8], data: Int32Array.from({ length: 8 }, (_, i) => i) },
    { name: "f", dtype: "F16", shape: [5000], data: floatsToHalfs(f(5000, 5)) },
  ];
}

test("scanNonFinite on threads finds what storedNonFinite finds, tensor by tensor", () => {
  const dir = mkdtempSync(join(tmpdir(), "gptq-scan-"));
  try {
    writeCheckpointTensors(dir, entries(), { maxShardBytes: 40000 });
    const store = TensorStore.open(dir);
    try {
      const names = entries().map((e) => e.name);
      const what = (n: string) => `tensor ${n}`;
      const serial = names.map((n) => {
        const problem = storedNonFinite(store, n, what(n));
        return problem ? { problem, unreadable: false } : undefined;
      });
      assert.equal(serial.filter((p) => p).length, 3);
      let last = 0;
      const onBytes = (done: number) => {
        assert.ok(done >= last);
        last = done;
      };
      for (const threads of [1, 2, 5]) {
        last = 0;
        assert.deepEqual(scanNonFinite(store, names, what, { threads, parallelFrom: 0, onBytes }), serial);
        assert.ok(last > 0);
      }
    } finally {
      store.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("scanNonFinite names the file and the tensor a file cut short ends in", () => {
  const dir = mkdtempSync(join(tmpdir(), "gptq-scan-"));
  try {
    writeCheckpointTensors(dir, entries());
    const store = TensorStore.open(dir);
    try {
      truncateSync(join(dir, "model.safetensors"), 1000);
      for (const threads of [1, 3]) {
        const got = scanNonFinite(store, ["a", "f"], undefined, { threads, parallelFrom: 0 });
        for (const [i, n] of ["a", "f"].entries()) {
          assert.equal(got[i]?.unreadable, true);
          assert.match(
            got[i]!.problem,
            new RegExp(`model\\.safetensors: file ends at byte \\d+ inside tensor "${n}"`),
          );
        }
      }
    } finally {
      store.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
