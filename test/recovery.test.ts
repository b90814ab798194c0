// Recovery across processes (grpc on loopback): the reducer process is SIGKILLed mid-round and
// restarted on its store at the same endpoint (sandbox/run.ts --processes --kill reducer@2). The
// session must complete every round, `fedstate trail verify` must pass with the right number of
// entries, every committed model must still be in the store and hash to its id, each round must be
// committed exactly once, and no round may have aggregated more updates than there are clients.
// (Combiner death: recovery-combiner.test.ts; stop mid-round: recovery-stop.test.ts.)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { RoundResult } from '../machines/reducer.ts';
import { contentHash } from '../src/model/hash.ts';
import { openStore } from '../src/store/index.ts';
import type { KillReport } from '../sandbox/processes.ts';
import { sandbox, type Summary } from './processes-helper.ts';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'fedstate-recovery-'));
const store = join(dir, 'store');
const ROUNDS = 3;
const CLIENTS = 3;

type KillSummary = Omit<Summary, 'rounds'> & { kills: KillReport[]; trailEntries: number; rounds: Array<Summary['rounds'][number] & { status: string; rejected: number }> };

test('SIGKILL the reducer in round 2: restarted on its store, the session completes and nothing committed is lost', async () => {
  const s = (await sandbox(
    ['--processes', '--rounds', String(ROUNDS), '--clients', String(CLIENTS), '--combiners', '2', '--local-epochs', '1', '--seed', '2', '--kill', 'reducer@2', '--store', store, '--out', join(dir, 'out')],
    85_000,
  )) as unknown as KillSummary;
  assert.is(s.status, 'done');
  assert.equal(s.stragglers, [], 'no node process outlives the sandbox');
  assert.is(s.kills.length, 1);
  const k = s.kills[0]!;
  assert.is(k.target, 'reducer');
  assert.is(k.restarted, true);
  assert.is(k.round, 2, 'killed during round 2');
  assert.is(k.committedBefore, 1);
  assert.is(k.roundsLost, 0, 'the restarted reducer resumed with every committed round');
  assert.ok(typeof k.recoveryMs === 'number', 'the next round committed after the restart');
  console.log(`  reducer SIGKILLed at ${k.atMs} ms in round ${k.round}: restarted (ready) after ${k.restartMs} ms, next round committed ${k.recoveryMs} ms after the kill; ${k.roundsLost} committed round(s) lost`);
  console.log(`  rounds: ${JSON.stringify(s.rounds.map((r) => [r.round, r.status, r.updates, r.rejected]))}`);
  assert.equal(s.rounds.map((r) => [r.round, r.status]), [[1, 'ok'], [2, 'ok'], [3, 'ok']]);
  assert.is(s.trailVerified, true);
  assert.is(s.trailEntries, ROUNDS + 1);

  // The operator's check, as a separate process on the store the reducer left.
  const verify = await run(process.execPath, ['bin/fedstate.js', 'trail', 'verify', '--store', store]);
  assert.match(verify.stdout, new RegExp(`^trail ok: ${ROUNDS + 1} entries`), 'fedstate trail verify exits 0 with seed + 3 rounds');

  const db = await openStore({ dir: store });
  try {
    const trail = await db.trail();
    for (const e of trail) {
      const bytes = await db.getBlob(e.modelId);
      assert.ok(bytes, `model of trail entry #${e.index} is in the store`);
      assert.is(contentHash(bytes!), e.modelId, `model of trail entry #${e.index} hashes to its id`);
    }
    const session = trail.filter((e) => e.sessionId !== '');
    assert.equal(session.map((e) => e.round), [1, 2, 3], 'each round committed exactly once (round 2 was not committed twice)');
    const records = (await db.listRounds<RoundResult>(session[0]!.sessionId)).map((r) => r.record);
    assert.equal(records.map((r) => [r.round, r.status]), [[1, 'ok'], [2, 'ok'], [3, 'ok']]);
    for (const r of records) {
      assert.ok(r.updates >= 1 && r.updates <= CLIENTS, `round ${r.round}: ${r.updates} updates from ${CLIENTS} clients (no stale or duplicate update aggregated)`);
      assert.equal(Object.keys(r.rejected).filter((x) => x !== 'stale-round' && x !== 'late'), [], `round ${r.round} refused ${JSON.stringify(r.rejected)}`);
      const entry = session.find((e) => e.round === r.round)!;
      assert.is(entry.modelId, r.modelId, `round ${r.round}'s record names the committed model`);
      assert.is(entry.metrics.updates, r.updates, `round ${r.round}: the trail entry counts the same updates`);
    }
  } finally {
    await db.close();
  }
});

test.after(() => rmSync(dir, { recursive: true, force: true }));

test.run();
