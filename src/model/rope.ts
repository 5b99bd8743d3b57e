/**
 * Rotary position embeddings in the Hugging Face convention: each head's first `rotaryDim` values are
 * split in two halves (x1, x2) rotated as (x1 cos - x2 sin, x2 cos + x1 sin) — the `rotate_half` layout,
 * not the interleaved pairs of the original paper. Frequencies and angles are rounded to fp32 as
 * transformers computes them, so long positions agree with it.
 */
import { ModelConfig, RopeScaling } from "./families/types.js";

/**
 * inv_freq[i] = theta^(-2i / dim), then the checkpoint's scaling rule; long-rope divides by its short
 * factors, or by its long ones for sequences of more than `positions` past the original context.
 */
export function inverseFrequencies(
  dim: number,
  theta: number,
  scaling: RopeScaling,
  positions = 0,
): Float32Array {
  const half = dim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.fround(theta ** Math.fround((2 * i) / dim));
  if (scaling.type === "longrope") {
    const ext = positions > scaling.originalMaxPositionEmbeddings ? scaling.longFactor : scaling.shortFactor;
    // transformers: 1 / (ext * theta^(2i/dim)), in fp32
    for (let i = 0; i < half; i++)
      inv[i] = 1 / Math.fround(ext[i] * Math.fround(theta ** Math.fround((2 * i) / dim)));
  } else if (scaling.type === "linear") for (let i = 0; i < half; i++) inv[i] = inv[i] / scaling.factor;
  else if (scaling.type === "llama3") {
    const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: ctx } = scaling;
    const lowFreqWavelen = ctx / lowFreqFactor;
    const highFreqWavelen = ctx / highFreqFactor;
    for (let i = 0; i < half; i++) {
      const f = inv[i];
      const wavelen = (2 * Math.PI) / f;
      if (wavelen > lowFreqWavelen)
        inv[i] = f / factor; // long wavelengths: interpolate fully
      else if (wavelen >= highFreqWavelen) {
        // the band between: blend interpolated and original frequencies
        const smooth = (ctx / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
        inv[i] = ((1 - smooth) * f) / factor + smooth * f;
      }
    }
  }
  return inv;
}

export class Rotary {
  private inv: Float32Array;
  private cos = new Float32Array(0);
  private sin = new Float32Array(0);
  private positions = 0;
  readonly half: number;

  constructor(
    readonly headDim: number,
    readonly rotaryDim: number,
    private readonly theta: number,
    private readonly scaling: RopeScaling,
  ) {
    this.inv = inverseFrequencies(rotaryDim, theta, scaling);
    this.half = rotaryDim / 2;
  }

  static fromConfig(c: ModelConfig): Rotary {
    return new Rotary(c.headDim, c.rotaryDim, c.ropeTheta, c.ropeScaling);
  }

  /** grows the cos/sin tables to cover positions [0, T) */
  private ensure(T: number): void {
    const sc = this.scaling;
    const long = sc.type === "longrope" && T > sc.originalMaxPositionEmbeddings;
    // long-rope switches to its long factors past the original context: the table restarts for them
    if (long && this.positions <= sc.originalMaxPositionEmbeddings) {
      this.inv = inverseFrequencies(this.rotaryDim, this.theta, sc, T);
      this.positions = 0;
    } else if (!long && sc.type === "longrope" && this.positions > sc.originalMaxPositionEmbeddings) {
      this.inv = inverseFrequencies(this.rotaryDim, this.theta, sc, T);
      this.positions = 0;
    }
    if (T <= this.positions) return;
    const attention = sc.type === "longrope" ? sc.attentionFactor : 1;
    const h = this.half;
    const cos = new Float32Array(T * h);
    const sin = new Float32Array(T * h);
    for (let t = 0; t < T; t++)
      for (let i = 0; i < h; i++) {
        const angle = Math.fround(t * this.inv[i]);
        cos[t * h + i] = Math.cos(angle) * attention;
        sin[t * h + i] = Math.sin(angle) * attention;
      }
    this.cos = cos;
    this.sin = sin;
    this.positions = T;
  }

  /** The cos and sin tables of positions [0, T): T x `half` each (row t holds position t's angles). */
  tables(T: number): { cos: Float32Array; sin: Float32Array; stride: number } {
    this.ensure(T);
    const n = T * this.half;
    return { cos: this.cos.slice(0, n), sin: this.sin.slice(0, n), stride: this.half };
  }

  /** Rotates, in place, x = T rows of `heads` heads of headDim values; row t is at position t. */
  apply(x: Float32Array, T: number, heads: number): void {
    this.ensure(T);
    const h = this.half;
    const hd = this.headDim;
    const { cos, sin } = this;
    for (let t = 0; t < T; t++) {
      const c0 = t * h;
      for (let head = 0; head < heads; head++) {
        const base = (t * heads + head) * hd;
        for (let i = 0; i < h; i++) {
          const x1 = x[base + i];
          const x2 = x[base + i + h];
          const c = cos[c0 + i];
          const s = sin[c0 + i];
          x[base + i] = x1 * c - x2 * s;
          x[base + i + h] = x2 * c + x1 * s;
        }
      }
    }
  }
}
