// The sandbox's --partition and --fraction flags, end to end through the runtime: a pathological
// non-IID split over 10 clients with C = 0.3 trains 3 clients per round.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

interface Summary {
  rounds: Array<{ round: number; accuracy: number; updates: number }>;
  status: string;
  trailVerified: boolean;
}

async function sandbox(...flags: string[]): Promise<Summary> {
  const out = mkdtempSync(join(tmpdir(), 'fedstate-exp-sandbox-'));
  try {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'sandbox/run.ts', ...flags, '--json', '--out', out], { maxBuffer: 1 << 22 });
    return JSON.parse(stdout.trim().split('\n').at(-1)!) as Summary;
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

test('sandbox --partition shards:2 --clients 10 --fraction 0.3: one round with 3 updates (one combiner)', async () => {
  const s = await sandbox('--partition', 'shards:2', '--clients', '10', '--fraction', '0.3', '--rounds', '1', '--combiners', '1');
  assert.is(s.status, 'done');
  assert.is(s.rounds.length, 1);
  assert.is(s.rounds[0]!.updates, 3);
  // two labels per client, three clients: better than chance, far from IID accuracy
  assert.ok(s.rounds[0]!.accuracy > 0.1 && s.rounds[0]!.accuracy < 0.9, `accuracy ${s.rounds[0]!.accuracy}`);
  assert.is(s.trailVerified, true);
});

test('sandbox --fraction: round(C * K) clients per round whatever the number of combiners (0.3 * 10 = 3 over 2 combiners)', async () => {
  const s = await sandbox('--partition', 'iid', '--clients', '10', '--fraction', '0.3', '--rounds', '1');
  assert.is(s.rounds[0]!.updates, 3);
});

test('sandbox refuses a malformed --partition', async () => {
  try {
    await run(process.execPath, ['--import', 'tsx', 'sandbox/run.ts', '--partition', 'shards:x', '--rounds', '1']);
    assert.unreachable('should have failed');
  } catch (e) {
    const err = e as { code: number; stderr: string };
    assert.is(err.code, 1);
    assert.match(err.stderr, /partition/);
  }
});

test.run();
