// Codes packed and unpacked per second, per bit width, for GPTQ qweight and Marlin B.
// Run: npm run build --silent && node dist/bench/pack.js [K] [N]
import { packRows, unpackRows } from "../src/formats/bitpack.js";
import { packMarlin, unpackMarlin } from "../src/formats/marlin.js";
import { Bits, QuantizedLinear } from "../src/formats/types.js";

const K = Number(process.argv[2] ?? 4096);
const N = Number(process.argv[3] ?? 4096);

/**
 * Best of a few runs after a warm-up, in codes per second of wall time and of this process's CPU time
 * (the second is steadier on a machine shared with other work).
 */
function rate(fn: () => void, codes: number): { wall: number; cpu: number } {
  fn();
  let wall = Infinity;
  let cpu = Infinity;
  for (let i = 0; i < 7; i++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    fn();
    wall = Math.min(wall, Number(process.hrtime.bigint() - t0) / 1e9);
    const c = process.cpuUsage(c0);
    cpu = Math.min(cpu, (c.user + c.system) / 1e6);
  }
  return { wall: codes / wall, cpu: codes / cpu };
}

const rows: string[] = [];
const fmt = (r: { wall: number; cpu: number }) =>
  `${(r.wall / 1e6).toFixed(0)} (${(r.cpu / 1e6).toFixed(0)}) M/s`;
for (const bits of [2, 3, 4, 8] as Bits[]) {
  const codes = Uint8Array.from({ length: K * N }, (_, i) => ((i * 2654435761) >>> 29) & ((1 << bits) - 1));
  const words = new Int32Array((K * bits * N) / 32);
  const out = new Uint8Array(K * N);
  const p = rate(() => packRows(codes, K, N, bits, words), K * N);
  const u = rate(() => unpackRows(words, K, N, bits, out), K * N);
  if (out.some((v, i) => v !== codes[i])) throw new Error(`${bits}-bit round trip failed`);
  rows.push(`| GPTQ qweight | ${bits} | ${K}x${N} | ${fmt(p)} | ${fmt(u)} |`);
}
{
  const layer: QuantizedLinear = {
    inFeatures: K,
    outFeatures: N,
    bits: 4,
    groupSize: 128,
    codes: Uint8Array.from({ length: K * N }, (_, i) => (i * 2654435761) >>> 28),
    scales: new Float32Array((K / 128) * N).fill(0.5),
    zeros: new Uint8Array((K / 128) * N).fill(8),
    gIdx: Int32Array.from({ length: K }, (_, k) => k >> 7),
  };
  let m = packMarlin(layer);
  const p = rate(() => (m = packMarlin(layer)), K * N);
  const u = rate(() => unpackMarlin(m, layer), K * N);
  rows.push(`| Marlin B (with checks, scales) | 4 | ${K}x${N} | ${fmt(p)} | ${fmt(u)} |`);
}
console.log(`node ${process.version}`);
console.log(
  "codes/s, wall time (CPU time)\n| layout | bits | K x N | pack | unpack |\n|---|---|---|---|---|\n" +
    rows.join("\n"),
);
