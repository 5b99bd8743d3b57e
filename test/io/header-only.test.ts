/** inspect and check read tensor headers, g_idx and one layer's qzeros: nothing else, whatever the model's size. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs, { rmSync, statSync } from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import { join } from "node:path";
import { openCheckpoint } from "../../src/io/checkpoint.js";
import { checkLayers } from "../../src/kernels/check.js";
import { KERNELS } from "../../src/kernels/registry.js";
import { gptqEntries, llamaLayers, tmpDir, writeCheckpointDir } from "../helpers/checkpoints.js";

test("openCheckpoint + checkLayers on a 14B-shaped block read only headers, g_idx and one qzeros", () => {
  const root = tmpDir("header-only");
  const realRead = fs.readSync;
  try {
    const layers = llamaLayers(0, 5120, 13696);
    const dir = writeCheckpointDir(
      join(root, "q"),
      layers.flatMap((l) => gptqEntries(l, { bits: 4, groupSize: 128, sym: true, version: "v1" })),
      { "quantize_config.json": { bits: 4, group_size: 128, sym: true, desc_act: false } },
    );
    const fileSize = statSync(join(dir, "model.safetensors")).size;
    let bytesRead = 0;
    // Count every positioned read the reader makes (node:fs named imports follow after the sync).
    fs.readSync = ((...args: Parameters<typeof fs.readSync>) => {
      const n = realRead(...args);
      bytesRead += n;
      return n;
    }) as typeof fs.readSync;
    syncBuiltinESMExports();
    const ck = openCheckpoint(dir);
    const headerBytes = ck.store.files[0].tensors.values().next().value!.start;
    const reports = checkLayers(ck.layers, { bits: 4, groupSize: 128, sym: true }, KERNELS, 2);
    ck.close();
    fs.readSync = realRead;
    syncBuiltinESMExports();
    assert.equal(reports.length, 7);
    const gIdx = layers.reduce((s, l) => s + l.K * 4, 0);
    const firstQzeros = (13696 / 128) * ((5120 * 4) / 32) * 4; // down_proj sorts first
    assert.equal(bytesRead, headerBytes + gIdx + firstQzeros);
    assert.ok(bytesRead < fileSize / 100, `${bytesRead} of ${fileSize} bytes`);
  } finally {
    fs.readSync = realRead;
    syncBuiltinESMExports();
    rmSync(root, { recursive: true, force: true });
  }
});
