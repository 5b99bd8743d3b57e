/**
 * tokenizer.json files shaped as Gemma's, Phi-3's and Qwen3's (test/data/tokenizers/: each family's
 * normalizer, pre-tokenizer, post-processor and decoder as published, over a vocabulary of a few dozen
 * tokens): known merges, byte fallback and added tokens, and decode(encode(text)) round trips.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { Tokenizer } from "../../src/model/tokenizer.js";
import { GptqError } from "../../src/util/errors.js";
import { PROJECT_ROOT } from "../helpers/shared.js";

const load = (family: string) =>
  Tokenizer.fromFile(join(PROJECT_ROOT, "test", "data", "tokenizers", `${family}.tokenizer.json`));

/** decode(encode(text)) for every text */
function assertRoundTrips(t: Tokenizer, texts: string[]): void {
  for (const text of texts) assert.equal(t.decode(t.encode(text)), text, JSON.stringify(text));
}

// Expected ids were worked out by hand from each file's vocabulary and merge ranks.

test("Gemma: spaces become ▁ with no prefix, merges by rank, byte fallback, <bos> from the template", () => {
  const t = load("gemma");
  assert.deepEqual(t.encode("hello world", { addSpecialTokens: true }), [2, 21, 26]);
  assert.deepEqual(t.encode("hello  world"), [21, 10, 26]);
  // é and 🙂 are not in the vocabulary: their UTF-8 bytes are
  assert.deepEqual(t.encode("hello é"), [21, 10, 4, 5]);
  assert.deepEqual(t.encode("🙂"), [6, 7, 8, 9]);
  // "w or" is not a merge, only "▁w or"
  assert.deepEqual(t.encode("world"), [15, 23, 13, 17]);
  assert.equal(t.decode([2, 21, 26]), "<bos>hello world");
  assert.equal(t.decode([2, 21, 26], { skipSpecialTokens: true }), "hello world");
  assertRoundTrips(t, ["hello world", "hello  world", " hello é", "🙂world 🙂", "he  lo\u00e9"]);
});

test("Phi-3: ▁ prepended, byte fallback, <|end|> strips what follows, the decoder strips the first space", () => {
  const t = load("phi3");
  assert.deepEqual(t.encode("hello world", { addSpecialTokens: true }), [1, 17, 22]);
  assert.deepEqual(t.encode("é"), [5, 3, 4]);
  assert.deepEqual(t.encode("hello<|end|>  "), [17, 23]);
  assert.equal(t.decode([1, 17, 22], { skipSpecialTokens: true }), "hello world");
  assert.equal(t.decode([17, 23]), "hello<|end|>");
  assert.equal(t.decode([17, 23], { skipSpecialTokens: true }), "hello");
  assertRoundTrips(t, ["hello world", "hello é", "é hello", "world  hello"]);
});

test("Qwen3: NFC, Qwen2's split pattern, byte-level BPE, chat tokens, no BOS", () => {
  const t = load("qwen3");
  assert.deepEqual(t.encode("hello world", { addSpecialTokens: true }), [259, 264]);
  // "h e" is a merge, "H e" is not
  assert.deepEqual(t.encode("Hello"), [72, 101, 257, 111]);
  // e + combining acute is NFC-composed to é, then its two UTF-8 bytes
  assert.deepEqual(t.encode("e\u0301"), [0xc3, 0xa9]);
  assert.deepEqual(t.encode("<|im_start|>hello<|im_end|>"), [266, 259, 267]);
  assert.equal(t.decode([266, 259, 267], { skipSpecialTokens: true }), "hello");
  assertRoundTrips(t, [
    "hello world",
    "naïve café 🙂\n\tx  y — 123",
    "It's   spaced\r\n\r\nout",
    "<|im_start|>user\nhello<|im_end|>",
  ]);
});

test("decode refuses ids outside the vocabulary and decoders it does not know, by name", () => {
  assert.throws(
    () => load("qwen3").decode([999]),
    (e: unknown) => e instanceof GptqError && /token id 999/.test(e.message),
  );
  const t = new Tokenizer({
    model: { type: "BPE", vocab: { a: 0 }, merges: [] },
    decoder: { type: "WordPiece" },
  });
  assert.deepEqual(t.encode("a"), [0]);
  assert.throws(
    () => t.decode([0]),
    (e: unknown) => e instanceof GptqError && /decoder "WordPiece"/.test(e.message),
  );
});
