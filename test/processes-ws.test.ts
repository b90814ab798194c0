// The acceptance check of multi-process runs, over WebSocket: every reducer, combiner and client its own
// `fedstate` process on loopback, the session driven through the REST API. With the same seed it
// must finish and match the in-process run's accuracy within 1 point, and leave no process behind.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sandbox } from './processes-helper.ts';

const out = mkdtempSync(join(tmpdir(), 'fedstate-proc-ws-'));
const common = ['--rounds', '2', '--clients', '3', '--combiners', '2', '--seed', '3', '--out', out];

test('ws processes: done, accuracy within 1 point of inproc for the same seed, children reaped', async () => {
  const inproc = await sandbox([...common, '--transport', 'inproc']);
  assert.is(inproc.status, 'done');
  const procs = await sandbox([...common, '--transport', 'ws', '--processes']);
  assert.is(procs.status, 'done');
  assert.is(procs.transport, 'ws');
  assert.is(procs.processes, true);
  assert.is(procs.trailVerified, true, 'trail verified from the reducer store after it closed');
  assert.equal(procs.rounds.map((r) => [r.round, r.updates]), [[1, 3], [2, 3]]);
  assert.ok(procs.finalAccuracy > 0.85, `final accuracy ${procs.finalAccuracy}`);
  assert.ok(Math.abs(procs.finalAccuracy - inproc.finalAccuracy) <= 0.01, `processes ${procs.finalAccuracy} vs inproc ${inproc.finalAccuracy}`);
  assert.equal(procs.stragglers, [], 'no node process outlives the sandbox');
  assert.equal(readdirSync(join(out, 'logs')).sort(), ['client-k1.log', 'client-k2.log', 'client-k3.log', 'combiner-c1.log', 'combiner-c2.log', 'reducer.log']);
});

test.after(() => rmSync(out, { recursive: true, force: true }));

test.run();
