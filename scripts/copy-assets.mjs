// Copies non-TypeScript runtime assets (CUDA sources) next to their compiled launchers in dist/.
import { cpSync, readdirSync, statSync, mkdirSync } from "node:fs";
import { join, relative, dirname } from "node:path";

const ASSET_EXT = [".cu", ".cuh"];
function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (ASSET_EXT.some((e) => name.endsWith(e))) {
      const dest = join("dist", relative(".", p));
      mkdirSync(dirname(dest), { recursive: true });
      cpSync(p, dest);
    }
  }
}
walk("src");
