// Fault tolerance in one process: stragglers and dropouts, late updates, a combiner dying mid-round,
// a session stopped mid-round, and a reducer restarted from its store mid-session.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startFederation, type Federation } from '../src/actors/federation.ts';
import { makeMessage } from '../src/protocol/codec.ts';
import { openStore, verifyTrail } from '../src/store/index.ts';
import { toyLayout, toyTask, weightedMean } from './helpers/toy-task.ts';
import { WsTransport } from '../src/transport/ws.ts';

const SIZE = 16;
const target = (k: number) => Float32Array.from({ length: SIZE }, (_, j) => k + j / 100);
const seedModel = () => ({ layout: toyLayout(SIZE), data: new Float32Array(SIZE) });
const close = (a: Float32Array, b: Float32Array) => a.every((x, j) => Math.abs(x - b[j]!) < 1e-4);

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<number> {
  const started = performance.now();
  while (!check()) {
    if (performance.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return performance.now() - started;
}

test('stragglers are cut at the round timeout and cancelled; a vanished client does not stall the session', async () => {
  const tasks = [1, 2, 3, 4, 5].map((k, i) => toyTask({ target: target(k), numExamples: 10 * (i + 1), delayMs: i >= 3 ? 5_000 : 0 }));
  const fed = await startFederation({ combiners: 2, clients: tasks, strict: false });
  try {
    await fed.ready();
    await fed.reducer.seed(seedModel());
    fed.reducer.start({ sessionId: 'stragglers', rounds: 3, roundTimeoutMs: 400 });
    await until('round 1', () => fed.reducer.actor.getSnapshot().context.history.length >= 1);
    await fed.clients[4]!.stop(); // client k5 vanishes for good
    const summary = await fed.reducer.finished();
    assert.is(summary.status, 'done', summary.failure);
    for (const r of summary.rounds) {
      assert.is(r.status, 'ok');
      assert.is(r.updates, 3, 'only the three prompt clients made it in time');
    }
    assert.ok(tasks[3]!.aborted >= 1, 'the straggler was told to stop');
    const global = await fed.reducer.globalModel();
    assert.ok(close(global.data, weightedMean([target(1), target(2), target(3)], [10, 20, 30])), 'aggregate = FedAvg of the prompt clients only');
  } finally {
    await fed.close();
  }
});

test("a client's link cut while its combiner pulls its update: the client comes back, the pull goes on from where it stopped, the update counts", async () => {
  const BIG = 8 * 1024 * 1024; // 32 MiB updates, so the pull is still running when the link is cut
  const big = (k: number) => new Float32Array(BIG).fill(k);
  const tasks = [1, 2].map((k) => toyTask({ target: big(k), numExamples: 10 * k }));
  const fed = await startFederation({ combiners: 1, clients: tasks, transport: () => new WsTransport(), endpoint: () => 'ws://127.0.0.1:0' });
  try {
    await fed.ready();
    await fed.reducer.seed({ layout: toyLayout(BIG), data: new Float32Array(BIG) });
    const combiner = fed.combiners[0]!;
    const k1 = fed.clients[0]!;
    fed.reducer.start({ sessionId: 'cut-upload', rounds: 1, roundTimeoutMs: 30_000 });
    // cut k1's link once its update is partly across
    let cutAt = 0;
    await until('k1 upload under way', () => {
      const inbound = combiner.node.linkTo('client/k1')?.stats.bytesIn ?? 0;
      if (inbound < 4 * 1024 * 1024 || inbound > 24 * 1024 * 1024) return false;
      cutAt = inbound;
      k1.node.linkTo('combiner/c1')!.close('network cut');
      return true;
    }, 20_000);
    const summary = await fed.reducer.finished();
    assert.is(summary.status, 'done', summary.failure);
    assert.is(summary.rounds[0]!.updates, 2, 'both updates made it into the round');
    // the new link carried the rest of k1's update, not all of it again
    const after = combiner.node.linkTo('client/k1')!.stats.bytesIn;
    assert.ok(after > 0 && after <= 4 * BIG + 1024 - cutAt, `${after} bytes over the new link after ${cutAt} before the cut`);
    const global = await fed.reducer.globalModel();
    const expected = weightedMean([big(1), big(2)], [10, 20]);
    assert.ok(Math.abs(global.data[0]! - expected[0]!) < 1e-5 && Math.abs(global.data[BIG - 1]! - expected[BIG - 1]!) < 1e-5, 'exact FedAvg of both updates');
  } finally {
    await fed.close();
  }
});

test('an update for an earlier round is rejected as stale and never folded into the current one', async () => {
  const tasks = [1, 2].map((k) => toyTask({ target: target(k), numExamples: 10, delayMs: 150 }));
  const fed = await startFederation({ combiners: 1, clients: tasks, strict: true });
  try {
    await fed.ready();
    await fed.reducer.seed(seedModel());
    fed.reducer.start({ sessionId: 'stale', rounds: 2, roundTimeoutMs: 5_000 });
    const combiner = fed.combiners[0]!;
    await until('round 2 collecting', () => combiner.actor.getSnapshot().context.round?.round === 2 && combiner.actor.getSnapshot().matches('collecting'));
    // client k1 replays its round-1 answer during round 2 (a late retransmission)
    const k1 = fed.clients[0]!;
    k1.node.send(k1.address, combiner.address, makeMessage('TrainResult', { taskId: 'stale:1:train:client/k1', sessionId: 'stale', round: 1, baseModelId: 'x', updateId: 'y', numExamples: 10_000 }));
    const summary = await fed.reducer.finished();
    assert.is(summary.status, 'done');
    assert.equal(summary.rounds[1]!.rejected, { 'stale-round': 1 });
    assert.is(summary.rounds[1]!.updates, 2);
    const global = await fed.reducer.globalModel();
    assert.ok(close(global.data, weightedMean([target(1), target(2)], [10, 10])), 'the stale update carried weight 10,000 and changed nothing');
  } finally {
    await fed.close();
  }
});

test('a combiner dying mid-round: the round completes with the others, its clients are reassigned and used later', async () => {
  const tasks = [1, 2, 3, 4].map((k) => toyTask({ target: target(k), numExamples: 10, delayMs: 150 }));
  const fed = await startFederation({ combiners: 2, clients: tasks, strict: false });
  try {
    await fed.ready();
    await fed.reducer.seed(seedModel());
    fed.reducer.start({ sessionId: 'combiner-death', rounds: 10, roundTimeoutMs: 5_000, quorumTimeoutMs: 10_000 });
    const victim = fed.combiners[0]!;
    await until('round 2 collecting on c1', () => victim.actor.getSnapshot().context.round?.round === 2 && victim.actor.getSnapshot().matches('collecting'));
    await victim.stop();
    const summary = await fed.reducer.finished();
    assert.is(summary.status, 'done', summary.failure);
    assert.ok(summary.rounds.every((r) => r.status === 'ok'));
    assert.is(summary.rounds.length, 10);
    assert.is(summary.rounds[0]!.updates, 4);
    assert.is(summary.rounds[1]!.updates, 2, 'round 2 finished with the surviving combiner only');
    assert.is(summary.rounds.at(-1)!.updates, 4, 'the orphaned clients were reassigned and trained again');
    assert.equal(Object.keys(fed.combiners[1]!.actor.getSnapshot().context.clients).sort(), ['client/k1', 'client/k2', 'client/k3', 'client/k4']);
    assert.equal(await verifyTrail(fed.reducer.store), { ok: true, entries: 11 });
  } finally {
    await fed.close();
  }
});

test('stop mid-round: combiners and clients cancel their tasks and go idle', async () => {
  const tasks = [1, 2, 3, 4].map((k) => toyTask({ target: target(k), numExamples: 10, delayMs: 30_000 }));
  const fed = await startFederation({ combiners: 2, clients: tasks, strict: false });
  try {
    await fed.ready();
    await fed.reducer.seed(seedModel());
    fed.reducer.start({ sessionId: 'stop', rounds: 3, roundTimeoutMs: 60_000 });
    await until('every client training', () => fed.clients.every((c) => c.actor.getSnapshot().matches({ connected: 'training' })));
    const started = performance.now();
    fed.reducer.stop('operator');
    const summary = await fed.reducer.finished();
    assert.is(summary.status, 'stopped');
    const idleMs = await until('all nodes idle', () => fed.combiners.every((c) => c.actor.getSnapshot().matches('idle')) && fed.clients.every((c) => c.actor.getSnapshot().matches({ connected: 'ready' })));
    console.log(`  all nodes idle ${(performance.now() - started).toFixed(0)} ms after stop (${idleMs.toFixed(0)} ms after the reducer stopped)`);
    assert.ok(tasks.every((t) => t.aborted === 1 && t.trained === 0), 'every client training was aborted');
    assert.ok(fed.combiners.every((c) => c.actor.getSnapshot().context.lastRound?.status === 'cancelled'));
  } finally {
    await fed.close();
  }
});

test('the reducer restarted from its store mid-session resumes at the last committed round and completes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedstate-restart-'));
  const tasks = [1, 2, 3].map((k) => toyTask({ target: target(k), numExamples: 10, delayMs: 60 }));
  let fed: Federation | undefined;
  try {
    fed = await startFederation({ combiners: 2, clients: tasks, strict: true, store: await openStore({ dir }) });
    await fed.ready();
    await fed.reducer.seed(seedModel());
    fed.reducer.start({ sessionId: 'restart', rounds: 5, roundTimeoutMs: 5_000, quorumTimeoutMs: 20_000 });
    await until('two rounds committed', () => fed!.reducer.actor.getSnapshot().context.committed >= 2);
    const before = fed.reducer.actor.getSnapshot().context.committed;
    const reducer = await fed.restartReducer(() => openStore({ dir }));
    assert.ok(reducer.actor.getSnapshot().matches('running'), 'resumed straight into the session');
    assert.is(reducer.actor.getSnapshot().context.committed, before, 'from the last committed round');
    const summary = await reducer.finished();
    assert.is(summary.status, 'done', summary.failure);
    const entries = (await reducer.store.trail()).filter((e) => e.sessionId === 'restart');
    assert.is(entries.length, 5, 'exactly the session\'s five rounds are in the trail');
    assert.equal(await verifyTrail(reducer.store), { ok: true, entries: 6 });
    const snapshot = await reducer.store.getSnapshot<{ value: unknown; context: { committed: number } }>('reducer/main');
    assert.ok(snapshot, 'the reducer persisted its XState snapshot');
    assert.is(snapshot!.context.committed, 5);
  } finally {
    await fed?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
