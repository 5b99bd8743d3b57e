/**
 * Token sequences sampled at temperature 1 from a model itself (as stories260K's calibration and evaluation
 * tokens were made), one token at a time with a key/value cache, so fresh held-out sets cost seconds.
 * The decoder is checked against the model's own full forward before it is used.
 */
import { DecoderModel } from "../src/model/decoder.js";
import { inverseFrequencies } from "../src/model/rope.js";
import { Rng } from "../src/pipeline/synthetic.js";

/** Logits of the next token, one position at a time (positions 0, 1, ...). */
class IncrementalDecoder {
  private readonly k: Float32Array[];
  private readonly v: Float32Array[];
  private readonly inv: Float32Array;
  private pos = 0;
  constructor(
    private readonly model: DecoderModel,
    private readonly maxT: number,
  ) {
    const c = model.config;
    const kvWidth = c.numKvHeads * c.headDim;
    this.k = model.layers.map(() => new Float32Array(maxT * kvWidth));
    this.v = model.layers.map(() => new Float32Array(maxT * kvWidth));
    this.inv = inverseFrequencies(c.rotaryDim, c.ropeTheta, c.ropeScaling);
  }

  /** rotate_half rotary embedding of one row of `heads` heads at position `t`, in place */
  private rotate(x: Float32Array, heads: number, t: number): void {
    const hd = this.model.config.headDim;
    const half = this.inv.length;
    for (let head = 0; head < heads; head++)
      for (let i = 0; i < half; i++) {
        const angle = Math.fround(t * this.inv[i]);
        const c = Math.fround(Math.cos(angle));
        const s = Math.fround(Math.sin(angle));
        const x1 = x[head * hd + i];
        const x2 = x[head * hd + i + half];
        x[head * hd + i] = x1 * c - x2 * s;
        x[head * hd + i + half] = x2 * c + x1 * s;
      }
  }

  /** one query row over the T cached keys and values; query head h reads kv head h / (heads / kvHeads) */
  private attend(q: Float32Array, k: Float32Array, v: Float32Array, T: number): Float32Array {
    const { numHeads: H, numKvHeads: KV, headDim: hd } = this.model.config;
    const out = new Float32Array(H * hd);
    const p = new Float64Array(T);
    const scale = 1 / Math.sqrt(hd);
    for (let head = 0; head < H; head++) {
      const kvh = Math.floor(head / (H / KV));
      let max = -Infinity;
      for (let t = 0; t < T; t++) {
        let s = 0;
        for (let d = 0; d < hd; d++) s += q[head * hd + d] * k[(t * KV + kvh) * hd + d];
        p[t] = s * scale;
        max = Math.max(max, p[t]);
      }
      let sum = 0;
      for (let t = 0; t < T; t++) sum += p[t] = Math.exp(p[t] - max);
      for (let t = 0; t < T; t++)
        for (let d = 0; d < hd; d++) out[head * hd + d] += (p[t] / sum) * v[(t * KV + kvh) * hd + d];
    }
    return out;
  }

  next(token: number): Float32Array {
    const { model, pos } = this;
    if (pos >= this.maxT) throw new Error("decoder cache is full");
    const c = model.config;
    const T = pos + 1;
    let h = model.embed(Int32Array.of(token));
    model.layers.forEach((layer, li) => {
      const x = layer.norms.attentionIn!.apply(h, 1);
      const q = layer.linears.q_proj.forward(x, 1);
      const k = layer.linears.k_proj.forward(x, 1);
      const v = layer.linears.v_proj.forward(x, 1);
      this.rotate(q, c.numHeads, pos);
      this.rotate(k, c.numKvHeads, pos);
      const kvWidth = c.numKvHeads * c.headDim;
      this.k[li].set(k, pos * kvWidth);
      this.v[li].set(v, pos * kvWidth);
      const att = this.attend(q, this.k[li], this.v[li], T);
      const o = layer.linears.o_proj.forward(att, 1);
      const h1 = new Float32Array(h.length);
      for (let i = 0; i < h1.length; i++) h1[i] = h[i] + o[i];
      h = layer.mlpBlock({ residual: h1 }, 1);
    });
    this.pos++;
    return model.logits(h, 1);
  }
}

/** `n` sequences of `seqlen` tokens, each starting with `bos`, sampled at temperature 1 with `seed`. */
export function sampleTokens(
  model: DecoderModel,
  n: number,
  seqlen: number,
  seed: number,
  bos: number,
): Int32Array[] {
  const rng = new Rng(seed);
  const V = model.config.vocabSize;
  const p = new Float64Array(V);
  return Array.from({ length: n }, () => {
    const seq = new Int32Array(seqlen);
    seq[0] = bos;
    const dec = new IncrementalDecoder(model, seqlen);
    for (let t = 1; t < seqlen; t++) {
      const logits = dec.next(seq[t - 1]);
      let max = -Infinity;
      for (let w = 0; w < V; w++) max = Math.max(max, logits[w]);
      let sum = 0;
      for (let w = 0; w < V; w++) sum += p[w] = Math.exp(logits[w] - max);
      let u = rng.uniform() * sum;
      let w = 0;
      while (w < V - 1 && (u -= p[w]) > 0) w++;
      seq[t] = w;
    }
    return seq;
  });
}

/** Largest |difference| between the cached decoder's logits and the full forward's on `seq`. */
export function decoderMismatch(model: DecoderModel, seq: Int32Array): number {
  const V = model.config.vocabSize;
  const full = model.forward(seq);
  const dec = new IncrementalDecoder(model, seq.length);
  let worst = 0;
  for (let t = 0; t < seq.length; t++) {
    const l = dec.next(seq[t]);
    for (let w = 0; w < V; w++) worst = Math.max(worst, Math.abs(l[w] - full[t * V + w]));
  }
  return worst;
}
