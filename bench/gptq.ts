// GPTQ time of one layer on the CPU: Hessian accumulation from calibration tokens, the damped
// factorisation (upper Cholesky factor of H^-1), and the whole gptqQuantize call (which includes it).
// Run: npm run build --silent && node dist/bench/gptq.js [K] [N] [tokens] [bits] [group] [--act-order] [--clip C]
import { HessianAccumulator, gptqQuantize } from "../src/quant/index.js";
import type { ClipMethod } from "../src/quant/index.js";
import { Bits } from "../src/formats/types.js";
import { upperCholeskyOfInverse } from "../src/tensor/linalg.js";

const args = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const clipAt = process.argv.indexOf("--clip");
const clip = (clipAt > 0 ? process.argv[clipAt + 1] : "minmax") as ClipMethod;
const positional = args.filter((a) => a !== clip);
const K = Number(positional[0] ?? 4096);
const N = Number(positional[1] ?? 4096);
const TOKENS = Number(positional[2] ?? 16384);
const bits = Number(positional[3] ?? 4) as Bits;
const groupSize = Number(positional[4] ?? 128);
const descAct = process.argv.includes("--act-order");

/** xorshift32 -> approximately normal values (sum of four uniforms, rescaled). */
function normals(seed: number): () => number {
  let s = seed >>> 0 || 1;
  const u = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
  return () => (u() + u() + u() + u() - 2) * Math.sqrt(3);
}

/** Wall-clock and CPU (user + system) seconds since a mark: on a shared machine CPU time is the steadier figure. */
interface Mark {
  wall: bigint;
  cpu: NodeJS.CpuUsage;
}
const mark = (): Mark => ({ wall: process.hrtime.bigint(), cpu: process.cpuUsage() });
function since(m: Mark): { wall: number; cpu: number } {
  const c = process.cpuUsage(m.cpu);
  return { wall: Number(process.hrtime.bigint() - m.wall) / 1e9, cpu: (c.user + c.system) / 1e6 };
}

// LLM-like activations: per-channel scales spread over a decade, and 1 % outlier channels 20x larger.
const g = normals(1234);
const channelScale = Float32Array.from(
  { length: K },
  (_, k) => Math.exp(g() * 0.6) * (k % 97 === 13 ? 20 : 1),
);
const acc = new HessianAccumulator(K);
const BATCH = 512;
const x = new Float32Array(BATCH * K);
const hessianTime = { wall: 0, cpu: 0 };
for (let done = 0; done < TOKENS; done += BATCH) {
  const rows = Math.min(BATCH, TOKENS - done);
  for (let r = 0; r < rows; r++) for (let k = 0; k < K; k++) x[r * K + k] = g() * channelScale[k];
  const m = mark();
  acc.add(x.subarray(0, rows * K), rows);
  const t = since(m);
  hessianTime.wall += t.wall;
  hessianTime.cpu += t.cpu;
}
const H = acc.H;

// Weights: Gaussian with a few heavy input columns.
const W = new Float32Array(N * K);
for (let i = 0; i < W.length; i++) W[i] = g() * 0.02 * ((i % K) % 61 === 7 ? 4 : 1);

let m = mark();
const damped = Float64Array.from(H);
let mean = 0;
for (let k = 0; k < K; k++) mean += H[k * K + k] / K;
for (let k = 0; k < K; k++) damped[k * K + k] += 0.01 * mean;
if (!upperCholeskyOfInverse(damped, K)) throw new Error("factorisation failed");
const factorTime = since(m);

m = mark();
const r = gptqQuantize(W, N, K, H, { bits, groupSize, sym: true, descAct, clip });
const gptqTime = since(m);

const tag = `${K}x${N}, ${TOKENS} tokens, ${bits}-bit g${groupSize} sym${descAct ? " act-order" : ""} clip ${clip}`;
const fmt = (t: { wall: number; cpu: number }) => `${t.wall.toFixed(1)} s (CPU ${t.cpu.toFixed(1)} s)`;
console.log(`| layer | Hessian accumulation | factorisation (part of GPTQ) | GPTQ total |`);
console.log(`| --- | --- | --- | --- |`);
console.log(`| ${tag} | ${fmt(hessianTime)} | ${fmt(factorTime)} | ${fmt(gptqTime)} |`);
console.log(`loss ${r.loss.toExponential(3)}, damp ${r.damp}`);
