/**
 * Writes each W4A16 kernel source as NVRTC compiles it (the .cu file with the instantiations configs.ts
 * generates appended) and every header it may include into one folder, for nvcc, cuobjdump and ncu:
 *   node dist/bench/cuda-sources.js OUT_DIR
 *   nvcc -cubin -arch=sm_90a -std=c++17 -O3 --use_fast_math -I OUT_DIR OUT_DIR/mma.cu -o mma.cubin
 */
import { copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { COMMON_INCLUDE_DIR } from "../src/backend/cuda/nvrtc.js";
import { W4A16Config, instantiations, kernelSource } from "../src/backend/cuda/w4a16/index.js";

const out = process.argv[2];
if (!out) {
  console.error("usage: node dist/bench/cuda-sources.js OUT_DIR");
  process.exit(2);
}
mkdirSync(out, { recursive: true });
const w4a16Dir = dirname(fileURLToPath(import.meta.resolve("../src/backend/cuda/w4a16/configs.js")));
for (const dir of [w4a16Dir, COMMON_INCLUDE_DIR])
  for (const name of readdirSync(dir))
    if (name.endsWith(".cuh")) copyFileSync(join(dir, name), join(out, name));
for (const kind of ["mma", "wgmma"] as const) {
  const file = kernelSource({ kind } as W4A16Config);
  writeFileSync(join(out, file), readFileSync(join(w4a16Dir, file), "utf8") + "\n" + instantiations(kind));
  console.log(join(out, file));
}
