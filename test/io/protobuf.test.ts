import { test } from "node:test";
import assert from "node:assert/strict";
import { ProtoMessage, encodeVarint } from "../../src/io/protobuf.js";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

test("varints as the protobuf encoding guide spells them, negatives as 10-byte two's complement", () => {
  assert.equal(hex(encodeVarint(1)), "01");
  assert.equal(hex(encodeVarint(150)), "9601");
  assert.equal(hex(encodeVarint(300)), "ac02");
  assert.equal(hex(encodeVarint(2 ** 40)), "8080808080" + "20");
  assert.equal(hex(encodeVarint(-1)), "ffffffffffffffffff01");
  assert.equal(hex(encodeVarint(-2)), "feffffffffffffffff01");
});

test("fields: varint, string, fixed32 float, packed ints and a nested message, in order", () => {
  // the guide's examples: field 1 = 150 is 08 96 01; field 2 = "testing" is 12 07 74 65 73 74 69 6e 67
  assert.equal(hex(new ProtoMessage().int(1, 150).toBytes()), "089601");
  assert.equal(hex(new ProtoMessage().string(2, "testing").toBytes()), "120774657374696e67");
  // field 3 = message { field 1 = 150 }: 1a 03 08 96 01
  assert.equal(hex(new ProtoMessage().message(3, new ProtoMessage().int(1, 150)).toBytes()), "1a03089601");
  // packed repeated field 4 = [3, 270, 86942]: 22 06 03 8e 02 9e a7 05
  assert.equal(hex(new ProtoMessage().packedInts(4, [3, 270, 86942]).toBytes()), "2206038e029ea705");
  // field 2 float 1.5 (fixed32, wire type 5): 15 00 00 c0 3f
  assert.equal(hex(new ProtoMessage().float(2, 1.5).toBytes()), "150000c03f");
  const m = new ProtoMessage().int(1, 150).string(2, "testing");
  assert.equal(m.byteLength, 12);
  assert.equal(hex(m.toBytes()), "089601" + "120774657374696e67");
});

test("an integer field refuses a number it cannot encode exactly", () => {
  assert.throws(() => new ProtoMessage().int(1, 2 ** 60), /not a safe integer/);
  assert.throws(() => new ProtoMessage().int(1, 1.5), /not a safe integer/);
});
