import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TensorEntry } from "../../src/io/safetensors.js";
import { TensorStore, writeCheckpointTensors } from "../../src/io/store.js";
import { writeQuantConfig } from "../../src/io/checkpoint.js";
import { FORMATS } from "../../src/formats/registry.js";
import { CheckpointFormat, QuantizedLinear } from "../../src/formats/types.js";
import { bf16sToFloats, floatsToBf16s } from "../../src/tensor/dtype.js";
import { convertCheckpoint } from "../../src/transform/convert.js";
import { randomLayer } from "../formats/helpers.js";
import { quantConfig } from "../helpers/checkpoints.js";

function checkpoint(
  dir: string,
  format: CheckpointFormat,
  layer: QuantizedLinear,
  extra: TensorEntry[],
): void {
  mkdirSync(dir);
  const entries: TensorEntry[] = FORMATS[format]
    .write(layer, format === "marlin" ? {} : { scaleDtype: "BF16" })
    .map((t) => ({ name: `l.${t.suffix}`, ...t }));
  writeCheckpointTensors(dir, [...entries, ...extra]);
  writeQuantConfig(dir, quantConfig({ checkpointFormat: format }));
}

test("convert keeps bf16 scales bf16 between GPTQ versions and drops Marlin's workspace buffer", async () => {
  const root = mkdtempSync(join(tmpdir(), "gptq-convert-"));
  try {
    const layer = randomLayer({ K: 256, N: 128, bits: 4, groupSize: 128, zeros: "sym", seed: 3 });
    // bf16-representable scales, so both dtypes hold them exactly
    layer.scales = bf16sToFloats(floatsToBf16s(layer.scales));
    checkpoint(join(root, "v1"), "gptq", layer, []);
    const r = await convertCheckpoint(join(root, "v1"), join(root, "v2"), "gptq_v2");
    assert.equal(r.verifiedLayers, 1);
    const s = TensorStore.open(join(root, "v2"));
    assert.equal(s.info("l.scales").dtype, "BF16");
    assert.deepEqual(bf16sToFloats(s.read("l.scales").data as Uint16Array), layer.scales);
    s.close();

    const workspace = { name: "l.workspace", dtype: "I32" as const, shape: [4], data: new Int32Array(4) };
    checkpoint(join(root, "m"), "marlin", layer, [workspace]);
    await convertCheckpoint(join(root, "m"), join(root, "back"), "gptq");
    const b = TensorStore.open(join(root, "back"));
    assert.deepEqual(b.names().sort(), ["l.g_idx", "l.qweight", "l.qzeros", "l.scales"]);
    b.close();
    assert.deepEqual(readdirSync(root).sort(), ["back", "m", "v1", "v2"]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
