#!/usr/bin/env node
// A `solc`-compatible command over solc-js (the official compiler built to WebAssembly).
// Answers `--version` in the native form and `--standard-json` (stdin or a file), resolving
// imports through --base-path, --include-path and --allow-paths like native solc. It sets
// process.exitCode instead of calling process.exit(), so piped output is never cut at 64 KiB.
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require(path.join(__dirname, "..", "node_modules", "solc"));

const argv = process.argv.slice(2);
const has = (flag) => argv.includes(flag);
const values = (flag) => {
  const out = [];
  argv.forEach((a, i) => {
    if (a === flag && i + 1 < argv.length) out.push(...argv[i + 1].split(","));
    else if (a.startsWith(flag + "=")) out.push(...a.slice(flag.length + 1).split(","));
  });
  return out;
};

if (has("--version") || has("-v")) {
  process.stdout.write("solc, the solidity compiler commandline interface\nVersion: " + solc.version() + "\n");
  return;
}
if (!has("--standard-json")) {
  process.stderr.write("solc shim: only --version and --standard-json are supported\n");
  process.exitCode = 2;
  return;
}
const flagsWithValue = new Set(["--base-path", "--include-path", "--allow-paths", "--output-dir", "--evm-version"]);
const positional = argv.filter((a, i) => !a.startsWith("-") && !flagsWithValue.has(argv[i - 1]));
const input = positional.length && positional[0] !== "-" ? fs.readFileSync(positional[0], "utf8") : fs.readFileSync(0, "utf8");
const roots = [...values("--base-path"), ...values("--include-path"), process.cwd()];

function findImports(importPath) {
  const candidates = path.isAbsolute(importPath) ? [importPath] : roots.map((r) => path.resolve(r, importPath));
  for (const c of candidates) {
    if (fs.existsSync(c) && fs.statSync(c).isFile()) return { contents: fs.readFileSync(c, "utf8") };
  }
  return { error: "File not found: " + importPath };
}

const output = solc.compile(input, { import: findImports });
process.stdout.write(output);
process.exitCode = 0;
