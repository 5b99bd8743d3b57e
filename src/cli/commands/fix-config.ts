import { statSync } from "node:fs";
import { join } from "node:path";
import { Command, parse } from "../command.js";
import { removeLeftovers } from "../output.js";
import {
  QuantConfig,
  clearQuantConfig,
  inferQuantConfig,
  openCheckpoint,
  readQuantConfigDetailed,
  readRawQuantSections,
  writeQuantConfig,
} from "../../io/checkpoint.js";
import { checkWritableDir } from "../../io/output.js";
import { UsageError } from "../../util/errors.js";

const usage = `usage: gptq fix-config <dir>

Rewrites quantize_config.json and config.json["quantization_config"] so they describe the tensors
actually stored: the format (GPTQ v1/v2 from the zero points, Marlin from B/s), bits, group size,
symmetry and act-order (from g_idx). Keys the tensors cannot tell (damp_percent, true_sequential,
static_groups, meta) and every other key of config.json are kept. For an unquantized checkpoint
it removes a stale quantization config. Files are replaced atomically; tensors are never touched.

example:
  gptq fix-config ./Llama-2-7b-marlin     # a Marlin model saved under a plain GPTQ config
`;

const FIELDS: [keyof QuantConfig, string][] = [
  ["checkpointFormat", "checkpoint_format"],
  ["bits", "bits"],
  ["groupSize", "group_size"],
  ["sym", "sym"],
  ["descAct", "desc_act"],
];

/** The current config when it parses and both files agree; else undefined (then everything is rewritten). */
function currentConfig(dir: string) {
  try {
    return readQuantConfigDetailed(dir);
  } catch {
    return undefined;
  }
}

/** What rewriting the config files writes: config.json again and a quantize_config.json. */
function configBytes(dir: string): number {
  const p = join(dir, "config.json");
  try {
    return statSync(p).size + 8192;
  } catch {
    return 8192;
  }
}

export const fixConfigCommand: Command = {
  name: "fix-config",
  summary: "rewrite the config files so they describe the stored tensors",
  usage,
  run(argv) {
    const { positionals } = parse(argv, {});
    if (positionals.length !== 1) throw new UsageError("expected one checkpoint directory");
    const dir = positionals[0];
    removeLeftovers("fix-config", dir);
    const fixed = inferQuantConfig(dir);
    const before = currentConfig(dir);
    if (!fixed) {
      const raw = readRawQuantSections(dir);
      if (!raw.fromConfigJson && !raw.fromQuantizeConfig) {
        process.stdout.write(`${dir}: unquantized, and no quantization config to remove; nothing to do\n`);
        return;
      }
      checkWritableDir(dir, configBytes(dir));
      clearQuantConfig(dir);
      process.stdout.write(`${dir}: no quantized tensors stored: removed the quantization config\n`);
      return;
    }
    const changes = FIELDS.filter(([k]) => before?.config[k] !== fixed[k]).map(
      ([k, key]) =>
        `${key}: ${before ? JSON.stringify(before.config[k]) : "?"} -> ${JSON.stringify(fixed[k])}`,
    );
    const complete = before && before.missing.length === 0 && before.sources.length === 2;
    if (!changes.length && complete) {
      process.stdout.write(`${dir}: the config already describes the tensors; nothing to do\n`);
      return;
    }
    checkWritableDir(dir, configBytes(dir));
    writeQuantConfig(dir, fixed);
    openCheckpoint(dir).close(); // the rewritten config must now pass the same verification
    process.stdout.write(
      `${dir}: wrote quantize_config.json and config.json#quantization_config` +
        (changes.length ? `\n  ${changes.join("\n  ")}\n` : " (all keys spelled out)\n"),
    );
  },
};
