import { Command } from "../command.js";

/** Every CLI command, in the order `gptq --help` lists them. */
export const COMMANDS: Command[] = [];
