import { test } from "node:test";
import assert from "node:assert/strict";
import { firstNonFinite } from "../../src/tensor/finite.js";

/** The plain element-by-element answer the word-at-a-time scan must give. */
function reference(exp: number, h: Uint16Array): number {
  for (let i = 0; i < h.length; i++) if ((h[i] & exp) === exp) return i;
  return -1;
}

test("firstNonFinite finds the first NaN/Inf of F16 and BF16 data at every position and alignment", () => {
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (const [dtype, exp] of [
    ["F16", 0x7c00],
    ["BF16", 0x7f80],
  ] as const) {
    const bad = [exp, exp | 0x8000, exp | 1, exp | 0x8000 | 0x3]; // Inf, -Inf, NaNs
    for (const len of [0, 1, 2, 3, 8, 33]) {
      const buf = new Uint16Array(len + 2);
      // finite values, some with every exponent bit but one set
      const fill = () => {
        for (let i = 0; i < buf.length; i++) buf[i] = (rand() * 0x10000) & ~(exp & -exp) & 0xffff;
      };
      for (const offset of [0, 1]) {
        fill();
        const view = buf.subarray(offset, offset + len);
        assert.equal(firstNonFinite(dtype, view), -1, `${dtype} all finite, length ${len}`);
        for (let at = 0; at < len; at++) {
          fill();
          view[at] = bad[at % bad.length];
          if (at + 2 < len) view[at + 2] = bad[(at + 1) % bad.length];
          assert.equal(firstNonFinite(dtype, view), reference(exp, view), `${dtype} length ${len} at ${at}`);
          assert.equal(firstNonFinite(dtype, view), at);
        }
      }
    }
  }
});
