// GPTQ time of one layer: Hessian accumulation from calibration tokens, the damped factorisation (upper
// Cholesky factor of H^-1), and the whole gptqQuantize call (which includes it). On the CPU, or with --cuda
// on the GPU (Hessian GEMMs from host activations, uploads included; cuSOLVER factorisation and the block
// sweeps inside the GPTQ call; the batches of activations repeat, which the timing does not depend on).
// On the CPU the dense steps run on every core (--threads N), or as before on one thread with --serial.
// Run: npm run build --silent && node dist/bench/gptq.js [K] [N] [tokens] [bits] [group] [--act-order] [--clip C]
//      [--cuda | --serial | --threads N]
import { HessianAccumulator, gptqQuantize } from "../src/quant/index.js";
import { CudaDevice } from "../src/backend/cuda/device.js";
import { CudaHessian } from "../src/backend/cuda/gptq/hessian.js";
import { cudaGptqBackend } from "../src/pipeline/cuda-gptq.js";
import type { ClipMethod } from "../src/quant/index.js";
import { Bits } from "../src/formats/types.js";
import { upperCholeskyOfInverse } from "../src/tensor/linalg.js";
import {
  ParallelHessian,
  parallelGptqSteps,
  upperCholeskyOfInverseParallel,
} from "../src/backend/cpu/dense.js";
import { setThreads, threadPool } from "../src/backend/cpu/pool.js";
import { cpuGptqBackend } from "../src/quant/gptq.js";

const args = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const valueOf = (flag: string) => {
  const at = process.argv.indexOf(flag);
  return at > 0 ? process.argv[at + 1] : undefined;
};
const clip = (valueOf("--clip") ?? "minmax") as ClipMethod;
const threadsArg = valueOf("--threads");
const positional = args.filter((a) => a !== clip && a !== threadsArg);
const K = Number(positional[0] ?? 4096);
const N = Number(positional[1] ?? 4096);
const TOKENS = Number(positional[2] ?? 16384);
const bits = Number(positional[3] ?? 4) as Bits;
const groupSize = Number(positional[4] ?? 128);
const descAct = process.argv.includes("--act-order");
const cuda = process.argv.includes("--cuda");
const serial = process.argv.includes("--serial");
if (threadsArg) setThreads(Number(threadsArg));

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
const acc = cuda
  ? new CudaHessian(CudaDevice.get(), K)
  : serial
    ? new HessianAccumulator(K)
    : new ParallelHessian(K);
const BATCH = cuda ? 2048 : 512;
const POOL = cuda ? 4 : 1;
const pool = Array.from({ length: POOL }, () => new Float32Array(BATCH * K));
const hessianTime = { wall: 0, cpu: 0 };
for (let done = 0, b = 0; done < TOKENS; done += BATCH, b++) {
  const rows = Math.min(BATCH, TOKENS - done);
  const x = pool[b % POOL];
  if (b < POOL)
    for (let r = 0; r < rows; r++) for (let k = 0; k < K; k++) x[r * K + k] = g() * channelScale[k];
  const m = mark();
  acc.add(x.subarray(0, rows * K), rows);
  const t = since(m);
  hessianTime.wall += t.wall;
  hessianTime.cpu += t.cpu;
}
let m = mark();
const H = acc.H;
const readH = since(m);

// Weights: Gaussian with a few heavy input columns.
const W = new Float32Array(N * K);
for (let i = 0; i < W.length; i++) W[i] = g() * 0.02 * ((i % K) % 61 === 7 ? 4 : 1);

let factorTime = { wall: NaN, cpu: NaN };
if (!cuda) {
  m = mark();
  let mean = 0;
  for (let k = 0; k < K; k++) mean += H[k * K + k] / K;
  if (!(serial ? upperCholeskyOfInverse : upperCholeskyOfInverseParallel)(H, K, 0.01 * mean))
    throw new Error("factorisation failed");
  factorTime = since(m);
}

const backend = cuda ? cudaGptqBackend() : serial ? undefined : cpuGptqBackend(parallelGptqSteps());
if (backend)
  gptqQuantize(W.subarray(0, 64 * K), 64, K, H, { bits, groupSize, sym: true, descAct, clip, backend });
m = mark();
const r = gptqQuantize(W, N, K, H, { bits, groupSize, sym: true, descAct, clip, backend });
const gptqTime = since(m);

const where = cuda
  ? CudaDevice.get().info.name
  : `cpu, ${serial ? "serial" : `${threadPool().threads} threads`}`;
const tag = `${K}x${N}, ${TOKENS} tokens, ${bits}-bit g${groupSize} sym${descAct ? " act-order" : ""} clip ${clip}, ${where}`;
const fmt = (t: { wall: number; cpu: number }) =>
  Number.isNaN(t.wall) ? "-" : `${t.wall.toFixed(cuda ? 3 : 1)} s (CPU ${t.cpu.toFixed(cuda ? 3 : 1)} s)`;
console.log(`| layer | Hessian accumulation | H to the host | factorisation (part of GPTQ) | GPTQ total |`);
console.log(`| --- | --- | --- | --- | --- |`);
console.log(`| ${tag} | ${fmt(hessianTime)} | ${fmt(readH)} | ${fmt(factorTime)} | ${fmt(gptqTime)} |`);
console.log(`loss ${r.loss.toExponential(3)}, damp ${r.damp}`);
