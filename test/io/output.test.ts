// The checks a writing command makes on its output before any work (src/io/output.ts), and the
// free-space estimate of `quantize` against what it then writes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  checkOutputDir,
  checkWritableDir,
  formatBytes,
  freeBytes,
  tensorFileBytes,
} from "../../src/io/output.js";
import { treeBytes } from "../../src/io/atomic.js";
import { writeSyntheticLlama } from "../../src/pipeline/synthetic.js";
import { quantizeCheckpoint } from "../../src/pipeline/quantize-checkpoint.js";
import { quantizedCheckpointBytes } from "../../src/pipeline/write-quantized.js";
import { PLAIN_GPTQ } from "../helpers/configs.js";

function withRoot(f: (root: string) => void | Promise<void>) {
  return async () => {
    const root = mkdtempSync(join(tmpdir(), "gptq-output-"));
    try {
      await f(root);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  };
}

test(
  "checkOutputDir accepts an absent or empty folder, also under folders still to create",
  withRoot((root) => {
    checkOutputDir(join(root, "new"));
    checkOutputDir(join(root, "a", "b", "new"), 1000);
    mkdirSync(join(root, "empty"));
    checkOutputDir(join(root, "empty"));
    assert.deepEqual(readdirSync(root), ["empty"], "a check creates nothing");
  }),
);

test(
  "checkOutputDir refuses a non-empty folder, a file, and a path under a file (ENOTDIR), in one line",
  withRoot((root) => {
    mkdirSync(join(root, "full"));
    writeFileSync(join(root, "full", "x"), "x");
    writeFileSync(join(root, "file"), "x");
    assert.throws(
      () => checkOutputDir(join(root, "full")),
      /^GptqError: output .*full already exists and is not empty/,
    );
    assert.throws(() => checkOutputDir(join(root, "file")), /output .*file is a file; choose a new folder/);
    assert.throws(
      () => checkOutputDir(join(root, "file", "sub", "out")),
      (e: Error) => {
        assert.match(e.message, /^cannot write .*file\/sub\/out: .*file is a file, not a folder \(ENOTDIR\)/);
        assert.ok(!e.message.includes("\n"));
        return true;
      },
    );
  }),
);

test(
  "the free-space estimate refuses up front when the output will not fit, and creates nothing",
  withRoot((root) => {
    const free = freeBytes(root);
    assert.ok(free > 0);
    const out = join(root, "a", "out");
    checkOutputDir(out, 1);
    assert.throws(
      () => checkOutputDir(out, free + 1e12),
      (e: Error) => {
        assert.match(
          e.message,
          /^not enough space for .*a\/out: it needs about [\d.]+ TB, [\d.]+ .?B are free in .*; free some space or write somewhere else$/,
        );
        return true;
      },
    );
    assert.throws(() => checkWritableDir(root, free + 1e12), /not enough space/);
    assert.deepEqual(readdirSync(root), []);
    assert.equal(formatBytes(17), "17 bytes");
    assert.equal(formatBytes(93_212_345), "93.2 MB");
  }),
);

test(
  "quantize's estimate of the bytes it writes is at least what it writes, and close to it",
  withRoot(async (root) => {
    const fp = join(root, "fp");
    writeSyntheticLlama(fp, {
      hiddenSize: 64,
      intermediateSize: 120,
      numLayers: 2,
      numHeads: 4,
      numKvHeads: 2,
      vocabSize: 96,
      seed: 3,
    });
    writeFileSync(join(fp, "tokenizer.json"), "{}".padEnd(5000));
    const out = join(root, "q");
    const res = await quantizeCheckpoint({
      modelDir: fp,
      outDir: out,
      options: { ...PLAIN_GPTQ, method: "rtn", groupSize: 32 },
      format: "auto",
      pad: "auto",
    });
    const shapes = new Map(
      res.reports.map((r) => [
        r.name,
        { inFeatures: r.inFeatures, outFeatures: r.outFeatures, bits: 4 as const, groupSize: 32 },
      ]),
    );
    const estimate = quantizedCheckpointBytes(fp, shapes, res.format, res.pad);
    const written = treeBytes(out);
    assert.ok(estimate >= written, `estimate ${estimate} < written ${written}`);
    // the allowance: per-tensor header and index entries and the config files, nothing proportional
    assert.ok(estimate - written < 16_384 + 300 * 40, `estimate ${estimate} vs written ${written}`);
    assert.ok(tensorFileBytes([{ name: "w", dtype: "F16", shape: [4, 8] }]) >= 64);
  }),
);
