// The README's main job, end to end: the pseudo-distributed sandbox trains MNIST and says so in its
// --json summary (a short run: 2 rounds, 3 clients, so the suite stays fast).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

test('sandbox --json: training improves held-out accuracy and the trail verifies', async () => {
  const out = mkdtempSync(join(tmpdir(), 'fedstate-sandbox-'));
  try {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'sandbox/run.ts', '--rounds', '2', '--clients', '3', '--combiners', '2', '--json', '--out', out], { maxBuffer: 1 << 22 });
    const lines = stdout.trim().split('\n');
    const summary = JSON.parse(lines[lines.length - 1]!) as { rounds: Array<{ round: number; accuracy: number; loss: number; updates: number; ms: number }>; finalAccuracy: number; trailVerified: boolean; status: string };
    assert.is(summary.status, 'done');
    assert.is(summary.rounds.length, 2);
    assert.equal(summary.rounds.map((r) => r.round), [1, 2]);
    for (const r of summary.rounds) {
      assert.is(r.updates, 3);
      assert.ok(r.ms > 0);
      assert.ok(r.loss > 0);
    }
    assert.ok(summary.rounds[1]!.accuracy >= summary.rounds[0]!.accuracy - 0.01, 'accuracy does not fall');
    assert.ok(summary.finalAccuracy > 0.85, `final accuracy ${summary.finalAccuracy}`);
    assert.is(summary.trailVerified, true);
    assert.ok(existsSync(join(out, 'sandbox-accuracy.svg')), 'plot written');
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('sandbox refuses a mistyped flag with a clear error', async () => {
  try {
    await run(process.execPath, ['--import', 'tsx', 'sandbox/run.ts', '--roudns', '2']);
    assert.unreachable('should have failed');
  } catch (e) {
    const err = e as { code: number; stderr: string };
    assert.is(err.code, 1);
    assert.match(err.stderr, /unknown flag --roudns/);
  }
});

test('sandbox refuses an unknown strategy and a malformed attack before starting', async () => {
  for (const [flags, message] of [
    [['--strategy', 'fedavgg'], /unknown strategy/],
    [['--attack', 'lots'], /--attack expects FRACTION:MODE/],
  ] as const) {
    try {
      await run(process.execPath, ['--import', 'tsx', 'sandbox/run.ts', ...flags]);
      assert.unreachable(flags.join(' '));
    } catch (e) {
      const err = e as { code: number; stderr: string };
      assert.is(err.code, 1);
      assert.match(err.stderr, message);
    }
  }
});

test.run();
