// The calibration forward of one decoder layer on the GPU (CudaDecoderLayer): random weights of a given
// shape, a chunk of sequences of one length, each stage timed with events (the second of two runs), and
// the whole layer's tokens per second. Also a memcheck target: it runs every kernel of decoder.cu.
// Run: npm run build --silent && node dist/bench/decoder.js [hidden] [intermediate] [heads] [kvHeads] [seqs] [seqlen]
//   (defaults: Llama-2-7B's layer, 8 sequences of 2048 tokens)
//   compute-sanitizer --tool memcheck node dist/bench/decoder.js 256 512 4 2 3 100
import { CudaDevice, DeviceBuffer } from "../src/backend/cuda/device.js";
import {
  CudaDecoderLayer,
  CudaDecoderSpec,
  CudaEmbedding,
  DecoderLinearName,
} from "../src/backend/cuda/decoder/decoder.js";
import { Rng } from "../src/pipeline/synthetic.js";

const arg = (i: number, fallback: number) => Number(process.argv[2 + i] ?? fallback);
const D = arg(0, 4096);
const I = arg(1, 11008);
const H = arg(2, 32);
const KV = arg(3, H);
const SEQS = arg(4, 8);
const T = arg(5, 2048);
const hd = D / H;
const VOCAB = 1000;

const rng = new Rng(1);
const normal = (n: number, scale: number) => {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = rng.normal() * scale;
  return x;
};
const linear = (N: number, K: number) => ({ weight: normal(N * K, 1 / Math.sqrt(K)), N, K });
const half = hd / 2;
const cos = new Float32Array(T * half);
const sin = new Float32Array(T * half);
for (let t = 0; t < T; t++)
  for (let i = 0; i < half; i++) {
    const angle = t * 10000 ** (-(2 * i) / hd);
    cos[t * half + i] = Math.cos(angle);
    sin[t * half + i] = Math.sin(angle);
  }
const spec: CudaDecoderSpec = {
  hidden: D,
  heads: H,
  kvHeads: KV,
  headDim: hd,
  rotaryDim: hd,
  eps: 1e-5,
  ropeCos: cos,
  ropeSin: sin,
  ropeStride: half,
  inputNorm: new Float32Array(D).fill(1),
  postAttentionNorm: new Float32Array(D).fill(1),
  linears: {
    q_proj: linear(H * hd, D),
    k_proj: linear(KV * hd, D),
    v_proj: linear(KV * hd, D),
    o_proj: linear(D, H * hd),
    gate_proj: linear(I, D),
    up_proj: linear(I, D),
    down_proj: linear(D, I),
  },
};

const dev = CudaDevice.get();
const layer = new CudaDecoderLayer(dev, spec);
const embedding = new CudaEmbedding(dev, normal(VOCAB * D, 1), VOCAB, D);
const seqLens = Array.from({ length: SEQS }, () => T);
const rows = SEQS * T;
const tokens = Int32Array.from({ length: rows }, () => Math.floor(rng.uniform() * VOCAB));

/** Runs the layer stage by stage on h (in place), timing each stage with events; ms per stage. */
function run(h: DeviceBuffer): Record<string, number> {
  const times: Record<string, number> = {};
  const stage = (name: string, body: () => void) => {
    const [a, b] = [dev.event(), dev.event()];
    dev.record(a);
    body();
    dev.record(b);
    times[name] = dev.elapsedMs(a, b);
    dev.destroyEvent(a);
    dev.destroyEvent(b);
  };
  const residual = (name: DecoderLinearName, x: DeviceBuffer) => {
    const y = layer.project(name, x, rows);
    layer.addInPlace(h, y, rows);
    dev.free(y);
    dev.free(x);
  };
  let x!: DeviceBuffer, a!: DeviceBuffer, y!: DeviceBuffer, m!: DeviceBuffer;
  stage("attentionInput (rmsNorm)", () => (x = layer.attentionInput(h, seqLens)));
  stage("attentionCore (q/k/v, rope, attention)", () => (a = layer.attentionCore(x, seqLens)));
  dev.free(x);
  stage("o_proj + residual", () => residual("o_proj", a));
  stage("mlpInput (rmsNorm)", () => (y = layer.mlpInput(h, seqLens)));
  stage("mlpCore (gate, up, silu x up)", () => (m = layer.mlpCore(y, seqLens)));
  dev.free(y);
  stage("down_proj + residual", () => residual("down_proj", m));
  return times;
}

let times: Record<string, number> = {};
for (let rep = 0; rep < 2; rep++) {
  const h = embedding.forward(tokens);
  times = run(h);
  dev.free(h);
}
const total = Object.values(times).reduce((s, t) => s + t, 0);
console.log(
  `${dev.info.name}: layer hidden ${D}, intermediate ${I}, ${H} heads / ${KV} kv heads, ${SEQS} x ${T} tokens`,
);
for (const [name, ms] of Object.entries(times)) console.log(`  ${name.padEnd(42)} ${ms.toFixed(2)} ms`);
console.log(`  ${"layer".padEnd(42)} ${total.toFixed(2)} ms, ${((rows / total) * 1000).toFixed(0)} tokens/s`);
layer.dispose();
embedding.dispose();
