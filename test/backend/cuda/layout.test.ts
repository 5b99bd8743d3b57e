// CPU tests of the W4A16 layout and launch logic: the layout round-trips, and an emulation of the
// kernel's per-lane fragments (as PTX defines mma.m16n8k16) reproduces the float reference.
import { test } from "node:test";
import assert from "node:assert/strict";
import { QuantizedLinear } from "../../../src/formats/types.js";
import {
  W4A16_CONFIGS,
  chooseConfig,
  geometry,
  groupOrder,
  packW4A16,
  unpackW4A16Codes,
  w4a16Unsupported,
} from "../../../src/backend/cuda/layout.js";
import { marlinTables } from "../../../src/backend/cuda/dequant.js";
import { randomLayer } from "../../../src/backend/cuda/bench.js";
import { GPTQ_TS_DEQUANT, GPTQ_TS_W4A16 } from "../../../src/kernels/gptq-ts.js";
import { halfToFloat } from "../../../src/tensor/dtype.js";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

function actOrderLayer(K: number, N: number, gs: number): QuantizedLinear {
  const l = randomLayer(K, N, gs);
  // a random order of the rows, groups assigned by position in that order (as act-order GPTQ does)
  const order = Array.from({ length: K }, (_, i) => i).sort(() => Math.random() - 0.5);
  order.forEach((k, pos) => (l.gIdx[k] = Math.floor(pos / gs)));
  return l;
}

test("W4A16 layout round-trips codes, padding N to 64 columns", () => {
  for (const [K, N, gs] of [
    [64, 128, 32],
    [128, 200, 128],
    [48, 72, -1],
  ]) {
    const l = randomLayer(K, N, gs);
    const lay = packW4A16(l);
    assert.equal(lay.ntiles, Math.ceil(N / 64));
    assert.deepEqual(unpackW4A16Codes(lay), l.codes);
    assert.equal(lay.perm, null);
  }
});

test("act-order layers are stored with rows sorted by group", () => {
  const l = actOrderLayer(128, 64, 32);
  const lay = packW4A16(l);
  assert.ok(lay.perm);
  const codes = unpackW4A16Codes(lay);
  for (let k = 0; k < 128; k++) {
    assert.equal(l.gIdx[lay.perm![k]], Math.floor(k / 32));
    for (let n = 0; n < 64; n++) assert.equal(codes[k * 64 + n], l.codes[lay.perm![k] * 64 + n]);
  }
});

/** The kernel's arithmetic, lane by lane: fragments from the layout, mma by the PTX fragment tables. */
function emulate(lay: ReturnType<typeof packW4A16>, a: Float32Array, M: number): Float64Array {
  const { K, N, ntiles, B, S, groupSize } = lay;
  const ktiles = K / 16;
  const Npad = ntiles * 64;
  const C = new Float64Array(M * Npad);
  const nib = (w: number, i: number) => (w >>> (4 * i)) & 15;
  for (let t = 0; t < ntiles; t++)
    for (let kt = 0; kt < ktiles; kt++) {
      const g = Math.floor((kt * 16) / groupSize);
      for (let lane = 0; lane < 32; lane++) {
        const gg = lane >> 2;
        const c = lane & 3;
        for (let w = 0; w < 4; w++) {
          const word = B[(t * ktiles + kt) * 128 + lane * 4 + w];
          for (const [j, b0lo, b0hi, b1lo, b1hi] of [
            [2 * w, 0, 4, 1, 5],
            [2 * w + 1, 2, 6, 3, 7],
          ]) {
            const s = halfToFloat(S[((g * ntiles + t) * 8 + gg) * 8 + j]);
            // b0 = rows 2c, 2c+1; b1 = rows 2c+8, 2c+9; column n = lane / 4 of sub-tile j
            const vals: [number, number][] = [
              [2 * c, nib(word, b0lo)],
              [2 * c + 1, nib(word, b0hi)],
              [2 * c + 8, nib(word, b1lo)],
              [2 * c + 9, nib(word, b1hi)],
            ];
            const n = t * 64 + j * 8 + gg;
            for (const [r, q] of vals) {
              const k = kt * 16 + r;
              for (let m = 0; m < M; m++) C[m * Npad + n] += a[m * K + k] * (q - 8) * s;
            }
          }
        }
      }
    }
  const out = new Float64Array(M * N);
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) out[m * N + n] = C[m * Npad + n];
  return out;
}

test("the kernel's fragment mapping computes A x W (emulated on the CPU)", () => {
  const K = 96;
  const N = 80;
  const M = 3;
  for (const l of [randomLayer(K, N, 32), actOrderLayer(K, N, 32)]) {
    const lay = packW4A16(l);
    const a = Float32Array.from({ length: M * K }, () => Math.random() - 0.5);
    // activations as the kernel sees them: permuted for act-order
    const ap = new Float32Array(M * K);
    for (let m = 0; m < M; m++)
      for (let k = 0; k < K; k++) ap[m * K + k] = a[m * K + (lay.perm ? lay.perm[k] : k)];
    const got = emulate(lay, ap, M);
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) {
        let ref = 0;
        for (let k = 0; k < K; k++)
          ref += a[m * K + k] * l.scales[l.gIdx[k] * N + n] * (l.codes[k * N + n] - 8);
        assert.ok(
          Math.abs(got[m * N + n] - ref) < 1e-9 * (1 + Math.abs(ref)),
          `m=${m} n=${n}: ${got[m * N + n]} vs ${ref}`,
        );
      }
  }
});

test("layers the W4A16 kernel cannot take are refused with the reason", () => {
  const l = randomLayer(64, 64, 32);
  assert.equal(w4a16Unsupported(l), null);
  assert.match(w4a16Unsupported({ ...l, bits: 8 }) ?? "", /8-bit/);
  const asym = { ...l, zeros: l.zeros.map((z, i) => (i === 5 ? 3 : z)) };
  assert.match(w4a16Unsupported(asym) ?? "", /asymmetric/);
  const odd = { ...l, gIdx: l.gIdx.map((g, k) => (k === 0 ? 1 : g)) };
  assert.match(w4a16Unsupported(odd) ?? "", /contiguous groups/);
  assert.throws(() => packW4A16({ ...l, bits: 8 }), /W4A16 kernel: 8-bit/);
});

test("kernel rules: W4A16 for 4-bit symmetric, dequant for the rest", () => {
  const q = {
    inFeatures: 4096,
    outFeatures: 4096,
    bits: 4 as const,
    groupSize: 128,
    sym: true,
    actOrder: true,
  };
  assert.ok(GPTQ_TS_W4A16.supports(q).ok);
  assert.equal(GPTQ_TS_W4A16.supports({ ...q, bits: 3 }).ok, false);
  assert.match(GPTQ_TS_W4A16.supports({ ...q, inFeatures: 4100 }).fix ?? "", /pad in_features to 4224/);
  assert.match(
    GPTQ_TS_W4A16.supports({ ...q, groupSize: 100 }).reason ?? "",
    /group size 100 is not supported/,
  );
  assert.ok(GPTQ_TS_DEQUANT.supports({ ...q, bits: 3 }).ok);
  assert.equal(GPTQ_TS_DEQUANT.supports({ ...q, bits: 3, inFeatures: 4112 }).ok, false);
  assert.ok(GPTQ_TS_W4A16.ours && GPTQ_TS_DEQUANT.ours);
});

test("launch geometry covers every k-tile and the configurations match the compiled kernels", () => {
  const cu = readFileSync(
    fileURLToPath(new URL("../../../src/backend/cuda/kernels/w4a16.cu", import.meta.url)),
    "utf8",
  );
  const compiled = [...cu.matchAll(/^W4A16_STREAM_KERNEL\((\d+), (\d+), (\d+), (\d+)\)/gm)].map((m) =>
    m.slice(1).join(","),
  );
  assert.deepEqual(
    compiled,
    W4A16_CONFIGS.map((c) => `${c.warps},${c.stages},${c.kt},${c.mt}`),
  );
  for (const [M, K, N] of [
    [1, 4096, 4096],
    [16, 8192, 57344],
    [17, 11008, 4096],
    [130, 8192, 57344],
  ]) {
    const c = chooseConfig(M);
    const g = geometry(c, M, N, K);
    assert.ok(g.grid[1] * c.warps * g.ktPerWarp * 16 >= K);
    assert.ok((g.grid[1] - 1) * c.warps * g.ktPerWarp * 16 < K, "no k-split without work");
    assert.ok(g.grid[2] * c.mt * 16 >= M);
    assert.ok(g.sharedBytes <= 227 * 1024);
  }
});

test("Marlin tables are permutations", () => {
  const t = marlinTables();
  for (const p of [t.perm, t.scaleInvGrouped, t.scaleInvChannel])
    assert.deepEqual(
      [...p].sort((a, b) => a - b),
      Array.from({ length: p.length }, (_, i) => i),
    );
  assert.deepEqual(Array.from(groupOrder(Int32Array.from([1, 0, 1, 0]))), [1, 3, 0, 2]);
});
