/**
 * What every writing command does with its output before it loads anything: removes what killed runs
 * left beside it (and says how much that freed, one line on stderr), then checks that the output can be
 * written at all. The library checks again, with the bytes it will write, before any work.
 */
import { dirname } from "node:path";
import { removeAbandonedTemporaries } from "../io/atomic.js";
import { checkOutputDir, formatBytes } from "../io/output.js";

/** Removes the temporary files and folders of dead processes in `dir`, saying so on stderr. */
export function removeLeftovers(command: string, dir: string): void {
  const { removed, bytes } = removeAbandonedTemporaries(dir);
  if (!removed.length) return;
  const what = removed.length === 1 ? "temporary file or folder" : "temporary files or folders";
  const names = removed.slice(0, 3).join(", ") + (removed.length > 3 ? `, ${removed.length - 3} more` : "");
  process.stderr.write(
    `gptq ${command}: removed ${removed.length} ${what} left in ${dir} by killed runs (${names}): freed ${formatBytes(bytes)} (${bytes} bytes)\n`,
  );
}

/** For a command that creates the folder `out`: leftovers beside it removed, then `out` checked. */
export function prepareOutput(command: string, out: string): void {
  removeLeftovers(command, dirname(out));
  checkOutputDir(out);
}
