// Times mma.sync block shapes at fixed split counts on layer shapes at small M, for fitting the
// launcher's choice (chooseConfig, the split model):
//   node dist/bench/tune.js [out.json] [KxN ...]
// Prints per shape and M the launcher's pick and the best of each shape; writes every time as JSON.
import { writeFileSync } from "node:fs";
import { CudaDevice } from "../src/backend/cuda/device.js";
import { W4A16Linear, W4A16_CONFIGS, configName } from "../src/backend/cuda/w4a16/index.js";
import { SHAPE_SETS, randomLayer, timeGraph } from "../src/backend/cuda/bench.js";
import { floatToHalf } from "../src/tensor/dtype.js";

const [outPath, ...spec] = process.argv.slice(2);
const shapes = spec.length
  ? spec.map((s) => s.split("x").map(Number))
  : [...SHAPE_SETS["llama2-7b"], ...SHAPE_SETS["llama2-70b"]];
const dev = CudaDevice.get();
const results: { K: number; N: number; M: number; auto: string; us: Record<string, number> }[] = [];
for (const [K, N] of shapes) {
  const lin = W4A16Linear.fromLayer(dev, randomLayer(K, N, 128));
  const { B, S } = lin.buffers;
  const copies = [lin];
  for (let i = 1; i < Math.max(2, Math.ceil((2 * dev.info.l2Bytes) / lin.weightBytes) + 1); i++) {
    const b = dev.alloc(B.bytes);
    const s = dev.alloc(S.bytes);
    dev.copy(b, B, B.bytes);
    dev.copy(s, S, S.bytes);
    copies.push(lin.withWeights(b, s));
  }
  const chunks = Math.ceil(K / 128);
  for (const M of [1, 4, 8, 16]) {
    const a = dev.upload(Uint16Array.from({ length: M * K }, () => floatToHalf(Math.random() - 0.5)));
    const out = dev.alloc(M * N * 2);
    const time = () => timeGraph(dev, (i) => copies[i % copies.length].forward(a, M, out));
    const us: Record<string, number> = {};
    for (const c of copies) c.config = undefined;
    const auto = lin.plan(M).name;
    us[auto] = time();
    // 8-row blocks (two m-blocks at 16 rows), and 16-row ones of two weight slots at 16
    const shapesHere = W4A16_CONFIGS.filter(
      (c) =>
        c.kind === "mma" &&
        (c.stages === 2 || c.rows === 8) &&
        (c.kslices ?? 1) <= 4 &&
        (c.rows === 8 ? M <= 8 || c.warps === 4 : c.rows === 16 && M > 8),
    );
    for (const c of shapesHere)
      for (const splits of [0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32].filter((s) => s <= chunks)) {
        for (const o of copies) o.config = { ...c, splits };
        const name = lin.plan(M).name;
        if (!(name in us)) us[name] = time();
      }
    const best = Object.entries(us).sort((x, y) => x[1] - y[1]);
    const perShape = shapesHere.map((c) => {
      const mine = best.find(([n]) => n.startsWith(configName(c) + "_g"))!;
      return `${mine[0]} ${mine[1].toFixed(2)}`;
    });
    console.log(
      `${K}x${N} M=${M}: auto ${auto} ${us[auto].toFixed(2)} | best ${best[0][0]} ${best[0][1].toFixed(2)} | ${perShape.join(", ")}`,
    );
    results.push({ K, N, M, auto, us });
    dev.free(a);
    dev.free(out);
  }
  for (const c of copies.slice(1)) {
    dev.free(c.buffers.B);
    dev.free(c.buffers.S);
  }
  lin.dispose();
}
if (outPath) writeFileSync(outPath, JSON.stringify(results, null, 1));
