import { test } from "node:test";
import assert from "node:assert/strict";
import { padCols, padRows } from "../../src/model/padding.js";
import { toFloat32 } from "../../src/tensor/tensor.js";
import { floatsToHalfs } from "../../src/tensor/dtype.js";

test("padRows / padCols append zeros in any dtype", () => {
  const t = { dtype: "F16" as const, shape: [2, 3], data: floatsToHalfs([1, 2, 3, 4, 5, 6]) };
  assert.deepEqual([...toFloat32(padRows(t, 3))], [1, 2, 3, 4, 5, 6, 0, 0, 0]);
  assert.deepEqual([...toFloat32(padCols(t, 4))], [1, 2, 3, 0, 4, 5, 6, 0]);
});
