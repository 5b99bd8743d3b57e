/**
 * CPU linear layers: time per forward and GMAC/s for fp32 (DenseLinear), group-wise dequantized
 * (QuantLinear) and int8 x int4 (A8W4Linear) on a few shapes.
 * Run: npm run build --silent && node dist/bench/linear.bench.js
 */
import { A8W4Linear, DenseLinear, Linear, QuantLinear } from "../src/backend/cpu/linear.js";

function rand(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 2 ** 31 - 1;
  }
  return a;
}

function time(layer: Linear, x: Float32Array, rows: number): number {
  layer.forward(x, rows); // warm up the JIT
  const reps = Math.max(1, Math.round(2e9 / (rows * layer.inFeatures * layer.outFeatures)));
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) layer.forward(x, rows);
  return (performance.now() - t0) / reps;
}

const shapes: [number, number, number][] = [
  [256, 64, 172],
  [256, 1024, 1024],
  [64, 4096, 4096],
  [1, 4096, 4096],
];
console.log("| layer | rows x K -> N | ms / forward | GMAC/s |");
console.log("|---|---|---|---|");
for (const [rows, K, N] of shapes) {
  const W = rand(N * K, 1);
  const x = rand(rows * K, 2);
  const a8w4 = A8W4Linear.fromWeight(W, N, K, 128);
  const layers: [string, Linear][] = [
    ["DenseLinear", new DenseLinear(W, N, K)],
    ["QuantLinear 4-bit g128", new QuantLinear(a8w4.toQuantized())],
    ["A8W4Linear g128", a8w4],
  ];
  for (const [name, layer] of layers) {
    const ms = time(layer, x, rows);
    console.log(
      `| ${name} | ${rows} x ${K} -> ${N} | ${ms.toFixed(2)} | ${((rows * K * N) / ms / 1e6).toFixed(2)} |`,
    );
  }
}
