// clang-format for the CUDA sources (.cu, .cuh) under src/, in the style of .clang-format.
// `--check`: list the files that differ and exit 1, changing nothing; else rewrite them in place.
import { readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { format } from "@wasm-fmt/clang-format";

const check = process.argv.includes("--check");
const style = readFileSync(".clang-format", "utf8");
const files = [];
(function walk(dir) {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith(".cu") || name.endsWith(".cuh")) files.push(p);
  }
})("src");
const differ = [];
for (const f of files) {
  const text = readFileSync(f, "utf8");
  const formatted = format(text, f.replace(/\.cuh?$/, ".cu"), style);
  if (formatted === text) continue;
  differ.push(f);
  if (!check) writeFileSync(f, formatted);
}
if (check && differ.length) {
  console.error(
    `clang-format: ${differ.length} CUDA file(s) differ: ${differ.join(", ")} (run \`npm run format\`)`,
  );
  process.exit(1);
}
console.log(`clang-format: ${files.length} CUDA files ${check ? "checked" : "formatted"}`);
