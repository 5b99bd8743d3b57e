import { test } from "node:test";
import assert from "node:assert/strict";
import { Tokenizer, translatePattern } from "../../src/model/tokenizer.js";
import { GptqError } from "../../src/util/errors.js";

// Expected ids below were worked out by hand from each tiny vocabulary and merge list.

/** GPT-2 style: ByteLevel pre-tokenizer with its regex; space is the byte char "Ġ". */
const GPT2 = {
  added_tokens: [{ id: 16, content: "<|endoftext|>", special: true }],
  normalizer: null,
  pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
  post_processor: { type: "ByteLevel" },
  model: {
    type: "BPE",
    vocab: {
      h: 0,
      e: 1,
      l: 2,
      o: 3,
      w: 4,
      r: 5,
      d: 6,
      Ġ: 7,
      ll: 8,
      he: 9,
      hell: 10,
      hello: 11,
      Ġw: 12,
      or: 13,
      Ġwor: 14,
      "!": 15,
      Ã: 17,
      "©": 18,
    },
    merges: ["l l", "h e", "he ll", "hell o", "Ġ w", "o r", "Ġw or"],
  },
};

test("byte-level BPE merges by rank, maps bytes to GPT-2's characters, splits added tokens", () => {
  const tok = new Tokenizer(GPT2);
  // "hello" -> h e ll o -> he ll o -> hell o -> hello; " world" -> Ġw or l d -> Ġwor l d
  assert.deepEqual(tok.encode("hello world!"), [11, 14, 2, 6, 15]);
  assert.deepEqual(tok.encode("<|endoftext|>hello"), [16, 11]);
  // é is UTF-8 C3 A9, GPT-2's characters Ã and ©
  assert.deepEqual(tok.encode("hé"), [0, 17, 18]);
  assert.deepEqual(tok.encode("hello", { addSpecialTokens: true }), [11], "ByteLevel adds no BOS");
});

test("array-form merges are read like string merges", () => {
  const tok = new Tokenizer({
    ...GPT2,
    model: { ...GPT2.model, merges: GPT2.model.merges.map((m) => m.split(" ")) },
  });
  assert.deepEqual(tok.encode("hello world!"), [11, 14, 2, 6, 15]);
});

test("Llama-3 style: Split with an inline case-insensitive group, ByteLevel without regex, ignore_merges, BOS", () => {
  const pattern = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
  const tok = new Tokenizer({
    added_tokens: [{ id: 100, content: "<|begin_of_text|>", special: true }],
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: pattern }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, use_regex: false },
      ],
    },
    post_processor: {
      type: "TemplateProcessing",
      single: [
        { SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
      ],
      special_tokens: {
        "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [100], tokens: ["<|begin_of_text|>"] },
      },
    },
    model: {
      type: "BPE",
      ignore_merges: true,
      vocab: { It: 0, "'S": 1, Ġ: 2, "123": 3, "45": 4, I: 5, t: 6 },
      merges: [],
    },
  });
  // "It", "'S" (case-insensitive contraction), " " (\s+ since "1" follows), "123", "45" (digits in threes)
  assert.deepEqual(tok.encode("It'S 12345", { addSpecialTokens: true }), [100, 0, 1, 2, 3, 4]);
  assert.deepEqual(tok.prefixIds, [100]);
});

const LLAMA2_VOCAB = {
  "<unk>": 0,
  "<s>": 1,
  "</s>": 2,
  "▁": 3,
  h: 4,
  i: 5,
  "▁h": 6,
  "▁hi": 7,
  "<0xE2>": 8,
  "<0x82>": 9,
  "<0xAC>": 10,
};
const LLAMA2 = {
  added_tokens: [
    { id: 0, content: "<unk>", special: true },
    { id: 1, content: "<s>", special: true },
    { id: 2, content: "</s>", special: true },
  ],
  normalizer: {
    type: "Sequence",
    normalizers: [
      { type: "Prepend", prepend: "▁" },
      { type: "Replace", pattern: { String: " " }, content: "▁" },
    ],
  },
  pre_tokenizer: null,
  post_processor: {
    type: "TemplateProcessing",
    single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
    special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
  },
  model: {
    type: "BPE",
    unk_token: "<unk>",
    fuse_unk: true,
    byte_fallback: true,
    vocab: LLAMA2_VOCAB,
    merges: ["▁ h", "▁h i"],
  },
};

test("SentencePiece-style BPE: ▁ normalizer, byte fallback, BOS from the template", () => {
  const tok = new Tokenizer(LLAMA2);
  // "▁hi▁hi€": ▁h i ▁h i -> ▁hi ▁hi; € (E2 82 AC) is not in the vocab -> its byte tokens
  assert.deepEqual(tok.encode("hi hi€", { addSpecialTokens: true }), [1, 7, 7, 8, 9, 10]);
  assert.deepEqual(tok.encode("hi hi€"), [7, 7, 8, 9, 10]);
});

test("unknown characters without byte fallback become <unk>, fused when fuse_unk", () => {
  const fused = new Tokenizer({ ...LLAMA2, model: { ...LLAMA2.model, byte_fallback: false } });
  assert.deepEqual(fused.encode("hixy"), [7, 0]);
  const unfused = new Tokenizer({
    ...LLAMA2,
    model: { ...LLAMA2.model, byte_fallback: false, fuse_unk: false },
  });
  assert.deepEqual(unfused.encode("hixy"), [7, 0, 0]);
});

test("Metaspace prepend_scheme first: ▁ only before the text's first segment, not after an added token", () => {
  const tok = new Tokenizer({
    ...LLAMA2,
    normalizer: null,
    pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: false },
  });
  assert.deepEqual(tok.encode("hi<s>hi"), [7, 1, 4, 5]);
  // split: true cuts before every ▁
  const split = new Tokenizer({
    ...LLAMA2,
    normalizer: null,
    pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: "always", split: true },
  });
  assert.deepEqual(split.encode("hi hi"), [7, 7]);
});

test("inline case-insensitive groups are rewritten for JavaScript", () => {
  assert.equal(translatePattern("(?i:'s|'t)|x"), "(?:'[sS]|'[tT])|x");
  assert.equal(translatePattern(String.raw`\(?i:a`), String.raw`\(?i:a`, "escaped parenthesis left alone");
});

test("unsupported tokenizers and broken merges are refused by name", () => {
  assert.throws(() => new Tokenizer({ model: { type: "Unigram", vocab: [] } }), /Unigram.*not supported/);
  assert.throws(
    () => new Tokenizer({ ...GPT2, pre_tokenizer: { type: "BertPreTokenizer" } }),
    (e: unknown) => e instanceof GptqError && /BertPreTokenizer/.test(e.message),
  );
  assert.throws(
    () => new Tokenizer({ ...GPT2, model: { ...GPT2.model, merges: ["e d"] } }),
    /makes "ed", which is not in the vocab/,
  );
  const noUnk = new Tokenizer(GPT2);
  assert.throws(() => noUnk.encode("z"), /not in the vocabulary/);
});
