// One shape, a few launches of each W4A16 configuration named on the command line ("auto": the
// launcher's choice), for ncu:
//   ncu --clock-control none -k regex:w4a16 node dist/bench/profile.js K N M [config ...]
import { CudaDevice } from "../src/backend/cuda/device.js";
import { W4A16Linear, parseConfig } from "../src/backend/cuda/w4a16/index.js";
import { randomLayer } from "../src/backend/cuda/bench.js";
import { floatToHalf } from "../src/tensor/dtype.js";

const [K, N, M] = process.argv.slice(2, 5).map(Number);
const dev = CudaDevice.get();
const lin = W4A16Linear.fromLayer(dev, randomLayer(K, N, 128));
const a = dev.upload(Uint16Array.from({ length: M * K }, () => floatToHalf(Math.random() - 0.5)));
const out = dev.alloc(M * N * 2);
for (const name of process.argv.slice(5)) {
  lin.config = name === "auto" ? undefined : parseConfig(name);
  for (let i = 0; i < 3; i++) lin.forward(a, M, out);
}
dev.synchronize();
console.log("done");
