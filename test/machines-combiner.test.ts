// The combiner statechart with fake IO: one round at a time (selecting -> requesting -> collecting ->
// aggregating -> reporting), membership, admission of updates, and model-based coverage of every state
// node and transition of the machine.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fromCallback } from 'xstate';
import { combinerMachine, type AggregationBegin, type CombinerInput, type FetchedUpdate, type FetchRequest, type StagedModel } from '../machines/combiner.ts';
import { makeMessage } from '../src/protocol/codec.ts';
import type { RoundConfig, RoundReport } from '../src/protocol/generated.ts';
import { Coverage, Gate, run, type Harness } from './helpers/machine-harness.ts';

const coverage = new Coverage(combinerMachine);
const SELF = 'combiner/c1';
const REDUCER = 'reducer/main';
const SESSION = 's1';
const MODEL = 'g0';
const SIZE = 4;
const LAYOUT = 'dense:4';

type Fetched = { ok: true; data: Float32Array; layoutKey: string } | { ok: false; reason: 'hash-mismatch' | 'fetch-failed' | 'wrong-shape' };

interface Rig {
  h: Harness<typeof combinerMachine>;
  stage: Gate<{ modelId: string; from: string }, StagedModel>;
  aggregate: Gate<{ sessionId: string; round: number }, { modelId: string; ms: number }>;
  fetches: FetchRequest[];
  /** Answers a FETCH the way the real fetcher does: through its sendBack. */
  reply(req: FetchRequest, r: Fetched): void;
  begun: AggregationBegin[];
  folded: { round: number; weight: number; first: number }[];
  discarded: { sessionId: string; round: number }[];
  start(round: number, cfg?: Partial<RoundConfig>, task?: 'train' | 'validate'): void;
  hello(...clients: string[]): void;
  train(client: string, round: number, fields?: Record<string, unknown>): void;
  reports(): RoundReport[];
}

const config = (over: Partial<RoundConfig> = {}): RoundConfig => ({ ...makeMessage('StartRound').config, minUpdates: 1, bufferSize: -1, timeoutMs: 1_000, fraction: 1, seed: 7, ...over });

const clientsNamed = (n: number): string[] => Array.from({ length: n }, (_, i) => `client/k${String(i).padStart(2, '0')}`);

/**
 * A combiner whose stageModel resolves to a SIZE-parameter model, whose aggregate resolves to 'cm-<round>',
 * and whose fetcher answers every FETCH with good bytes (the client's index as value) unless `autoFetch`
 * is off. Each can be switched to manual control.
 */
function rig(opts: { input?: Partial<CombinerInput>; manualStage?: boolean; manualAggregate?: boolean; autoFetch?: boolean } = {}): Rig {
  const stage = new Gate<{ modelId: string; from: string }, StagedModel>(opts.manualStage ? undefined : () => ({ size: SIZE, layoutKey: LAYOUT }));
  const aggregate = new Gate<{ sessionId: string; round: number }, { modelId: string; ms: number }>(opts.manualAggregate ? undefined : (i) => ({ modelId: `cm-${i.round}`, ms: 5 }));
  const fetches: FetchRequest[] = [];
  const begun: AggregationBegin[] = [];
  const folded: { round: number; weight: number; first: number }[] = [];
  const discarded: { sessionId: string; round: number }[] = [];
  let sendBack: ((e: FetchedUpdate) => void) | undefined;
  const autoFetch = opts.autoFetch ?? true;
  const reply = (req: FetchRequest, r: Fetched): void => sendBack!({ type: 'update.fetched', sessionId: req.sessionId, round: req.round, client: req.client, ...r } as FetchedUpdate);
  const machine = combinerMachine.provide({
    actors: {
      stageModel: stage.logic,
      aggregate: aggregate.logic,
      fetcher: fromCallback<FetchRequest>(({ receive, sendBack: back }) => {
        sendBack = back as (e: FetchedUpdate) => void;
        receive((req) => {
          fetches.push(req);
          if (autoFetch) reply(req, { ok: true, data: new Float32Array(SIZE).fill(Number(req.client.slice(-2)) || 1), layoutKey: LAYOUT });
        });
        return () => {
          sendBack = undefined;
        };
      }),
    },
    actions: {
      beginAggregation: (_, p) => void begun.push(p),
      foldUpdate: (_, p) => void folded.push({ round: p.round, weight: p.weight, first: p.data[0]! }),
      discardAggregation: (_, p) => void discarded.push(p),
    },
  });
  const h = run(machine, { self: SELF, reducer: REDUCER, ...opts.input }, { coverage });
  return {
    h,
    stage,
    aggregate,
    fetches,
    reply,
    begun,
    folded,
    discarded,
    start: (round, cfg = {}, task = 'train') => h.msg('StartRound', REDUCER, { sessionId: SESSION, round, task, modelId: MODEL, config: config(cfg) }),
    hello: (...clients) => clients.forEach((c, i) => h.msg('ClientHello', c, { client: c, numExamples: 10 + i })),
    train: (client, round, fields = {}) =>
      h.msg('TrainResult', client, {
        taskId: `${SESSION}:${round}:train:${client}`,
        sessionId: SESSION,
        round,
        baseModelId: MODEL,
        updateId: `u-${client}`,
        numExamples: 10,
        metrics: { loss: 1 },
        ...fields,
      }),
    reports: () => h.sent('RoundReport', REDUCER),
  };
}

const selectedOf = (r: Rig, round: number): string[] =>
  r.h
    .sent('TrainTask')
    .filter((t) => t.round === round)
    .map((t) => t.taskId.split(':').slice(3).join(':'))
    .sort();

// ---------------------------------------------------------------------------------------------------
// Membership

test('ClientHello is answered with ClientWelcome and a CombinerStatus to the reducer', () => {
  const r = rig({ input: { heartbeatMs: 750 } });
  r.h.msg('ClientHello', 'client/a', { client: 'client/a', numExamples: 12 });
  assert.equal(r.h.outbox[0], { type: 'outbound', to: 'client/a', body: { type: 'ClientWelcome', combiner: SELF, heartbeatMs: 750 } });
  assert.equal(r.h.outbox[1], { type: 'outbound', to: REDUCER, body: { type: 'CombinerStatus', clients: ['client/a'], state: 'idle' } });
  r.h.msg('ClientHello', 'client/b', { client: 'client/b', numExamples: 3 });
  // status reports are throttled: a hello right after another is reported with the next TICK
  assert.is(r.h.sent('CombinerStatus').length, 1);
  r.h.send({ type: 'TICK', now: 100 });
  assert.equal(r.h.sent('CombinerStatus').at(-1)!.clients, ['client/a', 'client/b']);
  assert.equal(r.h.snapshot().context.clients['client/b'], { lastSeen: 0, numExamples: 3 });
});

test('REDUCER_CONNECTED sends CombinerHello and the current status', () => {
  const r = rig({ input: { maxClients: 9 } });
  r.hello('client/a');
  r.h.drain();
  r.h.send({ type: 'REDUCER_CONNECTED', endpoint: 'ws://c1:9000' });
  assert.equal(r.h.drain(), [
    { type: 'outbound', to: REDUCER, body: { type: 'CombinerHello', name: SELF, endpoint: 'ws://c1:9000', maxClients: 9 } },
    { type: 'outbound', to: REDUCER, body: { type: 'CombinerStatus', clients: ['client/a'], state: 'idle' } },
  ]);
});

test('a heartbeat from a stranger does not make it a member; members are dropped on ClientBye and on TICK timeout', () => {
  const r = rig({ input: { clientTimeoutMs: 5_000 } });
  r.h.msg('Heartbeat', 'client/x', { seq: 1 });
  assert.equal(Object.keys(r.h.snapshot().context.clients), []);
  r.hello('client/a', 'client/b', 'client/c');
  r.h.clock.set(4_000);
  r.h.msg('Heartbeat', 'client/a', { seq: 1 });
  r.h.msg('ClientBye', 'client/c', { reason: 'bye' });
  assert.equal(r.h.sent('CombinerStatus').at(-1)!.clients, ['client/a', 'client/b']);
  r.h.send({ type: 'TICK', now: 5_000 });
  assert.equal(Object.keys(r.h.snapshot().context.clients).sort(), ['client/a', 'client/b'], 'exactly at the timeout nobody is dropped');
  r.h.send({ type: 'TICK', now: 6_000 });
  assert.equal(r.h.sent('CombinerStatus').at(-1)!.clients, ['client/a'], 'b was silent for 6 s > 5 s, a only 2 s');
});

// ---------------------------------------------------------------------------------------------------
// How collecting ends

test('round ends when every selected client reported: folds each update, aggregates, reports ok', async () => {
  const r = rig();
  r.hello('client/k01', 'client/k02', 'client/k03');
  r.start(1);
  await r.h.flush();
  assert.is(r.h.state(), 'collecting');
  assert.equal(r.stage.last().input, { modelId: MODEL, from: REDUCER });
  assert.equal(r.begun, [{ sessionId: SESSION, round: 1, size: SIZE, strategy: 'fedavg', expected: 3 }]);
  const tasks = r.h.sent('TrainTask');
  assert.equal(
    tasks.map((t) => t.taskId),
    ['client/k01', 'client/k02', 'client/k03'].map((c) => `${SESSION}:1:train:${c}`),
  );
  assert.equal(tasks[0]!.config, config(), 'the task carries the round config');
  assert.is(tasks[0]!.modelId, MODEL);

  r.train('client/k01', 1, { numExamples: 10, metrics: { loss: 1 } });
  r.train('client/k02', 1, { numExamples: 30, metrics: { loss: 3 } });
  assert.is(r.h.state(), 'collecting', 'still waiting for k03');
  assert.is(r.aggregate.count, 0);
  r.train('client/k03', 1, { numExamples: 60, metrics: { loss: 2 } });
  await r.h.flush();
  assert.equal(
    r.fetches.map((f) => [f.client, f.updateId]),
    [
      ['client/k01', 'u-client/k01'],
      ['client/k02', 'u-client/k02'],
      ['client/k03', 'u-client/k03'],
    ],
  );
  assert.equal(r.folded, [
    { round: 1, weight: 10, first: 1 },
    { round: 1, weight: 30, first: 2 },
    { round: 1, weight: 60, first: 3 },
  ]);
  assert.equal(r.aggregate.last().input, { sessionId: SESSION, round: 1 });
  assert.is(r.h.state(), 'idle');
  const [rep] = r.reports();
  assert.equal({ ...rep, metrics: undefined }, {
    type: 'RoundReport',
    sessionId: SESSION,
    round: 1,
    status: 'ok',
    reason: '',
    modelId: 'cm-1',
    totalWeight: 100,
    updates: 3,
    selected: 3,
    rejected: [],
    collectMs: 0,
    aggregateMs: 5,
    metrics: undefined,
  });
  assert.ok(Math.abs(rep!.metrics.loss! - (10 * 1 + 30 * 3 + 60 * 2) / 100) < 1e-12, 'weighted mean of the declared metrics');
  assert.equal(r.h.sent('UpdateAck').map((a) => a.accepted), [true, true, true]);
  assert.equal(r.h.sent('CancelTask'), [], 'nobody to cancel');
  assert.equal(r.discarded, [{ sessionId: SESSION, round: 1 }]);
  assert.equal(r.h.snapshot().context.totals, { rounds: 1, accepted: 3, rejected: {}, failedRounds: 0 });
});

test('round ends at the buffer size; the stragglers get CancelTask and a late result is refused', async () => {
  const r = rig({ manualAggregate: true });
  r.hello(...clientsNamed(4));
  r.start(1, { bufferSize: 2 });
  await r.h.flush();
  r.train('client/k00', 1);
  await r.h.flush();
  assert.is(r.h.state(), 'collecting');
  r.train('client/k02', 1);
  await r.h.flush();
  assert.is(r.h.state(), 'aggregating', 'two accepted updates fill the buffer');
  r.train('client/k03', 1);
  assert.equal(r.h.sent('UpdateAck', 'client/k03'), [{ type: 'UpdateAck', taskId: `${SESSION}:1:train:client/k03`, accepted: false, reason: 'late' }]);
  assert.is(r.fetches.length, 2, 'a late update is never fetched');
  r.aggregate.last().resolve({ modelId: 'cm-1', ms: 1 });
  await r.h.flush();
  const [rep] = r.reports();
  assert.is(rep!.status, 'ok');
  assert.is(rep!.updates, 2);
  assert.is(rep!.selected, 4);
  assert.equal(
    r.h.outbox.filter((o) => o.body.type === 'CancelTask').map((o) => [o.to, o.body]),
    [
      ['client/k01', { type: 'CancelTask', taskId: `${SESSION}:1:train:client/k01`, reason: 'round closed' }],
      ['client/k03', { type: 'CancelTask', taskId: `${SESSION}:1:train:client/k03`, reason: 'round closed' }],
    ],
  );
  // After the round closed, a result for it is still refused as late; one for an older round as stale.
  r.train('client/k01', 1);
  assert.equal(r.h.sent('UpdateAck', 'client/k01'), [{ type: 'UpdateAck', taskId: `${SESSION}:1:train:client/k01`, accepted: false, reason: 'late' }]);
  r.train('client/k01', 0);
  assert.is(r.h.sent('UpdateAck', 'client/k01').at(-1)!.reason, 'stale-round');
  assert.equal(r.h.snapshot().context.totals.rejected, { late: 2, 'stale-round': 1 });
  assert.is(r.fetches.length, 2);
  assert.is(r.h.snapshot().context.totals.accepted, 2);
});

// collectingDone refuses to end the round while any fetch is in flight (`pending.length > 0`), and
// `admit` keeps admitting (and fetching) results while it waits; every fetched update is then folded.
// With overlapping fetches the round therefore aggregates more updates than bufferSize.
test('the buffer size bounds the updates folded even when fetches overlap (fixed)', async () => {
  const r = rig({ autoFetch: false });
  r.hello(...clientsNamed(4));
  r.start(1, { bufferSize: 2, timeoutMs: 60_000 });
  await r.h.flush();
  for (const c of clientsNamed(4).slice(0, 3)) r.train(c, 1);
  const good = { ok: true as const, data: new Float32Array(SIZE), layoutKey: LAYOUT };
  r.reply(r.fetches[0]!, good);
  r.reply(r.fetches[1]!, good);
  await r.h.flush();
  const afterFull = r.h.state();
  // While it waits for k02's bytes the round keeps admitting: k03 is fetched and folded too.
  r.train('client/k03', 1);
  for (const f of r.fetches.slice(2)) r.reply(f, good);
  await r.h.flush();
  assert.is(r.folded.length, 2, `folded ${r.folded.length} updates with bufferSize 2`);
  assert.is(r.reports()[0]?.updates, 2);
  assert.is.not(afterFull, 'collecting', 'two accepted updates fill the buffer');
});

test('round ends at the timeout with what it has', async () => {
  const r = rig();
  r.hello('client/k01', 'client/k02', 'client/k03');
  r.start(1, { timeoutMs: 1_000 });
  await r.h.flush();
  r.h.clock.set(200);
  r.train('client/k02', 1, { numExamples: 5 });
  await r.h.advance(799);
  assert.is(r.h.state(), 'collecting', 'not before the timeout');
  assert.is(r.aggregate.count, 0);
  await r.h.advance(1);
  assert.is(r.h.state(), 'idle');
  const [rep] = r.reports();
  assert.equal([rep!.status, rep!.updates, rep!.selected, rep!.totalWeight, rep!.modelId], ['ok', 1, 3, 5, 'cm-1']);
  assert.equal(r.h.sent('CancelTask').map((c) => c.taskId), [`${SESSION}:1:train:client/k01`, `${SESSION}:1:train:client/k03`]);
});

test('without a config timeout the round waits the 180 s default', async () => {
  const r = rig();
  r.hello('client/k01', 'client/k02');
  r.start(1, { timeoutMs: 0 });
  await r.h.flush();
  r.train('client/k01', 1);
  await r.h.advance(179_999);
  assert.is(r.h.state(), 'collecting');
  await r.h.advance(1);
  assert.is(r.reports()[0]!.status, 'ok');
});

test('below the minimum number of updates the round fails with too-few-updates and nothing is aggregated', async () => {
  const r = rig();
  r.hello('client/k01', 'client/k02', 'client/k03');
  r.start(1, { minUpdates: 2 });
  await r.h.flush();
  r.train('client/k01', 1);
  await r.h.advance(1_000);
  const [rep] = r.reports();
  assert.equal([rep!.status, rep!.reason, rep!.modelId, rep!.updates], ['failed', 'too-few-updates', '', 1]);
  assert.is(r.aggregate.count, 0, 'aggregate must not run for a failed round');
  assert.equal(r.discarded, [{ sessionId: SESSION, round: 1 }], 'the accumulator is discarded');
  assert.is(r.h.snapshot().context.totals.failedRounds, 1);
});

test('with fewer members than the minimum the round fails with too-few-clients before staging anything', async () => {
  const r = rig();
  r.hello('client/k01', 'client/k02');
  r.start(4, { minUpdates: 3 });
  await r.h.flush();
  assert.is(r.h.state(), 'idle');
  assert.is(r.stage.count, 0);
  assert.equal(r.h.sent('TrainTask'), []);
  const [rep] = r.reports();
  assert.equal([rep!.round, rep!.status, rep!.reason, rep!.selected], [4, 'failed', 'too-few-clients', 0]);
});

test('a model that cannot be staged fails the round with model-unavailable and sends no task', async () => {
  const r = rig({ manualStage: true });
  r.hello('client/k01');
  r.start(1);
  r.stage.last().reject(new Error('blob not found'));
  await r.h.flush();
  assert.equal([r.reports()[0]!.status, r.reports()[0]!.reason], ['failed', 'model-unavailable']);
  assert.equal(r.h.sent('TrainTask'), []);
  assert.equal(r.begun, []);
});

test('a failing aggregation fails the round with aggregation-failed', async () => {
  const r = rig({ manualAggregate: true });
  r.hello('client/k01');
  r.start(1);
  await r.h.flush();
  r.train('client/k01', 1);
  await r.h.flush();
  r.aggregate.last().reject(new Error('disk full'));
  await r.h.flush();
  assert.equal([r.reports()[0]!.status, r.reports()[0]!.reason, r.reports()[0]!.modelId], ['failed', 'aggregation-failed', '']);
});

// ---------------------------------------------------------------------------------------------------
// Cancellation and vanishing clients

test('CancelRound while collecting reports cancelled and cancels the stragglers only', async () => {
  const r = rig();
  r.hello('client/k01', 'client/k02', 'client/k03');
  r.start(3);
  await r.h.flush();
  r.train('client/k02', 3);
  await r.h.flush();
  r.h.msg('CancelRound', REDUCER, { sessionId: SESSION, round: 2, reason: 'other round' });
  r.h.msg('CancelRound', REDUCER, { sessionId: 'other', round: 3, reason: 'other session' });
  assert.is(r.h.state(), 'collecting', 'a CancelRound for another round or session is ignored');
  r.h.msg('CancelRound', REDUCER, { sessionId: SESSION, round: 3, reason: 'operator stop' });
  assert.is(r.h.state(), 'idle');
  const [rep] = r.reports();
  assert.equal([rep!.status, rep!.reason, rep!.modelId, rep!.updates], ['cancelled', 'operator stop', '', 1]);
  assert.is(r.aggregate.count, 0);
  assert.equal(
    r.h.outbox.filter((o) => o.body.type === 'CancelTask').map((o) => [o.to, o.body]),
    [
      ['client/k01', { type: 'CancelTask', taskId: `${SESSION}:3:train:client/k01`, reason: 'round cancelled' }],
      ['client/k03', { type: 'CancelTask', taskId: `${SESSION}:3:train:client/k03`, reason: 'round cancelled' }],
    ],
  );
});

test('a StartRound for another round supersedes the one in progress (requesting, collecting, aggregating), which reports cancelled', async () => {
  const r = rig({ manualStage: true, manualAggregate: true });
  r.hello('client/k01');
  r.start(1);
  assert.is(r.h.state(), 'requesting');
  r.start(1); // the same round again is not a new round
  assert.is(r.h.state(), 'requesting');
  r.start(2);
  assert.is(r.h.state(), 'requesting', 'round 2 taken up at once');
  assert.equal([r.reports()[0]!.round, r.reports()[0]!.status, r.reports()[0]!.reason], [1, 'cancelled', 'superseded by a newer round']);
  r.stage.last().resolve({ size: SIZE, layoutKey: LAYOUT });
  await r.h.flush();
  assert.is(r.h.state(), 'collecting');
  r.start(3);
  assert.equal([r.reports()[1]!.round, r.reports()[1]!.status], [2, 'cancelled']);
  r.stage.last().resolve({ size: SIZE, layoutKey: LAYOUT });
  await r.h.flush();
  r.train('client/k01', 3);
  await r.h.flush();
  assert.is(r.h.state(), 'aggregating');
  r.start(4);
  assert.equal([r.reports()[2]!.round, r.reports()[2]!.status], [3, 'cancelled']);
  assert.is(r.h.snapshot().context.round?.round, 4);
});

test('CancelRound with round 0 (every round of the session) also cancels while staging and while aggregating', async () => {
  const r = rig({ manualStage: true, manualAggregate: true });
  r.hello('client/k01');
  r.start(1);
  assert.is(r.h.state(), 'requesting');
  r.h.msg('CancelRound', REDUCER, { sessionId: SESSION, round: 0, reason: '' });
  assert.is(r.h.state(), 'idle');
  assert.equal([r.reports()[0]!.status, r.reports()[0]!.reason], ['cancelled', 'cancelled']);
  assert.ok(r.stage.last().signal.aborted, 'the staging fetch is aborted');
  assert.equal(r.h.sent('TrainTask'), []);

  r.start(2);
  r.stage.last().resolve({ size: SIZE, layoutKey: LAYOUT });
  await r.h.flush();
  r.train('client/k01', 2);
  await r.h.flush();
  assert.is(r.h.state(), 'aggregating');
  r.h.msg('CancelRound', REDUCER, { sessionId: SESSION, round: 2, reason: 'stop' });
  assert.is(r.h.state(), 'idle');
  assert.ok(r.aggregate.last().signal.aborted, 'the aggregation is aborted');
  assert.equal([r.reports()[1]!.round, r.reports()[1]!.status, r.reports()[1]!.modelId], [2, 'cancelled', '']);
});

test('a selected client that disappears (CLIENT_GONE) is settled as failed, so the round does not wait for the timeout', async () => {
  const r = rig();
  r.hello('client/k01', 'client/k02');
  r.start(1, { timeoutMs: 60_000 });
  await r.h.flush();
  r.train('client/k01', 1);
  await r.h.flush();
  assert.is(r.h.state(), 'collecting');
  r.h.send({ type: 'CLIENT_GONE', client: 'client/k02', reason: 'link closed' });
  await r.h.flush();
  assert.is(r.h.state(), 'idle', 'no clock advance was needed');
  const rep = r.reports()[0]!;
  assert.equal([rep.status, rep.updates, rep.selected], ['ok', 1, 2]);
  assert.equal(r.h.snapshot().context.lastRound!.failed, ['client/k02']);
  assert.equal(r.h.sent('CancelTask'), [], 'a gone client is not sent a CancelTask');
});

test('a client whose link drops while its update is being fetched has answered: the fetch settles it, not the drop', async () => {
  const r = rig({ autoFetch: false });
  r.hello('client/k01', 'client/k02');
  r.start(1, { timeoutMs: 60_000 });
  await r.h.flush();
  r.train('client/k01', 1, { numExamples: 10 });
  r.train('client/k02', 1, { numExamples: 30 });
  r.h.send({ type: 'CLIENT_GONE', client: 'client/k01', reason: 'link closed' });
  await r.h.flush();
  assert.is(r.h.state(), 'collecting', 'k01 is still pending: its transfer may resume');
  assert.not.ok('client/k01' in r.h.snapshot().context.clients, 'but it is no longer a member');
  // the transfer resumed once k01 was back, and both updates arrive
  r.reply(r.fetches[0]!, { ok: true, data: new Float32Array(SIZE).fill(1), layoutKey: LAYOUT });
  r.reply(r.fetches[1]!, { ok: true, data: new Float32Array(SIZE).fill(2), layoutKey: LAYOUT });
  await r.h.flush();
  assert.is(r.h.state(), 'idle');
  const rep = r.reports()[0]!;
  assert.equal([rep.status, rep.updates, rep.totalWeight], ['ok', 2, 40]);
  assert.equal(r.h.snapshot().context.lastRound!.failed, []);
});

test('a client that says goodbye or goes silent while its update is being fetched is settled at once', async () => {
  for (const how of ['bye', 'silent'] as const) {
    const r = rig({ autoFetch: false, input: { clientTimeoutMs: 5_000 } });
    r.hello('client/k01', 'client/k02');
    r.start(1, { timeoutMs: 60_000 });
    await r.h.flush();
    r.h.clock.set(3_000);
    r.train('client/k01', 1, { numExamples: 10 });
    r.train('client/k02', 1, { numExamples: 30 });
    r.h.msg('Heartbeat', 'client/k02', { seq: 1 });
    r.reply(r.fetches[1]!, { ok: true, data: new Float32Array(SIZE).fill(2), layoutKey: LAYOUT });
    await r.h.flush();
    if (how === 'bye') r.h.msg('ClientBye', 'client/k01', { reason: 'stopping' });
    else r.h.send({ type: 'TICK', now: 5_500 });
    await r.h.flush();
    assert.is(r.h.state(), 'idle', `${how}: the round does not wait for a fetch from a client that left`);
    assert.equal(r.h.snapshot().context.lastRound!.failed, ['client/k01'], how);
    assert.equal([r.reports()[0]!.status, r.reports()[0]!.updates], ['ok', 1], how);
  }
});

test('a selected client whose heartbeats stop is dropped on TICK and settled as failed', async () => {
  const r = rig({ input: { clientTimeoutMs: 5_000 } });
  r.hello('client/k01', 'client/k02');
  r.start(1, { timeoutMs: 60_000 });
  await r.h.flush();
  r.h.clock.set(3_000);
  r.train('client/k01', 1);
  r.h.msg('Heartbeat', 'client/k01', { seq: 1 });
  await r.h.flush();
  r.h.send({ type: 'TICK', now: 5_000 });
  assert.is(r.h.state(), 'collecting', 'k02 silent for exactly the timeout is kept');
  r.h.send({ type: 'TICK', now: 5_500 });
  await r.h.flush();
  assert.is(r.h.state(), 'idle', 'k02 silent for 5.5 s is dropped and the round closes at once');
  assert.equal(r.h.snapshot().context.lastRound!.failed, ['client/k02']);
  assert.equal([r.reports()[0]!.status, r.reports()[0]!.updates], ['ok', 1]);
  assert.equal(r.h.sent('CombinerStatus').at(-1)!.clients, ['client/k01']);
});

test('TaskFailed from a selected client settles it; a TaskFailed for a task it does not own is ignored', async () => {
  const r = rig();
  r.hello('client/k01', 'client/k02');
  r.start(1, { timeoutMs: 60_000 });
  await r.h.flush();
  r.h.msg('TaskFailed', 'client/k02', { taskId: `${SESSION}:1:train:client/k01`, reason: 'not mine' });
  r.train('client/k01', 1);
  await r.h.flush();
  assert.is(r.h.state(), 'collecting');
  r.h.msg('TaskFailed', 'client/k02', { taskId: `${SESSION}:1:train:client/k02`, reason: 'OOM' });
  await r.h.flush();
  assert.is(r.h.state(), 'idle');
  assert.equal(r.h.snapshot().context.lastRound!.failed, ['client/k02']);
  assert.is(r.reports()[0]!.updates, 1);
});

// ---------------------------------------------------------------------------------------------------
// Admission

test('updates are checked before they reach the aggregate; every refusal is counted with its reason', async () => {
  const r = rig({ autoFetch: false });
  r.hello(...clientsNamed(9));
  r.start(5, { timeoutMs: 60_000 });
  await r.h.flush();
  const ack = (c: string) => r.h.sent('UpdateAck', c).at(-1);
  r.train('client/k00', 5, { sessionId: 'other' });
  assert.is(ack('client/k00')!.reason, 'wrong-session');
  r.train('client/k00', 4);
  assert.is(ack('client/k00')!.reason, 'stale-round');
  r.h.msg('TrainResult', 'client/zz', { taskId: 't', sessionId: SESSION, round: 5, baseModelId: MODEL, numExamples: 1 });
  assert.is(ack('client/zz')!.reason, 'unselected');
  r.train('client/k01', 5, { baseModelId: 'g-old' });
  assert.is(ack('client/k01')!.reason, 'base-mismatch');
  r.train('client/k02', 5, { numExamples: 0 });
  assert.is(ack('client/k02')!.reason, 'bad-weight');
  r.train('client/k03', 5, { numExamples: Number.NaN });
  assert.is(ack('client/k03')!.reason, 'bad-weight');
  r.h.msg('ValidateResult', 'client/k04', { taskId: `${SESSION}:5:train:client/k04`, sessionId: SESSION, round: 5, modelId: MODEL, numExamples: 3 });
  assert.is(ack('client/k04')!.reason, 'stale-round', 'a ValidateResult in a train round');
  assert.is(r.fetches.length, 0, 'nothing refused so far was fetched');

  // Admitted by declaration, then judged on the bytes.
  for (const c of ['client/k05', 'client/k06', 'client/k07', 'client/k08']) r.train(c, 5);
  r.train('client/k05', 5);
  assert.is(ack('client/k05')!.reason, 'duplicate', 'a second result while the first is being fetched');
  assert.equal(r.fetches.map((f) => f.client), ['client/k05', 'client/k06', 'client/k07', 'client/k08']);
  const [f5, f6, f7, f8] = r.fetches;
  r.reply(f5!, { ok: true, data: new Float32Array(SIZE + 1), layoutKey: LAYOUT });
  r.reply(f6!, { ok: true, data: new Float32Array([1, Number.POSITIVE_INFINITY, 0, 0]), layoutKey: LAYOUT });
  r.reply(f7!, { ok: false, reason: 'hash-mismatch' });
  r.reply(f8!, { ok: true, data: new Float32Array(SIZE), layoutKey: 'other-layout' });
  r.reply(f8!, { ok: true, data: new Float32Array(SIZE), layoutKey: LAYOUT });
  assert.equal(
    ['client/k05', 'client/k06', 'client/k07', 'client/k08'].map((c) => ack(c)!.reason),
    ['wrong-shape', 'not-finite', 'hash-mismatch', 'wrong-shape'],
  );
  assert.is(r.h.sent('UpdateAck', 'client/k08').length, 1, 'a second fetched answer for a settled client is ignored');
  r.train('client/k06', 5);
  assert.is(ack('client/k06')!.reason, 'duplicate', 'a settled (refused) client cannot try again');
  assert.equal(r.folded, [], 'nothing refused reaches the aggregate');
  assert.equal(r.h.snapshot().context.round!.rejected, {
    'wrong-session': 1,
    'stale-round': 2,
    unselected: 1,
    'base-mismatch': 1,
    'bad-weight': 2,
    duplicate: 2,
    'wrong-shape': 2,
    'not-finite': 1,
    'hash-mismatch': 1,
  });
  await r.h.advance(60_000);
  const rep = r.reports()[0]!;
  assert.equal([rep.status, rep.reason, rep.updates], ['failed', 'too-few-updates', 0]);
  assert.equal(Object.fromEntries(rep.rejected.map((x) => [x.reason, x.count])), r.h.snapshot().context.lastRound!.rejected);
});

test('a selected client that answers with a bad weight or another base model is settled: the round does not wait for it', async () => {
  const r = rig();
  r.hello('client/k01', 'client/k02', 'client/k03');
  r.start(1, { timeoutMs: 60_000 });
  await r.h.flush();
  r.train('client/k01', 1);
  r.train('client/k02', 1, { numExamples: -1 });
  await r.h.flush();
  assert.is(r.h.state(), 'collecting');
  r.train('client/k03', 1, { baseModelId: 'g-old' });
  await r.h.flush();
  assert.is(r.h.state(), 'idle', 'every selected client has answered');
  const rep = r.reports()[0]!;
  assert.equal([rep.status, rep.updates, rep.selected], ['ok', 1, 3]);
  assert.equal(Object.fromEntries(rep.rejected.map((x) => [x.reason, x.count])), { 'bad-weight': 1, 'base-mismatch': 1 });
  assert.equal(r.h.sent('CancelTask'), []);
});

test('a fetch that fails is refused with fetch-failed; a fetched update for a closed round is ignored', async () => {
  const r = rig({ autoFetch: false });
  r.hello('client/k01', 'client/k02');
  r.start(1, { timeoutMs: 1_000 });
  await r.h.flush();
  r.train('client/k01', 1);
  r.train('client/k02', 1);
  r.reply(r.fetches[0]!, { ok: false, reason: 'fetch-failed' });
  assert.is(r.h.sent('UpdateAck', 'client/k01')[0]!.reason, 'fetch-failed');
  await r.h.advance(1_000);
  assert.is(r.h.state(), 'idle');
  r.reply(r.fetches[1]!, { ok: true, data: new Float32Array(SIZE), layoutKey: LAYOUT });
  assert.equal(r.folded, [], 'bytes that arrive after the round closed are not folded');
  assert.equal(r.h.sent('UpdateAck', 'client/k02'), []);
});

test('results outside collecting are refused: stale-round when idle, and ValidateResult too', () => {
  const r = rig();
  r.train('client/k01', 1);
  r.h.msg('ValidateResult', 'client/k02', { taskId: 'x', sessionId: SESSION, round: 1, modelId: MODEL, numExamples: 1 });
  assert.equal(
    r.h.outbox.map((o) => [o.to, o.body]),
    [
      ['client/k01', { type: 'UpdateAck', taskId: `${SESSION}:1:train:client/k01`, accepted: false, reason: 'stale-round' }],
      ['client/k02', { type: 'UpdateAck', taskId: 'x', accepted: false, reason: 'stale-round' }],
    ],
  );
  assert.equal(r.h.snapshot().context.totals.rejected, { 'stale-round': 2 });
});

// ---------------------------------------------------------------------------------------------------
// Validation rounds

test('a validate round sends ValidateTask, accepts ValidateResult and reports a ValidationReport without aggregating', async () => {
  const r = rig();
  r.hello('client/k01', 'client/k02');
  r.start(2, {}, 'validate');
  await r.h.flush();
  assert.equal(r.h.sent('ValidateTask', 'client/k01'), [{ type: 'ValidateTask', taskId: `${SESSION}:2:validate:client/k01`, sessionId: SESSION, round: 2, modelId: MODEL }]);
  assert.equal(r.h.sent('TrainTask'), []);
  assert.equal(r.begun, [], 'no accumulator for a validation');
  r.train('client/k01', 2);
  assert.is(r.h.sent('UpdateAck', 'client/k01')[0]!.reason, 'stale-round', 'a TrainResult in a validate round');
  r.h.msg('ValidateResult', 'client/k01', { taskId: `${SESSION}:2:validate:client/k01`, sessionId: SESSION, round: 2, modelId: 'wrong', numExamples: 5 });
  assert.is(r.h.sent('UpdateAck', 'client/k01').at(-1)!.reason, 'base-mismatch');
  r.h.msg('ValidateResult', 'client/k02', { taskId: `${SESSION}:2:validate:client/k02`, sessionId: SESSION, round: 2, modelId: MODEL, numExamples: 10, metrics: { acc: 0.8 } });
  r.h.msg('TaskFailed', 'client/k01', { taskId: `${SESSION}:2:validate:client/k01`, reason: 'x' });
  await r.h.flush();
  assert.is(r.h.state(), 'idle');
  assert.is(r.aggregate.count, 0);
  assert.equal(r.h.sent('ValidationReport', REDUCER), [{ type: 'ValidationReport', sessionId: SESSION, round: 2, modelId: MODEL, totalWeight: 10, reports: 1, metrics: { acc: 0.8 } }]);
  assert.equal(r.reports(), []);
});

// ---------------------------------------------------------------------------------------------------
// Sampling

test('client sampling is deterministic per (seed, round), honours fraction and maxClients, and varies across rounds', async () => {
  const members = clientsNamed(40);
  const selection = async (round: number, cfg: Partial<RoundConfig>, input: Partial<CombinerInput> = {}): Promise<string[]> => {
    const r = rig({ input });
    r.hello(...members);
    r.start(round, cfg);
    await r.h.flush();
    return selectedOf(r, round);
  };
  const a = await selection(1, { fraction: 0.25, seed: 11 });
  assert.is(a.length, 10, 'ceil(0.25 * 40)');
  assert.ok(a.every((c) => members.includes(c)));
  assert.equal(await selection(1, { fraction: 0.25, seed: 11 }), a, 'same seed and round, same selection');
  const others = [];
  for (let round = 2; round <= 4; round++) others.push(await selection(round, { fraction: 0.25, seed: 11 }));
  for (const o of others) {
    assert.is(o.length, 10);
    assert.not.equal(o, a, 'another round samples differently');
  }
  assert.not.equal(await selection(1, { fraction: 0.25, seed: 12 }), a, 'another seed samples differently');
  assert.is((await selection(1, { fraction: 0.25, maxClients: 3 })).length, 3, 'the round cap wins over the fraction');
  assert.is((await selection(1, { fraction: 1 }, { maxClients: 6 })).length, 6, 'the combiner cap applies when the round sets none');
  assert.is((await selection(1, { fraction: 0.01, minUpdates: 4 })).length, 4, 'never fewer than minUpdates');
  assert.equal(await selection(1, { fraction: 0 }), [...members].sort(), 'fraction 0 means everyone');
});

// ---------------------------------------------------------------------------------------------------
// Coverage

/** Transitions no scenario can take, with the reason. Asserted exactly: a new one fails this test. */
const UNREACHABLE: Record<string, string> = {};

test('model-based coverage: every state node and every transition of the combiner was exercised', () => {
  assert.equal([...coverage.unknown], [], 'a transition was taken that the graph does not list');
  assert.equal(coverage.missingStates(), [], `states never reached (${coverage.summary()})`);
  assert.equal(coverage.missingTransitions(), Object.keys(UNREACHABLE).sort(), `transitions never taken (${coverage.summary()})`);
  assert.ok(coverage.states.length >= 6 && coverage.transitions.length >= 28, 'the graph has the machine in it');
  console.log(`combiner coverage: ${coverage.summary()}`);
});

test.run();
