// One layer quantized the way `quantize --device cuda` does it, everything on the GPU: the Hessian from
// fp16 activations already on the device (tensor-core GEMMs, fp32 accumulation), the problem prepared there
// from the fp16 weight, cuSOLVER's factor, the block sweeps with their group parameters (min-max, or the
// clip search of --clip=mse|hessian, asymmetric with --split-range, found on the device), the codes back
// to the host; then the dequantized weight and the output error on the device. Activations: one pool of
// 2048 LLM-like rows uploaded once and added `tokens / 2048` times (the GEMMs' time does not depend on
// values).
// Run: npm run build --silent && node dist/bench/gptq-cuda.js [K] [N] [tokens] [bits] [group] [--act-order]
//      [--clip=minmax|mse|hessian|gptq] [--split-range]
import { CudaDevice } from "../src/backend/cuda/device.js";
import { CudaHessian } from "../src/backend/cuda/gptq/hessian.js";
import { CudaGptqData, dequantizeOnDevice, outputErrorOnDevice } from "../src/backend/cuda/gptq/problem.js";
import { Bits } from "../src/formats/types.js";
import { cudaGptqProblem } from "../src/pipeline/cuda-gptq.js";
import { gptqSolve } from "../src/quant/gptq.js";
import { ClipMethod } from "../src/quant/quantizer.js";
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

const seconds = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;
function layer(tokens: number) {
  dev.synchronize();
  let t = process.hrtime.bigint();
  const acc = new CudaHessian(dev, K);
  for (let done = 0; done < tokens; done += POOL) acc.addDevice(xd, Math.min(POOL, tokens - done));
  dev.synchronize();
  const hessian = seconds(t);
  t = process.hrtime.bigint();
  const h = acc.take();
  const hCopy = dev.alloc(K * K * 4);
  dev.copy(hCopy, h, K * K * 4); // the output error needs H as it was
  const problem = cudaGptqProblem(dev, CudaGptqData.fromDevice(dev, h, wd, "f16", N, K));
  const r = gptqSolve(problem, { bits, groupSize, sym, descAct, clip, splitRange });
  problem.dispose?.();
  const gptq = seconds(t);
  t = process.hrtime.bigint();
  const q = dequantizeOnDevice(dev, r.layer);
  const err = outputErrorOnDevice(dev, wd, "f16", q, hCopy, N, K);
  const after = seconds(t);
  dev.free(q);
  dev.free(hCopy);
  acc.dispose();
  return { hessian, gptq, after, err, loss: r.loss };
}

layer(POOL); // warm-up: compiles the kernels, loads cuBLAS and cuSOLVER
const runs = [layer(TOKENS), layer(TOKENS), layer(TOKENS)];
const median = (f: (r: (typeof runs)[0]) => number) => runs.map(f).sort((a, b) => a - b)[1];
const ms = (s: number) => `${(s * 1000).toFixed(0)} ms`;
console.log(
  `| ${K}x${N} (K x N), ${TOKENS} tokens, ${bits}-bit g${groupSize} ${sym ? "sym" : "asym"}` +
    `${descAct ? " act-order" : ""} clip ${clip}${splitRange ? " split-range" : ""}, ${dev.info.name} ` +
    `| Hessian ${ms(median((r) => r.hessian))} | GPTQ ${ms(median((r) => r.gptq))} ` +
    `| Hessian + GPTQ ${ms(median((r) => r.hessian + r.gptq))} | dequantize + output error ${ms(median((r) => r.after))} |`,
);
console.log(`relative output error ${runs[0].err.toExponential(3)}, loss ${runs[0].loss.toExponential(3)}`);
