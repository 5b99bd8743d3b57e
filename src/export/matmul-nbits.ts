/**
 * A GPTQ layer as the inputs of ONNX Runtime's `com.microsoft` MatMulNBits, exactly:
 * Y = A W^T with W[n, k] = scale[n, block] * (code[n, k] - zero[n, block]), blocks of `block_size`
 * consecutive input rows (a power of two, 16 or more), codes packed low bits first along K.
 *
 * GPTQ groups are any set of input rows (act-order scatters them by g_idx), and any size. MatMulNBits'
 * blocks are runs of rows, so the rows are reordered by group (stable) and each group padded to whole
 * blocks; a Gather on the activations (the `rows` map) follows the same order, and padding rows hold the
 * zero point, so they weigh exactly zero. Runtimes deprecate MatMulNBits' own g_idx input; this needs none.
 * Codes narrower than a supported width are stored in it unchanged (3-bit codes in 4-bit fields), with
 * their zero points, so nothing is requantized.
 */
import { groupOrder } from "../backend/cpu/quant-linear.js";
import { QuantizedLinear, numGroups } from "../formats/types.js";
import { GraphBuilder } from "./onnx-graph.js";
import { attr } from "../io/onnx-proto.js";

/** the operator domain of ONNX Runtime's contrib operators */
export const MS_DOMAIN = "com.microsoft";

/** widths MatMulNBits stores codes in */
const CONTAINER_BITS = [2, 4, 8] as const;
/** block sizes tried, the preferred first (ONNX Runtime's kernels are tuned for 32 to 128) */
const BLOCK_SIZES = [128, 64, 32, 16] as const;

export interface MatMulNBitsWeights {
  /** the K attribute: rows of the (reordered, padded) weight */
  K: number;
  N: number;
  bits: number;
  blockSize: number;
  /** [N, ceil(K / blockSize), blockSize * bits / 8] */
  B: Uint8Array;
  /** N x ceil(K / blockSize), row-major */
  scales: Float32Array;
  /** packed like B, [N, ceil(ceil(K / blockSize) * bits / 8)]; undefined when every zero is 2^(bits-1) */
  zeroPoints?: Uint8Array;
  /** the input column each of the K rows reads (padding rows: column 0, their weight is 0); undefined = identity */
  rows?: Int32Array;
}

/** The rows of K in the order they are stored: each group's rows, padded to whole blocks except the last. */
function layout(counts: Int32Array, blockSize: number): number {
  let last = counts.length - 1;
  while (last > 0 && counts[last] === 0) last--;
  let K = 0;
  for (let g = 0; g < last; g++) K += Math.ceil(counts[g] / blockSize) * blockSize;
  return K + counts[last];
}

export function toMatMulNBits(q: QuantizedLinear): MatMulNBitsWeights {
  const { inFeatures: K0, outFeatures: N } = q;
  const G = numGroups(K0, q.groupSize);
  const bits = CONTAINER_BITS.find((b) => b >= q.bits)!;
  const { perm, starts } = groupOrder(q.gIdx, G);
  const counts = Int32Array.from({ length: G }, (_, g) => starts[g + 1] - starts[g]);
  // the block size that stores the fewest rows (the first preferred among equals)
  let blockSize: number = BLOCK_SIZES[0];
  for (const b of BLOCK_SIZES) if (layout(counts, b) < layout(counts, blockSize)) blockSize = b;
  const K = layout(counts, blockSize);

  // source row (or -1: padding) and group of each stored row
  const source = new Int32Array(K).fill(-1);
  const groupOf = new Int32Array(K);
  let at = 0;
  for (let g = 0; g < G; g++) {
    if (counts[g] === 0) continue;
    const begin = at;
    for (let i = starts[g]; i < starts[g + 1]; i++) source[at++] = perm ? perm[i] : i;
    at = Math.min(K, begin + Math.ceil(counts[g] / blockSize) * blockSize);
    groupOf.fill(g, begin, at);
  }
  const identity = K === K0 && !perm;

  const blocks = Math.ceil(K / blockSize);
  const blob = (blockSize * bits) / 8;
  const perByte = 8 / bits;
  const B = new Uint8Array(N * blocks * blob);
  const scales = new Float32Array(N * blocks);
  const zeroBytes = Math.ceil((blocks * bits) / 8);
  const zeroPoints = new Uint8Array(N * zeroBytes);
  const defaultZero = 1 << (bits - 1);
  let needZeros = false;
  for (let n = 0; n < N; n++)
    for (let j = 0; j < blocks; j++) {
      const g = groupOf[j * blockSize];
      const zero = q.zeros[g * N + n];
      scales[n * blocks + j] = q.scales[g * N + n];
      if (zero !== defaultZero) needZeros = true;
      zeroPoints[n * zeroBytes + Math.floor(j / perByte)] |= zero << ((j % perByte) * bits);
    }
  // row by row, so the codes (K x N) are read in order
  const stride = blocks * blob;
  for (let r = 0; r < blocks * blockSize; r++) {
    const j = Math.floor(r / blockSize);
    const i = r % blockSize;
    const at = j * blob + Math.floor(i / perByte);
    const shift = (i % perByte) * bits;
    const k = r < K ? source[r] : -1;
    const zeros = groupOf[j * blockSize] * N;
    // rows past K and padding rows hold the zero point: weight exactly 0
    for (let n = 0; n < N; n++)
      B[n * stride + at] |= (k >= 0 ? q.codes[k * N + n] : q.zeros[zeros + n]) << shift;
  }
  return {
    K,
    N,
    bits,
    blockSize,
    B,
    scales,
    zeroPoints: needZeros ? zeroPoints : undefined,
    rows: identity ? undefined : source.map((k) => Math.max(k, 0)),
  };
}

/**
 * The MatMulNBits node (after the Gather that orders the input columns, when one is needed) for x
 * [..., in_features]; returns its output [..., N]. Layers that read the same input in the same order
 * (q/k/v, gate/up quantized with act-order from one Hessian) share one Gather.
 */
export function matMulNBits(
  g: GraphBuilder,
  x: string,
  prefix: string,
  w: MatMulNBitsWeights,
  accuracyLevel: number,
): string {
  let a = x;
  const rows = w.rows;
  if (rows)
    a = g.memoized(`gather:${x}:${rows.join(",")}`, () =>
      g.op(
        "Gather",
        [x, g.initializer(`${prefix}.rows`, "INT64", [rows.length], BigInt64Array.from(rows, BigInt))],
        { axis: attr.int(-1) },
      ),
    );
  const kBlocks = Math.ceil(w.K / w.blockSize);
  const inputs = [
    a,
    g.initializer(`${prefix}.qweight`, "UINT8", [w.N, kBlocks, (w.blockSize * w.bits) / 8], w.B),
    // scales and zero points flat, as ONNX Runtime's own quantizer writes them (what other readers expect)
    g.initializer(`${prefix}.scales`, "FLOAT", [w.N * kBlocks], w.scales),
  ];
  if (w.zeroPoints)
    inputs.push(g.initializer(`${prefix}.qzeros`, "UINT8", [w.zeroPoints.length], w.zeroPoints));
  return g.op(
    "MatMulNBits",
    inputs,
    {
      K: attr.int(w.K),
      N: attr.int(w.N),
      bits: attr.int(w.bits),
      block_size: attr.int(w.blockSize),
      accuracy_level: attr.int(accuracyLevel),
    },
    { domain: MS_DOMAIN, name: `${prefix}/MatMulNBits` },
  );
}
