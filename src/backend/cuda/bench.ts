/**
 * `gptq bench`: our W4A16 kernel against cuBLAS fp16 on layer shapes. Each kernel is first checked against
 * a float32 reference on random data (output poisoned before the run; every element must be written;
 * sampled columns compared); then timed with CUDA events over graph replays of 50 launches that rotate
 * through enough weight copies to exceed the L2, median of 7 replays after a warm-up.
 */
import { randomFillSync } from "node:crypto";
import { QuantizedLinear, numGroups } from "../../formats/types.js";
import { floatToHalf, halfToFloat } from "../../tensor/dtype.js";
import { GptqError } from "../../util/errors.js";
import { Cublas } from "./cublas.js";
import { CudaDevice, DeviceBuffer, Kernel, ptr, u64 } from "./device.js";
import { W4A16Config, W4A16Linear, W4A16_CONFIGS, deviceTuning, hasWgmma } from "./w4a16/index.js";

export const SHAPE_SETS: Record<string, [number, number][]> = {
  "llama2-7b": [
    [4096, 12288],
    [4096, 4096],
    [4096, 22016],
    [11008, 4096],
  ],
  "llama2-70b": [
    [8192, 10240],
    [8192, 8192],
    [8192, 57344],
    [28672, 8192],
  ],
};

export interface BenchShape {
  set: string;
  K: number;
  N: number;
}

export function parseShapes(spec: string): BenchShape[] {
  const out: BenchShape[] = [];
  for (const part of spec
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)) {
    const set = SHAPE_SETS[part];
    if (set) for (const [K, N] of set) out.push({ set: part, K, N });
    else {
      const m = /^(\d+)x(\d+)$/.exec(part);
      if (!m)
        throw new GptqError(
          `--shapes: "${part}" is neither a set (${Object.keys(SHAPE_SETS).join(", ")}) nor KxN`,
        );
      out.push({ set: part, K: Number(m[1]), N: Number(m[2]) });
    }
  }
  return out;
}

export interface BenchRow {
  set: string;
  K: number;
  N: number;
  M: number;
  config: string;
  cublasUs: number;
  oursUs: number;
  /** with programmatic dependent launch (overlapping the previous launch's end) */
  oursOverlapUs: number;
  /** a plain streaming read of the same bytes, launched and rotated the same way: the floor */
  readUs: number;
  speedup: number;
  weightBytes: number;
  gbps: number;
  copyShare: number;
  errOurs: number;
  errCublas: number;
}

export interface BenchOptions {
  shapes: BenchShape[];
  batches: number[];
  group: number;
  config?: W4A16Config;
  /** also time every compiled configuration (for tuning the launch heuristics) */
  sweep?: boolean;
  log?: (line: string) => void;
}

export interface BenchResult {
  device: string;
  /** the W4A16 tuning table the device used, and what it was fitted on */
  tuning: { name: string; fittedOn: string };
  copyGBps: number;
  /** µs per launch of an empty kernel in a graph */
  launchUs: number;
  rows: BenchRow[];
  /** with `sweep`: µs of every configuration, per shape and M */
  sweep?: { K: number; N: number; M: number; us: Record<string, number> }[];
}

const POISON = 0x7fff; // a NaN no kernel produces from finite data
const LAUNCHES = 50;
const REPLAYS = 7;

function randomHalves(n: number, expBits: number): Uint16Array {
  const h = new Uint16Array(n);
  randomFillSync(h);
  for (let i = 0; i < n; i++) h[i] = (h[i] & 0x83ff) | expBits;
  return h;
}

/** A random symmetric 4-bit layer: codes uniform in 0..15, fp16 scales in [0.002, 0.02). */
export function randomLayer(K: number, N: number, groupSize: number): QuantizedLinear {
  const codes = new Uint8Array(K * N);
  randomFillSync(codes);
  for (let i = 0; i < codes.length; i++) codes[i] &= 15;
  const G = numGroups(K, groupSize);
  const scales = new Float32Array(G * N);
  for (let i = 0; i < scales.length; i++) scales[i] = halfToFloat(floatToHalf(0.002 + 0.018 * Math.random()));
  const gs = groupSize === -1 ? K : groupSize;
  return {
    inFeatures: K,
    outFeatures: N,
    bits: 4,
    groupSize,
    codes,
    scales,
    zeros: new Uint8Array(G * N).fill(8),
    gIdx: Int32Array.from({ length: K }, (_, k) => Math.floor(k / gs)),
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/** Device-to-device copy bandwidth, bytes read plus written per second. */
export function copyBandwidth(dev: CudaDevice, bytes = 1 << 30): number {
  const a = dev.alloc(bytes);
  const b = dev.alloc(bytes);
  dev.fill32(a, 0x3c003c00);
  const t0 = dev.event();
  const t1 = dev.event();
  const times: number[] = [];
  for (let i = 0; i < 8; i++) {
    dev.record(t0);
    dev.copy(b, a, bytes);
    dev.record(t1);
    times.push(dev.elapsedMs(t0, t1));
  }
  dev.destroyEvent(t0);
  dev.destroyEvent(t1);
  dev.free(a);
  dev.free(b);
  return (2 * bytes) / (median(times.slice(2)) * 1e-3);
}

/** A kernel of `w4a16/read-floor.cu`: the floors benchmarks compare against. */
export function streamKernel(dev: CudaDevice, name: string): Kernel {
  return dev.kernel(import.meta.url, "w4a16/read-floor.cu", name);
}

/** A kernel that only streams `words` 16-byte words of `buf` (what a weight-bound kernel cannot beat). */
function streamRead(dev: CudaDevice, buf: DeviceBuffer, sink: DeviceBuffer): void {
  const k = streamKernel(dev, "stream_read");
  const words = Math.floor(buf.bytes / 16);
  const blocks = Math.min(dev.info.smCount * 4, Math.ceil(words / 512));
  dev.launch(k, [blocks, 1, 1], 512, 0, [ptr(buf), u64(words), ptr(sink)]);
}

/** Median µs per launch of `launch(i)` captured 50 times in a graph (i = launch index). */
export function timeGraph(dev: CudaDevice, launch: (i: number) => void): number {
  launch(0); // outside the capture: scratch buffers grow here, never while capturing
  dev.synchronize();
  const graph = dev.capture(() => {
    for (let i = 0; i < LAUNCHES; i++) launch(i);
  });
  const t0 = dev.event();
  const t1 = dev.event();
  graph.launch(); // warm-up
  const times: number[] = [];
  for (let r = 0; r < REPLAYS; r++) {
    dev.record(t0);
    graph.launch();
    dev.record(t1);
    times.push(dev.elapsedMs(t0, t1));
  }
  dev.destroyEvent(t0);
  dev.destroyEvent(t1);
  graph.destroy();
  return (median(times) * 1e3) / LAUNCHES;
}

/** ||got - ref|| / ||ref|| over sampled columns; Infinity when any output was left unwritten. */
function relError(got: Uint16Array, ref: Float64Array, M: number, N: number, cols: Int32Array): number {
  for (let i = 0; i < M * N; i++)
    if (got[i] === POISON || !Number.isFinite(halfToFloat(got[i]))) return Infinity;
  let num = 0;
  let den = 0;
  for (let m = 0; m < M; m++)
    for (let j = 0; j < cols.length; j++) {
      const d = halfToFloat(got[m * N + cols[j]]) - ref[m * cols.length + j];
      num += d * d;
      den += ref[m * cols.length + j] ** 2;
    }
  return Math.sqrt(num / den);
}

/** float32 reference out[m, j] = sum_k a[m, k] * w[j][k] for the sampled columns. */
function reference(a: Float32Array, wCols: Float32Array[], M: number, K: number): Float64Array {
  const out = new Float64Array(M * wCols.length);
  for (let m = 0; m < M; m++)
    for (let j = 0; j < wCols.length; j++) {
      const w = wCols[j];
      let s = 0;
      for (let k = 0; k < K; k++) s += a[m * K + k] * w[k];
      out[m * wCols.length + j] = s;
    }
  return out;
}

export function runBench(opts: BenchOptions): BenchResult {
  const log = opts.log ?? (() => {});
  const dev = CudaDevice.get();
  const blas = Cublas.get(dev);
  const copyGBps = copyBandwidth(dev) / 1e9;
  const empty = streamKernel(dev, "empty_kernel");
  const launchUs = timeGraph(dev, () => dev.launch(empty, [1, 1, 1], 32, 0, []));
  const { tuning } = deviceTuning(dev);
  log(
    `${dev.info.name} (${dev.info.arch}, ${dev.info.smCount} SMs, L2 ${dev.info.l2Bytes >> 20} MiB): copy ${copyGBps.toFixed(0)} GB/s, an empty kernel ${launchUs.toFixed(2)} µs per launch\nW4A16 tuning: ${tuning.name}: ${tuning.fittedOn}`,
  );
  const sink = dev.alloc(16);
  const rows: BenchRow[] = [];
  const sweep: NonNullable<BenchResult["sweep"]> = [];
  const maxM = Math.max(...opts.batches);
  for (const { set, K, N } of opts.shapes) {
    const layer = randomLayer(K, N, opts.group);
    const ours = W4A16Linear.fromLayer(dev, layer);
    if (opts.config) ours.config = opts.config;
    const w16 = randomHalves(N * K, 0x2000);
    const aHost = randomHalves(maxM * K, 0x3800);
    const aF = Float32Array.from(aHost, halfToFloat);
    const cols = Int32Array.from({ length: Math.min(N, 96) }, (_, j) =>
      Math.floor((j * N) / Math.min(N, 96)),
    );
    const qCols = Array.from(cols, (n) => {
      const w = new Float32Array(K);
      for (let k = 0; k < K; k++) w[k] = layer.scales[layer.gIdx[k] * N + n] * (layer.codes[k * N + n] - 8);
      return w;
    });
    const hCols = Array.from(cols, (n) => Float32Array.from(w16.subarray(n * K, n * K + K), halfToFloat));
    const a = dev.upload(aHost);
    const out = dev.alloc(maxM * N * 2);
    const W = dev.upload(w16);
    // rotate through copies whose total exceeds twice the L2
    const copies = (bytes: number) => Math.max(2, Math.ceil((2 * dev.info.l2Bytes) / bytes) + 1);
    const oursCopies: W4A16Linear[] = [ours];
    for (let i = 1; i < copies(ours.weightBytes); i++) {
      const { B, S } = ours.buffers;
      const b = dev.alloc(B.bytes);
      const s = dev.alloc(S.bytes);
      dev.copy(b, B, B.bytes);
      dev.copy(s, S, S.bytes);
      oursCopies.push(ours.withWeights(b, s));
    }
    const wCopies: DeviceBuffer[] = [W];
    for (let i = 1; i < copies(W.bytes); i++) {
      const b = dev.alloc(W.bytes);
      dev.copy(b, W, W.bytes);
      wCopies.push(b);
    }
    // the floor: the same bytes streamed by a kernel that does nothing else, rotated the same way
    const reads = Array.from({ length: copies(ours.weightBytes) }, () => dev.alloc(ours.weightBytes));
    for (const r of reads) dev.fill32(r, 0x3c003c00);
    const readUs = timeGraph(dev, (i) => streamRead(dev, reads[i % reads.length], sink));
    for (const r of reads) dev.free(r);
    const got = new Uint16Array(maxM * N);
    for (const M of opts.batches) {
      const refQ = reference(aF, qCols, M, K);
      const refH = reference(aF, hCols, M, K);
      dev.fill16(out, POISON);
      ours.forward(a, M, out);
      dev.download(out, got, M * N * 2);
      const errOurs = relError(got, refQ, M, N, cols);
      dev.fill16(out, POISON);
      blas.linear(a, W, out, M, N, K);
      dev.download(out, got, M * N * 2);
      const errCublas = relError(got, refH, M, N, cols);
      if (!(errOurs < 5e-3) || !(errCublas < 5e-3))
        throw new GptqError(
          `${K}x${N} M=${M}: wrong results (relative error ours ${errOurs}, cuBLAS ${errCublas})`,
        );
      const oursUs = timeGraph(dev, (i) => oursCopies[i % oursCopies.length].forward(a, M, out));
      // the same with programmatic dependent launch: each launch's weights stream in while the previous ends
      for (const o of oursCopies) o.overlap = true;
      const oursOverlapUs = timeGraph(dev, (i) => oursCopies[i % oursCopies.length].forward(a, M, out));
      for (const o of oursCopies) o.overlap = false;
      const cublasUs = timeGraph(dev, (i) => blas.linear(a, wCopies[i % wCopies.length], out, M, N, K));
      const gbps = ours.weightBytes / (oursUs * 1e-6) / 1e9;
      const row: BenchRow = {
        set,
        K,
        N,
        M,
        config: ours.plan(M).name,
        cublasUs,
        oursUs,
        oursOverlapUs,
        readUs,
        speedup: cublasUs / oursUs,
        weightBytes: ours.weightBytes,
        gbps,
        copyShare: gbps / copyGBps,
        errOurs,
        errCublas,
      };
      rows.push(row);
      log(formatRow(row));
      if (opts.sweep) {
        const us: Record<string, number> = {};
        const chosen = ours.configFor(M);
        const tries = [
          ...W4A16_CONFIGS.filter((c) => c.kind === "mma" || hasWgmma(dev)),
          ...[1, 2, 3, 4, 6, 8, 12, 16, 24, 32]
            .filter((s) => s <= Math.ceil(K / 128))
            .map((s) => ({ ...chosen, splits: s })),
        ];
        for (const c of tries) {
          for (const o of oursCopies) o.config = c;
          us[ours.plan(M).name] = timeGraph(dev, (i) => oursCopies[i % oursCopies.length].forward(a, M, out));
        }
        for (const o of oursCopies) o.config = opts.config;
        sweep.push({ K, N, M, us });
        log(
          `sweep ${K}x${N} M=${M}: ${Object.entries(us)
            .map(([k, v]) => `${k} ${v.toFixed(1)}`)
            .join(", ")}`,
        );
      }
    }
    dev.synchronize();
    for (const c of oursCopies.slice(1)) {
      dev.free(c.buffers.B);
      dev.free(c.buffers.S);
    }
    ours.dispose();
    for (const b of wCopies) dev.free(b);
    dev.free(a);
    dev.free(out);
  }
  dev.free(sink);
  return {
    device: `${dev.info.name} (${dev.info.arch})`,
    tuning: { name: tuning.name, fittedOn: tuning.fittedOn },
    copyGBps,
    launchUs,
    rows,
    ...(opts.sweep ? { sweep } : {}),
  };
}

export const HEADER =
  "| set | K x N | M | cuBLAS fp16 µs | ours µs | speedup | weight GB/s | of copy BW | read floor µs | with PDL µs | speedup | config | rel err |";
export const RULE = "|---|---|---|---|---|---|---|---|---|---|---|---|---|";

export function formatRow(r: BenchRow): string {
  return `| ${r.set} | ${r.K}x${r.N} | ${r.M} | ${r.cublasUs.toFixed(1)} | ${r.oursUs.toFixed(1)} | ${r.speedup.toFixed(2)}x | ${r.gbps.toFixed(0)} | ${(100 * r.copyShare).toFixed(0)} % | ${r.readUs.toFixed(1)} | ${r.oursOverlapUs.toFixed(1)} | ${(r.cublasUs / r.oursOverlapUs).toFixed(2)}x | ${r.config} | ${r.errOurs.toExponential(1)} |`;
}

/** Per set and batch: the sum over the set's layers (a whole decoder layer's linears). */
export function setTotals(res: BenchResult): string[] {
  const lines = [
    "| set | M | cuBLAS fp16 µs | ours µs | speedup | weight GB/s | of copy BW | read floor µs | with PDL µs | speedup |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ];
  const keys = new Map<string, BenchRow[]>();
  for (const r of res.rows) {
    if (!SHAPE_SETS[r.set]) continue;
    const k = `${r.set}\0${r.M}`;
    keys.set(k, [...(keys.get(k) ?? []), r]);
  }
  for (const [k, rs] of keys) {
    const [set, M] = k.split("\0");
    const cu = rs.reduce((s, r) => s + r.cublasUs, 0);
    const us = rs.reduce((s, r) => s + r.oursUs, 0);
    const overlap = rs.reduce((s, r) => s + r.oursOverlapUs, 0);
    const floor = rs.reduce((s, r) => s + r.readUs, 0);
    const bytes = rs.reduce((s, r) => s + r.weightBytes, 0);
    const gbps = bytes / (us * 1e-6) / 1e9;
    lines.push(
      `| ${set} | ${M} | ${cu.toFixed(1)} | ${us.toFixed(1)} | ${(cu / us).toFixed(2)}x | ${gbps.toFixed(0)} | ${((100 * gbps) / res.copyGBps).toFixed(0)} % | ${floor.toFixed(1)} | ${overlap.toFixed(1)} | ${(cu / overlap).toFixed(2)}x |`,
    );
  }
  return lines;
}
