// The FedAvg paper reproduction (sandbox/experiments/fedavg.ts) in its reduced --quick form, through
// the real runtime: FedAvg reaches the target in fewer communication rounds than FedSGD, the
// pathological non-IID split is reported, and the JSON summary carries what the README promises.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

interface Run {
  setting: string;
  algorithm: string;
  partition: string;
  roundsToTarget: number | null;
  cap: number;
  updatesPerRound: number;
  bestAccuracy: number;
  status: string;
}

interface Summary {
  target: number;
  clients: number;
  fraction: number;
  fedsgdRounds: number | null;
  fedavgRounds: number | null;
  noniidRounds: number | null;
  centralizedAccuracy: number | null;
  centralized: { epochs: number } | null;
  wallMs: number;
  runs: Run[];
}

test('fedavg --quick --json: FedAvg needs fewer rounds than FedSGD to reach the target', async () => {
  const out = mkdtempSync(join(tmpdir(), 'fedstate-fedavg-'));
  try {
    const started = Date.now();
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'sandbox/experiments/fedavg.ts', '--quick', '--json', '--out', out], { maxBuffer: 1 << 22 });
    const ms = Date.now() - started;
    const s = JSON.parse(stdout.trim().split('\n').at(-1)!) as Summary;

    for (const key of ['fedavgRounds', 'fedsgdRounds', 'noniidRounds', 'target', 'centralizedAccuracy'] as const) assert.ok(key in s, `JSON has ${key}`);
    assert.ok(s.target > 0.5 && s.target < 1, `target ${s.target}`);
    assert.type(s.fedsgdRounds, 'number', 'FedSGD reached the target within its cap');
    assert.type(s.fedavgRounds, 'number', 'FedAvg reached the target within its cap');
    assert.ok(s.fedavgRounds! < s.fedsgdRounds!, `FedAvg ${s.fedavgRounds} rounds vs FedSGD ${s.fedsgdRounds}`);
    assert.ok(s.noniidRounds === null || s.noniidRounds >= 1);

    // every run went through the runtime with C * K clients per round, and stopped at the target or its cap
    assert.ok(s.runs.length >= 3);
    for (const r of s.runs) {
      assert.is(r.updatesPerRound, Math.round(s.fraction * s.clients), `${r.setting} ${r.partition} updates per round`);
      if (r.roundsToTarget !== null) {
        assert.is(r.status, 'reached');
        assert.ok(r.bestAccuracy >= s.target);
      } else assert.is(r.status, 'cap');
    }
    assert.ok(s.runs.some((r) => r.partition !== 'iid' && r.algorithm === 'FedAvg'), 'a non-IID FedAvg run');

    assert.type(s.centralizedAccuracy, 'number');
    assert.ok(s.centralizedAccuracy! > s.target, `centralized ${s.centralizedAccuracy}`);
    assert.ok(s.centralized!.epochs >= 1);

    for (const ext of ['md', 'svg', 'json']) assert.ok(existsSync(join(out, `fedavg-2nn-quick.${ext}`)), `${ext} written`);
    assert.match(readFileSync(join(out, 'fedavg-2nn-quick.md'), 'utf8'), /\| FedSGD \|/);
    assert.match(readFileSync(join(out, 'fedavg-2nn-quick.svg'), 'utf8'), /<polyline/);
    assert.ok(ms < 90_000, `quick run took ${ms} ms`);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('fedavg refuses an unknown configuration', async () => {
  try {
    await run(process.execPath, ['--import', 'tsx', 'sandbox/experiments/fedavg.ts', '--quick', '--configs', 'fedsgd']);
    assert.unreachable('should have failed');
  } catch (e) {
    const err = e as { code: number; stderr: string };
    assert.is(err.code, 1);
    assert.match(err.stderr, /unknown configuration "fedsgd"/);
  }
});

test.run();
