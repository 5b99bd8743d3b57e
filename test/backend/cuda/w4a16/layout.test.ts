// CPU tests of the W4A16 layout and launch logic: the layout round-trips, and an emulation of the
// kernel's per-lane fragments (as PTX defines mma.m16n8k16) reproduces the float reference.
import { test } from "node:test";
import assert from "node:assert/strict";
import { QuantizedLinear } from "../../../../src/formats/types.js";
import {
  W4A16_CONFIGS,
  chooseConfig,
  maxCluster,
  configName,
  geometry,
  kernelName,
  parseConfig,
  sharedBytes,
  tilesPerBlock,
  groupOrder,
  packW4A16,
  unpackW4A16Codes,
  w4a16Unsupported,
} from "../../../../src/backend/cuda/w4a16/index.js";
import { marlinTables } from "../../../../src/backend/cuda/dequant/dequant.js";
import { randomLayer } from "../../../../src/backend/cuda/bench.js";
import { GPTQ_TS_DEQUANT, GPTQ_TS_W4A16 } from "../../../../src/kernels/gptq-ts.js";
import { halfToFloat } from "../../../../src/tensor/dtype.js";
import { readFileSync } from "node:fs";
import { LaunchAttribute, LaunchConfig, koffi } from "../../../../src/backend/cuda/driver.js";
import { CudaDevice, launchAttributes } from "../../../../src/backend/cuda/device.js";
import { hasWgmma, w4a16DeviceUnsupported } from "../../../../src/backend/cuda/w4a16/index.js";
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

/** A kernel source file (the tests run from dist/, the sources sit in src/). */
const source = (name: string) =>
  readFileSync(fileURLToPath(new URL(`../../../../src/backend/cuda/w4a16/${name}`, import.meta.url)), "utf8");

/**
 * The ACC decode's offsets (w4a16.cuh biased_word): rows k..k+7 of a k-tile carry 1024 + q, rows
 * k+8..k+15 carry 1024 + 16q against activations divided by 16; the constant operands 1032 and 1152 give
 * the offsets' share, which the kernel subtracts from each chunk's partial sums.
 */
const biased = (row: number, q: number) => (row % 16 < 8 ? 1024 + q : 1024 + 16 * q);
const biasedAct = (row: number) => (row % 16 < 8 ? 1 : 1 / 16);
const offsetOperand = (row: number) => (row % 16 < 8 ? 1032 : 1152);

/**
 * The kernel's arithmetic, lane by lane: B fragments from the layout, mma by the PTX fragment tables,
 * scales read where each path reads them. `acc`: the decode path, codes with their offsets left in
 * summed per 128-row chunk, the offsets' product (one more mma per k-tile) subtracted, and the chunk's
 * partial sums scaled by the scales of accumulator columns 8j + 2c + e. Else every fragment is
 * dequantized exactly and scaled by the scale of its B column 8j + g.
 */
function emulate(lay: ReturnType<typeof packW4A16>, a: Float32Array, M: number, acc: boolean): Float64Array {
  const { K, Kpad, N, ntiles, B, S, groupSize } = lay;
  const ktiles = Kpad / 16;
  const Npad = ntiles * 64;
  const C = new Float64Array(M * Npad);
  const nib = (w: number, i: number) => (w >>> (4 * i)) & 15;
  const scale = (g: number, t: number, c: number, j: number, e: number) =>
    halfToFloat(S[(g * ntiles + t) * 64 + c * 16 + j * 2 + e]);
  const act = (m: number, k: number) => (k < K ? a[m * K + k] : 0);
  for (let t = 0; t < ntiles; t++)
    for (let chunk = 0; chunk < ktiles / 8; chunk++) {
      const part = new Float64Array(M * 64); // mma output of the chunk, per row and tile column
      for (let kt = chunk * 8; kt < chunk * 8 + 8; kt++) {
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
              // fragment side: column gg of sub-tile j is 8j + gg = 8j + 2(gg >> 1) + (gg & 1)
              const s = acc ? 1 : scale(g, t, gg >> 1, j, gg & 1);
              // b0 = rows 2c, 2c+1; b1 = rows 2c+8, 2c+9; column n = lane / 4 of sub-tile j
              const vals: [number, number][] = [
                [2 * c, nib(word, b0lo)],
                [2 * c + 1, nib(word, b0hi)],
                [2 * c + 8, nib(word, b1lo)],
                [2 * c + 9, nib(word, b1hi)],
              ];
              for (const [r, q] of vals)
                for (let m = 0; m < M; m++)
                  part[m * 64 + j * 8 + gg] += acc
                    ? act(m, kt * 16 + r) * biasedAct(r) * biased(r, q)
                    : act(m, kt * 16 + r) * (q - 8) * s;
            }
          }
        }
        // the offsets' mma: activations (A, the high rows / 16) x constant B, every column alike
        if (acc)
          for (let m = 0; m < M; m++) {
            let corr = 0;
            for (let r = 0; r < 16; r++) corr += act(m, kt * 16 + r) * biasedAct(r) * offsetOperand(r);
            for (let col = 0; col < 64; col++) part[m * 64 + col] -= corr;
          }
      }
      // accumulator side: lane (g, c) holds columns 8j + 2c + e of the chunk's partial sums
      const g = Math.floor((chunk * 128) / groupSize);
      for (let m = 0; m < M; m++)
        for (let col = 0; col < 64; col++) {
          const s = acc ? scale(g, t, (col & 7) >> 1, col >> 3, col & 1) : 1;
          C[m * Npad + t * 64 + col] += part[m * 64 + col] * s;
        }
    }
  const out = new Float64Array(M * N);
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) out[m * N + n] = C[m * Npad + n];
  return out;
}

test("the offset constants of the kernel's decode are the ones emulated here", () => {
  const cuh = source("w4a16.cuh");
  const half2 = (name: string) => {
    const m = new RegExp(`${name} = 0x([0-9a-f]{8})`).exec(cuh);
    assert.ok(m, `${name} in w4a16.cuh`);
    const v = parseInt(m[1], 16);
    assert.equal(v >>> 16, v & 0xffff, `${name}: both halves alike`);
    return halfToFloat(v & 0xffff);
  };
  assert.equal(half2("BIAS_LO"), offsetOperand(0));
  assert.equal(half2("BIAS_HI"), offsetOperand(8));
  assert.equal(half2("SIXTEENTH"), biasedAct(8));
  // and the algebra: each offset cancels, low and high rows alike
  for (const q of [0, 7, 8, 15])
    for (const row of [0, 8])
      assert.equal(biased(row, q) * biasedAct(row) - offsetOperand(row) * biasedAct(row), q - 8);
});

test("the kernel's fragment mapping computes A x W on both scale paths (emulated on the CPU)", () => {
  const M = 3;
  for (const [K, N, gs] of [
    [96, 80, 32],
    [160, 72, 64],
    [400, 80, 128],
    [144, 64, -1],
  ])
    for (const l of gs === -1 ? [randomLayer(K, N, gs)] : [randomLayer(K, N, gs), actOrderLayer(K, N, gs)]) {
      const lay = packW4A16(l);
      assert.equal(lay.Kpad % 128, 0);
      const a = Float32Array.from({ length: M * K }, () => Math.random() - 0.5);
      // activations as the kernel sees them: permuted for act-order
      const ap = new Float32Array(M * K);
      for (let m = 0; m < M; m++)
        for (let k = 0; k < K; k++) ap[m * K + k] = a[m * K + (lay.perm ? lay.perm[k] : k)];
      // the decode path needs one group per chunk
      for (const acc of gs === 32 || gs === 64 ? [false] : [false, true]) {
        const got = emulate(lay, ap, M, acc);
        for (let m = 0; m < M; m++)
          for (let n = 0; n < N; n++) {
            let ref = 0;
            for (let k = 0; k < K; k++)
              ref += a[m * K + k] * l.scales[l.gIdx[k] * N + n] * (l.codes[k * N + n] - 8);
            assert.ok(
              Math.abs(got[m * N + n] - ref) < 1e-9 * (1 + Math.abs(ref)),
              `K=${K} g=${gs} acc=${acc} m=${m} n=${n}: ${got[m * N + n]} vs ${ref}`,
            );
          }
      }
    }
});

/**
 * The 8-row blocks' orientation: per 16 columns (word w of each lane) the weights are the mma's A
 * operand, assembled here from all 32 lanes by the PTX table for m16n8k16 (reg 0: row g, k 2c..2c+1;
 * reg 1: row g+8; reg 2: row g, k 2c+8..; reg 3: row g+8, k 2c+8..), rows 0-7 and 8-15 being columns
 * 16w + g and 16w + g + 8, with their offsets left in against activations whose k 8..15 are / 16; the
 * offsets' mma (constant A) is subtracted, and the chunk's partial sums are scaled by each lane's
 * column-g scales.
 */
function emulateTransposed(lay: ReturnType<typeof packW4A16>, a: Float32Array, M: number): Float64Array {
  const { K, Kpad, N, ntiles, B, S, groupSize } = lay;
  const ktiles = Kpad / 16;
  const out = new Float64Array(M * N);
  const nib = (v: number, i: number) => (v >>> (4 * i)) & 15;
  const act = (m: number, k: number) => (k < K ? a[m * K + k] : 0);
  for (let t = 0; t < ntiles; t++)
    for (let chunk = 0; chunk < ktiles / 8; chunk++) {
      const g = Math.floor((chunk * 128) / groupSize);
      for (let w = 0; w < 4; w++) {
        const part = new Float64Array(16 * M); // D[row][token]
        for (let kt = chunk * 8; kt < chunk * 8 + 8; kt++) {
          const A = Array.from({ length: 16 }, () => new Float64Array(16));
          for (let lane = 0; lane < 32; lane++) {
            const gg = lane >> 2;
            const c = lane & 3;
            const word = B[(t * ktiles + kt) * 128 + lane * 4 + w];
            // the kernel's registers: {nibbles 0,4}, {2,6}, {1,5}, {3,7} (lo, hi half)
            const regs = [
              [0, 4],
              [2, 6],
              [1, 5],
              [3, 7],
            ];
            regs.forEach(([lo, hi], r) => {
              const row = gg + (r & 1) * 8;
              const k = 2 * c + (r >> 1) * 8;
              A[row][k] = biased(k, nib(word, lo));
              A[row][k + 1] = biased(k + 1, nib(word, hi));
            });
          }
          for (let row = 0; row < 16; row++)
            for (let m = 0; m < M; m++)
              for (let k = 0; k < 16; k++)
                part[row * M + m] += A[row][k] * act(m, kt * 16 + k) * biasedAct(k);
          // the offsets' mma: constant A (1032 for k 0-7, 1152 for k 8-15), the same B
          for (let m = 0; m < M; m++) {
            let corr = 0;
            for (let k = 0; k < 16; k++) corr += offsetOperand(k) * act(m, kt * 16 + k) * biasedAct(k);
            for (let row = 0; row < 16; row++) part[row * M + m] -= corr;
          }
        }
        for (let row = 0; row < 16; row++) {
          const gg = row & 7;
          const j = 2 * w + (row >> 3); // column 8j + gg
          const n = t * 64 + 8 * j + gg;
          const s = halfToFloat(S[(g * ntiles + t) * 64 + (gg >> 1) * 16 + j * 2 + (gg & 1)]);
          if (n < N) for (let m = 0; m < M; m++) out[m * N + n] += part[row * M + m] * s;
        }
      }
    }
  return out;
}

test("8-row blocks: the same words as the mma's A operand compute A x W (emulated)", () => {
  const M = 5;
  for (const [K, N, gs] of [
    [272, 80, 128],
    [256, 64, -1],
  ]) {
    const l = randomLayer(K, N, gs);
    const lay = packW4A16(l);
    const a = Float32Array.from({ length: M * K }, () => Math.random() - 0.5);
    const got = emulateTransposed(lay, a, M);
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) {
        let ref = 0;
        for (let k = 0; k < K; k++)
          ref += a[m * K + k] * l.scales[l.gIdx[k] * N + n] * (l.codes[k * N + n] - 8);
        assert.ok(Math.abs(got[m * N + n] - ref) < 1e-9 * (1 + Math.abs(ref)), `K=${K} m=${m} n=${n}`);
      }
  }
});

/**
 * The warpgroup-MMA kernel (wgmma.cu), index by index: each stage's activations placed as its two
 * TMA boxes (64 k x R rows, 128-byte swizzle: the 16-byte chunk j of row n lands at chunk j ^ (n % 8);
 * zeros past M and K), read back as wgmma reads a K-major swizzled operand through the kernel's
 * descriptors (8-row groups 1024 bytes apart, the k16 step i at box i / 4 plus 32 (i % 4) bytes, the
 * same swizzle applied to the address), scales read at each lane's offset for its two columns and scale
 * group, and the A fragments of warp w taken from word w of every lane (mma.m16n8k16's A table).
 */
function emulateWgmma(lay: ReturnType<typeof packW4A16>, a: Float32Array, M: number, R: number, SG: number) {
  const { K, Kpad, N, ntiles, B, S, groupSize } = lay;
  const ktiles = Kpad / 16;
  const groupTiles = groupSize / 16;
  const out = new Float64Array(M * N);
  const nib = (v: number, i: number) => ((v >>> (4 * i)) & 15) - 8;
  for (let m0 = 0; m0 < M; m0 += R)
    for (let t = 0; t < ntiles; t++) {
      const D = Array.from({ length: 64 }, () => new Float64Array(R));
      for (let c = 0; c < ktiles / 8; c++) {
        const kc = c * 128;
        // 128-byte swizzle, relative to a 1024-byte-aligned base: address bits 4-6 ^= bits 7-9
        const swizzle = (byte: number) => byte ^ (((byte >> 7) & 7) << 4);
        const act = new Float64Array(R * 128).fill(NaN); // by byte offset / 2
        for (let box = 0; box < 2; box++)
          for (let n = 0; n < R; n++)
            for (let kk = 0; kk < 64; kk++) {
              const at = swizzle(box * R * 128 + n * 128 + kk * 2) / 2;
              const k = kc + box * 64 + kk;
              assert.ok(Number.isNaN(act[at]), `R=${R}: byte ${2 * at} written twice`);
              act[at] = m0 + n < M && k < K ? a[(m0 + n) * K + k] : 0;
            }
        assert.ok(!act.some(Number.isNaN), "every activation byte of the stage is written");
        // the tile's scales in shared memory: SG groups x 64 halves (one cp.async of 16 bytes per 8)
        const sm = new Float64Array(SG * 64);
        for (let sg = 0; sg < SG; sg++) {
          const gi = Math.floor((c * 8 + sg * (8 / SG)) / groupTiles);
          for (let h = 0; h < 64; h++) sm[sg * 64 + h] = halfToFloat(S[(gi * ntiles + t) * 64 + h]);
        }
        for (let i = 0; i < 8; i++) {
          const sg = Math.floor(i / (8 / SG));
          const start = (i >> 2) * (R * 128) + (i & 3) * 32;
          const Bop = (k: number, n: number) =>
            act[swizzle(start + (n >> 3) * 1024 + (n & 7) * 128 + k * 2) / 2];
          for (let w = 0; w < 4; w++) {
            const Afr = Array.from({ length: 16 }, () => new Float64Array(16));
            for (let lane = 0; lane < 32; lane++) {
              const gq = lane >> 2;
              const cq = lane & 3;
              const n0 = 16 * w + gq;
              const sRead = ((n0 & 7) >> 1) * 16 + (n0 >> 3) * 2 + (n0 & 1); // halves
              const s0 = sm[sg * 64 + sRead];
              const s1 = sm[sg * 64 + sRead + 2];
              const word = B[(t * ktiles + c * 8 + i) * 128 + lane * 4 + w];
              [
                [0, 4, s0],
                [2, 6, s1],
                [1, 5, s0],
                [3, 7, s1],
              ].forEach(([lo, hi, sc], r) => {
                const row = gq + (r & 1) * 8;
                const k = 2 * cq + (r >> 1) * 8;
                Afr[row][k] = nib(word, lo) * sc;
                Afr[row][k + 1] = nib(word, hi) * sc;
              });
            }
            for (let row = 0; row < 16; row++)
              for (let n = 0; n < R; n++)
                for (let k = 0; k < 16; k++) D[16 * w + row][n] += Afr[row][k] * Bop(k, n);
          }
        }
      }
      // lane (warp w, gq, cq) stores d[4j + e] at row m0 + 8j + 2cq + (e & 1), column 64t + 16w + gq + 8(e >> 1)
      for (let w = 0; w < 4; w++)
        for (let lane = 0; lane < 32; lane++)
          for (let j = 0; j < R / 8; j++)
            for (let e = 0; e < 4; e++) {
              const dr = 16 * w + (lane >> 2) + 8 * (e >> 1);
              const dc = 8 * j + 2 * (lane & 3) + (e & 1);
              const row = m0 + dc;
              const col = t * 64 + dr;
              if (row < M && col < N) out[row * N + col] = D[dr][dc];
            }
    }
  return out;
}

test("warpgroup MMA: the stage layout, descriptors, scales and fragments compute A x W (emulated)", () => {
  // [K, N, group, M, rows per block]
  for (const [K, N, gs, M, R] of [
    [272, 80, 128, 20, 16],
    [256, 64, -1, 5, 16],
    [128, 72, 32, 40, 32],
    [256, 64, 64, 70, 64],
    [128, 64, 128, 130, 128],
  ]) {
    const l = randomLayer(K, N, gs);
    const lay = packW4A16(l);
    const SG = gs === 32 ? 4 : gs === 64 ? 2 : 1;
    const a = Float32Array.from({ length: M * K }, () => Math.random() - 0.5);
    const got = emulateWgmma(lay, a, M, R, SG);
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) {
        let ref = 0;
        for (let k = 0; k < K; k++)
          ref += a[m * K + k] * l.scales[l.gIdx[k] * N + n] * (l.codes[k * N + n] - 8);
        assert.ok(Math.abs(got[m * N + n] - ref) < 1e-9 * (1 + Math.abs(ref)), `K=${K} R=${R} m=${m} n=${n}`);
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

test("launch geometry covers every chunk of K", () => {
  for (const [M, K, N] of [
    [1, 4096, 4096],
    [16, 8192, 57344],
    [17, 11008, 4096],
    [130, 8192, 57344],
    [3, 4608, 200],
  ]) {
    for (const c of [chooseConfig(M, K, N), chooseConfig(M, K, N, true)]) {
      assert.ok(c.rows >= Math.min(M, 8));
      for (const splits of [0, 1, 3, 1000]) {
        const g = geometry({ ...c, splits }, M, N, K, 128, 132, 3);
        const chunks = K / 128;
        assert.ok(g.grid[2] * g.chunksPerSplit >= chunks, "every chunk is walked");
        assert.ok((g.grid[2] - 1) * g.chunksPerSplit < chunks, "no split without work");
        assert.ok(g.grid[0] * c.rows >= M);
        assert.ok(g.grid[1] * tilesPerBlock(c) * 64 >= N);
        assert.ok(g.sharedBytes <= 227 * 1024);
        if (splits) assert.equal(g.grid[2], Math.min(splits, chunks, g.grid[2]));
        // the splits of a tile meet in one cluster (mma.sync, up to 16 rows) or in the workspace
        assert.equal(g.grid[2] % g.cluster, 0);
        assert.equal(g.cluster > 1, g.grid[2] > 1 && g.grid[2] <= maxCluster(c));
        if (g.cluster > 1) assert.equal(g.cluster, g.grid[2]);
        assert.equal(g.workspaceBytes > 0, g.grid[2] > 1 && g.cluster === 1);
        assert.equal(g.counters > 0, g.workspaceBytes > 0);
      }
    }
  }
  for (const c of W4A16_CONFIGS)
    for (const gs of [128, 64, 32]) assert.ok(sharedBytes(c, gs) <= 227 * 1024, `${configName(c)} g${gs}`);
  assert.equal(chooseConfig(64, 4096, 4096).kind, "mma", "no warpgroup MMA unless the GPU has it");
  assert.equal(chooseConfig(64, 4096, 4096, true).kind, "wgmma");
  // decode-sized products are split to fill the GPU, but never below 4 chunks a split (mma.sync)
  const g = geometry(chooseConfig(1), 1, 4096, 4096, 128, 132, 3);
  assert.deepEqual([g.grid, g.chunksPerSplit], [[1, 16, 8], 4]);
  // k-sliced blocks: two tiles each, and their slices share the split's chunks
  const sliced = parseConfig("r8_w8_k4_p2");
  assert.equal(tilesPerBlock(sliced), 2);
  assert.equal(chooseConfig(1, 4096, 4096, true).kslices, 4);
  assert.equal(chooseConfig(8, 11008, 4096, true).kslices, 2);
  assert.equal(chooseConfig(1, 4096, 12288, true).kslices, undefined);
  assert.equal(configName(chooseConfig(128, 4096, 4096, true)), "wg_r64_x2_p4");
  assert.equal(configName(chooseConfig(128, 4096, 12288, true)).slice(0, 7), "wg_r128");
  // their shared memory stages only M's rows; a full block's is the most
  assert.ok(sharedBytes(sliced, 128, 1) < sharedBytes(sliced, 128, 8));
  assert.equal(sharedBytes(sliced, 128, 8), sharedBytes(sliced, 128));
  assert.equal(sharedBytes(sliced, 128, 100), sharedBytes(sliced, 128));
  // at 5-8 rows, 4-warp blocks (8 warps above 2^27 weights) whose splits keep 8 chunks
  assert.equal(configName(chooseConfig(8, 4096, 12288, true)), "r8_w4_p2");
  assert.equal(configName(chooseConfig(8, 8192, 57344, true)), "r8_w8_p2_a8");
  assert.equal(geometry(chooseConfig(8, 4096, 12288, true), 8, 12288, 4096, 128, 132, 5).chunksPerSplit, 8);
  assert.equal(geometry(chooseConfig(4, 4096, 12288, true), 4, 12288, 4096, 128, 132, 5).chunksPerSplit, 4);
  const big = geometry(chooseConfig(1), 1, 57344, 8192, 128, 132, 3);
  assert.ok(big.grid[1] * big.grid[2] >= 132 * 3);
  // a tie goes to more splits: 8 splits of 8 chunks in 3 waves cost what 5 of 13 in 2 do (5 blocks a
  // multiprocessor), and the more blocks hide more latency
  const tie = geometry(chooseConfig(1, 8192, 57344, true), 1, 57344, 8192, 128, 132, 5);
  assert.deepEqual([tie.grid[2], tie.chunksPerSplit, tie.cost], [8, 8, 30]);
  assert.deepEqual(parseConfig("r16_w4_p3_s8"), { kind: "mma", rows: 16, warps: 4, stages: 3, splits: 8 });
  assert.deepEqual(parseConfig("wg_r64_x2_p4"), { kind: "wgmma", rows: 64, warps: 8, stages: 4 });
  assert.equal(kernelName(parseConfig("wg_r64_x4_p6_s2"), 64), "w4a16_wg_r64_x4_p6_g64");
  assert.throws(() => parseConfig("m1_w8_p4_s1"), /unknown W4A16 configuration/);
});

test("the W4A16 kernel is refused below sm_90 with the reason", () => {
  const on = (arch: string) => ({ info: { arch } }) as unknown as CudaDevice;
  assert.equal(w4a16DeviceUnsupported(on("sm_90a")), null);
  assert.equal(w4a16DeviceUnsupported(on("sm_100a")), null);
  assert.match(w4a16DeviceUnsupported(on("sm_86")) ?? "", /needs sm_90 or later, this GPU is sm_86/);
  // warpgroup MMA is Hopper's alone: later GPUs take the mma.sync kernel at every M
  assert.deepEqual(
    ["sm_90a", "sm_100a", "sm_86"].map((a) => hasWgmma(on(a))),
    [true, false, false],
  );
});

test("cuLaunchKernelEx's config and attribute have cuda.h's layout", () => {
  assert.equal(koffi.sizeof(LaunchAttribute), 72);
  assert.equal(koffi.sizeof(LaunchConfig), 56);
  assert.equal(koffi.offsetof(LaunchConfig, "hStream"), 32);
  assert.equal(koffi.offsetof(LaunchConfig, "attrs"), 40);
  assert.equal(koffi.offsetof(LaunchConfig, "numAttrs"), 48);
  // programmatic serialization (id 6, value 1), then a cluster of 1 x 1 x 4 (id 4, three unsigned ints)
  const { attrs, count } = launchAttributes(true, 4);
  assert.equal(count, 2);
  const v = new Uint32Array(koffi.view(attrs, 144));
  assert.deepEqual([v[0], v[2]], [6, 1]);
  assert.deepEqual([v[18], v[20], v[21], v[22]], [4, 1, 1, 4]);
  assert.equal(launchAttributes(false, 1).count, 0);
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
