import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FORMATS } from "../../src/formats/registry.js";
import { Bits, QuantizedLinear } from "../../src/formats/types.js";
import { readQuantConfig } from "../../src/io/quant-config.js";
import { TensorStore } from "../../src/io/store.js";
import { DecoderModel } from "../../src/model/decoder.js";
import { padModelIntermediate } from "../../src/model/padding.js";
import { perplexity } from "../../src/model/perplexity.js";
import { SyntheticSpec, writeSyntheticLlama, writeTokenFile } from "../../src/pipeline/synthetic.js";
import { syntheticTokens } from "../helpers/synthetic.js";
import { PipelineOptions, quantizeModel } from "../../src/pipeline/quantize-model.js";
import { QuantizeRequest, quantizeCheckpoint } from "../../src/pipeline/quantize-checkpoint.js";
import { PackedLayers, chooseFormat } from "../../src/pipeline/write-quantized.js";
import { PLAIN_GPTQ } from "../helpers/configs.js";

// intermediate 44 is not a multiple of 8: 4-bit GPTQ packing needs it padded to 48
const SPEC: SyntheticSpec = {
  hiddenSize: 32,
  intermediateSize: 44,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  vocabSize: 64,
  seed: 5,
};
const OPTS: PipelineOptions = { ...PLAIN_GPTQ, groupSize: 16, sym: false, descAct: true };

const root = mkdtempSync(join(tmpdir(), "gptq-qc-"));
process.on("exit", () => rmSync(root, { recursive: true, force: true }));
const src = join(root, "fp");
writeSyntheticLlama(src, SPEC);
writeFileSync(join(src, "tokenizer.json"), "{}");
const tokens = join(root, "tokens.safetensors");
const CALIB = syntheticTokens(SPEC, 6, 24, 1);
const EVAL = syntheticTokens(SPEC, 3, 24, 2);
writeTokenFile(tokens, { calibration_tokens: CALIB, evaluation_tokens: EVAL });

function request(out: string, over: Partial<QuantizeRequest> = {}): QuantizeRequest {
  return {
    modelDir: src,
    outDir: join(root, out),
    options: OPTS,
    calib: { file: tokens },
    format: "auto",
    pad: "auto",
    ...over,
  };
}

test("quantize writes a checkpoint whose layers are the pipeline's, padded, with its config", async () => {
  const res = await quantizeCheckpoint(request("q"));
  assert.deepEqual([res.pad!.from, res.pad!.to], [44, 48]);
  assert.equal(res.layers, 14);
  // where the time went: opening, every phase of the CPU pipeline and the write, adding up to at most
  // the run, in the order they happen
  assert.deepEqual(Object.keys(res.phases), [
    "open",
    "read",
    "forward",
    "hessian",
    "gptq",
    "error",
    "pack",
    "write",
  ]);
  const phased = Object.values(res.phases).reduce((a, b) => a + b, 0);
  assert.ok(
    res.phases.forward! > 0 && phased <= res.seconds + 0.01,
    `${JSON.stringify(res.phases)} in ${res.seconds} s`,
  );
  const out = join(root, "q");
  const cfg = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
  assert.equal(cfg.intermediate_size, 48);
  assert.ok(existsSync(join(out, "tokenizer.json")));
  const qc = readQuantConfig(out)!;
  assert.deepEqual(
    [qc.bits, qc.groupSize, qc.sym, qc.descAct, qc.checkpointFormat],
    [4, 16, false, true, res.format],
  );

  // The same pipeline in memory: the stored layers must unpack to exactly its layers.
  const model = DecoderModel.load(src);
  padModelIntermediate(model, 48);
  const ref = quantizeModel(model, CALIB, OPTS);
  const store = TensorStore.open(out);
  try {
    for (const [prefix, want] of ref.layers) {
      const got: QuantizedLinear = FORMATS[res.format].read(
        (s) => (store.has(`${prefix}.${s}`) ? store.read(`${prefix}.${s}`) : undefined),
        { inFeatures: want.inFeatures, outFeatures: want.outFeatures, bits: 4, groupSize: 16 },
      );
      assert.deepEqual(got.codes, want.codes, `${prefix} codes`);
      assert.deepEqual(got.scales, want.scales, `${prefix} scales`);
      assert.deepEqual(got.zeros, want.zeros, `${prefix} zeros`);
      assert.deepEqual(got.gIdx, want.gIdx, `${prefix} g_idx`);
    }
  } finally {
    store.close();
  }
  // Evaluating the written checkpoint gives what the in-memory quantized model gives.
  const a = perplexity(DecoderModel.load(out), EVAL).ppl;
  const b = perplexity(model, EVAL).ppl;
  assert.ok(Math.abs(a - b) / b < 1e-4, `checkpoint ppl ${a} vs in-memory ${b}`);
});

test("impossible requests fail before any work and leave nothing behind", async () => {
  await assert.rejects(
    quantizeCheckpoint(request("n1", { pad: "none" })),
    /intermediate_size 44 .*--pad auto/,
  );
  await assert.rejects(
    quantizeCheckpoint(request("n2", { format: "marlin", options: { ...OPTS, sym: true, descAct: false } })),
    /group size 128 or -1/,
  );
  await assert.rejects(quantizeCheckpoint(request("n3", { calib: undefined })), /calibration/);
  await assert.rejects(quantizeCheckpoint(request("q")), /already exists/);
  for (const d of ["n1", "n2", "n3"]) assert.ok(!existsSync(join(root, d)));
});

test("format auto writes v1 unless a zero point of 0 needs v2; explicit v1 refuses it", () => {
  const layer = (zero: number): QuantizedLinear => ({
    inFeatures: 8,
    outFeatures: 8,
    bits: 4,
    groupSize: -1,
    codes: new Uint8Array(64),
    scales: new Float32Array(8).fill(1),
    zeros: new Uint8Array(8).fill(zero),
    gIdx: new Int32Array(8),
  });
  assert.deepEqual(chooseFormat("auto", new Map([["a", layer(8)]])), { format: "gptq" });
  const v2 = chooseFormat("auto", new Map([["a", layer(0)]]));
  assert.equal(v2.format, "gptq_v2");
  assert.match(v2.why!, /zero points of 0/);
  assert.throws(() => chooseFormat("gptq", new Map([["a", layer(0)]])), /cannot write a as gptq.*gptq_v2/);
});

test("layers packed as they come: auto writes exactly what v1 (or v2, with a zero of 0) packs; explicit formats refuse at once", () => {
  const layer = (bits: Bits, zeroOf: (i: number) => number, N = 64, K = 96): QuantizedLinear => {
    const G = K / 32;
    return {
      inFeatures: K,
      outFeatures: N,
      bits,
      groupSize: 32,
      codes: Uint8Array.from({ length: K * N }, (_, i) => (i * 7) % (1 << bits)),
      scales: Float32Array.from({ length: G * N }, (_, i) => 0.5 + (i % 5) / 8),
      zeros: Uint8Array.from({ length: G * N }, (_, i) => zeroOf(i)),
      gIdx: Int32Array.from({ length: K }, (_, k) => Math.floor(k / 32)),
    };
  };
  for (const bits of [2, 3, 4, 8] as Bits[]) {
    const max = (1 << bits) - 1;
    const a = layer(bits, (i) => 1 + (i % max));
    const b = layer(bits, (i) => 1 + ((3 * i) % max));
    const packed = new PackedLayers("auto");
    packed.add("a", a);
    packed.add("b", b);
    assert.deepEqual(
      packed.format(),
      chooseFormat(
        "auto",
        new Map([
          ["a", a],
          ["b", b],
        ]),
      ),
    );
    assert.equal(packed.format().format, "gptq");
    for (const [name, l] of [
      ["a", a],
      ["b", b],
    ] as const)
      assert.deepEqual(packed.take(name), FORMATS.gptq.write(l), `${bits}-bit ${name}`);
    assert.equal(packed.size, 0);

    const zero = layer(bits, (i) => i % (max + 1));
    const v2 = new PackedLayers("auto");
    v2.add("z", zero);
    assert.deepEqual(v2.format(), chooseFormat("auto", new Map([["z", zero]])));
    assert.deepEqual(v2.take("z"), FORMATS.gptq_v2.write(zero));
    assert.throws(() => new PackedLayers("gptq").add("z", zero), /cannot write z as gptq.*gptq_v2/);
  }
  assert.throws(
    () =>
      new PackedLayers("marlin").add(
        "m",
        layer(4, (i) => i),
      ),
    /cannot write m as marlin/,
  );
});
