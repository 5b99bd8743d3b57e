/**
 * `gptq bench --device cpu`: our CPU linear layers beside ONNX Runtime's on the same random layers, timed
 * alternately in one run (a shared machine's load then weighs on both alike): w4a16 (QuantLinear, fp32
 * activations) against MatMulNBits at accuracy level 0, a8w4 (A8W4Linear, int8 activations) against
 * level 4, dense (DenseLinear) against MatMul.
 */
import { cpus } from "node:os";
import { QuantizedLinear, numGroups } from "../../formats/types.js";
import { dequantize } from "../../formats/dequantize.js";
import { A8W4Linear } from "./a8w4.js";
import { DenseLinear, Linear, QuantLinear } from "./linear.js";
import { OrtLinear, denseGraph, loadOrt, nbitsGraph, ortMissing } from "./ort.js";

export type CpuKernel = "w4a16" | "a8w4" | "dense";
export interface CpuBenchRow {
  kernel: CpuKernel;
  engine: "gptq-ts" | "onnxruntime";
  M: number;
  K: number;
  N: number;
  /** ms per forward: the best of the trials' means */
  ms: number;
}

export interface CpuBenchOptions {
  shapes: { K: number; N: number }[];
  batches: number[];
  group: number;
  threads: number;
  /** called once with the engines' description, before any timing */
  onStart?: (note: string) => void;
  /** called with each line of the table as it is measured */
  log?: (line: string) => void;
}

/** a random symmetric 4-bit layer (codes uniform, scales around 0.01) */
export function randomLayer(K: number, N: number, groupSize: number, seed = 1): QuantizedLinear {
  let s = seed >>> 0;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const G = numGroups(K, groupSize);
  const gs = groupSize === -1 ? K : groupSize;
  return {
    inFeatures: K,
    outFeatures: N,
    bits: 4,
    groupSize,
    codes: Uint8Array.from({ length: K * N }, () => Math.floor(next() * 16)),
    scales: Float32Array.from({ length: G * N }, () => 0.005 + 0.01 * next()),
    zeros: new Uint8Array(G * N).fill(8),
    gIdx: Int32Array.from({ length: K }, (_, k) => Math.floor(k / gs)),
  };
}

/** Per-call ms of each layer: trials alternate between them; each keeps its best trial. */
function timeAlternately(
  layers: Linear[],
  x: Float32Array,
  rows: number,
  trialMs = 150,
  trials = 3,
): number[] {
  const best = layers.map(() => Infinity);
  const reps = layers.map((l) => {
    l.forward(x, rows); // warm-up (JIT, pre-packing)
    const t0 = performance.now();
    l.forward(x, rows);
    return Math.max(1, Math.round(trialMs / Math.max(0.01, performance.now() - t0)));
  });
  for (let t = 0; t < trials; t++)
    layers.forEach((l, i) => {
      const t0 = performance.now();
      for (let r = 0; r < reps[i]; r++) l.forward(x, rows);
      best[i] = Math.min(best[i], (performance.now() - t0) / reps[i]);
    });
  return best;
}

export const CPU_HEADER =
  "| kernel | M x K -> N | gptq-ts ms | GMAC/s | weight GB/s | ONNX Runtime ms | GMAC/s | gptq-ts / ORT |";
export const CPU_RULE = "|---|---|---|---|---|---|---|---|";

export async function runCpuBench(o: CpuBenchOptions): Promise<{ ort: string; rows: CpuBenchRow[] }> {
  const ort = loadOrt();
  const ortNote = ort
    ? `onnxruntime-node ${ort.version}, ${o.threads} intra-op threads`
    : `${ortMissing()}: ONNX Runtime columns left out`;
  o.onStart?.(`CPU: ${cpus()[0]?.model ?? "unknown"}, ${o.threads} threads; ${ortNote}`);
  const rows: CpuBenchRow[] = [];
  const f = (v: number, d = 2) => (Number.isFinite(v) ? v.toFixed(d) : "-");
  for (const { K, N } of o.shapes) {
    const q = randomLayer(K, N, o.group);
    const G = numGroups(K, o.group);
    const engines: Record<CpuKernel, { ours: () => Linear; ort?: () => Promise<OrtLinear>; bytes: number }> =
      {
        w4a16: {
          ours: () => new QuantLinear(q),
          ort: ort && (() => OrtLinear.create(nbitsGraph(q, 0), K, N, o.threads)),
          bytes: (K * N) / 2 + G * N * 4.5,
        },
        a8w4: {
          ours: () => A8W4Linear.fromQuantized(q),
          ort: ort && (() => OrtLinear.create(nbitsGraph(q, 4), K, N, o.threads)),
          bytes: (K * N) / 2 + G * N * 4,
        },
        dense: {
          ours: () => new DenseLinear(dequantize(q), N, K),
          ort: ort && (() => OrtLinear.create(denseGraph(dequantize(q), N, K), K, N, o.threads)),
          bytes: 4 * K * N,
        },
      };
    for (const kernel of ["w4a16", "a8w4", "dense"] as const) {
      const e = engines[kernel];
      const ours = e.ours();
      const theirs = e.ort ? await e.ort() : undefined;
      for (const M of o.batches) {
        let seed = 9;
        const x = Float32Array.from(
          { length: M * K },
          () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 31 - 1,
        );
        const [ms, ortMs = NaN] = timeAlternately(theirs ? [ours, theirs] : [ours], x, M);
        rows.push({ kernel, engine: "gptq-ts", M, K, N, ms });
        if (theirs) rows.push({ kernel, engine: "onnxruntime", M, K, N, ms: ortMs });
        const gmac = (t: number) => (M * K * N) / t / 1e6;
        o.log?.(
          `| ${kernel} | ${M} x ${K} -> ${N} | ${f(ms, 3)} | ${f(gmac(ms), 1)} | ${f(e.bytes / ms / 1e6, 1)} | ` +
            `${f(ortMs, 3)} | ${f(gmac(ortMs), 1)} | ${theirs ? f(ms / ortMs, 1) + "x" : "-"} |`,
        );
      }
      theirs?.dispose();
    }
  }
  return { ort: ortNote, rows };
}
