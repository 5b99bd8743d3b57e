/**
 * Which block shape runs an M x K x N product: tuning data, one table per device class, each saying what
 * it was fitted on. A table is a priority-ordered list of rows; the first row whose bounds hold names the
 * shape. Rows naming a warpgroup-MMA shape are skipped on GPUs without warpgroup MMA (only sm_90 has it),
 * so one table serves both. A device no table was fitted on gets the default table, and says so.
 */
import { GptqError } from "../../../util/errors.js";
import { W4A16Config, configName, findConfig, tilesPerBlock } from "./configs.js";
import { DEFAULT_SPLIT_MODEL, SplitModel, geometry } from "./launch.js";

/** One row: bounds that must all hold (inclusive; absent = no bound), and the shape to run. */
export interface TuningRow {
  minRows?: number;
  maxRows?: number;
  /** out_features (N) bound: "narrow" layers, where K must supply the parallelism */
  maxN?: number;
  maxK?: number;
  /** K x N */
  maxWeights?: number;
  /**
   * A configuration name, or several of equal rows: the first, or a later one where the split model says
   * it needs no more k-splits and brings in fewer bytes (more tiles per block fill the GPU better).
   */
  use: string | readonly string[];
}

export interface DeviceTuning {
  /** the device class, as `gptq bench` reports it */
  name: string;
  /** whether a device belongs to the class (its architecture, e.g. "sm_90a", and its name) */
  matches(arch: string, deviceName: string): boolean;
  /** what the rows were fitted on: device, command, date */
  fittedOn: string;
  rows: readonly TuningRow[];
  splitModel: SplitModel;
}

const M2_24 = 2 ** 24;
const M2_25 = 2 ** 25;
const M2_26 = 2 ** 26;
const M2_27 = 2 ** 27;

/**
 * Hopper (sm_90: H100, H200). Fitted to `gptq bench --sweep --shapes llama2-7b,llama2-70b` and
 * `bench/tune.ts` on an H200 (141 GB, 132 SMs), 2026-12-01.
 */
const HOPPER_ROWS: readonly TuningRow[] = [
  // up to 8 rows of layers of at most 4096 x 4096: 8 warps in 4 k-slices (two tiles a block)
  { maxRows: 8, maxN: 4096, maxK: 4096, use: "r8_w8_k4_p2" },
  { maxRows: 3, use: "r8_w4_p2" },
  // 16-row warpgroup blocks on small layers, where one decode serves every row
  { maxRows: 8, maxWeights: M2_25, use: "wg_r16_x4_p8" },
  { minRows: 9, maxRows: 16, maxWeights: M2_26, use: "wg_r16_x4_p8" },
  { maxRows: 4, use: "r8_w4_p2" },
  // 5 to 8 rows: 2 k-slices on narrow layers; 8 warps with an 8-slot ring above 2^27 weights
  { maxRows: 8, maxN: 4096, use: "r8_w4_k2_p2" },
  { maxRows: 8, maxWeights: M2_27, use: "r8_w4_p2" },
  { maxRows: 8, use: "r8_w8_p2_a8" },
  // 9 to 16 rows: two 8-row m-blocks (whose products take half the mma) below 2^26 weights
  { maxRows: 16, maxWeights: M2_26 - 1, use: "r8_w4_p2" },
  { maxRows: 16, maxWeights: M2_27 - 1, use: "r16_w8_p2" },
  { maxRows: 16, use: "r16_w4_p2" },
  // above 16 rows: warpgroup blocks; 64 rows on layers of up to 2^24 weights, where two 64-row m-blocks
  // fill the GPU better than one of 128
  { maxRows: 32, use: "wg_r32_x4_p8" },
  { maxRows: 64, use: "wg_r64_x2_p4" },
  { maxWeights: M2_24, use: "wg_r64_x2_p4" },
  { use: ["wg_r128_x2_p5", "wg_r128_x3_p4"] },
  // without warpgroup MMA
  { use: "r32_w4_p2" },
];

export const HOPPER_TUNING: DeviceTuning = {
  name: "sm_90 (H100, H200)",
  matches: (arch) => /^sm_90a?$/.test(arch),
  fittedOn: "NVIDIA H200, `gptq bench --sweep --shapes llama2-7b,llama2-70b` and bench/tune.ts, 2026-12-01",
  rows: HOPPER_ROWS,
  splitModel: DEFAULT_SPLIT_MODEL,
};

/** Device classes with fitted tables, most specific first. */
export const DEVICE_TUNINGS: readonly DeviceTuning[] = [HOPPER_TUNING];

/** What a device no table was fitted on gets: Hopper's rows (its mma.sync rows, without warpgroup MMA). */
export const DEFAULT_TUNING: DeviceTuning = {
  ...HOPPER_TUNING,
  name: "default",
  matches: () => true,
  fittedOn: `no table fitted for this device; the ${HOPPER_TUNING.name} table is used (${HOPPER_TUNING.fittedOn})`,
};

/** The table for a device, and whether one was fitted on its class. */
export function tuningFor(arch: string, deviceName = ""): { tuning: DeviceTuning; fitted: boolean } {
  const t = DEVICE_TUNINGS.find((x) => x.matches(arch, deviceName));
  return t ? { tuning: t, fitted: true } : { tuning: DEFAULT_TUNING, fitted: false };
}

function holds(r: TuningRow, M: number, K: number, N: number): boolean {
  return (
    (r.minRows === undefined || M >= r.minRows) &&
    (r.maxRows === undefined || M <= r.maxRows) &&
    // a layer of unknown width (N = 0) is not narrow
    (r.maxN === undefined || (N > 0 && N <= r.maxN)) &&
    (r.maxK === undefined || K <= r.maxK) &&
    (r.maxWeights === undefined || K * N <= r.maxWeights)
  );
}

function shape(name: string): W4A16Config {
  const c = findConfig(name);
  if (!c) throw new GptqError(`W4A16 tuning names "${name}", which W4A16_CONFIGS does not hold`);
  return c;
}

/** Of shapes of equal rows, the first, or a later one that needs no more k-splits and less traffic. */
function fewestBytes(
  names: readonly string[],
  M: number,
  K: number,
  N: number,
  smCount: number,
  model: SplitModel,
) {
  const Kpad = Math.ceil(K / 128) * 128;
  // one block per multiprocessor (their shared memory), and the bytes a stage brings in
  const scored = names.map((name) => {
    const c = shape(name);
    const g = geometry(c, M, N, Kpad, 128, smCount, 1, model);
    return { c, splits: g.grid[2], work: g.cost * (c.rows * 256 + tilesPerBlock(c) * 4224) };
  });
  let best = scored[0];
  for (const s of scored.slice(1)) if (s.splits <= best.splits && s.work < best.work) best = s;
  return best.c;
}

/**
 * The block shape for M rows of a K x N layer. `wgmma`: the GPU has warpgroup MMA (sm_90), whose blocks
 * decode each weight once per 16 to 128 rows.
 */
export function chooseConfig(
  M: number,
  K = 0,
  N = 0,
  wgmma = false,
  smCount = 132,
  tuning: DeviceTuning = HOPPER_TUNING,
): W4A16Config {
  for (const r of tuning.rows) {
    if (!holds(r, M, K, N)) continue;
    const names = typeof r.use === "string" ? [r.use] : r.use;
    if (!wgmma && names.some((n) => shape(n).kind === "wgmma")) continue;
    return names.length === 1 ? shape(names[0]) : fewestBytes(names, M, K, N, smCount, tuning.splitModel);
  }
  throw new GptqError(`W4A16 tuning "${tuning.name}" has no row for M=${M}, K=${K}, N=${N}`);
}

/** Every configuration a table can pick (for checks that each exists and fits). */
export function tunedConfigs(tuning: DeviceTuning): string[] {
  return [...new Set(tuning.rows.flatMap((r) => (typeof r.use === "string" ? [r.use] : r.use)))].map((n) =>
    configName(shape(n)),
  );
}
