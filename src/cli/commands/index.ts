import { Command } from "../command.js";
import { checkCommand } from "./check.js";
import { fixConfigCommand } from "./fix-config.js";
import { inspectCommand } from "./inspect.js";
import { verifyCommand } from "./verify.js";
import { convertCommand } from "./convert.js";
import { dequantizeCommand } from "./dequantize.js";
import { exportCommand } from "./export.js";
import { splitCommand } from "./split.js";
import { mergeCommand } from "./merge.js";
import { quantizeCommand } from "./quantize.js";
import { evalCommand } from "./eval.js";
import { padCommand } from "./pad.js";
import { bench } from "./bench.js";
import { demoCommand } from "./demo.js";

/** Every CLI command, in the order `gptq --help` lists them. */
export const COMMANDS: Command[] = [
  inspectCommand,
  verifyCommand,
  checkCommand,
  fixConfigCommand,
  quantizeCommand,
  evalCommand,
  convertCommand,
  dequantizeCommand,
  exportCommand,
  splitCommand,
  mergeCommand,
  padCommand,
  bench,
  demoCommand,
];
