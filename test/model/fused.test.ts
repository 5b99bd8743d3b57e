// Fused projections (`qkv_proj`, `gate_up_proj`), as `gptq merge` writes them and Phi-3 publishes them:
// `gptq eval` runs them fused and gives the perplexity of the unfused checkpoint. Merging moves codes,
// scales and zeros column by column (dense: weight rows), so the fused projection's outputs are exactly
// its parts' and the perplexities are equal, not merely close.
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { TensorEntry, entry, readAllTensors } from "../../src/io/safetensors.js";
import { TensorStore, writeCheckpointTensors } from "../../src/io/store.js";
import { LLAMA_FUSED, LLAMA_LINEARS } from "../../src/model/families/llama.js";
import { Role } from "../../src/model/families/types.js";

/** where the separate projection with this role is stored under a layer */
const moduleOf = (role: Role) => LLAMA_LINEARS.find((l) => l.role === role)!.module;
import { readTokenRows } from "../../src/pipeline/calibration.js";
import { quantizeCheckpoint } from "../../src/pipeline/quantize-checkpoint.js";
import { DEMO_SPEC, writeSyntheticLlama, writeTokenFile } from "../../src/pipeline/synthetic.js";
import { PipelineOptions } from "../../src/pipeline/quantize-model.js";
import { mergeCheckpoint } from "../../src/transform/split.js";
import { toFloat32 } from "../../src/tensor/tensor.js";
import { tmpDir } from "../helpers/checkpoints.js";
import { assertOneLineError, gptq } from "../helpers/cli.js";
import { sharedPath, skipUnlessShared } from "../helpers/shared.js";
import { syntheticTokens } from "../helpers/synthetic.js";
import { PLAIN_GPTQ } from "../helpers/configs.js";

const MODEL = sharedPath("models", "stories260K");
const EVAL = sharedPath("models", "stories260K-eval.safetensors");
const skip =
  skipUnlessShared("models", "stories260K") || skipUnlessShared("models", "stories260K-eval.safetensors");

const RTN: PipelineOptions = { ...PLAIN_GPTQ, method: "rtn", groupSize: 32 };

/** `gptq eval --json`: perplexity and prediction count, failing the test on any other exit. */
function evalPpl(dir: string, tokens: string, ...extra: string[]): { ppl: number; tokens: number } {
  const r = gptq("eval", dir, "--tokens", tokens, "--json", ...extra);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as { ppl: number; tokens: number };
}

/** Merges every decoder layer's q/k/v into `qkv_proj` and gate/up into `gate_up_proj` with `gptq merge`'s library call. */
async function fuseAll(input: string, root: string, numLayers: number): Promise<string> {
  let from = input;
  let n = 0;
  for (let i = 0; i < numLayers; i++)
    for (const f of LLAMA_FUSED) {
      const to = join(root, `fuse-${n++}`);
      const prefix = `model.layers.${i}`;
      await mergeCheckpoint(
        from,
        to,
        f.parts.map((p) => `${prefix}.${moduleOf(p)}`),
        `${prefix}.${f.module}`,
      );
      if (from !== input) rmSync(from, { recursive: true, force: true });
      from = to;
    }
  return from;
}

/** Names of the stored tensors under decoder layer 0's projections. */
function layer0Tensors(dir: string): string[] {
  const store = TensorStore.open(dir);
  try {
    return store
      .names()
      .filter((n) => n.startsWith("model.layers.0.self_attn.") || n.startsWith("model.layers.0.mlp."))
      .sort();
  } finally {
    store.close();
  }
}

/** The first `n` evaluation sequences of stories260K in a token file of their own (eval in a second). */
function evalSubset(path: string, n: number): string {
  writeTokenFile(path, { evaluation_tokens: readTokenRows(EVAL, "evaluation_tokens").rows.slice(0, n) });
  return path;
}

test(
  "stories260K RTN 4-bit with every q/k/v and gate/up merged: eval gives the unfused perplexity (gptq, gptq_v2, A8W4)",
  { skip },
  async () => {
    const root = tmpDir("fused");
    try {
      const tokens = evalSubset(join(root, "tokens.safetensors"), 4);
      const q = join(root, "q");
      await quantizeCheckpoint({ modelDir: MODEL, outDir: q, options: RTN, format: "gptq", pad: "auto" });
      const fused = await fuseAll(q, root, 5);
      // really fused: layer 0 keeps o_proj and down_proj, and stores q/k/v and gate/up as one each
      assert.deepEqual(
        layer0Tensors(fused).filter((n) => n.endsWith(".qweight")),
        [
          "model.layers.0.mlp.down_proj.qweight",
          "model.layers.0.mlp.gate_up_proj.qweight",
          "model.layers.0.self_attn.o_proj.qweight",
          "model.layers.0.self_attn.qkv_proj.qweight",
        ],
      );

      const plain = evalPpl(q, tokens);
      assert.ok(Number.isFinite(plain.ppl) && plain.ppl > 1);
      assert.deepEqual(evalPpl(fused, tokens), plain);

      // another stored format of the same fused layers
      const v2 = join(root, "fused-v2");
      assert.equal(gptq("convert", fused, v2, "--to", "gptq_v2").code, 0);
      assert.deepEqual(evalPpl(v2, tokens), plain);

      // A8W4: activations quantized per token, the same for the fused layer's parts as for the layers
      const a8 = evalPpl(q, tokens, "--act-quant", "int8");
      assert.notEqual(a8.ppl, plain.ppl);
      assert.deepEqual(evalPpl(fused, tokens, "--act-quant", "int8"), a8);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  },
);

test(
  "stories260K unquantized with qkv_proj.weight and gate_up_proj.weight (Phi-3 layout): eval gives the model's perplexity",
  { skip },
  () => {
    const root = tmpDir("fused-fp");
    try {
      const tokens = evalSubset(join(root, "tokens.safetensors"), 4);
      const { tensors } = readAllTensors(join(MODEL, "model.safetensors"));
      const fusedNames = new Map<string, string[]>();
      for (let i = 0; i < 5; i++)
        for (const f of LLAMA_FUSED)
          fusedNames.set(
            `model.layers.${i}.${f.module}.weight`,
            f.parts.map((p) => `model.layers.${i}.${moduleOf(p)}.weight`),
          );
      const consumed = new Set([...fusedNames.values()].flat());
      const entries: TensorEntry[] = [];
      for (const [name, t] of tensors)
        if (!consumed.has(name)) entries.push({ name, dtype: t.dtype, shape: t.shape, data: t.data });
      for (const [name, parts] of fusedNames) {
        const ts = parts.map((p) => tensors.get(p)!);
        const data = new Float32Array(ts.reduce((a, t) => a + t.data.length, 0));
        let at = 0;
        for (const t of ts) {
          data.set(toFloat32(t), at);
          at += t.data.length;
        }
        const rows = ts.reduce((a, t) => a + t.shape[0], 0);
        entries.push({ name, dtype: "F32", shape: [rows, ts[0].shape[1]], data });
      }
      const fused = join(root, "fused");
      mkdirSync(fused);
      writeCheckpointTensors(fused, entries);
      copyFileSync(join(MODEL, "config.json"), join(fused, "config.json"));
      assert.ok(layer0Tensors(fused).includes("model.layers.0.self_attn.qkv_proj.weight"));
      assert.ok(!layer0Tensors(fused).includes("model.layers.0.self_attn.q_proj.weight"));

      assert.deepEqual(evalPpl(fused, tokens), evalPpl(MODEL, tokens));

      // quantize takes the fused projections as stored and writes them fused; RTN rounds each output row
      // on its own, so the result computes what the unfused checkpoint quantized alike computes
      for (const [dir, out] of [
        [fused, "q-fused"],
        [MODEL, "q-separate"],
      ]) {
        const r = gptq("quantize", dir, "--out", join(root, out), "--method", "rtn", "--group-size", "32");
        assert.equal(r.code, 0, r.stderr);
      }
      assert.ok(layer0Tensors(join(root, "q-fused")).includes("model.layers.0.self_attn.qkv_proj.qweight"));
      assert.deepEqual(evalPpl(join(root, "q-fused"), tokens), evalPpl(join(root, "q-separate"), tokens));
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  },
);

test("Marlin fused projections load and give the unfused perplexity; fused beside its parts is refused", async () => {
  const root = tmpDir("fused-marlin");
  try {
    const fp = join(root, "fp");
    writeSyntheticLlama(fp, DEMO_SPEC); // q 128, k and v 64, gate and up 384: every part Marlin-shaped
    const tokens = join(root, "tokens.safetensors");
    writeTokenFile(tokens, { evaluation_tokens: syntheticTokens(DEMO_SPEC, 4, 32, 3) });
    const m = join(root, "m");
    await quantizeCheckpoint({
      modelDir: fp,
      outDir: m,
      options: { ...RTN, groupSize: 128 },
      format: "marlin",
      pad: "none",
    });
    const fused = await fuseAll(m, root, DEMO_SPEC.numLayers);
    assert.ok(layer0Tensors(fused).includes("model.layers.0.self_attn.qkv_proj.B"));
    assert.deepEqual(evalPpl(fused, tokens), evalPpl(m, tokens));

    // a fused projection and one of its parts side by side: which one holds the weights is ambiguous
    const both = join(root, "both");
    mkdirSync(both);
    const store = TensorStore.open(fused);
    const extra = TensorStore.open(m);
    try {
      const entries = store.names().map((n) => entry(n, store.read(n)));
      for (const s of ["B", "s"]) {
        const n = `model.layers.1.self_attn.k_proj.${s}`;
        entries.push(entry(n, extra.read(n)));
      }
      writeCheckpointTensors(both, entries);
    } finally {
      store.close();
      extra.close();
    }
    for (const f of ["config.json", "quantize_config.json"]) copyFileSync(join(fused, f), join(both, f));
    assert.match(
      assertOneLineError(gptq("eval", both, "--tokens", tokens), 1),
      /both model\.layers\.1\.self_attn\.qkv_proj and model\.layers\.1\.self_attn\.k_proj are stored/,
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
