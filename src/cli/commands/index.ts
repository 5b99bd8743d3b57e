import { Command } from "../command.js";
import { convert } from "./convert.js";
import { dequantize } from "./dequantize.js";
import { split } from "./split.js";
import { merge } from "./merge.js";
import { quantizeCommand } from "./quantize.js";
import { evalCommand } from "./eval.js";
import { padCommand } from "./pad.js";

/** Every CLI command, in the order `gptq --help` lists them. */
export const COMMANDS: Command[] = [
  quantizeCommand,
  evalCommand,
  convert,
  dequantize,
  split,
  merge,
  padCommand,
];
