// One layer quantized the way `quantize --device cuda` does it, everything on the GPU: the Hessian from
// fp16 activations already on the device (tensor-core GEMMs, fp32 accumulation), the problem prepared there
// from the fp16 weight, cuSOLVER's factor, the block sweeps with their group parameters (min-max, or the
// clip search of --clip=mse|hessian, asymmetric with --split-range, found on the device), the codes back
// to the host; then the dequantized weight and the output error on the device. Activations: one pool of
// 2048 LLM-like rows uploaded once and added `tokens / 2048` times (the GEMMs' time does not depend on
// values). --fp-target: also the cross term with a second pool (the fp model's rows, the quantized path's
// drifted from them) and the target W* solved on the device, which GPTQ then quantizes (quantize's
// default preset). --fresh-groups and --refine=R (R rounds of least-squares scale refits, on the device) as
// quantize's options; the best preset is --clip=hessian --split-range --fp-target --fresh-groups --refine=2.
// Run: npm run build --silent && node dist/bench/gptq-cuda.js [K] [N] [tokens] [bits] [group] [--act-order]
//      [--clip=minmax|mse|hessian|gptq] [--split-range] [--fp-target] [--fresh-groups] [--refine=R]
import { CudaDevice } from "../src/backend/cuda/device.js";
import { CudaHessian } from "../src/backend/cuda/gptq/hessian.js";
import { CudaCrossAccumulator, CudaFpTarget } from "../src/backend/cuda/gptq/fp-target.js";
import { CudaGptqData, dequantizeOnDevice, outputErrorOnDevice } from "../src/backend/cuda/gptq/problem.js";
import { Bits } from "../src/formats/types.js";
import { cudaGptqProblem } from "../src/pipeline/cuda-gptq.js";
import { gptqSolve } from "../src/quant/gptq.js";
import { ClipMethod } from "../src/quant/quantizer.js";
import { fpTargetRidge } from "../src/quant/fp-target.js";
import { floatsToHalfs } from "../src/tensor/dtype.js";

const args = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const K = Number(args[0] ?? 4096);
const N = Number(args[1] ?? 4096);
const TOKENS = Number(args[2] ?? 262144);
const bits = Number(args[3] ?? 4) as Bits;
const groupSize = Number(args[4] ?? 128);
const descAct = process.argv.includes("--act-order");
const clip = (process.argv.find((a) => a.startsWith("--clip="))?.slice("--clip=".length) ??
  "minmax") as ClipMethod;
const splitRange = process.argv.includes("--split-range");
const sym = !splitRange; // the split search is for asymmetric groups
const fpTarget = process.argv.includes("--fp-target");
const freshGroups = process.argv.includes("--fresh-groups");
const refine = Number(process.argv.find((a) => a.startsWith("--refine="))?.slice("--refine=".length) ?? 0);
const POOL = 2048;

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

const dev = CudaDevice.get();
const g = normals(1234);
// LLM-like activations: per-channel scales spread over a decade, 1 % outlier channels 20x larger
const channel = Float32Array.from({ length: K }, (_, k) => Math.exp(g() * 0.6) * (k % 97 === 13 ? 20 : 1));
const x = new Float32Array(POOL * K);
for (let r = 0; r < POOL; r++) for (let k = 0; k < K; k++) x[r * K + k] = g() * channel[k];
const xd = dev.upload(floatsToHalfs(x));
const w = new Float32Array(N * K);
for (let i = 0; i < w.length; i++) w[i] = g() * 0.02 * ((i % K) % 61 === 7 ? 4 : 1);
const wd = dev.upload(floatsToHalfs(w));
// fp-target: the fp model's rows (x drifted by 5 %) and the fp32 weight W* is solved from
const xf = fpTarget ? dev.upload(floatsToHalfs(x.map((v) => v * (1 + 0.05 * g())))) : undefined;
const wf = fpTarget ? dev.upload(w) : undefined;

const seconds = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;
function layer(tokens: number) {
  dev.synchronize();
  let t = process.hrtime.bigint();
  const acc = new CudaHessian(dev, K);
  for (let done = 0; done < tokens; done += POOL) acc.addDevice(xd, Math.min(POOL, tokens - done));
  dev.synchronize();
  const hessian = seconds(t);
  const h = acc.take();
  let cross = 0;
  let target = 0;
  // GPTQ's weight: W (fp16), or with --fp-target W* (fp32)
  let aim = { w: wd, type: "f16" as "f16" | "f32" };
  if (xf && wf) {
    t = process.hrtime.bigint();
    const ca = new CudaCrossAccumulator(dev, K);
    for (let done = 0; done < tokens; done += POOL) ca.addDevice(xf, xd, Math.min(POOL, tokens - done));
    const c = ca.take();
    dev.synchronize();
    cross = seconds(t);
    t = process.hrtime.bigint();
    const ft = CudaFpTarget.prepare(dev, c, h, K, (d) => fpTargetRidge(d, 0.01));
    dev.free(c);
    if (!ft) throw new Error("the Hessian is not positive definite");
    aim = { w: ft.weights(wf, N), type: "f32" };
    ft.dispose();
    dev.synchronize();
    target = seconds(t);
  }
  t = process.hrtime.bigint();
  const hCopy = dev.alloc(K * K * 4);
  dev.copy(hCopy, h, K * K * 4); // the output error needs H as it was
  const problem = cudaGptqProblem(dev, CudaGptqData.fromDevice(dev, h, aim.w, aim.type, N, K));
  const r = gptqSolve(problem, { bits, groupSize, sym, descAct, clip, splitRange, freshGroups, refine });
  problem.dispose?.();
  const gptq = seconds(t);
  t = process.hrtime.bigint();
  const q = dequantizeOnDevice(dev, r.layer);
  const err = outputErrorOnDevice(dev, aim.w, aim.type, q, hCopy, N, K);
  const after = seconds(t);
  dev.free(q);
  dev.free(hCopy);
  if (aim.w !== wd) dev.free(aim.w);
  acc.dispose();
  return { hessian, cross, target, gptq, after, err, loss: r.loss };
}

layer(POOL); // warm-up: compiles the kernels, loads cuBLAS and cuSOLVER
const runs = [layer(TOKENS), layer(TOKENS), layer(TOKENS)];
const median = (f: (r: (typeof runs)[0]) => number) => runs.map(f).sort((a, b) => a - b)[1];
const ms = (s: number) => `${(s * 1000).toFixed(0)} ms`;
console.log(
  `| ${K}x${N} (K x N), ${TOKENS} tokens, ${bits}-bit g${groupSize} ${sym ? "sym" : "asym"}` +
    `${descAct ? " act-order" : ""} clip ${clip}${splitRange ? " split-range" : ""}` +
    `${freshGroups ? " fresh-groups" : ""}${refine ? ` refine ${refine}` : ""}, ${dev.info.name} ` +
    `| Hessian ${ms(median((r) => r.hessian))} | GPTQ ${ms(median((r) => r.gptq))} ` +
    `| Hessian + GPTQ ${ms(median((r) => r.hessian + r.gptq))} | dequantize + output error ${ms(median((r) => r.after))} |` +
    (fpTarget
      ? ` fp-target: cross term ${ms(median((r) => r.cross))}, W* ${ms(median((r) => r.target))}, all ${ms(median((r) => r.hessian + r.cross + r.target + r.gptq))} |`
      : ""),
);
console.log(`relative output error ${runs[0].err.toExponential(3)}, loss ${runs[0].loss.toExponential(3)}`);
