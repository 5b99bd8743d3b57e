import { test } from "node:test";
import assert from "node:assert/strict";
import { KERNELS, checkKernel, findKernel, getKernel, registerKernel } from "../../src/kernels/registry.js";
import { KernelQuery } from "../../src/kernels/types.js";
import { Bits } from "../../src/formats/types.js";

const q4 = (K: number, N: number, groupSize = 128, extra: Partial<KernelQuery> = {}): KernelQuery => ({
  inFeatures: K,
  outFeatures: N,
  bits: 4,
  groupSize,
  sym: true,
  actOrder: false,
  ...extra,
});

/** The verdict in words (ok, reason, fix), without the structured remedies `check` renders from. */
const verdict = (kernel: string, q: KernelQuery) => {
  const v = getKernel(kernel).supports(q);
  return Object.fromEntries(Object.entries(v).filter(([k]) => ["ok", "reason", "fix"].includes(k)));
};

test("registry holds the ecosystem's kernels and refuses a duplicate name", () => {
  assert.deepEqual(
    KERNELS.map((k) => k.name),
    [
      "marlin",
      "marlin-ist",
      "machete",
      "vllm-gptq",
      "exllama",
      "exllamav2",
      "cuda-old",
      "triton",
      "torch-int4-cpu",
      "gptqmodel",
      "ort",
      "xnnpack-a8w4",
      "gptq-ts-w4a16",
      "gptq-ts-dequant",
    ],
  );
  assert.equal(findKernel("exllama")!.name, "exllama");
  assert.equal(findKernel("nope"), undefined);
  assert.throws(() => getKernel("nope"), /unknown kernel "nope"; known kernels: marlin, marlin-ist/);
  assert.throws(() => registerKernel({ ...KERNELS[0] }), /already registered/);
  assert.equal(KERNELS.length, 14);
});

test("Falcon-7B (hidden 4544, group 128): exllama needs group 64 or padding to 4608, Marlin needs in % 128", () => {
  const dense = q4(4544, 4544);
  assert.deepEqual(verdict("exllama", dense), {
    ok: false,
    reason: "group size 128 does not divide in_features 4544 (no partial groups)",
    fix: "use group size 64; or pad in_features to 4608",
  });
  assert.deepEqual(verdict("marlin", dense), {
    ok: false,
    reason: "in_features 4544 is not a multiple of 128",
    fix: "pad in_features to 4608",
  });
  assert.equal(verdict("exllama", q4(4544, 4544, 64)).ok, true);
  assert.equal(verdict("marlin", q4(18176, 4544)).ok, true, "dense_4h_to_h: 18176 = 142 * 128");
  assert.equal(verdict("ort", dense).ok, true, "MatMulNBits pads the last block");
});

test("Qwen1.5-14B (intermediate 13696): AutoGPTQ Marlin needs out % 256, vLLM Marlin at tp 2 needs K % 128", () => {
  assert.deepEqual(verdict("marlin-ist", q4(5120, 13696)), {
    ok: false,
    reason: "out_features 13696 is not a multiple of 256",
    fix: "pad out_features to 13824",
  });
  assert.equal(verdict("marlin", q4(13696, 5120)).ok, true, "13696 = 107 * 128 on one GPU");
  const downTp2 = q4(6848, 5120, 128, { kSplitAcrossRanks: true, tpRanks: 2 });
  assert.deepEqual(verdict("marlin", downTp2), {
    ok: false,
    reason: "in_features 6848 is not a multiple of 128",
    fix: "pad in_features to 13824 (6912 per rank)",
  });
  const gateTp2 = q4(5120, 6848, 128, { tpRanks: 2 });
  assert.deepEqual(verdict("marlin-ist", gateTp2).fix, "pad out_features to 13824 (6912 per rank)");
});

test("288-wide layers with group 256", () => {
  const l = q4(288, 288, 256);
  assert.deepEqual(verdict("exllama", l), {
    ok: false,
    reason: "group size 256 does not divide in_features 288 (no partial groups)",
    fix: "use group size 32; or pad in_features to 512",
  });
  assert.deepEqual(verdict("marlin", l), {
    ok: false,
    reason: "group size 256 is not supported (only -1, 32, 64 or 128)",
    fix: "use group size 128 and pad in_features to 384 and pad out_features to 320",
  });
  assert.deepEqual(verdict("xnnpack-a8w4", l).fix, "use group size 32; or pad in_features to 512");
  assert.equal(verdict("ort", l).ok, true);
  assert.equal(verdict("triton", l).ok, true);
  assert.deepEqual(verdict("cuda-old", l), {
    ok: false,
    reason:
      "in_features 288 is not a multiple of 64 (its CUDA kernel needs it; otherwise AutoGPTQ falls back to a slower PyTorch path)",
    fix: "pad in_features to 320 and pad out_features to 320",
  });
});

test("scheme rules: bits, symmetry, act-order, tensor-parallel act-order", () => {
  assert.match(verdict("marlin", q4(4096, 4096, 128, { sym: false })).fix!, /quantize symmetric/);
  assert.match(verdict("triton", q4(4096, 4096, 128, { bits: 3 })).reason!, /3-bit is not supported/);
  assert.equal(verdict("cuda-old", q4(4096, 4096, 128, { bits: 3 })).ok, true);
  assert.match(verdict("ort", q4(4096, 4096, 128, { actOrder: true })).reason!, /act-order/);
  assert.equal(verdict("machete", q4(4096, 4096, 128, { actOrder: true })).ok, true);
  const split = { actOrder: true, kSplitAcrossRanks: true, tpRanks: 2 };
  assert.match(verdict("machete", q4(2048, 4096, 128, split)).reason!, /split across tensor-parallel ranks/);
  assert.equal(verdict("marlin", q4(2048, 4096, 128, split)).ok, true);
  assert.equal(verdict("marlin", q4(2048, 4096, -1, split)).ok, false);
  const alt = checkKernel(getKernel("marlin"), q4(4096, 4096, 128, { sym: false }));
  assert.match(alt.fix!, /; or use kernel machete or vllm-gptq or exllama$/);
});

/** Applies a fix's text to a query: the fix must be something a user can act on, and it must work. */
function applyFix(q: KernelQuery, fix: string): KernelQuery {
  const out = { ...q };
  const ranksIn = q.kSplitAcrossRanks ? (q.tpRanks ?? 1) : 1;
  const ranksOut = q.kSplitAcrossRanks ? 1 : (q.tpRanks ?? 1);
  for (const part of fix.split(" and ")) {
    let m: RegExpMatchArray | null;
    if ((m = part.match(/^quantize with (\d)/))) out.bits = Number(m[1]) as Bits;
    else if (part.startsWith("quantize symmetric")) out.sym = true;
    else if ((m = part.match(/^use group size (-?\d+)$/))) out.groupSize = Number(m[1]);
    else if ((m = part.match(/^pad in_features to (\d+)/))) out.inFeatures = Number(m[1]) / ranksIn;
    else if ((m = part.match(/^pad out_features to (\d+)/))) out.outFeatures = Number(m[1]) / ranksOut;
    else if (part.startsWith("quantize without act-order")) out.actOrder = false;
    else assert.fail(`fix part not understood: "${part}"`);
  }
  return out;
}

test("every failing verdict over a grid of shapes has a reason and fixes that each make it pass", () => {
  const Ks = [64, 172, 288, 768, 4544, 5120, 6848, 13696, 18176];
  const Ns = [64, 100, 288, 4672, 13696];
  const groups = [-1, 32, 64, 100, 128, 256];
  let failing = 0;
  for (const kernel of KERNELS)
    for (const K of Ks)
      for (const N of Ns)
        for (const groupSize of groups)
          for (const bits of [3, 4] as Bits[])
            for (const [sym, actOrder, kSplitAcrossRanks] of [
              [true, false, false],
              [false, true, true],
            ]) {
              const q: KernelQuery = {
                inFeatures: K,
                outFeatures: N,
                bits,
                groupSize,
                sym,
                actOrder,
                kSplitAcrossRanks,
                tpRanks: 2,
              };
              const v = kernel.supports(q);
              if (v.ok) continue;
              failing++;
              assert.ok(v.reason && v.fix, `${kernel.name} ${JSON.stringify(q)}: reason and fix`);
              for (const fix of v.fix.split("; or ")) {
                const fixed = applyFix(q, fix);
                assert.deepEqual(
                  kernel.supports(fixed),
                  { ok: true },
                  `${kernel.name} ${JSON.stringify(q)}: "${fix}"`,
                );
              }
            }
  assert.ok(failing > 1000, `the grid exercises failures (${failing})`);
});

test("tensor parallelism: row-parallel layers split in_features, the others out_features", async () => {
  const { isRowParallel, shardShape } = await import("../../src/kernels/parallel.js");
  for (const n of [
    "model.layers.3.self_attn.o_proj",
    "model.layers.0.mlp.down_proj",
    "transformer.h.0.self_attention.dense",
    "gpt_neox.layers.0.mlp.dense_4h_to_h",
    "h.0.attn.c_proj",
    "model.layers.0.fc2",
  ])
    assert.equal(isRowParallel(n), true, n);
  for (const n of [
    "model.layers.0.self_attn.qkv_proj",
    "model.layers.0.mlp.gate_up_proj",
    "transformer.h.0.mlp.dense_h_to_4h",
    "h.0.attn.c_attn",
    "lm_head",
  ])
    assert.equal(isRowParallel(n), false, n);
  assert.deepEqual(shardShape("m.down_proj", 13696, 5120, 2), {
    inFeatures: 6848,
    outFeatures: 5120,
    kSplitAcrossRanks: true,
    tpRanks: 2,
  });
  assert.deepEqual(shardShape("m.up_proj", 5120, 13696, 4), {
    inFeatures: 5120,
    outFeatures: 3424,
    kSplitAcrossRanks: false,
    tpRanks: 4,
  });
  assert.deepEqual(shardShape("m.q_proj", 5120, 5120, 3).problem, {
    reason: "out_features 5120 cannot be split evenly across 3 tensor-parallel ranks",
    fix: "pad out_features to 5121",
    pad: { side: "out", to: 5121 },
  });
});

test("vLLM's plain gptq method: full groups per shard, out_features whole packed words", () => {
  const q = (K: number, N: number, bits: 2 | 3 | 4 | 8, groupSize: number, tpRanks = 1) =>
    getKernel("vllm-gptq").supports({
      inFeatures: K,
      outFeatures: N,
      bits,
      groupSize,
      sym: false,
      actOrder: true,
      tpRanks,
    });
  assert.equal(q(4096, 4096, 4, 128).ok, true);
  assert.equal(q(176, 64, 4, 32).ok, false, "a partial last group");
  assert.match(q(176, 64, 4, 32).reason!, /group size 32 does not divide in_features 176/);
  assert.equal(q(192, 64, 4, 32).ok, true);
  assert.equal(q(176, 64, 4, -1).ok, true, "one group per column always fits");
  assert.equal(q(256, 200, 4, 128).ok, true, "200 = 25 words of 8 outputs");
  assert.equal(q(256, 200, 3, 128).ok, false, "3-bit packs 32 outputs in 3 words");
  assert.equal(q(256, 96, 3, 128).ok, true);
  assert.equal(q(256, 100, 8, 128).ok, true);
  assert.equal(q(256, 102, 8, 128).ok, false);
});
