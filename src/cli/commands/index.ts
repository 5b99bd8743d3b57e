import { Command } from "../command.js";
import { bench } from "./bench.js";

/** Every CLI command, in the order `gptq --help` lists them. */
export const COMMANDS: Command[] = [bench];
