/**
 * GPTQ's block-at-a-time driver (BlockSweep, what the GPU backend runs) against the CPU sweep: the same
 * options through an engine written here in plain float32 arithmetic give the same codes (up to ties
 * and rounding order) and the same output error, with group parameters found by the driver or by the
 * engine (which then never hands its rows out for them).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  BlockEngine,
  BlockSweep,
  ClipSearch,
  GptqBackend,
  GptqFactor,
  GptqOptions,
  HostProblem,
  dampedInverseFactor,
  gptqQuantize,
} from "../../src/quant/gptq.js";
import { Bits } from "../../src/formats/types.js";
import { HessianAccumulator } from "../../src/quant/hessian.js";
import { refitScales } from "../../src/quant/refit.js";
import { Quantizer, findParams, quantCode, resolveQuantizer, searchGrid } from "../../src/quant/quantizer.js";
import { llmLike, relativeOutputError } from "./data.js";

/**
 * The block work as the GPU kernel does it: a column at a time, float32 weights, error into the block, group
 * parameters kept in the engine (found there, as the GPU does, when `onEngine` is set).
 */
class PlainEngine implements BlockEngine {
  private readonly codeBuf: Uint8Array;
  private err = new Float32Array(0);
  private loss = 0;
  private readonly scales: Float32Array;
  private readonly zeros: Float32Array;
  /** rows handed out */
  rowsRead = 0;
  minmaxParams?: BlockEngine["minmaxParams"];
  searchParams?: BlockEngine["searchParams"];

  constructor(
    private readonly w: Float32Array,
    private readonly U: Float64Array,
    private readonly N: number,
    private readonly K: number,
    G: number,
    q: Quantizer,
    colWeight: Float64Array,
    onEngine: boolean,
  ) {
    this.codeBuf = new Uint8Array(K * N);
    this.scales = new Float32Array(G * N).fill(NaN);
    this.zeros = new Float32Array(G * N).fill(NaN);
    if (!onEngine) return;
    const find = (quantizer: Quantizer, c: number, cols: number, g: number) =>
      findParams(
        quantizer,
        w,
        c * N,
        cols,
        N,
        this.scales.subarray(g * N, (g + 1) * N),
        this.zeros.subarray(g * N, (g + 1) * N),
        colWeight.subarray(c, c + cols),
      );
    this.minmaxParams = (c, cols, g, maxq, sym) =>
      find(resolveQuantizer({ bits: BITS_OF[maxq], groupSize: -1, sym }, K), c, cols, g);
    this.searchParams = (c, cols, g, search: ClipSearch) => {
      const { maxq, sym, clip, norm, splitRange } = q;
      assert.deepEqual(search, { ...searchGrid(q), maxq, sym, clip, norm, splitRange });
      find(q, c, cols, g);
    };
  }
  rowsOf(r0: number, r1: number): Float32Array {
    this.rowsRead += r1 - r0;
    return this.w.slice(r0 * this.N, r1 * this.N);
  }
  setParams(scales: Float32Array, zeros: Float32Array, g0: number, g1: number): void {
    const { N } = this;
    this.scales.set(scales.subarray(g0 * N, (g1 + 1) * N), g0 * N);
    this.zeros.set(zeros.subarray(g0 * N, (g1 + 1) * N), g0 * N);
  }
  getParams(scales: Float32Array, zeros: Float32Array, g0: number, g1: number): void {
    const { N } = this;
    scales.set(this.scales.subarray(g0 * N, (g1 + 1) * N), g0 * N);
    zeros.set(this.zeros.subarray(g0 * N, (g1 + 1) * N), g0 * N);
  }
  block(i1: number, i2: number, groupOf: Int32Array, maxq: number): void {
    const { w, U, N, K, scales, zeros } = this;
    this.err = new Float32Array((i2 - i1) * N);
    for (let c = i1; c < i2; c++) {
      const g = groupOf[c];
      for (let n = 0; n < N; n++) {
        const x = w[c * N + n];
        const s = scales[g * N + n];
        const z = zeros[g * N + n];
        const code = quantCode(x, s, z, maxq);
        this.codeBuf[c * N + n] = code;
        const diff = (x - s * (code - z)) / U[c * K + c];
        this.loss += diff * diff;
        this.err[(c - i1) * N + n] = diff;
        for (let j = c + 1; j < i2; j++) w[j * N + n] -= Math.fround(U[c * K + j] * Math.fround(diff));
      }
    }
  }
  lazy(i1: number, i2: number): void {
    const { w, U, N, K } = this;
    for (let j = i2; j < K; j++)
      for (let n = 0; n < N; n++) {
        let acc = 0;
        for (let i = i1; i < i2; i++) acc += U[i * K + j] * this.err[(i - i1) * N + n];
        w[j * N + n] -= acc;
      }
  }
  takeLoss(): number {
    const l = this.loss;
    this.loss = 0;
    return l;
  }
  codes(): Uint8Array {
    return this.codeBuf;
  }
  dispose(): void {}
}

const BITS_OF: Record<number, Bits> = { 3: 2, 7: 3, 15: 4, 255: 8 };

/** The CPU's problem preparation with its sweeps run block by block through a PlainEngine. */
class PlainProblem extends HostProblem {
  readonly engines: PlainEngine[] = [];

  constructor(
    W: Float32Array,
    H: Float64Array,
    N: number,
    K: number,
    private readonly onEngine: boolean,
  ) {
    super(W, H, N, K);
  }

  override factor(damp: number): GptqFactor {
    const { N, K, onEngine, engines } = this;
    const { U, damp: used, damped } = dampedInverseFactor(this.hessian, K, damp);
    const colWeight = Float64Array.from({ length: K }, (_, k) => 1 / (U[k * K + k] * U[k * K + k]));
    const engine = (q: Quantizer, G: number, w: Float32Array) => {
      const e = new PlainEngine(w, U, N, K, G, q, colWeight, onEngine);
      engines.push(e);
      return e;
    };
    return {
      damp: used,
      refit: (r) => refitScales({ ...r, H: damped() }),
      sweep: (q, scales, zeros, w) =>
        new BlockSweep(
          q,
          engine(q, scales.length / N, w ?? this.weight),
          colWeight,
          () => U,
          N,
          K,
          scales,
          zeros,
        ),
    };
  }
}

/** The backend, and the problems it made (their engines count the rows handed out). */
function plainBackend(onEngine: boolean): { backend: GptqBackend; problems: PlainProblem[] } {
  const problems: PlainProblem[] = [];
  const backend: GptqBackend = {
    name: "plain",
    problem: (W, H, N, K) => {
      const p = new PlainProblem(W, H, N, K, onEngine);
      problems.push(p);
      return p;
    },
  };
  return { backend, problems };
}

const N = 48;
const K = 160;
const W = llmLike(N, K, 3);
const X = llmLike(400, K, 4);
const acc = new HessianAccumulator(K);
acc.add(X, 400);
const H = acc.H;

const CASES: [string, GptqOptions][] = [
  ["4-bit g32 sym", { bits: 4, groupSize: 32, sym: true }],
  [
    "4-bit g64 asym act-order (groups start inside blocks)",
    { bits: 4, groupSize: 64, sym: false, descAct: true },
  ],
  [
    "3-bit g48 (partial last group) act-order static",
    { bits: 3, groupSize: 48, sym: true, descAct: true, staticGroups: true },
  ],
  ["2-bit g-1 asym", { bits: 2, groupSize: -1, sym: false }],
  ["8-bit g128, blocks of 32", { bits: 8, groupSize: 128, sym: true, blockSize: 32 }],
  [
    "4-bit g96 fresh groups (a group begins mid-block)",
    { bits: 4, groupSize: 96, sym: true, freshGroups: true },
  ],
  ["4-bit g16 fresh groups", { bits: 4, groupSize: 16, sym: false, freshGroups: true, descAct: true }],
  ["4-bit g32 mse clip + refine 2", { bits: 4, groupSize: 32, sym: true, clip: "mse", refine: 2 }],
  [
    "4-bit g32 hessian clip split-range",
    { bits: 4, groupSize: 32, sym: false, clip: "hessian", splitRange: true },
  ],
  ["4-bit g32 gptq clip", { bits: 4, groupSize: 32, sym: true, clip: "gptq" }],
  ["4-bit g-1 hessian clip", { bits: 4, groupSize: -1, sym: true, clip: "hessian" }],
  [
    "3-bit g32 sym hessian clip act-order fresh groups",
    { bits: 3, groupSize: 32, sym: true, clip: "hessian", descAct: true, freshGroups: true },
  ],
  [
    "4-bit g48 mse clip static groups",
    { bits: 4, groupSize: 48, sym: false, clip: "mse", staticGroups: true },
  ],
];

for (const [name, opts] of CASES)
  for (const onEngine of opts.clip === "gptq" ? [false] : [false, true])
    test(`block-at-a-time GPTQ equals the CPU sweep: ${name}${onEngine ? ", groups in the engine" : ""}`, () => {
      const cpu = gptqQuantize(W, N, K, H, opts);
      const { backend, problems } = plainBackend(onEngine);
      const blocks = gptqQuantize(W, N, K, H, { ...opts, backend });
      // the engine finds every group over consecutive columns: only static groups out of order need rows
      const rowsRead = problems.flatMap((p) => p.engines).reduce((a, e) => a + e.rowsRead, 0);
      if (onEngine && !(opts.staticGroups && opts.descAct)) assert.equal(rowsRead, 0, "rows handed out");
      let differ = 0;
      for (let i = 0; i < K * N; i++) if (cpu.layer.codes[i] !== blocks.layer.codes[i]) differ++;
      assert.ok(differ <= K * N * 0.005, `${differ} of ${K * N} codes differ`);
      assert.deepEqual(blocks.layer.gIdx, cpu.layer.gIdx);
      const eCpu = relativeOutputError(X, 400, W, cpu.Q, N, K);
      const eBlocks = relativeOutputError(X, 400, W, blocks.Q, N, K);
      assert.ok(Math.abs(eBlocks - eCpu) <= 0.005 * eCpu, `output error ${eBlocks} against ${eCpu}`);
      assert.ok(
        Math.abs(blocks.loss - cpu.loss) <= 0.01 * cpu.loss,
        `loss ${blocks.loss} against ${cpu.loss}`,
      );
      assert.equal(blocks.damp, cpu.damp);
    });
