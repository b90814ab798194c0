// Test runner: each test file runs in its own Node process (isolation: TF.js backends, ports, timers),
// two at a time on this two-core machine. uvu prints "Total: N  Passed: N  Skipped: N" per file; this
// runner sums them and ends with one line "N passed, N failed" so a run is read correctly.
//
//   npm test                      every test/**/*.test.ts
//   npm test -- transport store   only files whose path contains one of the words
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const testDir = join(root, 'test');

function findTests(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return findTests(path);
    return name.endsWith('.test.ts') ? [path] : [];
  });
}

interface FileResult {
  file: string;
  passed: number;
  failed: number;
  skipped: number;
  code: number | null;
  ms: number;
  output: string;
}

function runFile(file: string): Promise<FileResult> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', file], {
      cwd: root,
      env: { ...process.env, FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const limitMs = Number(process.env.FEDSTATE_TEST_FILE_TIMEOUT_MS ?? 300_000);
    const timer = setTimeout(() => {
      output += `\n[runner] killed after ${limitMs} ms\n`;
      child.kill('SIGKILL');
    }, limitMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      const total = /Total:\s+(\d+)/.exec(output);
      const passed = /Passed:\s+(\d+)/.exec(output);
      const skipped = /Skipped:\s+(\d+)/.exec(output);
      const t = Number(total?.[1] ?? 0);
      const p = Number(passed?.[1] ?? 0);
      const s = Number(skipped?.[1] ?? 0);
      // A file that crashed before uvu reported counts as one failure, never as a pass.
      // uvu's Total counts run tests only (skipped ones are reported apart).
      const failed = code === 0 && total ? t - p : Math.max(1, t - p);
      resolve({ file: relative(root, file), passed: p, failed, skipped: s, code, ms: Date.now() - started, output });
    });
  });
}

async function main(): Promise<void> {
  const filters = process.argv.slice(2).filter((a) => !a.startsWith('-'));
  const files = findTests(testDir)
    .filter((f) => filters.length === 0 || filters.some((w) => relative(root, f).includes(w)))
    .sort();
  if (files.length === 0) {
    console.error('no test files matched');
    process.exit(1);
  }
  const concurrency = Number(process.env.FEDSTATE_TEST_CONCURRENCY ?? Math.max(1, Math.min(2, cpus().length)));
  const queue = [...files];
  const results: FileResult[] = [];
  const worker = async (): Promise<void> => {
    for (let file = queue.shift(); file; file = queue.shift()) {
      const r = await runFile(file);
      results.push(r);
      const mark = r.failed === 0 ? 'ok  ' : 'FAIL';
      console.log(`${mark} ${r.file}  (${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped, ${r.ms} ms)`);
      if (r.failed > 0 || process.env.FEDSTATE_TEST_VERBOSE) console.log(r.output.replace(/^/gm, '    | '));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const passed = results.reduce((n, r) => n + r.passed, 0);
  const failed = results.reduce((n, r) => n + r.failed, 0);
  const skipped = results.reduce((n, r) => n + r.skipped, 0);
  console.log(`\nTotal: ${passed + failed}  Passed: ${passed}  Skipped: ${skipped}`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

await main();
