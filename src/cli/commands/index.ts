import { Command } from "../command.js";
import { padCommand } from "./pad.js";

/** Every CLI command, in the order `gptq --help` lists them. */
export const COMMANDS: Command[] = [padCommand];
