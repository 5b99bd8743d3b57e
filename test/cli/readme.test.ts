// README.md and `--help` against the program. The README's commands are run as written (the built CLI,
// in a scratch directory beside a link to ../shared, so its relative paths hold): the Quick start, the
// command table's examples and every ```console block, whose shown output must be what the program
// prints (stderr, then stdout; durations masked, "..." standing for any lines). Every command's --help
// must describe exactly the options it takes, and the kernels the README names must be the registry's.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { UnknownOptionError } from "../../src/cli/command.js";
import { COMMANDS } from "../../src/cli/commands/index.js";
import { stepLabel } from "../../src/cli/commands/quantize.js";
import { KERNELS } from "../../src/kernels/registry.js";
import { quantizeCheckpoint } from "../../src/pipeline/quantize-checkpoint.js";
import { PipelineOptions } from "../../src/pipeline/quantize-model.js";
import { DEMO_SPEC, writeSyntheticLlama } from "../../src/pipeline/synthetic.js";
import { tmpDir } from "../helpers/checkpoints.js";
import { PROJECT_ROOT, SHARED_DIR, skipUnlessShared } from "../helpers/shared.js";

const README = readFileSync(join(PROJECT_ROOT, "README.md"), "utf8");
const CLI = join(PROJECT_ROOT, "dist/src/cli/main.js");
const skip =
  skipUnlessShared("models", "stories260K") || skipUnlessShared("models", "stories260K-eval.safetensors");

interface Block {
  lang: string;
  lines: string[];
}

/** The fenced code blocks of a markdown text. */
function codeBlocks(md: string): Block[] {
  const out: Block[] = [];
  let open: Block | undefined;
  for (const line of md.split("\n")) {
    const fence = /^```(\S*)\s*$/.exec(line);
    if (fence && !open) open = { lang: fence[1], lines: [] };
    else if (fence && open) {
      out.push(open);
      open = undefined;
    } else open?.lines.push(line);
  }
  return out;
}

/** The text of the section under `## <title>`, up to the next heading of that level. */
function section(md: string, title: string): string {
  const start = md.indexOf(`\n## ${title}\n`);
  assert.ok(start >= 0, `README has no section "${title}"`);
  const end = md.indexOf("\n## ", start + 1);
  return md.slice(start, end < 0 ? undefined : end);
}

/** Words of a shell line (no quoting is used in the README's commands), with $VARS expanded. */
function words(line: string, vars: Record<string, string>): string[] {
  return line
    .trim()
    .split(/\s+/)
    .map((w) =>
      w.replace(/\$(\w+)/g, (_, v: string) => {
        assert.ok(v in vars, `$${v} is not set in the README`);
        return vars[v];
      }),
    );
}

/** Durations the program prints ("5.1s", "17s", "1m05s") vary from run to run. */
function masked(line: string): string {
  return line.replace(/\b(\d+h)?(\d+m)?\d+(\.\d+)?s\b/g, "<time>").trimEnd();
}

/** Whether `actual` lines are `expected` lines, "..." in `expected` standing for any number of lines. */
function matches(expected: string[], actual: string[]): boolean {
  const e = expected.map(masked);
  const a = actual.map(masked);
  const from = (i: number, j: number): boolean => {
    if (i === e.length) return j === a.length;
    if (e[i] === "...") {
      for (let k = j; k <= a.length; k++) if (from(i + 1, k)) return true;
      return false;
    }
    return j < a.length && e[i] === a[j] && from(i + 1, j + 1);
  };
  return from(0, 0);
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  /** stderr's lines, then stdout's, without blank lines at either end */
  lines: string[];
}

describe("README.md, run as written", { skip }, () => {
  let root = "";
  let cwd = "";
  const vars: Record<string, string> = {};
  const runs = new Map<string, Run>();

  /** Runs a README command line in the scratch directory, once (a repeated line reuses the result). */
  function run(line: string): Run {
    const argv = words(line, vars);
    assert.equal(argv[0], "gptq", line);
    const key = argv.join(" ");
    const known = runs.get(key);
    if (known) return known;
    const r = spawnSync(process.execPath, [CLI, ...argv.slice(1)], {
      cwd,
      encoding: "utf8",
      timeout: 300_000,
    });
    const err = r.stderr && !r.stderr.endsWith("\n") ? r.stderr + "\n" : r.stderr;
    const lines = (err + r.stdout).replace(/^\n+|\n+$/g, "").split("\n");
    const out = { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, lines };
    runs.set(key, out);
    return out;
  }

  before(async () => {
    root = tmpDir("readme");
    cwd = join(root, "work");
    mkdirSync(cwd);
    symlinkSync(SHARED_DIR, join(root, "shared"), "dir");
    // the checkpoints the README's error examples name: a Marlin model whose config says GPTQ, and an
    // asymmetric GPTQ model
    const fp = join(root, "synthetic");
    writeSyntheticLlama(fp, DEMO_SPEC);
    const o: PipelineOptions = {
      method: "rtn",
      bits: 4,
      groupSize: 128,
      sym: true,
      descAct: false,
      staticGroups: false,
      damp: 0.01,
      clip: "minmax",
    };
    const marlin = join(cwd, "llama-marlin");
    await quantizeCheckpoint({ modelDir: fp, outDir: marlin, options: o, format: "marlin", pad: "none" });
    for (const [file, key] of [
      ["quantize_config.json", undefined],
      ["config.json", "quantization_config"],
    ] as const) {
      const json = JSON.parse(readFileSync(join(marlin, file), "utf8"));
      const q = key ? json[key] : json;
      q.checkpoint_format = "gptq";
      delete q.is_marlin_format;
      writeFileSync(join(marlin, file), JSON.stringify(json, null, 2));
    }
    const asym = join(cwd, "llama-gptq-asym");
    await quantizeCheckpoint({
      modelDir: fp,
      outDir: asym,
      options: { ...o, sym: false },
      format: "auto",
      pad: "none",
    });
  });

  after(() => rmSync(root, { recursive: true, force: true }));

  test("the Quick start runs as written; each command succeeds and prints the numbers its comment gives", () => {
    const block = codeBlocks(section(README, "Quick start")).find((b) => b.lang === "sh");
    assert.ok(block, "no sh block in the Quick start");
    let ran = 0;
    for (const raw of block.lines) {
      const [command, comment = ""] = raw.split(/\s#\s/);
      const line = command.trim();
      const assign = /^(\w+)=(\S+)$/.exec(line);
      if (assign) vars[assign[1]] = assign[2];
      if (!line.startsWith("gptq ")) continue;
      const r = run(line);
      assert.equal(r.code, 0, `${line}: exit ${r.code}\n${r.stderr}`);
      for (const n of comment.match(/\d+(\.\d+)?/g) ?? [])
        assert.ok(r.stdout.includes(n), `${line}: the README says "${comment.trim()}"; stdout:\n${r.stdout}`);
      ran++;
    }
    assert.ok(ran >= 5 && vars.E, "the Quick start lost its commands");
  });

  test("the command table names every command once, and each example runs", () => {
    const rows = section(README, "Commands")
      .split("\n")
      .filter((l) => /^\| `[a-z-]+` \|/.test(l))
      .map((l) => l.split(" | "));
    // in the order the examples build on each other (merge writes what split reads)
    assert.deepEqual(rows.map((r) => r[0].slice(3, -1)).sort(), COMMANDS.map((c) => c.name).sort());
    for (const [name, what, example] of rows.map((r) => [r[0].slice(3, -1), r[1], r[2]])) {
      const cmd = COMMANDS.find((c) => c.name === name)!;
      // every option the row names is one the command documents
      for (const opt of `${what} ${example}`.match(/--[a-z][a-z0-9-]*/g) ?? [])
        assert.match(cmd.usage, new RegExp(`${opt}\\b`), `README's ${name} row names ${opt}`);
      const line = /^`(gptq .*)` \|$/.exec(example.trim())?.[1];
      assert.ok(line, `${name}: no example`);
      if (name === "bench") continue; // needs an NVIDIA GPU (test/backend/cuda/bench.test.ts)
      const r = run(line);
      assert.equal(r.code, 0, `${line}: exit ${r.code}\n${r.stderr}`);
    }
  });

  test("every ```console block's commands print the lines shown", () => {
    const blocks = codeBlocks(README).filter((b) => b.lang === "console");
    assert.ok(blocks.length >= 3);
    let checked = 0;
    for (const b of blocks) {
      const cmds: { line: string; expected: string[] }[] = [];
      for (const l of b.lines)
        if (l.startsWith("$ ")) cmds.push({ line: l.slice(2), expected: [] });
        else cmds.at(-1)!.expected.push(l);
      for (const { line, expected } of cmds) {
        const r = run(line);
        const error = expected.some((l) => /^gptq \S+: error: /.test(l));
        assert.equal(r.code, error ? 1 : 0, `${line}: exit ${r.code}\n${r.stderr}`);
        assert.ok(
          matches(expected, r.lines),
          `$ ${line}\nthe README shows:\n${expected.join("\n")}\nthe program prints:\n${r.lines.join("\n")}`,
        );
        checked++;
      }
    }
    assert.ok(checked >= 6, `only ${checked} console commands`);
  });

  test("the progress bar the README shows is the one quantize draws", () => {
    const shown = /`(layer \d+ of 0\.\.\d+ [^`]*)`/.exec(section(README, "Quick start"))?.[1];
    assert.ok(shown, "no progress bar label in the Quick start");
    const label = stepLabel({
      type: "step",
      layer: 2,
      layers: 5,
      step: "gate_proj/up_proj",
      done: 8,
      total: 20,
      elapsed: 8,
      eta: 12,
    });
    assert.equal(shown, label);
  });
});

test("the kernels the README says `check` knows are the registry's, and `check --help` lists them", () => {
  const para = README.split("\n\n").find((p) => p.startsWith("Kernels `check` knows"));
  assert.ok(para, "README lost its list of kernels");
  const named = [...para.matchAll(/`([a-z0-9-]+)`/g)].map((m) => m[1]).filter((n) => n !== "check");
  assert.deepEqual(
    named,
    KERNELS.map((k) => k.name),
  );
  const usage = COMMANDS.find((c) => c.name === "check")!.usage;
  for (const k of KERNELS) assert.match(usage, new RegExp(`\\n  ${k.name} `), k.name);
});

test("every command's --help describes exactly the options it takes, and `gptq --help` lists every command", async () => {
  const main = spawnSync(process.execPath, [CLI, "--help"], { encoding: "utf8" });
  assert.equal(main.status, 0);
  for (const cmd of COMMANDS) {
    assert.match(
      main.stdout,
      new RegExp(`\\n  ${cmd.name} +${cmd.summary.replace(/[().*+?[\]]/g, "\\$&")}\\n`),
    );
    assert.match(cmd.usage, new RegExp(`^usage: gptq ${cmd.name}\\b`));
    // every command parses its options first: an unknown one is refused before any work, listing those taken
    let known: string[] | undefined;
    try {
      await cmd.run(["--no-such-option"]);
    } catch (e) {
      if (e instanceof UnknownOptionError) known = e.known;
      else throw e;
    }
    assert.ok(known, `${cmd.name} took --no-such-option`);
    const documented = new Set(
      [...cmd.usage.matchAll(/(?<![\w-])--([a-z][a-z0-9-]*)/g)].map((m) => m[1]).filter((o) => o !== "help"),
    );
    assert.deepEqual([...documented].sort(), [...known].sort(), `gptq ${cmd.name} --help`);
  }
});
