// gptq convert / dequantize / split / merge, run as a user runs them (the built CLI in a child process)
// on small synthetic checkpoints, checked against a float64 reference of the weights.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TensorEntry } from "../../src/io/safetensors.js";
import { TensorStore, writeCheckpointTensors } from "../../src/io/store.js";
import { writeQuantConfig } from "../../src/io/checkpoint.js";
import { FORMATS } from "../../src/formats/registry.js";
import { dequantize } from "../../src/formats/dequantize.js";
import { CheckpointFormat, QuantizedLinear } from "../../src/formats/types.js";
import { floatsToHalfs, halfsToFloats } from "../../src/tensor/dtype.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { PROJECT_ROOT } from "../helpers/shared.js";
import { quantConfig } from "../helpers/checkpoints.js";
import { randomLayer, referenceWeights } from "../formats/helpers.js";

const CLI = join(PROJECT_ROOT, "dist/src/cli/main.js");

function gptq(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const QKV = "model.layers.0.self_attn.qkv_proj";
const DOWN = "model.layers.0.mlp.down_proj";

interface Synthetic {
  dir: string;
  layers: Record<string, QuantizedLinear>;
}

/** A two-layer checkpoint with an embedding, a norm, a bias and a tokenizer file beside the tensors. */
function synthetic(
  root: string,
  name: string,
  format: CheckpointFormat,
  o: { sym: boolean; actOrder?: boolean; zeroOfZero?: boolean },
): Synthetic {
  const dir = join(root, name);
  mkdirSync(dir);
  const zeros = o.sym ? "sym" : format === "gptq" ? "asym" : "asym0";
  const layers = {
    [QKV]: randomLayer({ K: 128, N: 192, bits: 4, groupSize: 128, zeros, actOrder: o.actOrder, seed: 11 }),
    [DOWN]: randomLayer({ K: 256, N: 128, bits: 4, groupSize: 128, zeros, actOrder: o.actOrder, seed: 12 }),
  };
  if (o.zeroOfZero) layers[DOWN].zeros[5] = 0;
  const entries: TensorEntry[] = [
    {
      name: "model.embed_tokens.weight",
      dtype: "F16",
      shape: [16, 128],
      data: floatsToHalfs(new Float32Array(2048).fill(0.25)),
    },
  ];
  for (const [prefix, layer] of Object.entries(layers))
    for (const t of FORMATS[format].write(layer)) entries.push({ name: `${prefix}.${t.suffix}`, ...t });
  entries.push({
    name: `${DOWN}.bias`,
    dtype: "F16",
    shape: [128],
    data: floatsToHalfs(Float32Array.from({ length: 128 }, (_, i) => i / 8)),
  });
  entries.push({
    name: "model.norm.weight",
    dtype: "F32",
    shape: [128],
    data: new Float32Array(128).fill(1),
  });
  writeCheckpointTensors(dir, entries);
  writeFileSync(join(dir, "config.json"), JSON.stringify({ model_type: "llama", torch_dtype: "float16" }));
  writeFileSync(join(dir, "tokenizer.json"), '{"version": "1.0"}');
  writeQuantConfig(dir, quantConfig({ sym: o.sym, descAct: !!o.actOrder, checkpointFormat: format }));
  return { dir, layers };
}

function digest(dir: string): string {
  const h = createHash("sha256");
  for (const f of readdirSync(dir).sort()) h.update(f).update(readFileSync(join(dir, f)));
  return h.digest("hex");
}

function readStored(
  dir: string,
  format: CheckpointFormat,
  prefix: string,
  like: QuantizedLinear,
  N = like.outFeatures,
) {
  const store = TensorStore.open(dir);
  try {
    const get = (s: string): Tensor | undefined =>
      store.has(`${prefix}.${s}`) ? store.read(`${prefix}.${s}`) : undefined;
    return FORMATS[format].read(get, { ...like, outFeatures: N });
  } finally {
    store.close();
  }
}

function assertWeights(got: Float32Array, ref: Float64Array, what: string): void {
  assert.equal(got.length, ref.length, what);
  for (let i = 0; i < ref.length; i++)
    if (got[i] !== Math.fround(ref[i])) assert.fail(`${what}: element ${i}`);
}

function withTmp(fn: (root: string) => void): () => void {
  return () => {
    const root = mkdtempSync(join(tmpdir(), "gptq-cli-"));
    try {
      fn(root);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  };
}

test(
  "convert gptq -> gptq_v2 -> marlin -> gptq keeps every weight, carries everything else, never touches input",
  withTmp((root) => {
    const src = synthetic(root, "src", "gptq", { sym: true });
    const before = digest(src.dir);
    let prev = src.dir;
    for (const to of ["gptq_v2", "marlin", "gptq"] as const) {
      const out = join(root, to === "gptq" ? "back" : to);
      const r = gptq("convert", prev, out, "--to", to, "--json");
      assert.equal(r.code, 0, r.stderr);
      const summary = JSON.parse(r.stdout) as Record<string, unknown>;
      assert.equal(summary.to, to);
      assert.equal(summary.layers, 2);
      assert.equal(summary.verifiedLayers, 2);
      for (const [prefix, layer] of Object.entries(src.layers))
        assertWeights(
          dequantize(readStored(out, to, prefix, layer)),
          referenceWeights(layer),
          `${to} ${prefix}`,
        );
      const cfg = JSON.parse(readFileSync(join(out, "quantize_config.json"), "utf8")) as Record<
        string,
        unknown
      >;
      assert.equal(cfg.checkpoint_format, to);
      const main = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as Record<
        string,
        Record<string, unknown>
      >;
      assert.equal(main.quantization_config.checkpoint_format, to);
      assert.equal(main.model_type as unknown, "llama");
      assert.equal(readFileSync(join(out, "tokenizer.json"), "utf8"), '{"version": "1.0"}');
      const store = TensorStore.open(out);
      assert.deepEqual(halfsToFloats(store.read(`${DOWN}.bias`).data as Uint16Array)[8], 1);
      assert.ok(store.has("model.norm.weight") && store.has("model.embed_tokens.weight"));
      store.close();
      prev = out;
    }
    assert.equal(digest(src.dir), before, "input unchanged");
    // v1 -> v2 -> marlin -> v1 gives back the very same tensors
    const a = TensorStore.open(src.dir);
    const b = TensorStore.open(join(root, "back"));
    for (const n of a.names()) assert.deepEqual(b.read(n).data, a.read(n).data, n);
    a.close();
    b.close();
    assert.deepEqual(readdirSync(root).sort(), ["back", "gptq_v2", "marlin", "src"], "no temporary left");
  }),
);

test(
  "convert refuses impossible conversions with one line, exit 1, and leaves nothing behind",
  withTmp((root) => {
    const asym = synthetic(root, "asym", "gptq", { sym: false });
    const act = synthetic(root, "act", "gptq", { sym: true, actOrder: true });
    const zero = synthetic(root, "zero", "gptq_v2", { sym: false, zeroOfZero: true });
    const cases: [string, string, RegExp][] = [
      [asym.dir, "marlin", /cannot convert to marlin: .*symmetric only.*asymmetric/],
      [act.dir, "marlin", /act-order/],
      [zero.dir, "gptq", /cannot convert to gptq \(v1\): .*zero point of 0.*keep gptq_v2/],
      [asym.dir, "gptq", /already gptq/],
    ];
    for (const [dir, to, re] of cases) {
      const out = join(root, "out");
      const r = gptq("convert", dir, out, "--to", to);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split("\n").length, 1, "one line");
      assert.match(r.stderr, /^gptq convert: error: /);
      assert.equal(existsSync(out), false);
    }
    assert.deepEqual(readdirSync(root).sort(), ["act", "asym", "zero"]);
    // act-order converts between GPTQ versions
    const r = gptq("convert", act.dir, join(root, "act-v2"), "--to", "gptq_v2");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /converted 2 layers from gptq to gptq_v2/);
    for (const [prefix, layer] of Object.entries(act.layers))
      assertWeights(
        dequantize(readStored(join(root, "act-v2"), "gptq_v2", prefix, layer)),
        referenceWeights(layer),
        prefix,
      );
    // an existing, non-empty output is refused
    const again = gptq("convert", act.dir, join(root, "act-v2"), "--to", "gptq_v2");
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already exists and is not empty/);
    // the output may not be inside the input
    const inside = gptq("convert", act.dir, join(act.dir, "sub"), "--to", "gptq_v2");
    assert.equal(inside.code, 1);
    assert.match(inside.stderr, /inside the input/);
    assert.equal(existsSync(join(act.dir, "sub")), false);
  }),
);

test("usage errors exit 2 with the usage", () => {
  for (const args of [
    ["convert", "a"],
    ["convert", "a", "b"],
    ["convert", "a", "b", "--to", "awq"],
    ["convert", "a", "b", "--to", "gptq", "--bogus"],
    ["dequantize", "a", "b", "--dtype", "int8"],
    ["split", "a", "b", "--layer", "x", "--sizes", "32,x", "--names", "p,q"],
    ["split", "a", "b", "--layer", "x", "--sizes", "32,32", "--names", "p"],
    ["merge", "a", "b", "--layers", "p", "--name", "q"],
  ]) {
    const r = gptq(...args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`usage: gptq ${args[0]}`));
  }
  const help = gptq("convert", "--help");
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--to FORMAT/);
});

test(
  "dequantize writes <prefix>.weight [N, K] and drops the quantization config",
  withTmp((root) => {
    const src = synthetic(root, "src", "gptq_v2", { sym: false, actOrder: true, zeroOfZero: true });
    for (const [dtype, st] of [
      ["float16", "F16"],
      ["float32", "F32"],
    ] as const) {
      const out = join(root, dtype);
      const r = gptq("dequantize", src.dir, out, "--dtype", dtype, "--json");
      assert.equal(r.code, 0, r.stderr);
      assert.equal((JSON.parse(r.stdout) as { verifiedLayers: number }).verifiedLayers, 2);
      const store = TensorStore.open(out);
      for (const [prefix, layer] of Object.entries(src.layers)) {
        const t = store.read(`${prefix}.weight`);
        assert.equal(t.dtype, st);
        assert.deepEqual(t.shape, [layer.outFeatures, layer.inFeatures]);
        const ref = referenceWeights(layer);
        const got = st === "F16" ? halfsToFloats(t.data as Uint16Array) : (t.data as Float32Array);
        const want =
          st === "F16" ? halfsToFloats(floatsToHalfs(Float32Array.from(ref))) : Float32Array.from(ref);
        assert.deepEqual(got, want, prefix);
        assert.equal(store.has(`${prefix}.qweight`) || store.has(`${prefix}.g_idx`), false);
      }
      assert.ok(store.has(`${DOWN}.bias`));
      store.close();
      assert.equal(existsSync(join(out, "quantize_config.json")), false);
      const cfg = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as Record<string, unknown>;
      assert.equal("quantization_config" in cfg, false);
      assert.equal(cfg.torch_dtype, dtype);
    }
    const r = gptq("dequantize", join(root, "float16"), join(root, "again"));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not quantized/);
  }),
);

test(
  "split then merge a fused layer: parts dequantize to the rows, merging restores the tensors",
  withTmp((root) => {
    for (const format of ["gptq", "marlin"] as const) {
      const src = synthetic(root, `src-${format}`, format, { sym: true });
      const names = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj"];
      const out = join(root, `split-${format}`);
      const r = gptq(
        "split",
        src.dir,
        out,
        "--layer",
        QKV,
        "--sizes",
        "64,128",
        "--names",
        names.join(","),
        "--json",
      );
      assert.equal(r.code, 0, r.stderr);
      assert.equal((JSON.parse(r.stdout) as { verified: boolean }).verified, true);
      const ref = referenceWeights(src.layers[QKV]);
      const q = dequantize(readStored(out, format, names[0], src.layers[QKV], 64));
      const k = dequantize(readStored(out, format, names[1], src.layers[QKV], 128));
      assertWeights(q, ref.subarray(0, 64 * 128), "q");
      assertWeights(k, ref.subarray(64 * 128), "k");
      const store = TensorStore.open(out);
      assert.equal(store.has(`${QKV}.${format === "gptq" ? "qweight" : "B"}`), false);
      store.close();
      const back = join(root, `merged-${format}`);
      const m = gptq("merge", out, back, "--layers", names.join(","), "--name", QKV);
      assert.equal(m.code, 0, m.stderr);
      const a = TensorStore.open(src.dir);
      const b = TensorStore.open(back);
      assert.deepEqual(b.names().sort(), a.names().sort());
      for (const n of a.names()) assert.deepEqual(b.read(n).data, a.read(n).data, n);
      a.close();
      b.close();
    }
    const src = join(root, "src-gptq");
    const bad: [string[], RegExp][] = [
      [["--layer", QKV, "--sizes", "60,132", "--names", "a,b"], /split point 60 is not a multiple of 8/],
      [["--layer", QKV, "--sizes", "64,64", "--names", "a,b"], /add up to 128, but the layer has 192/],
      [["--layer", "nope", "--sizes", "64,128", "--names", "a,b"], /no quantized layer "nope"/],
      [["--layer", QKV, "--sizes", "64,128", "--names", `a,${DOWN}`], /is taken/],
    ];
    for (const [args, re] of bad) {
      const r = gptq("split", src, join(root, "x"), ...args);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, re);
      assert.equal(existsSync(join(root, "x")), false);
    }
    const mSplit = gptq(
      "split",
      join(root, "src-marlin"),
      join(root, "x"),
      "--layer",
      QKV,
      "--sizes",
      "32,160",
      "--names",
      "a,b",
    );
    assert.equal(mSplit.code, 1);
    assert.match(mSplit.stderr, /multiple of 64.*Marlin/);
    const mBad = gptq("merge", src, join(root, "x"), "--layers", `${QKV},${DOWN}`, "--name", "fused");
    assert.equal(mBad.code, 1);
    assert.match(mBad.stderr, /cannot merge: .* has in_features 256, .* has 128/);
  }),
);
