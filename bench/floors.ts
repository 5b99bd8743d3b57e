// How fast weights can stream the way the mma.sync kernel reads them, without its arithmetic: per layer
// at M = 1, the plain read floor, the tile-walking bulk-copy variants of w4a16/read-floor.cu at the split
// count our kernel uses (and a few others), and our kernel itself.
//   node dist/bench/floors.js [KxN ...]
import { CudaDevice, DeviceBuffer, i32, ptr, u64 } from "../src/backend/cuda/device.js";
import { W4A16Linear } from "../src/backend/cuda/w4a16/index.js";
import { randomLayer, streamKernel, timeGraph } from "../src/backend/cuda/bench.js";
import { floatToHalf } from "../src/tensor/dtype.js";

// (name in w4a16/read-floor.cu, warps, ring slots, bytes a copy); "_nohint": no evict-first policy;
// "_red32", "_red8", "_store": the k-splits' partial sums through the workspace (see stream.cu)
const VARIANTS: [name: string, warps: number, slots: number, bytes: number][] = [
  ["w4_p2", 4, 2, 4096],
  ["w4_p2_nohint", 4, 2, 4096],
  ["w4_p3", 4, 3, 4096],
  ["w4_p4", 4, 4, 4096],
  ["w8_p2", 8, 2, 4096],
  ["w4_p2_8k", 4, 2, 8192],
  ["w4_p4_8k", 4, 4, 8192],
  ["w4_p2_red32", 4, 2, 4096],
  ["w4_p2_red8", 4, 2, 4096],
  ["w4_p2_store", 4, 2, 4096],
];
const shapes = (
  process.argv.length > 2
    ? process.argv.slice(2)
    : [
        "4096x4096",
        "4096x12288",
        "11008x4096",
        "4096x22016",
        "8192x8192",
        "8192x10240",
        "28672x8192",
        "8192x57344",
      ]
).map((s) => s.split("x").map(Number));
const dev = CudaDevice.get();
const sink = dev.alloc(16);
for (const [K, N] of shapes) {
  const lin = W4A16Linear.fromLayer(dev, randomLayer(K, N, 128));
  const { B } = lin.buffers;
  const copies = Math.max(2, Math.ceil((2 * dev.info.l2Bytes) / lin.weightBytes) + 1);
  const bufs: DeviceBuffer[] = [B];
  for (let i = 1; i < copies; i++) {
    const b = dev.alloc(B.bytes);
    dev.copy(b, B, B.bytes);
    bufs.push(b);
  }
  const ktiles = lin.layout.Kpad / 16;
  const ntiles = Math.ceil(N / 64);
  const chunks = ktiles / 8;
  const ws = dev.alloc(Math.max(ntiles * 32 * 32, chunks * ntiles * 64) * 4);
  const counters = dev.alloc(ntiles * 4);
  dev.fill32(ws, 0);
  dev.fill32(counters, 0);
  const plan = lin.plan(1);
  const planSplits = plan.launch.grid[2];
  const line: string[] = [`${K}x${N} ours ${plan.name}`];
  const copiesOurs = bufs.map((b) => lin.withWeights(b, lin.buffers.S));
  const a = dev.upload(Uint16Array.from({ length: K }, () => floatToHalf(Math.random() - 0.5)));
  const out = dev.alloc(N * 2);
  line.push(`${timeGraph(dev, (i) => copiesOurs[i % copiesOurs.length].forward(a, 1, out)).toFixed(2)}`);
  const ldg = streamKernel(dev, "stream_read");
  const words = Math.floor(B.bytes / 16);
  line.push(
    `ldg ${timeGraph(dev, (i) => dev.launch(ldg, [Math.min(dev.info.smCount * 4, Math.ceil(words / 512)), 1, 1], 512, 0, [ptr(bufs[i % bufs.length]), u64(words), ptr(sink)])).toFixed(2)}`,
  );
  for (const [name, W, P, bytes] of VARIANTS) {
    const k = streamKernel(dev, `stream_tiles_${name}`);
    const shared = W * P * (bytes + 8);
    // the plain stream and the reductions over a range of split counts; the other rings at ours
    const sweep = name === "w4_p2" || name.includes("red") || name.includes("store");
    const splitsList = sweep
      ? [...new Set([planSplits, 1, 2, 4, 8, 16, 32].filter((s) => s <= chunks))]
      : [planSplits];
    for (const s of splitsList) {
      const cps = Math.ceil(chunks / s);
      const z = Math.ceil(chunks / cps);
      const us = timeGraph(dev, (i) =>
        dev.launch(k, [1, Math.ceil(ntiles / W), z], W * 32, shared, [
          ptr(bufs[i % bufs.length]),
          i32(ktiles),
          i32(ntiles),
          i32(cps),
          ptr(ws),
          ptr(counters),
          ptr(sink),
        ]),
      );
      line.push(`${name}_s${z} ${us.toFixed(2)} (${dev.occupancy(k, W * 32, shared)}/SM)`);
    }
  }
  console.log(line.join(" | "));
  for (const b of bufs.slice(1)) dev.free(b);
  for (const b of [ws, counters, a, out]) dev.free(b);
  lin.dispose();
}
