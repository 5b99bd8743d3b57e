// Opening a checkpoint goes through the format registry: detection from names, inspection from headers.
import { test } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import {
  detectFormat,
  listQuantizedLayers,
  openCheckpoint,
  zeroPointEvidence,
} from "../../src/io/checkpoint.js";
import { TensorStore } from "../../src/io/store.js";
import { DETECTABLE_FORMATS, FORMATS } from "../../src/formats/registry.js";
import {
  SparseEntry,
  fpEntries,
  gptqEntries,
  llamaLayers,
  marlinEntries,
  tmpDir,
  writeCheckpointDir,
} from "../helpers/checkpoints.js";

const LAYERS = llamaLayers(0, 256, 512);
const sym4 = { bits: 4 as const, groupSize: 128, sym: true, version: "v1" as const };

function withStore<T>(entries: SparseEntry[], f: (store: TensorStore) => T): T {
  const dir = writeCheckpointDir(tmpDir("detect"), entries);
  const store = TensorStore.open(dir);
  try {
    return f(store);
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test("each detectable format is found from the names of a stored checkpoint, v1 and v2 alike", () => {
  const stored: Record<string, SparseEntry[]> = {
    gptq: LAYERS.flatMap((l) => gptqEntries(l, sym4)),
    marlin: LAYERS.flatMap((l) => marlinEntries(l, 128)),
  };
  assert.deepEqual(
    Object.keys(stored),
    DETECTABLE_FORMATS.map((f) => f.name),
  );
  for (const [format, entries] of Object.entries(stored))
    withStore(entries, (store) => {
      assert.equal(detectFormat(store), format);
      const layers = listQuantizedLayers(store);
      assert.equal(layers.length, LAYERS.length);
      assert.ok(layers.every((l) => l.format === format && l.bits === 4 && l.groupSize === 128));
    });
  // v2 shows as gptq: the tensors are the same
  withStore(
    LAYERS.flatMap((l) => gptqEntries(l, { ...sym4, version: "v2" })),
    (store) => assert.equal(detectFormat(store), FORMATS.gptq_v2.detectedAs),
  );
  withStore(LAYERS.flatMap(fpEntries), (store) => {
    assert.equal(detectFormat(store), "fp");
    assert.deepEqual(listQuantizedLayers(store), []);
  });
});

test("a checkpoint mixing formats is refused when listed and when opened", () => {
  const entries = [...gptqEntries(LAYERS[0], sym4), ...marlinEntries(LAYERS[1], 128)];
  const message =
    /layers stored in two formats: .*q_proj as GPTQ \(qweight\) and .*k_proj as Marlin \(B, s\)/;
  withStore(entries, (store) => assert.throws(() => listQuantizedLayers(store), message));
  const dir = writeCheckpointDir(tmpDir("detect"), entries);
  try {
    assert.throws(() => openCheckpoint(dir), message);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a malformed layer is refused with the format's message, naming the layer", () => {
  const [q, k] = LAYERS;
  const gptq = [...gptqEntries(q, sym4), ...gptqEntries(k, sym4)];
  const refused = (entries: SparseEntry[], message: string) =>
    withStore(entries, (store) =>
      assert.throws(
        () => listQuantizedLayers(store),
        (e: Error) => e.message === message,
        message,
      ),
    );
  refused(
    gptq.filter((e) => e.name !== `${k.name}.scales`),
    `layer ${k.name}: ${k.name}.scales is missing`,
  );
  refused(
    gptq.map((e) =>
      e.name === `${q.name}.g_idx` ? { ...e, data: Int32Array.from({ length: 256 }, () => 2) } : e,
    ),
    `layer ${q.name}: g_idx[0] is 2, outside the 2 groups that scales hold`,
  );
  refused(
    marlinEntries(q, 128).map((e) => (e.name.endsWith(".s") ? { ...e, shape: [2, 128] } : e)),
    `layer ${q.name}: Marlin B is [16, 512] but s has 128 outputs: expected [16, 256]`,
  );
});

test("a Marlin layer's zero points are implicit: symmetric as v2, and nothing is read", () =>
  withStore(marlinEntries(LAYERS[0], 128), (store) => {
    const [layer] = listQuantizedLayers(store);
    const noReads = Object.create(store, {
      read: { value: () => assert.fail("read a tensor") },
    }) as TensorStore;
    assert.equal(zeroPointEvidence(noReads, layer), "sym-v2");
  }));
