/**
 * Malformed input: every broken file or directory must give a GptqError with a clear message (and the
 * CLI one line and exit 1) — never a crash, a hang or an allocation the size of a lying header.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  closeSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { SafetensorsFile, parseHeader, writeSafetensors } from "../../src/io/safetensors.js";
import { TensorStore, writeCheckpointTensors } from "../../src/io/store.js";
import { GptqError } from "../../src/util/errors.js";
import { tmpDir } from "../helpers/checkpoints.js";
import { assertOneLineError, gptq } from "../helpers/cli.js";

const root = tmpDir("malformed");
test.after(() => rmSync(root, { recursive: true, force: true }));

/** A safetensors file from a header (object or raw text), a data section and an optional lying length. */
function raw(header: object | string, dataBytes: number, headerLen?: bigint): Buffer {
  const text = typeof header === "string" ? header : JSON.stringify(header);
  const body = Buffer.from(text);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLen ?? BigInt(body.length));
  return Buffer.concat([len, body, Buffer.alloc(dataBytes)]);
}

const t = (dtype: string, shape: unknown, offsets: unknown) => ({ dtype, shape, data_offsets: offsets });
const good = { a: t("F32", [2, 2], [0, 16]), b: t("I32", [4], [16, 32]) };

const FILE_CASES: [string, Buffer, RegExp][] = [
  ["an empty file", Buffer.alloc(0), /file is 0 bytes, shorter than the 8-byte header length/],
  ["a file shorter than the length field", Buffer.alloc(5), /shorter than the 8-byte header length/],
  ["a header length of zero", raw("", 16), /header length is 0/],
  [
    "a header length past the end",
    raw(good, 32, 4096n),
    /header length 4096 runs past the end of the \d+-byte file/,
  ],
  [
    "an absurd header length",
    raw(good, 32, 2n ** 63n),
    /header length 9223372036854775808 exceeds the 104857600-byte limit/,
  ],
  ["a header that is not JSON", raw('{"a": {"dtype": "F32",', 16), /invalid JSON at byte/],
  ["a header that is a JSON array", raw("[1, 2]", 0), /header is not a JSON object/],
  [
    "a header that is not UTF-8",
    Buffer.concat([raw("", 0, 4n), Buffer.from([0x7b, 0xff, 0xfe, 0x7d])]),
    /not valid UTF-8/,
  ],
  ["an unknown dtype", raw({ a: t("Q4_K", [4], [0, 16]) }, 16), /tensor "a" has unknown dtype "Q4_K"/],
  [
    "a missing dtype",
    raw({ a: { shape: [4], data_offsets: [0, 16] } }, 16),
    /tensor "a" has unknown dtype undefined/,
  ],
  ["a negative dimension", raw({ a: t("F32", [-4], [0, 16]) }, 16), /tensor "a" has an invalid shape \[-4\]/],
  ["a fractional dimension", raw({ a: t("F32", [2.5], [0, 10]) }, 16), /invalid shape \[2.5\]/],
  ["a shape that is not a list", raw({ a: t("F32", "4", [0, 16]) }, 16), /invalid shape "4"/],
  ["three data offsets", raw({ a: t("F32", [4], [0, 8, 16]) }, 16), /invalid data_offsets \[0,8,16\]/],
  [
    "a shape that disagrees with its offsets",
    raw({ a: t("F32", [2, 2], [0, 12]) }, 16),
    /F32\[2,2\] needs 16 bytes but data_offsets \[0, 12\] hold 12/,
  ],
  ["an astronomically large shape", raw({ a: t("F32", [1e15, 1e15], [0, 16]) }, 16), /needs 4e\+30 bytes/],
  [
    "offsets past the data section",
    raw({ a: t("F32", [250], [0, 1000]) }, 16),
    /data_offsets \[0, 1000\] run past the 16-byte data section/,
  ],
  ["offsets that end before they begin", raw({ a: t("F32", [1], [8, 4]) }, 16), /end before they begin/],
  [
    "overlapping tensors",
    raw({ a: t("F32", [4], [0, 16]), b: t("F32", [2], [8, 16]) }, 16),
    /tensors "a" and "b" overlap/,
  ],
  [
    "two tensors of one name",
    raw(
      '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}',
      8,
    ),
    /duplicate key "a"/,
  ],
  ["a tensor entry that is not an object", raw({ a: 7 }, 0), /tensor "a" is not an object/],
  [
    "metadata with a non-string value",
    raw({ __metadata__: { n: 1 }, ...good }, 32),
    /__metadata__\["n"\] is not a string/,
  ],
  [
    "a data section cut short",
    raw(good, 20),
    /tensor "b" data_offsets \[16, 32\] run past the 20-byte data section/,
  ],
  [
    "a header cut short",
    raw(good, 32).subarray(0, 40),
    /header length \d+ runs past the end of the 40-byte file/,
  ],
];

for (const [what, bytes, message] of FILE_CASES)
  test(`reader: ${what}`, () => {
    const p = join(root, `${what.replace(/\W+/g, "-")}.safetensors`);
    writeFileSync(p, bytes);
    assert.throws(
      () => SafetensorsFile.open(p).close(),
      (e: Error) => e instanceof GptqError && message.test(e.message) && e.message.startsWith(`${p}: `),
    );
  });

test("reader: a huge sparse file whose header claims 8 GiB is refused before anything is allocated", () => {
  const p = join(root, "huge.safetensors");
  const fd = openSync(p, "w");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(2n ** 33n);
  writeSync(fd, len, 0, 8, 0);
  ftruncateSync(fd, 2 ** 34);
  closeSync(fd);
  const before = process.memoryUsage().rss;
  assert.throws(() => SafetensorsFile.open(p), /header length 8589934592 exceeds the 104857600-byte limit/);
  assert.ok(process.memoryUsage().rss - before < 2 ** 30, "no multi-GiB allocation");
  rmSync(p);
});

test("reader: a directory where a file is expected", () => {
  const p = join(root, "dir.safetensors");
  mkdirSync(p);
  assert.throws(() => SafetensorsFile.open(p), /dir.safetensors: not a regular file/);
});

test("reader: random corruption of a valid file gives GptqError or valid tensors, nothing else", () => {
  const p = join(root, "fuzz-src.safetensors");
  writeSafetensors(
    p,
    [
      { name: "w", dtype: "F16", shape: [4, 8], data: new Uint16Array(32).fill(0x3c00) },
      { name: "g_idx", dtype: "I32", shape: [8], data: new Int32Array(8) },
    ],
    { format: "pt" },
  );
  const src = readFileSync(p);
  const q = join(root, "fuzz.safetensors");
  let seed = 12345;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed % n;
  };
  let refused = 0;
  for (let i = 0; i < 5000; i++) {
    const b = Buffer.from(src);
    const edits = 1 + rand(3);
    for (let j = 0; j < edits; j++) {
      // Bias edits toward the length field and the header, where validation lives.
      const at = rand(4) === 0 ? rand(8) : rand(b.length);
      b[at] = rand(256);
    }
    const file = rand(10) === 0 ? b.subarray(0, rand(b.length)) : b;
    // parseHeader is what SafetensorsFile.open runs, here on bytes in memory (no file per case).
    const read = (pos: number, len: number) => {
      if (pos + len > file.length) throw new GptqError("read past the end");
      return new Uint8Array(file.subarray(pos, pos + len));
    };
    try {
      const { tensors } = parseHeader(q, read, file.length);
      for (const info of tensors.values()) read(info.start, info.end - info.start);
    } catch (e) {
      assert.ok(e instanceof GptqError, `case ${i}: ${String(e)}`);
      refused++;
    }
  }
  assert.ok(refused > 1500, `most corruptions are caught (${refused})`);
});

/** A directory of two shards of two tensors each with a correct index, to break in one way at a time. */
function sharded(name: string): string {
  const dir = join(root, name);
  mkdirSync(dir);
  const entries = Array.from({ length: 4 }, (_, i) => ({
    name: `layer.${i}.weight`,
    dtype: "F32" as const,
    shape: [64],
    data: new Float32Array(64).fill(i),
  }));
  writeCheckpointTensors(dir, entries, { maxShardBytes: 512 });
  return dir;
}

const INDEX = "model.safetensors.index.json";
const editIndex = (dir: string, f: (ix: { weight_map: Record<string, unknown> }) => unknown) => {
  const p = join(dir, INDEX);
  writeFileSync(p, JSON.stringify(f(JSON.parse(readFileSync(p, "utf8")))));
};
const S1 = "model-00001-of-00002.safetensors";
const S2 = "model-00002-of-00002.safetensors";

const STORE_CASES: [string, (dir: string) => void, RegExp][] = [
  [
    "a shard missing from the directory",
    (d) => rmSync(join(d, S2)),
    /shard model-00002-of-00002.safetensors is missing/,
  ],
  [
    "a weight_map that puts a tensor in the wrong shard",
    (d) => editIndex(d, (ix) => ((ix.weight_map["layer.0.weight"] = S2), ix)),
    /tensor "layer.0.weight" is listed in model-00002-of-00002.safetensors but stored in .*model-00001-of-00002.safetensors/,
  ],
  [
    "a weight_map that lists a tensor nobody stores",
    (d) => editIndex(d, (ix) => ((ix.weight_map["ghost.weight"] = S1), ix)),
    /tensor "ghost.weight" is listed in model-00001-of-00002.safetensors but not stored there/,
  ],
  [
    "a weight_map that forgets a stored tensor",
    (d) => editIndex(d, (ix) => (delete ix.weight_map["layer.3.weight"], ix)),
    /tensor "layer.3.weight" is stored but missing from weight_map/,
  ],
  [
    "an index that is not JSON",
    (d) => writeFileSync(join(d, INDEX), "{"),
    /model.safetensors.index.json: invalid JSON/,
  ],
  ["an index without weight_map", (d) => editIndex(d, () => ({ metadata: {} })), /no "weight_map" object/],
  ["an empty weight_map", (d) => editIndex(d, () => ({ weight_map: {} })), /"weight_map" lists no tensors/],
  [
    "a weight_map that is a list",
    (d) => editIndex(d, () => ({ weight_map: [S1] })),
    /no "weight_map" object/,
  ],
  [
    "a shard name that leaves the directory",
    (d) =>
      editIndex(d, (ix) => ((ix.weight_map["layer.0.weight"] = "../model-00001-of-00002.safetensors"), ix)),
    /invalid shard name "..\/model-00001-of-00002.safetensors"/,
  ],
  [
    "a shard name that is the parent directory",
    (d) => editIndex(d, (ix) => ((ix.weight_map["layer.0.weight"] = ".."), ix)),
    /invalid shard name ".."/,
  ],
  [
    "a corrupt shard",
    (d) => writeFileSync(join(d, S2), Buffer.alloc(3)),
    /model-00002-of-00002.safetensors: not a valid safetensors file/,
  ],
  [
    "one tensor in two shards (no index)",
    (d) => {
      rmSync(join(d, INDEX));
      writeFileSync(join(d, "extra.safetensors"), readFileSync(join(d, S1)));
    },
    /tensor "layer.0.weight" is stored in both/,
  ],
];

for (const [what, breakIt, message] of STORE_CASES)
  test(`store: ${what}`, () => {
    const dir = sharded(what.replace(/\W+/g, "-"));
    TensorStore.open(dir).close();
    breakIt(dir);
    assert.throws(
      () => TensorStore.open(dir),
      (e: Error) => e instanceof GptqError && message.test(e.message),
    );
  });

test("store: no directory, a file instead of a directory, no safetensors at all", () => {
  assert.throws(() => TensorStore.open(join(root, "nope")), /no such directory/);
  const f = join(root, "plain-file");
  writeFileSync(f, "x");
  assert.throws(() => TensorStore.open(f), /not a directory/);
  const empty = join(root, "empty-dir");
  mkdirSync(empty);
  assert.throws(() => TensorStore.open(empty), /no .safetensors files/);
});

test("CLI: inspect and check print one line and exit 1 for each broken checkpoint", () => {
  const cases: [string, RegExp][] = [];
  for (const [what, bytes, message] of FILE_CASES.filter((_, i) => i % 3 === 0)) {
    const dir = join(root, `cli-${what.replace(/\W+/g, "-")}`);
    mkdirSync(dir);
    writeFileSync(join(dir, "model.safetensors"), bytes);
    cases.push([dir, message]);
  }
  for (const [what, breakIt, message] of STORE_CASES.slice(0, 4)) {
    const dir = sharded(`cli-${what.replace(/\W+/g, "-")}`);
    breakIt(dir);
    cases.push([dir, message]);
  }
  cases.forEach(([dir, message], i) => {
    for (const cmd of i % 4 === 0 ? ["inspect", "check"] : ["inspect"]) {
      const line = assertOneLineError(gptq(cmd, dir), 1);
      assert.match(line, new RegExp(`^gptq ${cmd}: error: `));
      assert.match(line, message);
    }
  });
});
