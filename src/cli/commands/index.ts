import { Command } from "../command.js";
import { checkCommand } from "./check.js";
import { fixConfigCommand } from "./fix-config.js";
import { inspectCommand } from "./inspect.js";
import { convert } from "./convert.js";
import { dequantize } from "./dequantize.js";
import { split } from "./split.js";
import { merge } from "./merge.js";

/** Every CLI command, in the order `gptq --help` lists them. */
export const COMMANDS: Command[] = [
  inspectCommand,
  checkCommand,
  fixConfigCommand,
  convert,
  dequantize,
  split,
  merge,
];
