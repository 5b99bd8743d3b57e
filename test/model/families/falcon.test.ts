// Falcon: the 7B layout against transformers' logits; hidden 192, which group 128 does not divide (like
// Falcon-7B's 4544), quantized at groups 32 and 64 and run by ExLlama; check's fixes re-quantize and
// never pad the LayerNorm hidden size. The new_decoder_architecture layout has no transformers reference
// here: it is checked by an equivalence (see below).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TensorEntry, readAllTensors } from "../../../src/io/safetensors.js";
import { writeCheckpointTensors } from "../../../src/io/store.js";
import { Tensor } from "../../../src/tensor/tensor.js";
import { tmpDir } from "../../helpers/checkpoints.js";
import { assertOneLineError, gptq } from "../../helpers/cli.js";
import {
  TINY_REFERENCE,
  assertReferenceLogits,
  familyTests,
  skipUnlessTiny,
  tinyModel,
  tinyReference,
} from "../../helpers/tiny.js";

familyTests("falcon", { groups: [32, 64], require: ["exllama"] });

const skip = skipUnlessTiny("falcon");
const dir = tinyModel("falcon");

test(
  "falcon at group 128: check proposes re-quantizing at a group that divides 192, never padding",
  { skip },
  () => {
    const r = gptq("check", dir, "--bits", "4", "--group-size", "128", "--json");
    assert.equal(r.code, 0, r.stderr);
    const rep = JSON.parse(r.stdout) as {
      layers: { kernels: Record<string, { ok: boolean; fix?: string }> }[];
    };
    const fixes = rep.layers.flatMap((l) => Object.values(l.kernels).flatMap((k) => (k.fix ? [k.fix] : [])));
    assert.ok(fixes.length > 0);
    assert.ok(
      fixes.every((f) => !/gptq pad|--hidden-multiple/.test(f)),
      fixes.join("\n"),
    );
    assert.ok(
      fixes.some((f) => /^gptq quantize \S+falcon --out <out> --bits 4 --group-size 64\b/.test(f)),
      fixes.join("\n"),
    );
    // and pad refuses the hidden size before any work
    const root = tmpDir("falcon-pad");
    try {
      const pad = gptq("pad", dir, join(root, "out"), "--hidden-multiple", "256");
      assert.match(
        assertOneLineError(pad, 1),
        /LayerNorm subtracts the mean, so zero channels would not stay zero/,
      );
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  },
);

/**
 * The tiny Falcon-7B-layout checkpoint rewritten in the new_decoder_architecture layout with 4 kv groups:
 * query_key_value's rows grouped as [6 query heads, key, value] per group (transformers' view(kv, q/kv + 2,
 * head_dim)), every group's key and value a copy of the one multi-query head, ln_attn and ln_mlp copies of
 * input_layernorm. Grouped-query attention whose kv heads are all equal is multi-query attention, so this
 * model computes exactly the 7B-layout model, and must reproduce transformers' logits for it; a wrong row
 * layout (query heads out of order, a key read as a query) would not.
 */
function newArchitecture(root: string): string {
  const { tensors } = readAllTensors(join(dir, "model.safetensors"));
  const hd = 8;
  const heads = 24;
  const groups = 4;
  const entries: TensorEntry[] = [];
  const rows = (t: Tensor, from: number, n: number) => t.data.slice(from * 192, (from + n) * 192);
  for (const [name, t] of tensors) {
    if (name.endsWith("self_attention.query_key_value.weight")) {
      const perGroup = heads / groups;
      const parts: (typeof t.data)[] = [];
      for (let g = 0; g < groups; g++)
        parts.push(
          rows(t, g * perGroup * hd, perGroup * hd),
          rows(t, heads * hd, hd),
          rows(t, heads * hd + hd, hd),
        );
      const data = new Uint16Array(parts.reduce((n, p) => n + p.length, 0));
      let at = 0;
      for (const p of parts) {
        data.set(p as Uint16Array, at);
        at += p.length;
      }
      entries.push({ name, dtype: t.dtype, shape: [data.length / 192, 192], data });
    } else if (name.includes(".input_layernorm.")) {
      for (const ln of ["ln_attn", "ln_mlp"])
        entries.push({
          name: name.replace("input_layernorm", ln),
          dtype: t.dtype,
          shape: t.shape,
          data: t.data,
        });
    } else entries.push({ name, dtype: t.dtype, shape: t.shape, data: t.data });
  }
  const out = join(root, "falcon-new");
  mkdirSync(out);
  writeCheckpointTensors(out, entries);
  const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  writeFileSync(
    join(out, "config.json"),
    JSON.stringify({
      ...config,
      new_decoder_architecture: true,
      num_kv_heads: groups,
      num_ln_in_parallel_attn: 2,
    }),
  );
  return out;
}

test(
  "falcon new_decoder_architecture (4 kv groups, ln_attn/ln_mlp): equal to the 7B layout it was built from",
  { skip },
  () => {
    const root = tmpDir("falcon-new");
    try {
      const out = newArchitecture(root);
      assertReferenceLogits(out, tinyReference("falcon"));
      // and it quantizes (RTN: the GPTQ path is the 7B layout's, above), evaluates and runs on ExLlama
      const q = gptq("quantize", out, "--out", join(root, "q"), "--method", "rtn", "--group-size", "64");
      assert.equal(q.code, 0, q.stderr);
      assert.equal(gptq("check", join(root, "q"), "--require", "exllama").code, 0);
      assert.equal(gptq("eval", join(root, "q"), "--tokens", TINY_REFERENCE, "--key", "tokens").code, 0);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  },
);
