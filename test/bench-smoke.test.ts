// Every benchmark runs end to end on a tiny configuration: it prints a markdown table, writes its
// report and SVG plot (into a temp dir here, not bench/results), and with --json its last stdout line
// is one JSON object holding the figures the issue asks for. No timing is asserted: speed lives in bench/.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

async function bench(file: string, args: string[]): Promise<{ table: string; json: Record<string, unknown>; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'fedstate-bench-'));
  const { stdout } = await run(process.execPath, ['--import', 'tsx', `bench/${file}`, ...args, '--out', dir, '--json'], { maxBuffer: 1 << 24, timeout: 240_000 });
  const lines = stdout.trim().split('\n');
  const json = JSON.parse(lines[lines.length - 1]!) as Record<string, unknown>;
  return { table: lines.slice(0, -1).join('\n'), json, dir };
}

const hasTable = (text: string): boolean => /^\|.*\|\n\|[-:|]+\|$/m.test(text);

function checkReport(dir: string, name: string): void {
  const md = readFileSync(join(dir, `${name}.md`), 'utf8');
  assert.ok(hasTable(md), `${name}.md holds a markdown table`);
  assert.ok(existsSync(join(dir, `${name}.svg`)), `${name}.svg written`);
  assert.ok(readFileSync(join(dir, `${name}.svg`), 'utf8').startsWith('<svg'), `${name}.svg is an SVG`);
}

test('scale: table, report, plot; --json carries roundMs10k and bytesPerIdleClient', async () => {
  const { table, json, dir } = await bench('scale.ts', ['--clients', '5,20', '--combiners', '1,2', '--rounds', '2']);
  try {
    assert.ok(hasTable(table));
    checkReport(dir, 'scale');
    assert.ok('roundMs10k' in json, 'roundMs10k present (null unless 10,000 clients ran)');
    assert.is(json.roundMs10k, null);
    assert.type(json.bytesPerIdleClient, 'number');
    const configs = json.configs as Array<{ clients: number; combiners: number; roundMs: number[] }>;
    assert.is(configs.length, 4);
    for (const c of configs) assert.is(c.roundMs.length, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('memory: in-process and grpc figures, growth per round for each setup', async () => {
  const { table, json, dir } = await bench('memory.ts', ['--clients', '20', '--remote-clients', '5', '--transports', 'grpc', '--rounds', '3']);
  try {
    assert.ok(hasTable(table));
    checkReport(dir, 'memory');
    assert.type(json.bytesPerIdleClient, 'number');
    assert.type(json.grpcBytesPerClient, 'number');
    const remote = json.remote as Array<{ kind: string; growthBytesPerRound: number }>;
    assert.equal(remote.map((r) => r.kind), ['grpc']);
    assert.type(remote[0]!.growthBytesPerRound, 'number');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('combiners: one run per combiner count, every client updates in every round', async () => {
  const { table, json, dir } = await bench('combiners.ts', ['--combiners', '1,2', '--clients', '6', '--client-processes', '2', '--params', '1000', '--rounds', '2']);
  try {
    assert.ok(hasTable(table));
    checkReport(dir, 'combiners');
    const runs = json.runs as Array<{ combiners: number; roundMs: number[] }>;
    assert.equal(runs.map((r) => r.combiners), [1, 2]);
    for (const r of runs) assert.is(r.roundMs.length, 2);
    assert.type(json.roundMs1c, 'number');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('model-size: a round and a raw ceiling per transport and size', async () => {
  const { table, json, dir } = await bench('model-size.ts', ['--params', '1000,20000', '--transports', 'inproc,ws', '--rounds', '1']);
  try {
    assert.ok(hasTable(table));
    checkReport(dir, 'model-size');
    const results = json.results as Array<{ transport: string; params: number; medianRoundMs: number; ceilingMs: number; ratio: number }>;
    assert.equal(results.map((r) => `${r.transport}:${r.params}`), ['inproc:1000', 'inproc:20000', 'ws:1000', 'ws:20000']);
    for (const r of results) assert.ok(Number.isFinite(r.ratio) && r.ratio > 0, JSON.stringify(r));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('transport: both ratios, the verified ceiling and the link against it, from a real second process', async () => {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', 'bench/transport.ts', '--mb', '8', '--rounds', '1', '--json'], { maxBuffer: 1 << 24, timeout: 240_000 });
  const lines = stdout.trim().split('\n');
  const json = JSON.parse(lines[lines.length - 1]!) as Record<string, unknown>;
  assert.ok(hasTable(lines.slice(0, -1).join('\n')));
  for (const k of ['grpcRatio', 'wsRatio', 'grpcVerifiedCeilingRatio', 'wsVerifiedCeilingRatio', 'grpcLinkVsCeiling', 'wsLinkVsCeiling', 'grpcReusedVsCeiling', 'wsReusedVsCeiling']) {
    const v = json[k];
    assert.ok(typeof v === 'number' && Number.isFinite(v) && v > 0, `${k}: ${String(v)}`);
  }
  const cores = json.coresBusy as Record<string, number>;
  assert.ok(cores['ws raw verified']! > 0 && cores['grpc raw verified']! > 0, JSON.stringify(cores));
  // where the link hashes on its receiving thread (no worker: one CPU, or turned off), so does the ceiling
  const noWorker = await run(process.execPath, ['--import', 'tsx', 'bench/transport.ts', '--mb', '2', '--rounds', '1', '--json'], {
    env: { ...process.env, FEDSTATE_HASH_WORKER: '0' },
    maxBuffer: 1 << 24,
    timeout: 240_000,
  });
  const j2 = JSON.parse(noWorker.stdout.trim().split('\n').pop()!) as Record<string, number>;
  assert.ok(j2.wsVerifiedCeilingRatio! > 0 && j2.grpcVerifiedCeilingRatio! > 0, JSON.stringify(j2));
});

test('every benchmark answers --help with its flags (exit 0) and a mistyped flag with the valid ones (exit 2), not a stack trace', async () => {
  for (const file of ['aggregate.ts', 'combiners.ts', 'memory.ts', 'model-size.ts', 'scale.ts', 'tls.ts', 'transport.ts']) {
    const help = await run(process.execPath, ['--import', 'tsx', `bench/${file}`, '--help']);
    assert.match(help.stdout, new RegExp(`^usage: npx tsx bench/${file.replace('.', '\\.')} \\[flags\\]`), file);
    assert.match(help.stdout, /--json/, file);
    const wrong = await run(process.execPath, ['--import', 'tsx', `bench/${file}`, '--jsno']).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    assert.is(wrong.code, 2, file);
    assert.match(wrong.stderr, /unknown flag --jsno; valid flags: .*--json/, file);
    assert.not.match(wrong.stderr, /\n\s+at /, `${file}: no stack trace`);
  }
});

test('run.ts lists the benchmarks and refuses an unknown name', async () => {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--list']);
  for (const name of ['scale', 'memory', 'combiners', 'model-size', 'transport', 'aggregate']) assert.ok(stdout.includes(`| ${name}`), name);
  try {
    await run(process.execPath, ['--import', 'tsx', 'bench/run.ts', 'nope']);
    assert.unreachable('should have failed');
  } catch (e) {
    assert.is((e as { code?: number }).code, 2);
    assert.match(String((e as { stderr?: string }).stderr), /unknown benchmark nope/);
  }
});

test.run();
