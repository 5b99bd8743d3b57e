// Runs the W4A16 GEMM (every configuration) and the dequant kernels once at a few shapes, ragged M and N
// included, for `compute-sanitizer --tool memcheck`:
//   compute-sanitizer --tool memcheck node dist/bench/sanitize.js
import { CudaDevice } from "../src/backend/cuda/device.js";
import { W4A16Linear, W4A16_CONFIGS, configName, hasWgmma } from "../src/backend/cuda/w4a16/index.js";
import { randomLayer } from "../src/backend/cuda/bench.js";
import { floatToHalf } from "../src/tensor/dtype.js";

const dev = CudaDevice.get();
const compiled = W4A16_CONFIGS.filter((c) => c.kind === "mma" || hasWgmma(dev));
// and the splits of 8- and 16-row blocks meeting in a cluster (distributed shared memory)
const configs = [
  ...compiled,
  ...compiled
    .filter((c) => c.kind === "mma" && c.rows <= 16)
    .map((c) => ({ ...c, splits: c.rows === 8 ? 3 : 2 })),
];
for (const [K, N, gs] of [
  [4096, 4096, 128],
  [1024, 200, -1],
  [512, 96, 32],
  [4544, 136, 64],
]) {
  const lin = W4A16Linear.fromLayer(dev, randomLayer(K, N, gs));
  for (const M of [1, 7, 16, 17, 33, 65, 130]) {
    const a = dev.upload(Uint16Array.from({ length: M * K }, () => floatToHalf(Math.random() - 0.5)));
    const out = dev.alloc(M * N * 2);
    for (const c of configs) {
      lin.config = c;
      lin.forward(a, M, out);
    }
    dev.synchronize();
    dev.free(a);
    dev.free(out);
  }
  lin.dispose();
  console.log(
    `ran ${K}x${N} g${gs}, M in 1..130, ${configs.length} configurations (${configs.map(configName).join(" ")})`,
  );
}
