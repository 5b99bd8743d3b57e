import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeSafetensors } from "../../src/io/safetensors.js";
import { chunkTokens, loadCalibration } from "../../src/pipeline/calibration.js";
import { sharedPath, skipUnlessShared } from "../helpers/shared.js";

function withTmp(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), "gptq-cal-"));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true });
  }
}

test("chunkTokens cuts whole consecutive chunks, each opening with the BOS prefix", () => {
  const ids = Array.from({ length: 10 }, (_, i) => 10 + i);
  const chunks = chunkTokens(ids, [1], 4, 5).map((c) => [...c]);
  assert.deepEqual(chunks, [
    [1, 10, 11, 12],
    [1, 13, 14, 15],
    [1, 16, 17, 18],
  ]);
  assert.equal(chunkTokens(ids, [], 5, 1).length, 1, "at most max chunks");
});

test("token file: first nsamples rows, cut to seqlen; a missing key names the candidates", () => {
  withTmp((dir) => {
    const file = join(dir, "tok.safetensors");
    const data = Int32Array.from({ length: 15 }, (_, i) => i);
    writeSafetensors(file, [{ name: "my_tokens", dtype: "I32", shape: [3, 5], data }]);
    const cal = loadCalibration({ file, key: "my_tokens", nsamples: 2, seqlen: 4 });
    assert.deepEqual(
      cal.sequences.map((s) => [...s]),
      [
        [0, 1, 2, 3],
        [5, 6, 7, 8],
      ],
    );
    assert.throws(() => loadCalibration({ file }), /no tensor "calibration_tokens".*my_tokens/);
    assert.throws(() => loadCalibration({ file, key: "my_tokens", seqlen: 6 }), /longer than the 5-token/);
    assert.throws(() => loadCalibration({ file, key: "my_tokens", vocabSize: 10 }), /token id 10 is outside/);
  });
});

test("text file: tokenized with the model's tokenizer.json and chunked", () => {
  withTmp((dir) => {
    const tokenizer = {
      added_tokens: [{ id: 1, content: "<s>", special: true }],
      pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: true },
      post_processor: {
        type: "TemplateProcessing",
        single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
        special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
      },
      model: { type: "BPE", vocab: { "<s>": 1, "▁": 2, a: 3, b: 4, "▁a": 5 }, merges: ["▁ a"] },
    };
    writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(tokenizer));
    const text = join(dir, "calib.txt");
    writeFileSync(text, "a b a b a");
    // "▁a" "▁b" "▁a" "▁b" "▁a" -> 5, 2 4, 5, 2 4, 5 -> 8 ids; chunks of 1 BOS + 3
    const cal = loadCalibration({ file: text, modelDir: dir, seqlen: 4, nsamples: 10 });
    assert.deepEqual(
      cal.sequences.map((s) => [...s]),
      [
        [1, 5, 2, 4],
        [1, 5, 2, 4],
      ],
    );
    assert.match(cal.source, /only 2 of the 10/);
    assert.throws(() => loadCalibration({ file: text, modelDir: join(dir, "nope") }), /tokenizer\.json/);
  });
});

test(
  "stories260K calibration tokens load as 128 x 256 sequences starting with BOS",
  { skip: skipUnlessShared("models", "stories260K-eval.safetensors") },
  () => {
    const cal = loadCalibration({
      file: sharedPath("models", "stories260K-eval.safetensors"),
      vocabSize: 512,
    });
    assert.equal(cal.sequences.length, 128);
    assert.equal(cal.seqlen, 256);
    assert.ok(cal.sequences.every((s) => s.length === 256 && s[0] === 1));
  },
);
