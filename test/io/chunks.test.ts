import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SafetensorsFile, writeSafetensors, readAllTensors } from "../../src/io/safetensors.js";

test("a tensor copied in chunks from another file arrives byte for byte; a short source is refused", () => {
  const dir = mkdtempSync(join(tmpdir(), "gptq-chunks-"));
  try {
    const data = Int32Array.from({ length: 10007 }, (_, i) => i * 2654435761);
    writeSafetensors(join(dir, "a.safetensors"), [
      { name: "x", dtype: "I32", shape: [10007], data },
      { name: "e", dtype: "F32", shape: [0], data: new Float32Array(0) },
    ]);
    const src = SafetensorsFile.open(join(dir, "a.safetensors"));
    const pieces = [...src.readChunks("x", 1000)].map((c) => c.byteLength);
    assert.deepEqual(pieces, [...new Array<number>(40).fill(1000), 28]);
    writeSafetensors(join(dir, "b.safetensors"), [
      { name: "y", dtype: "I32", shape: [10007], data: { chunks: () => src.readChunks("x", 4096) } },
      { name: "e", dtype: "F32", shape: [0], data: { chunks: () => src.readChunks("e") } },
    ]);
    assert.deepEqual(readAllTensors(join(dir, "b.safetensors")).tensors.get("y")!.data, data);
    assert.throws(
      () =>
        writeSafetensors(join(dir, "c.safetensors"), [
          { name: "y", dtype: "I32", shape: [10008], data: { chunks: () => src.readChunks("x") } },
        ]),
      /40028 bytes given for I32\[10008\]/,
    );
    src.close();
    assert.deepEqual(readdirSync(dir).sort(), ["a.safetensors", "b.safetensors"], "nothing left behind");
  } finally {
    rmSync(dir, { recursive: true });
  }
});
