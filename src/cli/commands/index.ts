import { Command } from "../command.js";
import { evalCommand } from "./eval.js";
import { padCommand } from "./pad.js";
import { quantizeCommand } from "./quantize.js";

/** Every CLI command, in the order `gptq --help` lists them. */
export const COMMANDS: Command[] = [quantizeCommand, evalCommand, padCommand];
