/**
 * inspect/check cost on a Qwen1.5-14B-shaped GPTQ checkpoint (40 blocks, 280 linears, 6.2 GB of
 * tensors): the file is sparse, so only what the reader touches (headers, g_idx, one qzeros) costs
 * anything. Prints wall time, bytes read and peak RSS for open + check at tp 1 and 2.
 *   npm run build --silent && node dist/bench/check-headers.js
 */
import fs, { rmSync, statSync } from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { openCheckpoint } from "../src/io/checkpoint.js";
import { checkLayers } from "../src/kernels/check.js";
import { KERNELS } from "../src/kernels/registry.js";
import { gptqEntries, llamaLayers, tmpDir, writeCheckpointDir } from "../test/helpers/checkpoints.js";

const root = tmpDir("bench-check");
try {
  const layers = Array.from({ length: 40 }, (_, i) => llamaLayers(i, 5120, 13696)).flat();
  const dir = writeCheckpointDir(
    join(root, "qwen14b"),
    layers.flatMap((l) => gptqEntries(l, { bits: 4, groupSize: 128, sym: true, version: "v1" })),
    { "quantize_config.json": { bits: 4, group_size: 128, sym: true, desc_act: false } },
  );
  const size = statSync(join(dir, "model.safetensors")).size;
  let bytesRead = 0;
  const realRead = fs.readSync;
  fs.readSync = ((...a: Parameters<typeof fs.readSync>) => {
    const n = realRead(...a);
    bytesRead += n;
    return n;
  }) as typeof fs.readSync;
  syncBuiltinESMExports();
  for (const tp of [1, 2]) {
    bytesRead = 0;
    const t0 = performance.now();
    const ck = openCheckpoint(dir);
    const reports = checkLayers(ck.layers, { bits: 4, groupSize: 128, sym: true }, KERNELS, tp);
    ck.close();
    const ms = performance.now() - t0;
    const ok = reports.filter((r) => r.kernels.marlin.ok).length;
    console.log(
      `tp ${tp}: ${reports.length} layers x ${KERNELS.length} kernels in ${ms.toFixed(0)} ms; read ${(bytesRead / 2 ** 20).toFixed(1)} MiB of ${(size / 2 ** 30).toFixed(2)} GiB; marlin ok ${ok}/${reports.length}`,
    );
  }
  console.log(`peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB`);
} finally {
  rmSync(root, { recursive: true, force: true });
}
