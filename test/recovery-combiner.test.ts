// Recovery across processes (grpc on loopback): a combiner process is SIGKILLed mid-round
// (sandbox/run.ts --processes --kill combiner:1@2). The round completes with the remaining combiner,
// the dead combiner's clients rediscover and are reassigned to it, later rounds have every client's
// update again, and the trail verifies.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RoundResult } from '../machines/reducer.ts';
import { openStore, verifyTrail } from '../src/store/index.ts';
import type { KillReport } from '../sandbox/processes.ts';
import { sandbox, type Summary } from './processes-helper.ts';

const dir = mkdtempSync(join(tmpdir(), 'fedstate-recovery-combiner-'));
const store = join(dir, 'store');
const CLIENTS = 3;

type KillSummary = Omit<Summary, 'rounds'> & { kills: KillReport[]; trailEntries: number; rounds: Array<Summary['rounds'][number] & { status: string; rejected: number }> };

test('SIGKILL combiner c1 in round 2: the round completes with c2, c1\'s clients move to c2 and train in later rounds', async () => {
  const s = (await sandbox(
    // --min-clients: round 3 waits until c1's clients have found c2 (quorum), instead of racing their
    // reconnection (a round here can take 300 ms; rediscovery ~400 ms)
    ['--processes', '--rounds', '3', '--clients', String(CLIENTS), '--combiners', '2', '--local-epochs', '1', '--seed', '4', '--kill', 'combiner:1@2', '--min-clients', String(CLIENTS), '--store', store, '--out', join(dir, 'out')],
    85_000,
  )) as unknown as KillSummary;
  assert.is(s.status, 'done');
  assert.equal(s.stragglers, [], 'no node process outlives the sandbox');
  const k = s.kills[0]!;
  assert.is(k.target, 'c1');
  assert.is(k.restarted, false, 'a killed combiner stays dead');
  assert.is(k.round, 2);
  assert.ok(k.clients && k.clients.length >= 1, 'c1 held clients when it died');
  assert.ok(typeof k.reassignedMs === 'number', 'its clients registered with c2');
  console.log(`  c1 SIGKILLed at ${k.atMs} ms in round ${k.round} holding ${k.clients!.join(', ')}; reassigned to c2 ${k.reassignedMs} ms later`);
  console.log(`  rounds: ${JSON.stringify(s.rounds.map((r) => [r.round, r.status, r.updates, r.rejected]))}`);
  assert.equal(s.rounds.map((r) => r.status), ['ok', 'ok', 'ok'], 'round 2 completed with the remaining combiner (quorum 1)');
  assert.is(s.rounds[0]!.updates, CLIENTS);
  assert.is(s.rounds[1]!.updates, CLIENTS - k.clients!.length, 'round 2: only the surviving combiner\'s clients');
  assert.is(s.rounds[2]!.updates, CLIENTS, 'round 3: every client again, all on c2');
  assert.is(s.trailVerified, true);
  assert.is(s.trailEntries, 4);

  const db = await openStore({ dir: store });
  try {
    assert.equal(await verifyTrail(db), { ok: true, entries: 4 });
    const session = (await db.trail()).filter((e) => e.sessionId !== '');
    const records = (await db.listRounds<RoundResult>(session[0]!.sessionId)).map((r) => r.record);
    assert.equal(records[1]!.participants, ['combiner/c1', 'combiner/c2'], 'round 2 was dispatched to both');
    assert.equal(records[2]!.participants, ['combiner/c2'], 'round 3 only to the survivor');
  } finally {
    await db.close();
  }
});

test.after(() => rmSync(dir, { recursive: true, force: true }));

test.run();
