// CUDA tests: they run where an NVIDIA GPU and the CUDA toolkit are present and skip visibly elsewhere.
// On the GPU machine: node --test dist/test/backend/cuda/gpu.test.js
import { test } from "node:test";
import assert from "node:assert/strict";
import { Bits, QuantizedLinear, numGroups } from "../../../src/formats/types.js";
import { packGptq } from "../../../src/formats/gptq.js";
import { packMarlin } from "../../../src/formats/marlin.js";
import { floatToHalf, halfToFloat } from "../../../src/tensor/dtype.js";
import { CudaDevice } from "../../../src/backend/cuda/device.js";
import { W4A16Linear, W4A16_CONFIGS, hasWgmma } from "../../../src/backend/cuda/w4a16/index.js";
import { cudaLinear } from "../../../src/backend/cuda/linear.js";
import { dequantGptq, dequantMarlin, uploadGptq } from "../../../src/backend/cuda/dequant/dequant.js";
import { randomLayer } from "../../../src/backend/cuda/bench.js";
import { compile } from "../../../src/backend/cuda/nvrtc.js";
import { Cublas } from "../../../src/backend/cuda/cublas.js";
import { fileURLToPath } from "node:url";

const skip = CudaDevice.available() ? false : "SKIPPED: no CUDA device (the CUDA tests run on a GPU machine)";
if (skip) console.warn(skip);

function randomGeneral(K: number, N: number, bits: Bits, gs: number, actOrder: boolean): QuantizedLinear {
  const G = numGroups(K, gs);
  const g = gs === -1 ? K : gs;
  const max = (1 << bits) - 1;
  const order = Array.from({ length: K }, (_, i) => i);
  if (actOrder) order.sort(() => Math.random() - 0.5);
  const gIdx = new Int32Array(K);
  order.forEach((k, pos) => (gIdx[k] = Math.floor(pos / g)));
  return {
    inFeatures: K,
    outFeatures: N,
    bits,
    groupSize: gs,
    codes: Uint8Array.from({ length: K * N }, () => Math.floor(Math.random() * (max + 1))),
    scales: Float32Array.from({ length: G * N }, () =>
      halfToFloat(floatToHalf(0.001 + 0.02 * Math.random())),
    ),
    zeros: Uint8Array.from({ length: G * N }, () => 1 + Math.floor(Math.random() * (max - 1))),
    gIdx,
  };
}

function halves(n: number): Uint16Array {
  return Uint16Array.from({ length: n }, () => floatToHalf(Math.random() * 2 - 1));
}

function refMatmul(a: Uint16Array, l: QuantizedLinear, M: number): Float64Array {
  const { inFeatures: K, outFeatures: N } = l;
  const w = new Float64Array(K * N);
  for (let k = 0; k < K; k++)
    for (let n = 0; n < N; n++)
      w[k * N + n] = l.scales[l.gIdx[k] * N + n] * (l.codes[k * N + n] - l.zeros[l.gIdx[k] * N + n]);
  const out = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let k = 0; k < K; k++) {
      const x = halfToFloat(a[m * K + k]);
      for (let n = 0; n < N; n++) out[m * N + n] += x * w[k * N + n];
    }
  return out;
}

function relErr(got: Uint16Array, ref: Float64Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    const g = halfToFloat(got[i]);
    if (!Number.isFinite(g)) return Infinity;
    num += (g - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return Math.sqrt(num / den);
}

function runLinear(
  lin: { forward: W4A16Linear["forward"] },
  a: Uint16Array,
  M: number,
  N: number,
): Uint16Array {
  const dev = CudaDevice.get();
  const da = dev.upload(a);
  const out = dev.alloc(M * N * 2);
  dev.fill16(out, 0x7fff);
  lin.forward(da, M, out);
  const got = dev.download(out, new Uint16Array(M * N));
  dev.free(da);
  dev.free(out);
  return got;
}

test(
  "W4A16 GEMM matches the float64 reference (ragged M and N, groups 32/64/128/-1, act-order)",
  { skip },
  () => {
    const dev = CudaDevice.get();
    const cases: [number, number, number, boolean][] = [
      [256, 192, 128, false],
      [512, 96, -1, false],
      [384, 128, 32, false],
      [256, 200, 64, true],
      [2048, 256, 128, false],
      [400, 72, 32, false],
      [272, 136, 128, true],
    ];
    for (const [K, N, gs, act] of cases) {
      const l = act ? randomGeneral(K, N, 4, gs, true) : randomLayer(K, N, gs);
      l.zeros.fill(8);
      const lin = W4A16Linear.fromLayer(dev, l);
      for (const M of [1, 3, 16, 17, 33, 64, 65, 130]) {
        const a = halves(M * K);
        const err = relErr(runLinear(lin, a, M, N), refMatmul(a, l, M));
        assert.ok(err < 3e-3, `K=${K} N=${N} g=${gs} act=${act} M=${M}: relative error ${err}`);
      }
      lin.dispose();
    }
  },
);

test("every compiled W4A16 configuration is correct", { skip }, () => {
  const dev = CudaDevice.get();
  const configs = W4A16_CONFIGS.filter((c) => c.kind === "mma" || hasWgmma(dev));
  // fixed splits: 2 and 3 meet in a cluster (8 and 16 rows), 8 in the workspace; with 4 k-slices, 3
  // and 8 splits leave slices without a chunk
  const sixteen = configs.find((c) => c.kind === "mma" && c.rows === 16)!;
  const sliced = configs.find((c) => c.kslices === 4)!;
  const fixedSplits = [configs[0], sixteen, sliced, configs[configs.length - 1]].flatMap((c) =>
    [1, 2, 3, 8].map((splits) => ({ ...c, splits })),
  );
  // 1024 x 192: 8 chunks of K, 3 tiles; 400 x 136: a ragged last chunk, a ragged last tile
  for (const [K, N] of [
    [1024, 192],
    [400, 136],
  ])
    for (const gs of [128, 64, 32, -1]) {
      const l = randomLayer(K, N, gs);
      const lin = W4A16Linear.fromLayer(dev, l);
      for (const c of [...configs, ...fixedSplits]) {
        lin.config = c;
        for (const M of [1, 5, 16, c.rows + 1]) {
          const a = halves(M * K);
          const err = relErr(runLinear(lin, a, M, N), refMatmul(a, l, M));
          assert.ok(err < 3e-3, `${K}x${N} g=${gs} ${JSON.stringify(c)} M=${M}: relative error ${err}`);
        }
      }
      lin.dispose();
    }
});

test(
  "programmatic dependent launch: back-to-back W4A16 launches give the reference results",
  { skip },
  () => {
    const dev = CudaDevice.get();
    const K = 1024;
    const N = 192;
    const l = randomLayer(K, N, 128);
    const lin = W4A16Linear.fromLayer(dev, l);
    lin.overlap = true;
    for (const M of [1, 16, 40]) {
      const a = halves(M * K);
      const ref = refMatmul(a, l, M);
      const da = dev.upload(a);
      // several launches in a row on one stream, each free to start while the one before it ends; the
      // split-k workspace and counters are shared by all of them
      const outs = [0, 1, 2].map(() => dev.alloc(M * N * 2));
      for (const o of outs) dev.fill16(o, 0x7fff);
      for (const o of outs) lin.forward(da, M, o);
      for (const o of outs) {
        const err = relErr(dev.download(o, new Uint16Array(M * N)), ref);
        assert.ok(err < 3e-3, `M=${M}: relative error ${err}`);
        dev.free(o);
      }
      dev.free(da);
    }
    lin.dispose();
  },
);

test("GPTQ dequantization: v1/v2, 2/3/4/8 bits, act-order, asymmetric zeros, exact", { skip }, () => {
  const dev = CudaDevice.get();
  for (const bits of [2, 3, 4, 8] as Bits[])
    for (const version of ["v1", "v2"] as const) {
      const K = 128;
      const N = 64;
      const l = randomGeneral(K, N, bits, 32, true);
      const g = uploadGptq(
        dev,
        packGptq(l, version),
        { inFeatures: K, outFeatures: N, bits, groupSize: 32 },
        version,
      );
      const out = dev.alloc(K * N * 2);
      dequantGptq(dev, g, out);
      const got = dev.download(out, new Uint16Array(K * N));
      for (let k = 0; k < K; k++)
        for (let n = 0; n < N; n++) {
          const gi = l.gIdx[k];
          const want = floatToHalf(l.scales[gi * N + n] * (l.codes[k * N + n] - l.zeros[gi * N + n]));
          assert.equal(got[k * N + n], want, `${bits}-bit ${version} k=${k} n=${n}`);
        }
      dev.free(out);
    }
});

test("Marlin dequantization matches the codes and scales (group 128 and -1)", { skip }, () => {
  const dev = CudaDevice.get();
  for (const gs of [128, -1]) {
    const K = 256;
    const N = 128;
    const l = randomLayer(K, N, gs);
    const out = dev.alloc(K * N * 2);
    dequantMarlin(dev, packMarlin(l), { inFeatures: K, outFeatures: N, groupSize: gs }, out);
    const got = dev.download(out, new Uint16Array(K * N));
    for (let k = 0; k < K; k++)
      for (let n = 0; n < N; n++)
        assert.equal(
          got[k * N + n],
          floatToHalf(l.scales[l.gIdx[k] * N + n] * (l.codes[k * N + n] - 8)),
          `g=${gs} k=${k} n=${n}`,
        );
    dev.free(out);
  }
});

test("the generic path (dequant + cuBLAS) runs 3-bit act-order layers", { skip }, () => {
  const dev = CudaDevice.get();
  const K = 256;
  const N = 96;
  const l = randomGeneral(K, N, 3, 64, true);
  const t = packGptq(l, "v2");
  const lin = cudaLinear(dev, l, () =>
    uploadGptq(dev, t, { inFeatures: K, outFeatures: N, bits: 3, groupSize: 64 }, "v2"),
  );
  assert.equal(lin.kernel, "gptq-ts-dequant");
  for (const M of [1, 7]) {
    const a = halves(M * K);
    const err = relErr(runLinear(lin, a, M, N), refMatmul(a, l, M));
    assert.ok(err < 3e-3, `M=${M}: relative error ${err}`);
  }
  lin.dispose();
});

test("cuBLAS fp16 linear matches the reference", { skip }, () => {
  const dev = CudaDevice.get();
  const M = 5;
  const K = 64;
  const N = 48;
  const a = halves(M * K);
  const w = halves(N * K);
  const [da, dw, dc] = [dev.upload(a), dev.upload(w), dev.alloc(M * N * 2)];
  Cublas.get(dev).linear(da, dw, dc, M, N, K);
  const got = dev.download(dc, new Uint16Array(M * N));
  const ref = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++)
      for (let k = 0; k < K; k++) ref[m * N + n] += halfToFloat(a[m * K + k]) * halfToFloat(w[n * K + k]);
  assert.ok(relErr(got, ref) < 2e-3);
  for (const b of [da, dw, dc]) dev.free(b);
});

test("NVRTC output is cached on disk", { skip }, () => {
  const dev = CudaDevice.get();
  const file = fileURLToPath(new URL("../../../src/backend/cuda/dequant/dequant.cu", import.meta.url));
  compile(file, dev.info.arch, dev.info.driverVersion);
  assert.equal(compile(file, dev.info.arch, dev.info.driverVersion).cached, true);
});
