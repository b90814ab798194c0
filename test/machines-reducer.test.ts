// The reducer statechart with fake IO: session plan, quorum, discovery, waiting for combiners, reducing,
// committing, validating, failure accounting, stop and resume; plus model-based coverage of every state
// node and transition of the machine.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { defaultSessionConfig, reducerMachine, type CombinerModel, type ReducerInput, type RoundResult, type SessionConfig } from '../machines/reducer.ts';
import { clientQuotas } from '../machines/reducer.ts';
import type { RoundReport } from '../src/protocol/generated.ts';
import { Coverage, Gate, run, type Harness } from './helpers/machine-harness.ts';

const coverage = new Coverage(reducerMachine);
const SEED = 'm-seed';

type ReduceIn = { sessionId: string; round: number; globalModelId: string; reports: CombinerModel[] };
type CommitIn = { session: SessionConfig; round: number; modelId: string; parentModelId: string; metrics: Record<string, number> };

interface Rig {
  h: Harness<typeof reducerMachine>;
  reduce: Gate<ReduceIn, { modelId: string }>;
  commit: Gate<CommitIn, void>;
  evaluate: Gate<{ modelId: string; round: number }, Record<string, number>>;
  persisted: string[];
  /** CombinerHello and a CombinerStatus listing its clients. */
  join(name: string, clients: string[], maxClients?: number): void;
  status(name: string, clients: string[]): void;
  report(name: string, round: number, fields?: Partial<RoundReport>): void;
  session(over?: Partial<SessionConfig>): SessionConfig;
  begin(over?: Partial<SessionConfig>): void;
  startRounds(): { to: string; round: number; task: string; modelId: string }[];
  cancels(): { to: string; round: number; reason: string }[];
}

function rig(opts: { input?: ReducerInput; manual?: boolean } = {}): Rig {
  const reduce = new Gate<ReduceIn, { modelId: string }>(opts.manual ? undefined : (i) => ({ modelId: `g${i.round}` }));
  const commit = new Gate<CommitIn, void>(opts.manual ? undefined : () => undefined);
  const evaluate = new Gate<{ modelId: string; round: number }, Record<string, number>>(opts.manual ? undefined : () => ({ acc: 0.5 }));
  const persisted: string[] = [];
  const machine = reducerMachine.provide({
    actors: { reduce: reduce.logic, commit: commit.logic, evaluate: evaluate.logic },
    actions: { persistSession: (_, p) => void persisted.push(p.status) },
  });
  const h = run(machine, opts.input ?? {}, { coverage });
  const session = (over: Partial<SessionConfig> = {}): SessionConfig => ({ ...defaultSessionConfig('sess'), rounds: 2, roundTimeoutMs: 10_000, quorumTimeoutMs: 30_000, ...over });
  return {
    h,
    reduce,
    commit,
    evaluate,
    persisted,
    join: (name, clients, maxClients = 0) => {
      h.msg('CombinerHello', name, { name, endpoint: `ws://${name}`, maxClients });
      h.msg('CombinerStatus', name, { clients, state: 'idle' });
    },
    status: (name, clients) => h.msg('CombinerStatus', name, { clients, state: 'idle' }),
    report: (name, round, fields = {}) =>
      h.msg('RoundReport', name, { sessionId: 'sess', round, status: 'ok', modelId: `cm-${name}-${round}`, totalWeight: 10, updates: 2, selected: 2, ...fields }),
    session,
    begin: (over = {}) => {
      h.send({ type: 'SEED', modelId: SEED });
      h.send({ type: 'START', session: session(over) });
    },
    startRounds: () =>
      h.outbox.filter((o) => o.body.type === 'StartRound').map((o) => (o.body.type === 'StartRound' ? { to: o.to, round: o.body.round, task: o.body.task, modelId: o.body.modelId } : (undefined as never))),
    cancels: () => h.outbox.filter((o) => o.body.type === 'CancelRound').map((o) => (o.body.type === 'CancelRound' ? { to: o.to, round: o.body.round, reason: o.body.reason } : (undefined as never))),
  };
}

const history = (r: Rig): RoundResult[] => r.h.snapshot().context.history;

// ---------------------------------------------------------------------------------------------------
// Lifecycle

test('boot without a seed waits in idle; SEED (re-seedable) then START opens the session in planning', () => {
  const r = rig();
  assert.is(r.h.state(), 'idle');
  r.h.send({ type: 'START', session: r.session() });
  assert.is(r.h.state(), 'idle', 'no session without a seed model');
  r.h.send({ type: 'SEED', modelId: 'm-a' });
  assert.is(r.h.state(), 'seeded');
  r.h.send({ type: 'SEED', modelId: SEED });
  assert.equal([r.h.snapshot().context.seedModelId, r.h.snapshot().context.globalModelId], [SEED, SEED]);
  r.h.send({ type: 'START', session: r.session() });
  assert.is(r.h.state(), 'running.planning');
  assert.is(r.h.snapshot().context.session!.sessionId, 'sess');
});

test('a full session: rounds dispatched with the round config, reduced, committed on a parent chain, then done', async () => {
  const r = rig();
  r.join('combiner/c1', ['client/a', 'client/b']);
  r.join('combiner/c2', ['client/c']);
  r.begin({ rounds: 2, seed: 3, minClients: 3, minCombiners: 2, localEpochs: 4 });
  assert.is(r.h.state(), 'running.awaitingCombiners');
  const starts = r.h.sent('StartRound');
  assert.equal(r.startRounds(), [
    { to: 'combiner/c1', round: 1, task: 'train', modelId: SEED },
    { to: 'combiner/c2', round: 1, task: 'train', modelId: SEED },
  ]);
  assert.equal([starts[0]!.sessionId, starts[0]!.config.seed, starts[0]!.config.localEpochs, starts[0]!.config.timeoutMs], ['sess', 3 * 1_000_003 + 1, 4, 10_000]);
  r.report('combiner/c1', 1, { totalWeight: 30, updates: 2, metrics: { loss: 1 } });
  assert.is(r.h.state(), 'running.awaitingCombiners');
  r.report('combiner/c2', 1, { totalWeight: 10, updates: 1, metrics: { loss: 3 } });
  await r.h.flush();
  assert.equal(
    r.reduce.calls[0]!.input.reports.map((x) => [x.combiner, x.modelId, x.totalWeight]),
    [
      ['combiner/c1', 'cm-combiner/c1-1', 30],
      ['combiner/c2', 'cm-combiner/c2-1', 10],
    ],
  );
  assert.is(r.reduce.calls[0]!.input.globalModelId, SEED);
  const c1 = r.commit.calls[0]!.input;
  assert.equal([c1.round, c1.modelId, c1.parentModelId], [1, 'g1', SEED]);
  assert.equal(c1.metrics, { updates: 3, weight: 40, loss: 1.5 });
  assert.equal(r.evaluate.calls[0]!.input, { modelId: 'g1', round: 1 });
  assert.is(r.h.state(), 'running.awaitingCombiners', 'round 2 dispatched');
  assert.equal(r.startRounds().slice(2).map((s) => [s.round, s.modelId]), [
    [2, 'g1'],
    [2, 'g1'],
  ]);
  r.report('combiner/c1', 2);
  r.report('combiner/c2', 2);
  await r.h.flush();
  assert.is(r.h.state(), 'done');
  assert.equal(r.commit.calls.map((c) => [c.input.round, c.input.modelId, c.input.parentModelId]), [
    [1, 'g1', SEED],
    [2, 'g2', 'g1'],
  ]);
  assert.equal(history(r).map((x) => [x.round, x.status, x.modelId, x.updates, x.totalWeight]), [
    [1, 'ok', 'g1', 3, 40],
    [2, 'ok', 'g2', 4, 20],
  ]);
  assert.equal(history(r)[0]!.trainMetrics, { loss: 1.5 });
  assert.equal(history(r)[0]!.evalMetrics, { acc: 0.5 });
  assert.equal(r.persisted, ['running', 'running', 'done']);
  assert.equal([r.h.snapshot().context.committed, r.h.snapshot().context.globalModelId], [2, 'g2']);

  // From done: a new session can start, or a new seed be planted.
  r.h.send({ type: 'START', session: r.session({ sessionId: 'sess2', rounds: 1 }) });
  assert.equal([r.h.state(), r.h.snapshot().context.committed, r.h.snapshot().context.roundNo], ['running.awaitingCombiners', 0, 1]);
  assert.is(r.h.sent('StartRound').at(-1)!.sessionId, 'sess2');
  r.h.send({ type: 'STOP' });
  r.h.send({ type: 'START', session: r.session({ sessionId: 'sess3', rounds: 1 }) });
  r.report('combiner/c1', 1, { sessionId: 'sess3' });
  r.report('combiner/c2', 1, { sessionId: 'sess3' });
  await r.h.flush();
  assert.is(r.h.state(), 'done');
  r.h.send({ type: 'SEED', modelId: 'm-new' });
  assert.equal([r.h.state(), r.h.snapshot().context.globalModelId], ['seeded', 'm-new']);
});

// ---------------------------------------------------------------------------------------------------
// Quorum

test('planning waits for a quorum of eligible combiners and connected clients', () => {
  const r = rig();
  r.begin({ minCombiners: 2, minClients: 3 });
  assert.is(r.h.state(), 'running.planning');
  r.join('combiner/c1', ['client/a', 'client/b']);
  assert.is(r.h.state(), 'running.planning', 'one combiner');
  r.join('combiner/c2', []);
  assert.is(r.h.state(), 'running.planning', 'a combiner without clients is not eligible');
  r.status('combiner/c2', ['client/c']);
  assert.is(r.h.state(), 'running.awaitingCombiners');
  assert.equal(r.startRounds().map((s) => s.to), ['combiner/c1', 'combiner/c2']);
});

test('a status from a combiner that never said hello does not count toward the quorum', () => {
  const r = rig();
  r.begin({ minCombiners: 1, minClients: 1 });
  r.status('combiner/ghost', ['client/a']);
  assert.is(r.h.state(), 'running.planning');
  assert.equal(r.h.snapshot().context.combiners, {});
});

test('without a quorum the session fails after quorumTimeout', async () => {
  const r = rig();
  r.join('combiner/c1', ['client/a']);
  r.begin({ minClients: 2, quorumTimeoutMs: 30_000 });
  await r.h.advance(29_999);
  assert.is(r.h.state(), 'running.planning');
  await r.h.advance(1);
  assert.is(r.h.state(), 'failed');
  assert.is(r.h.snapshot().context.failure, 'no quorum of combiners and clients');
  assert.equal(r.persisted, ['failed']);
  assert.equal(r.h.sent('StartRound'), []);
  // A failed session can be started again.
  r.h.send({ type: 'START', session: r.session({ minClients: 1 }) });
  assert.is(r.h.state(), 'running.awaitingCombiners');
});

// ---------------------------------------------------------------------------------------------------
// Discovery

test('discovery assigns the least-packed combiner (counting pending assignments), honours a preferred one, retries when none', () => {
  const r = rig();
  const assign = (client: string, preferred = ''): { status: string; combiner: string; endpoint: string; retryAfterMs: number } => {
    r.h.msg('AssignRequest', client, { client, preferredCombiner: preferred });
    const res = r.h.sent('AssignResponse', client).at(-1)!;
    return { status: res.status, combiner: res.combiner, endpoint: res.endpoint, retryAfterMs: res.retryAfterMs };
  };
  assert.equal(assign('client/x'), { status: 'retry', combiner: '', endpoint: '', retryAfterMs: 1_000 });
  r.join('combiner/c1', ['client/a', 'client/b']);
  r.join('combiner/c2', []);
  r.join('combiner/c3', ['client/c'], 1);
  assert.equal(assign('client/d'), { status: 'assigned', combiner: 'combiner/c2', endpoint: 'ws://combiner/c2', retryAfterMs: 0 });
  assert.equal(assign('client/e').combiner, 'combiner/c2', 'c2 holds one pending assignment, c1 two clients');
  assert.equal(assign('client/f').combiner, 'combiner/c1', 'tie 2-2 is broken by name');
  assert.equal(assign('client/d').combiner, 'combiner/c2', 'asking again does not count twice');
  assert.equal(assign('client/g', 'combiner/c1').combiner, 'combiner/c1', 'preferred wins over load');
  assert.equal(assign('client/h', 'combiner/c3').combiner, 'combiner/c2', 'a full preferred combiner is skipped');
  // Assignments that showed up in a status are no longer pending.
  r.status('combiner/c2', ['client/d', 'client/e']);
  assert.equal(Object.keys(r.h.snapshot().context.combiners['combiner/c2']!.assigned), ['client/h']);
  r.h.send({ type: 'COMBINER_GONE', combiner: 'combiner/c2' });
  r.h.send({ type: 'COMBINER_GONE', combiner: 'combiner/unknown' });
  assert.equal(assign('client/i', 'combiner/c2').combiner, 'combiner/c1', 'a gone combiner is never assigned');
});

// A pending assignment is only cleared when the client shows up in that combiner's status. The load that
// chooseCombiner compares with maxClients counts the asking client's own stale reservation, so a client
// whose first dial failed is refused ('retry') by a combiner that holds nothing but its reservation.
test('a client asking again is not refused because of its own pending assignment (fixed)', () => {
  const r = rig();
  r.join('combiner/c1', [], 1);
  r.h.msg('AssignRequest', 'client/x', { client: 'client/x' });
  assert.is(r.h.sent('AssignResponse', 'client/x')[0]!.combiner, 'combiner/c1');
  // client/x could not connect (transient error) and asks again after its backoff.
  r.h.msg('AssignRequest', 'client/x', { client: 'client/x' });
  const again = r.h.sent('AssignResponse', 'client/x')[1]!;
  assert.equal([again.status, again.combiner], ['assigned', 'combiner/c1'], `got ${again.status}: ${again.reason}`);
});

// ---------------------------------------------------------------------------------------------------
// Waiting for combiners

test('a combiner that never reports: the round proceeds at the deadline and CancelRound is sent to it only', async () => {
  const r = rig();
  r.join('combiner/c1', ['client/a']);
  r.join('combiner/c2', ['client/b']);
  r.begin({ rounds: 1, roundTimeoutMs: 10_000 });
  r.h.clock.set(1_000);
  r.report('combiner/c1', 1);
  r.report('combiner/c1', 1, { modelId: 'dup' });
  r.h.msg('RoundReport', 'combiner/c3', { sessionId: 'sess', round: 1, status: 'ok', modelId: 'x', totalWeight: 1 });
  r.report('combiner/c2', 7);
  r.h.msg('RoundReport', 'combiner/c2', { sessionId: 'other', round: 1, status: 'ok', modelId: 'x', totalWeight: 1 });
  // Deadline = timeout + min(30 s, max(1 s, 25% of the timeout)) = 12.5 s after dispatch (at 0).
  await r.h.advance(11_499);
  assert.is(r.h.state(), 'running.awaitingCombiners', 'stray, duplicate and foreign reports do not complete the round');
  assert.equal(r.cancels(), []);
  await r.h.advance(1_001);
  assert.equal(r.cancels(), [{ to: 'combiner/c2', round: 1, reason: 'reducer round timeout' }]);
  assert.equal(r.reduce.calls[0]!.input.reports.map((x) => [x.combiner, x.modelId]), [['combiner/c1', 'cm-combiner/c1-1']]);
  assert.is(r.h.state(), 'done');
  assert.is(history(r)[0]!.status, 'ok');
});

test('COMBINER_GONE mid-round: the round proceeds without waiting for it', async () => {
  const r = rig();
  r.join('combiner/c1', ['client/a']);
  r.join('combiner/c2', ['client/b']);
  r.begin({ rounds: 1 });
  r.report('combiner/c1', 1);
  assert.is(r.h.state(), 'running.awaitingCombiners');
  r.h.send({ type: 'COMBINER_GONE', combiner: 'combiner/c2' });
  await r.h.flush();
  assert.is(r.h.state(), 'done', 'no clock advance needed');
  assert.equal(r.cancels(), [], 'nothing to cancel on a gone combiner');
  assert.equal(r.reduce.calls[0]!.input.reports.map((x) => x.combiner), ['combiner/c1']);
  assert.equal(r.h.snapshot().context.combiners['combiner/c2']!.connected, false);
});

// ---------------------------------------------------------------------------------------------------
// Failures

test('a round without any ok combiner model fails (too-few-combiner-models) and the session goes on', async () => {
  const r = rig();
  r.join('combiner/c1', ['client/a']);
  r.begin({ rounds: 1, maxConsecutiveFailures: 3 });
  r.report('combiner/c1', 1, { status: 'failed', reason: 'too-few-updates', modelId: '' });
  await r.h.flush();
  assert.is(r.reduce.count, 0, 'nothing to reduce');
  assert.equal([history(r)[0]!.status, history(r)[0]!.reason, history(r)[0]!.modelId], ['failed', 'too-few-combiner-models', SEED]);
  assert.is(r.h.snapshot().context.consecutiveFailures, 1);
  assert.is(r.h.state(), 'running.roundFailed', 'a failed round backs off before the next one');
  await r.h.advance(499);
  assert.is(r.h.state(), 'running.roundFailed');
  await r.h.advance(1);
  assert.is(r.h.state(), 'running.awaitingCombiners', 'the next round is dispatched after 500 ms');
  assert.equal(r.startRounds().at(-1), { to: 'combiner/c1', round: 2, task: 'train', modelId: SEED });
  r.report('combiner/c1', 2);
  await r.h.flush();
  assert.is(r.h.state(), 'done');
  assert.equal([r.h.snapshot().context.committed, r.h.snapshot().context.consecutiveFailures], [1, 0]);
});

test('an ok report counts only with enough ok combiner models (minCombiners)', async () => {
  const r = rig();
  r.join('combiner/c1', ['client/a']);
  r.join('combiner/c2', ['client/b']);
  r.begin({ rounds: 1, minCombiners: 2 });
  r.report('combiner/c1', 1);
  r.report('combiner/c2', 1, { status: 'failed', modelId: '' });
  await r.h.flush();
  assert.is(history(r)[0]!.reason, 'too-few-combiner-models');
  assert.is(r.reduce.count, 0);
});

test('a failing reduce fails the round (reduce-failed); after maxConsecutiveFailures the session fails', async () => {
  const r = rig({ manual: true });
  r.join('combiner/c1', ['client/a']);
  r.begin({ rounds: 5, maxConsecutiveFailures: 2 });
  r.report('combiner/c1', 1);
  r.reduce.last().reject(new Error('layout mismatch'));
  await r.h.flush();
  assert.equal([history(r)[0]!.status, history(r)[0]!.reason], ['failed', 'reduce-failed']);
  await r.h.advance(500);
  assert.is(r.h.state(), 'running.awaitingCombiners');
  r.report('combiner/c1', 2, { status: 'failed', modelId: '' });
  await r.h.flush();
  assert.is(r.h.state(), 'failed');
  assert.is(r.h.snapshot().context.failure, '2 rounds failed in a row');
  assert.equal(r.persisted, ['running', 'running', 'failed']);
  assert.is(r.startRounds().length, 2, 'no third round');
});

test('a commit that fails fails the session: the model never became part of the trail', async () => {
  const r = rig({ manual: true });
  r.join('combiner/c1', ['client/a']);
  r.begin({ rounds: 3 });
  r.report('combiner/c1', 1);
  r.reduce.last().resolve({ modelId: 'g1' });
  await r.h.flush();
  assert.is(r.h.state(), 'running.committing');
  r.commit.last().reject(new Error('io'));
  await r.h.flush();
  assert.is(r.h.state(), 'failed');
  assert.is(r.h.snapshot().context.failure, 'could not commit the model to the trail');
  assert.is(r.h.snapshot().context.globalModelId, SEED, 'the global model did not move');
});

test('an evaluation error does not fail the round', async () => {
  const r = rig({ manual: true });
  r.join('combiner/c1', ['client/a']);
  r.begin({ rounds: 1 });
  r.report('combiner/c1', 1);
  r.reduce.last().resolve({ modelId: 'g1' });
  await r.h.flush();
  r.commit.last().resolve();
  await r.h.flush();
  assert.is(r.h.state(), 'running.validating.evaluating');
  r.evaluate.last().reject(new Error('no test set'));
  await r.h.flush();
  assert.is(r.h.state(), 'done');
  assert.equal([history(r)[0]!.status, history(r)[0]!.modelId, history(r)[0]!.evalMetrics], ['ok', 'g1', {}]);
});

// ---------------------------------------------------------------------------------------------------
// Stop

test('STOP cancels the round on every connected combiner and stops the session', async () => {
  const r = rig();
  r.join('combiner/c1', ['client/a']);
  r.join('combiner/c2', ['client/b']);
  r.join('combiner/c3', []);
  r.h.send({ type: 'COMBINER_GONE', combiner: 'combiner/c3' });
  r.begin({ rounds: 3 });
  r.report('combiner/c1', 1);
  r.h.send({ type: 'STOP', reason: 'operator' });
  assert.is(r.h.state(), 'stopped');
  assert.equal(r.cancels(), [
    { to: 'combiner/c1', round: 0, reason: 'operator' },
    { to: 'combiner/c2', round: 0, reason: 'operator' },
  ]);
  assert.equal(r.persisted, ['stopped']);
  assert.is(r.h.snapshot().context.failure, 'operator');
  await r.h.advance(60_000);
  assert.is(r.h.state(), 'stopped', 'no timer of the stopped round fires');
  assert.is(r.reduce.count, 0);
  // Without a reason, and from the planning state.
  r.h.send({ type: 'START', session: r.session({ minClients: 5 }) });
  assert.is(r.h.state(), 'running.planning');
  r.h.send({ type: 'STOP' });
  assert.equal(r.cancels().slice(2).map((c) => c.reason), ['session stopped', 'session stopped']);
  assert.is(r.h.snapshot().context.failure, 'stopped by operator');
});

// ---------------------------------------------------------------------------------------------------
// Validation

test('validate=true: StartRound{task: validate} to the ok combiners; ValidationReports are recorded and weighted', async () => {
  const r = rig();
  r.join('combiner/c1', ['client/a']);
  r.join('combiner/c2', ['client/b']);
  r.join('combiner/c3', ['client/c']);
  r.begin({ rounds: 1, validate: true });
  r.report('combiner/c1', 1);
  r.report('combiner/c2', 1);
  r.report('combiner/c3', 1, { status: 'failed', modelId: '' });
  await r.h.flush();
  assert.is(r.h.state(), 'running.validating.collecting');
  const v = r.h.sent('StartRound').filter((s) => s.task === 'validate');
  assert.equal(r.startRounds().filter((s) => s.task === 'validate'), [
    { to: 'combiner/c1', round: 1, task: 'validate', modelId: 'g1' },
    { to: 'combiner/c2', round: 1, task: 'validate', modelId: 'g1' },
  ]);
  assert.is(v[0]!.sessionId, 'sess');
  const vr = (from: string, totalWeight: number, acc: number, fields: Record<string, unknown> = {}) =>
    r.h.msg('ValidationReport', from, { sessionId: 'sess', round: 1, modelId: 'g1', totalWeight, reports: 1, metrics: { acc }, ...fields });
  vr('combiner/c1', 30, 0.9);
  vr('combiner/c1', 30, 0.1);
  vr('combiner/c2', 10, 0.5, { round: 2 });
  vr('combiner/c4', 10, 0.5);
  assert.is(r.h.state(), 'running.validating.collecting', 'c2 has not validated yet (duplicates and strays do not count)');
  vr('combiner/c2', 10, 0.5);
  await r.h.flush();
  assert.is(r.h.state(), 'done');
  const h0 = history(r)[0]!;
  assert.is(h0.status, 'ok');
  assert.ok(Math.abs(h0.validation.acc! - (30 * 0.9 + 10 * 0.5) / 40) < 1e-12, `validation ${JSON.stringify(h0.validation)}`);
});

test('validation waits at most the round timeout, and not for a combiner that went away', async () => {
  const r = rig();
  r.join('combiner/c1', ['client/a']);
  r.join('combiner/c2', ['client/b']);
  r.begin({ rounds: 2, validate: true, roundTimeoutMs: 5_000 });
  r.report('combiner/c1', 1);
  r.report('combiner/c2', 1);
  await r.h.flush();
  assert.is(r.h.state(), 'running.validating.collecting');
  r.h.send({ type: 'COMBINER_GONE', combiner: 'combiner/c2' });
  assert.is(r.h.state(), 'running.validating.collecting', 'c1 still owes its validation');
  await r.h.advance(4_999);
  assert.is(r.h.state(), 'running.validating.collecting');
  await r.h.advance(1);
  assert.is(r.h.state(), 'running.awaitingCombiners', 'round 1 closed, round 2 dispatched to c1 only');
  assert.equal(history(r)[0]!.validation, {});
  assert.equal(r.startRounds().at(-1), { to: 'combiner/c1', round: 2, task: 'train', modelId: 'g1' });
});

// ---------------------------------------------------------------------------------------------------
// Resume

test('resume input starts in running with the given committed count and continues the round numbering', async () => {
  const session = { ...defaultSessionConfig('sess'), rounds: 3, roundTimeoutMs: 10_000 };
  const r = rig({ input: { self: 'reducer/r', resume: { session, globalModelId: 'g2', seedModelId: SEED, committed: 2, roundNo: 4, history: [] } } });
  assert.is(r.h.state(), 'running.planning');
  assert.equal([r.h.snapshot().context.committed, r.h.snapshot().context.self], [2, 'reducer/r']);
  r.join('combiner/c1', ['client/a']);
  assert.equal(r.startRounds(), [{ to: 'combiner/c1', round: 5, task: 'train', modelId: 'g2' }]);
  r.report('combiner/c1', 5);
  await r.h.flush();
  assert.is(r.h.state(), 'done', 'one more committed round completes the three');
  assert.equal(r.commit.calls.map((c) => [c.input.round, c.input.parentModelId]), [[5, 'g2']]);
  assert.is(r.h.snapshot().context.committed, 3);
});

test('resume without a trail head boots to idle', () => {
  const r = rig({ input: { resume: { session: defaultSessionConfig('sess'), globalModelId: '', seedModelId: '', committed: 0, roundNo: 0, history: [] } } });
  assert.is(r.h.state(), 'idle');
});

test('TICK moves the reducer clock used for round timestamps', async () => {
  const r = rig();
  r.join('combiner/c1', ['client/a']);
  r.h.send({ type: 'TICK', now: 5_000 });
  r.begin({ rounds: 1 });
  r.h.msg('RoundReport', 'combiner/c1', { sessionId: 'sess', round: 1, status: 'ok', modelId: 'cm', totalWeight: 1 });
  r.h.send({ type: 'TICK', now: 9_000 });
  await r.h.flush();
  assert.equal([history(r)[0]!.startedAt, history(r)[0]!.endedAt], [5_000, 9_000]);
});

// ---------------------------------------------------------------------------------------------------
// Coverage

/** Transitions no scenario can take, with the reason. Asserted exactly: a new one fails this test. */
const UNREACHABLE: Record<string, string> = {
  'reducer.boot --always#1--> reducer.seeded':
    'globalModelId is non-empty at boot only through input.resume, which always carries a session, so the first boot guard (-> running) wins; the assembly sends SEED after boot instead',
};

test('model-based coverage: every state node and every transition of the reducer was exercised', () => {
  assert.equal([...coverage.unknown], [], 'a transition was taken that the graph does not list');
  assert.equal(coverage.missingStates(), [], `states never reached (${coverage.summary()})`);
  assert.equal(coverage.missingTransitions(), Object.keys(UNREACHABLE).sort(), `transitions never taken (${coverage.summary()})`);
  assert.ok(coverage.states.length >= 19 && coverage.transitions.length >= 38, 'the graph has the machine in it');
  console.log(`reducer coverage: ${coverage.summary()} (${Object.keys(UNREACHABLE).length} listed unreachable)`);
});

test('client fraction: round(C * K) clients per round split over the combiners by largest remainder', () => {
  const ctx = (sizes: number[]) =>
    ({ combiners: Object.fromEntries(sizes.map((n, i) => [`combiner/c${i + 1}`, { connected: true, clients: Array.from({ length: n }, (_, k) => `client/${i}-${k}`) }])) }) as never;
  const session = (fraction: number) => ({ ...defaultSessionConfig('s'), fraction });
  assert.equal(clientQuotas(ctx([5, 5]), session(0.3)), { 'combiner/c1': 2, 'combiner/c2': 1 });
  assert.equal(clientQuotas(ctx([50, 50]), session(0.1)), { 'combiner/c1': 5, 'combiner/c2': 5 });
  assert.equal(clientQuotas(ctx([3, 1]), session(0.25)), { 'combiner/c1': 1, 'combiner/c2': 0 }, 'a combiner may sit a round out');
  assert.equal(clientQuotas(ctx([2, 2]), session(0.01)), { 'combiner/c1': 1, 'combiner/c2': 0 }, 'at least one client per round');
  assert.equal(clientQuotas(ctx([5, 5]), session(1)), {}, 'no quota without sampling');
});

test.run();
