// Dropout and stragglers across processes: `fedstate client --dropout --stragglers` (through
// sandbox/run.ts --processes) makes exactly the seeded plan's clients fail or stall each round; every
// round completes at the timeout with the other clients' updates only, and the trail verifies.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { roundFates } from '../src/actors/dropout.ts';
import { sandbox, type Summary } from './processes-helper.ts';

const dir = mkdtempSync(join(tmpdir(), 'fedstate-recovery-dropout-'));
const CLIENTS = 4;
const SEED = 6;

test('processes: each round one client drops out and one straggles (seeded); rounds close at the timeout with the other two', async () => {
  const out = join(dir, 'out');
  const s = (await sandbox(
    ['--processes', '--rounds', '2', '--clients', String(CLIENTS), '--combiners', '2', '--local-epochs', '1', '--seed', String(SEED), '--dropout', '0.25', '--stragglers', '0.25', '--round-timeout', '6000', '--out', out],
    85_000,
  )) as unknown as Omit<Summary, 'rounds'> & { faults: { dropout: number; stragglers: number }; rounds: Array<Summary['rounds'][number] & { status: string }> };
  assert.is(s.status, 'done');
  assert.equal(s.stragglers, [], 'no node process outlives the sandbox');
  assert.equal(s.faults, { dropout: 0.25, stragglers: 0.25, mode: 'fail', seed: SEED });
  assert.equal(s.rounds.map((r) => [r.round, r.status, r.updates]), [[1, 'ok', 2], [2, 'ok', 2]]);
  assert.is(s.trailVerified, true);
  // Each client process decided its fate alone, and they agree with the plan.
  const plan = { dropout: 0.25, stragglers: 0.25, seed: SEED, clientsTotal: CLIENTS };
  for (let i = 0; i < CLIENTS; i++) {
    const injected = readFileSync(join(out, 'logs', `client-k${i + 1}.log`), 'utf8')
      .split('\n')
      .filter((l) => l.includes('"fault injected"'))
      .map((l) => JSON.parse(l) as { round: number; fate: string });
    const expected = [1, 2].filter((r) => roundFates(plan, r)[i] !== 'train').map((r) => ({ round: r, fate: roundFates(plan, r)[i] }));
    assert.equal(injected.map((x) => ({ round: x.round, fate: x.fate })), expected, `client k${i + 1}`);
  }
  console.log(`  rounds: ${JSON.stringify(s.rounds.map((r) => [r.round, r.updates, r.ms]))} (timeout 6000 ms); plan: ${[1, 2].map((r) => roundFates(plan, r).join(',')).join(' | ')}`);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));

test.run();
