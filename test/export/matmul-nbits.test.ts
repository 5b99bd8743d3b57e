/**
 * GPTQ layers as MatMulNBits: the stored blocks decoded by the operator's published layout (written
 * here from the spec, not from the encoder) give back every weight exactly, and ONNX Runtime's own
 * MatMulNBits computes x W^T as a float64 reference does, for every bit width, group size (powers of
 * two, -1, and sizes no block size divides), symmetric and asymmetric zeros, act-order, and K with a
 * partial last group.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Bits, QuantizedLinear } from "../../src/formats/types.js";
import { MatMulNBitsWeights, MS_DOMAIN, matMulNBits, toMatMulNBits } from "../../src/export/matmul-nbits.js";
import { GraphBuilder, inlineWeights } from "../../src/export/onnx-graph.js";
import { relativeDifference } from "../../src/export/onnx-runtime.js";
import { writeFileAtomic } from "../../src/io/atomic.js";
import { randomLayer, referenceWeights, rng } from "../formats/helpers.js";
import { ORT, skipUnlessOnnxRuntime } from "../helpers/onnxruntime.js";

interface Case {
  K: number;
  N: number;
  bits: Bits;
  groupSize: number;
  zeros: "sym" | "asym0";
  actOrder?: boolean;
}

const CASES: Case[] = [
  { K: 256, N: 48, bits: 4, groupSize: 128, zeros: "sym" },
  { K: 256, N: 48, bits: 4, groupSize: 32, zeros: "asym0", actOrder: true },
  { K: 172, N: 40, bits: 4, groupSize: 32, zeros: "asym0" }, // partial last group of 12
  { K: 200, N: 24, bits: 4, groupSize: 64, zeros: "sym", actOrder: true }, // act-order, partial group
  { K: 192, N: 32, bits: 4, groupSize: -1, zeros: "asym0" },
  { K: 240, N: 16, bits: 4, groupSize: 48, zeros: "asym0", actOrder: true }, // 48: groups padded to blocks
  { K: 160, N: 24, bits: 3, groupSize: 32, zeros: "asym0", actOrder: true },
  { K: 160, N: 24, bits: 3, groupSize: 32, zeros: "sym" },
  { K: 256, N: 24, bits: 2, groupSize: 64, zeros: "asym0" },
  { K: 256, N: 24, bits: 2, groupSize: 32, zeros: "sym", actOrder: true },
  { K: 256, N: 24, bits: 8, groupSize: 128, zeros: "asym0", actOrder: true },
  { K: 96, N: 16, bits: 8, groupSize: -1, zeros: "sym" },
];

const label = (c: Case) =>
  `${c.bits}-bit, K ${c.K}, group ${c.groupSize}, ${c.zeros === "sym" ? "sym" : "asym"}${c.actOrder ? ", act-order" : ""}`;

function layerOf(c: Case, seed: number): QuantizedLinear {
  return randomLayer({ ...c, seed });
}

/** W [N, in_features] as MatMulNBits defines it, decoded from B, scales and zero points, mapped back through rows. */
function decode(w: MatMulNBitsWeights, inFeatures: number): Float64Array {
  const blocks = Math.ceil(w.K / w.blockSize);
  const blob = (w.blockSize * w.bits) / 8;
  const zeroBytes = Math.ceil((blocks * w.bits) / 8);
  const mask = (1 << w.bits) - 1;
  const field = (bytes: Uint8Array, base: number, i: number) =>
    (bytes[base + Math.floor((i * w.bits) / 8)] >> ((i * w.bits) % 8)) & mask;
  const W = new Float64Array(w.N * inFeatures);
  for (let n = 0; n < w.N; n++)
    for (let r = 0; r < w.K; r++) {
      const j = Math.floor(r / w.blockSize);
      const code = field(w.B, (n * blocks + j) * blob, r % w.blockSize);
      const zero = w.zeroPoints ? field(w.zeroPoints, n * zeroBytes, j) : 1 << (w.bits - 1);
      const column = w.rows ? w.rows[r] : r;
      W[n * inFeatures + column] += w.scales[n * blocks + j] * (code - zero);
    }
  return W;
}

for (const [i, c] of CASES.entries())
  test(`MatMulNBits blocks decode to the GPTQ weights exactly: ${label(c)}`, () => {
    const layer = layerOf(c, 11 + i);
    const w = toMatMulNBits(layer);
    assert.ok(w.blockSize >= 16 && (w.blockSize & (w.blockSize - 1)) === 0, `block size ${w.blockSize}`);
    assert.ok([2, 4, 8].includes(w.bits) && w.bits >= c.bits);
    assert.equal(
      w.rows === undefined,
      !c.actOrder && (c.groupSize === -1 || c.groupSize % w.blockSize === 0),
    );
    if (w.rows) assert.equal(new Set(w.rows).size, c.K, "every input column is read");
    assert.deepEqual(decode(w, c.K), referenceWeights(layer));
  });

test("act-order layers that share one input order share one Gather", () => {
  const g = new GraphBuilder(inlineWeights);
  const x = g.input("x", "FLOAT", ["rows", 256]);
  const a = layerOf({ K: 256, N: 16, bits: 4, groupSize: 32, zeros: "sym", actOrder: true }, 3);
  const b = { ...layerOf({ K: 256, N: 8, bits: 4, groupSize: 32, zeros: "sym" }, 4), gIdx: a.gIdx };
  matMulNBits(g, x, "a", toMatMulNBits(a), 0);
  matMulNBits(g, x, "b", toMatMulNBits(b), 0);
  const bytes = Buffer.from(
    g.model({ irVersion: 8, opsets: { "": 17 }, producer: "t", graphName: "t" }).toBytes(),
  );
  // node names are unique: a second Gather would be "/Gather_1"
  const text = bytes.toString("latin1");
  assert.ok(text.includes("/Gather") && !text.includes("/Gather_1"));
  assert.ok(text.includes("a/MatMulNBits") && text.includes("b/MatMulNBits"));
});

const skip = skipUnlessOnnxRuntime();

test(
  "ONNX Runtime's MatMulNBits computes x W^T as float64 does (relative difference <= 1e-5)",
  { skip },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "gptq-nbits-"));
    try {
      for (const [i, c] of CASES.entries()) {
        const layer = layerOf(c, 11 + i);
        const M = 5;
        const r = rng(100 + i);
        const x = Float32Array.from({ length: M * c.K }, () => r() * 2 - 1);
        const g = new GraphBuilder(inlineWeights);
        const y = matMulNBits(g, g.input("x", "FLOAT", [M, c.K]), "layer", toMatMulNBits(layer), 0);
        g.op("Identity", [y], undefined, { output: "y" });
        g.output("y", "FLOAT", [M, c.N]);
        const path = join(dir, `case${i}.onnx`);
        const model = g.model({
          irVersion: 8,
          opsets: { "": 17, [MS_DOMAIN]: 1 },
          producer: "t",
          graphName: "t",
        });
        writeFileAtomic(path, (fd) => model.writeTo(fd));
        const session = await ORT!.InferenceSession.create(path);
        const out = await session.run({ x: new ORT!.Tensor("float32", x, [M, c.K]) });
        await session.release();
        const W = referenceWeights(layer);
        const want = new Float32Array(M * c.N);
        for (let m = 0; m < M; m++)
          for (let n = 0; n < c.N; n++) {
            let s = 0;
            for (let k = 0; k < c.K; k++) s += x[m * c.K + k] * W[n * c.K + k];
            want[m * c.N + n] = s;
          }
        const d = relativeDifference(out.y.data as Float32Array, want);
        assert.ok(d <= 1e-5, `${label(c)}: relative difference ${d}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
