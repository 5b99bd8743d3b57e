import { test } from "node:test";
import assert from "node:assert/strict";
import {
  DEVICE_TUNINGS,
  DEFAULT_TUNING,
  HOPPER_TUNING,
  chooseConfig,
  configName,
  findConfig,
  tunedConfigs,
  tuningFor,
} from "../../../../src/backend/cuda/w4a16/index.js";

test("each device class says what its table was fitted on, and names only compiled shapes", () => {
  for (const t of [...DEVICE_TUNINGS, DEFAULT_TUNING]) {
    assert.match(t.fittedOn, /H200|H100/);
    assert.match(t.fittedOn, /\d{4}-\d{2}-\d{2}/);
    for (const name of tunedConfigs(t)) assert.ok(findConfig(name), `${t.name}: ${name}`);
    // the last row takes everything a GPU without warpgroup MMA gets to
    const last = t.rows[t.rows.length - 1];
    assert.deepEqual(Object.keys(last), ["use"]);
    assert.equal(findConfig(last.use as string)?.kind, "mma");
  }
});

test("H100 and H200 get the Hopper table; an unknown device the default, said as such", () => {
  assert.equal(tuningFor("sm_90a", "NVIDIA H100 80GB HBM3").tuning, HOPPER_TUNING);
  assert.equal(tuningFor("sm_90a", "NVIDIA H200").fitted, true);
  const other = tuningFor("sm_100a", "NVIDIA B200");
  assert.equal(other.fitted, false);
  assert.equal(other.tuning, DEFAULT_TUNING);
  assert.match(other.tuning.fittedOn, /no table fitted for this device/);
});

test("the Hopper table's picks (Llama-2 7B and 70B layers at batch 1 to 128)", () => {
  // [M, K, N, with warpgroup MMA, without]
  const cases: [number, number, number, string, string][] = [
    [1, 4096, 4096, "r8_w8_k4_p2", "r8_w8_k4_p2"],
    [1, 4096, 12288, "r8_w4_p2", "r8_w4_p2"],
    [4, 4096, 4096, "r8_w8_k4_p2", "r8_w8_k4_p2"],
    [4, 4096, 12288, "r8_w4_p2", "r8_w4_p2"],
    [4, 1024, 4096, "r8_w8_k4_p2", "r8_w8_k4_p2"],
    [6, 8192, 1024, "wg_r16_x4_p8", "r8_w4_k2_p2"],
    [8, 11008, 4096, "r8_w4_k2_p2", "r8_w4_k2_p2"],
    [8, 4096, 12288, "r8_w4_p2", "r8_w4_p2"],
    [8, 8192, 57344, "r8_w8_p2_a8", "r8_w8_p2_a8"],
    [16, 4096, 4096, "wg_r16_x4_p8", "r8_w4_p2"],
    [16, 4096, 22016, "r16_w8_p2", "r16_w8_p2"],
    [16, 8192, 57344, "r16_w4_p2", "r16_w4_p2"],
    [17, 11008, 4096, "wg_r32_x4_p8", "r32_w4_p2"],
    [64, 8192, 57344, "wg_r64_x2_p4", "r32_w4_p2"],
    [128, 4096, 4096, "wg_r64_x2_p4", "r32_w4_p2"],
    [128, 4096, 12288, "wg_r128_x2_p5", "r32_w4_p2"],
    [128, 8192, 10240, "wg_r128_x3_p4", "r32_w4_p2"],
  ];
  for (const [M, K, N, wg, plain] of cases) {
    assert.equal(configName(chooseConfig(M, K, N, true)), wg, `${M}x${K}x${N} with warpgroup MMA`);
    assert.equal(configName(chooseConfig(M, K, N, false)), plain, `${M}x${K}x${N} without`);
  }
  // a layer of unknown shape is neither narrow nor small
  assert.equal(configName(chooseConfig(1)), "r8_w4_p2");
});
