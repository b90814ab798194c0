// The client statechart with fake IO: discovery with exponential backoff, connect/hello/welcome,
// heartbeats, train and validate tasks, cancellation (AbortSignal), loss and rediscovery, stop; plus
// model-based coverage of every state node and transition of the machine.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fromCallback } from 'xstate';
import { clientMachine, type ClientInput, type TaskInfo, type TrainOutput, type ValidateOutput } from '../machines/client.ts';
import { makeMessage } from '../src/protocol/codec.ts';
import { Coverage, Gate, run, type Harness } from './helpers/machine-harness.ts';

const coverage = new Coverage(clientMachine);
const SELF = 'client/a';
const REDUCER = 'reducer/main';
const C1 = 'combiner/c1';
const C2 = 'combiner/c2';

type TaskIn = TaskInfo & { combiner: string };

interface Rig {
  h: Harness<typeof clientMachine>;
  discover: Gate<{ self: string; reducer: string; preferred: string }, { combiner: string; endpoint: string }>;
  connect: Gate<{ combiner: string; endpoint: string }, void>;
  train: Gate<TaskIn, TrainOutput>;
  validate: Gate<TaskIn, ValidateOutput>;
  heartbeats: { started: number[]; stopped: number };
  disconnected: string[];
  /** Goes from the initial state to connected.ready with `combiner`. */
  connectTo(combiner: string, heartbeatMs?: number): Promise<void>;
  trainTask(taskId: string, from?: string, round?: number): void;
}

function rig(input: Partial<ClientInput> = {}): Rig {
  const discover = new Gate<{ self: string; reducer: string; preferred: string }, { combiner: string; endpoint: string }>();
  const connect = new Gate<{ combiner: string; endpoint: string }, void>();
  const train = new Gate<TaskIn, TrainOutput>();
  const validate = new Gate<TaskIn, ValidateOutput>();
  const heartbeats = { started: [] as number[], stopped: 0 };
  const disconnected: string[] = [];
  let h: Harness<typeof clientMachine> | undefined;
  const machine = clientMachine.provide({
    actors: {
      discover: discover.logic,
      connect: connect.logic,
      train: train.logic,
      validate: validate.logic,
      // A heartbeat timer on the simulated clock, like the assembly's setInterval.
      heartbeat: fromCallback<{ type: 'noop' }, { intervalMs: number }>(({ input, sendBack }) => {
        heartbeats.started.push(input.intervalMs);
        let id = -1;
        const arm = (): void => {
          id = h!.clock.setTimeout(() => {
            sendBack({ type: 'HEARTBEAT_DUE' });
            arm();
          }, input.intervalMs);
        };
        arm();
        return () => {
          heartbeats.stopped++;
          h!.clock.clearTimeout(id);
        };
      }),
    },
    actions: { disconnect: (_, p) => void disconnected.push(p.combiner) },
  });
  h = run(machine, { self: SELF, reducer: REDUCER, backoff: { initialMs: 100, maxMs: 1_000 }, seed: 5, connectTimeoutMs: 5_000, numExamples: 42, ...input }, { coverage });
  const r: Rig = {
    h,
    discover,
    connect,
    train,
    validate,
    heartbeats,
    disconnected,
    connectTo: async (combiner, heartbeatMs = 1_000) => {
      await h!.advance(0);
      discover.last().resolve({ combiner, endpoint: `ws://${combiner}` });
      await h!.flush();
      connect.last().resolve();
      await h!.flush();
      h!.msg('ClientWelcome', combiner, { combiner, heartbeatMs });
      assert.is(h!.state(), 'connected.ready');
    },
    trainTask: (taskId, from = C1, round = 1) => h!.msg('TrainTask', from, { taskId, sessionId: 's', round, modelId: 'g0', config: { ...makeMessage('StartRound').config, localEpochs: 2, learningRate: 0.05 } }),
  };
  return r;
}

/** How long (simulated ms, 1 ms resolution) until the next discover call. */
async function msUntilDiscover(r: Rig, limit = 5_000): Promise<number> {
  const before = r.discover.count;
  for (let t = 0; t <= limit; t++) {
    if (r.discover.count > before) return t;
    await r.h.advance(1);
  }
  throw new Error('no discover call');
}

// ---------------------------------------------------------------------------------------------------
// Discovery and connection

test('discovery failure backs off exponentially (growing with the attempt, jittered, capped) and retries', async () => {
  const r = rig({ backoff: { initialMs: 100, maxMs: 1_000 } });
  assert.is(r.h.state(), 'disconnected');
  await r.h.advance(0);
  assert.is(r.h.state(), 'discovering', 'the first attempt does not wait');
  assert.equal(r.discover.last().input, { self: SELF, reducer: REDUCER, preferred: '' });
  const delays: number[] = [];
  for (let attempt = 1; attempt <= 6; attempt++) {
    r.discover.last().reject(new Error(`reducer unreachable ${attempt}`));
    await r.h.flush();
    assert.is(r.h.state(), 'disconnected');
    assert.is(r.h.snapshot().context.attempt, attempt);
    assert.is(r.h.snapshot().context.lastError, `reducer unreachable ${attempt}`);
    delays.push(await msUntilDiscover(r));
  }
  // capped(n) = min(1000, 100 * 2^(n-1)); the delay is in [capped/2, capped].
  const capped = [100, 200, 400, 800, 1_000, 1_000];
  delays.forEach((d, i) => assert.ok(d >= capped[i]! / 2 && d <= capped[i]!, `attempt ${i + 1}: ${d} ms not in [${capped[i]! / 2}, ${capped[i]}]`));
  for (let i = 1; i < 4; i++) assert.ok(delays[i]! > delays[i - 1]!, `delays grow: ${delays}`);
  assert.is(r.discover.count, 7);
});

test('discover -> connect -> ClientHello -> ClientWelcome -> connected.ready; attempts reset', async () => {
  const r = rig({ preferredCombiner: C2 });
  await r.h.advance(0);
  r.discover.last().reject(new Error('x'));
  await r.h.flush();
  await r.h.advance(100);
  assert.equal(r.discover.last().input.preferred, C2);
  r.discover.last().resolve({ combiner: C1, endpoint: 'ws://c1:9000' });
  await r.h.flush();
  assert.is(r.h.state(), 'connecting.dialing');
  assert.equal(r.connect.last().input, { combiner: C1, endpoint: 'ws://c1:9000' });
  assert.equal(r.h.outbox, [], 'nothing is said before the link is up');
  r.connect.last().resolve();
  await r.h.flush();
  assert.is(r.h.state(), 'connecting.greeting');
  assert.equal(r.h.outbox, [{ type: 'outbound', to: C1, body: { type: 'ClientHello', client: SELF, numExamples: 42 } }]);
  r.h.msg('ClientWelcome', C2, { combiner: C2, heartbeatMs: 10 });
  assert.is(r.h.state(), 'connecting.greeting', 'a welcome from another combiner is ignored');
  r.h.msg('ClientWelcome', C1, { combiner: C1, heartbeatMs: 750 });
  assert.is(r.h.state(), 'connected.ready');
  const ctx = r.h.snapshot().context;
  assert.equal([ctx.combiner, ctx.endpoint, ctx.heartbeatMs, ctx.attempt, ctx.lastError], [C1, 'ws://c1:9000', 750, 0, '']);
});

test('a connect that fails or never completes goes back to disconnected and retries after the backoff', async () => {
  const r = rig();
  await r.h.advance(0);
  r.discover.last().resolve({ combiner: C1, endpoint: 'ws://c1' });
  await r.h.flush();
  r.connect.last().reject(new Error('ECONNREFUSED'));
  await r.h.flush();
  assert.is(r.h.state(), 'disconnected');
  assert.equal([r.h.snapshot().context.attempt, r.h.snapshot().context.lastError], [1, 'ECONNREFUSED']);
  assert.ok((await msUntilDiscover(r)) >= 50);
  r.discover.last().resolve({ combiner: C1, endpoint: 'ws://c1' });
  await r.h.flush();
  // Dialing hangs: the connect timeout (5 s) gives up and closes the half-open link.
  await r.h.advance(4_999);
  assert.is(r.h.state(), 'connecting.dialing');
  await r.h.advance(1);
  assert.is(r.h.state(), 'disconnected');
  assert.ok(r.connect.last().signal.aborted, 'the dial is aborted');
  assert.equal(r.disconnected, [C1]);
  assert.equal([r.h.snapshot().context.attempt, r.h.snapshot().context.lastError], [2, 'connect timeout']);
  // The welcome never comes: the same timeout covers greeting.
  await msUntilDiscover(r);
  r.discover.last().resolve({ combiner: C1, endpoint: 'ws://c1' });
  await r.h.flush();
  r.connect.last().resolve();
  await r.h.flush();
  assert.is(r.h.state(), 'connecting.greeting');
  await r.h.advance(5_000);
  assert.is(r.h.state(), 'disconnected');
  assert.equal(r.disconnected, [C1, C1]);
});

test('COMBINER_LOST while connecting goes back to disconnected', async () => {
  const r = rig();
  await r.h.advance(0);
  r.discover.last().resolve({ combiner: C1, endpoint: 'ws://c1' });
  await r.h.flush();
  r.h.send({ type: 'COMBINER_LOST', reason: 'link reset' });
  assert.is(r.h.state(), 'disconnected');
  assert.equal([r.h.snapshot().context.attempt, r.h.snapshot().context.lastError, r.h.snapshot().context.stats.reconnects], [1, 'link reset', 1]);
});

test('a fixed combiner skips discovery', async () => {
  const r = rig({ combiner: { address: C2, endpoint: 'ws://c2:1' } });
  await r.h.advance(0);
  assert.is(r.h.state(), 'connecting.dialing');
  assert.is(r.discover.count, 0);
  assert.equal(r.connect.last().input, { combiner: C2, endpoint: 'ws://c2:1' });
});

// ---------------------------------------------------------------------------------------------------
// Connected

test('heartbeats are emitted at the welcome interval while connected, and stop when the link is lost', async () => {
  const r = rig();
  await r.connectTo(C1, 500);
  assert.equal(r.heartbeats.started, [500]);
  await r.h.advance(499, 1);
  assert.equal(r.h.sent('Heartbeat'), []);
  await r.h.advance(1);
  assert.is(r.h.sent('Heartbeat', C1).length, 1);
  await r.h.advance(1_500, 50);
  assert.is(r.h.sent('Heartbeat', C1).length, 4, 'one every 500 ms');
  assert.is(r.h.outbox.filter((o) => o.body.type === 'Heartbeat' && o.to !== C1).length, 0);
  r.h.send({ type: 'COMBINER_LOST', reason: 'gone' });
  assert.is(r.heartbeats.stopped, 1);
  await r.h.advance(2_000, 50);
  assert.is(r.h.sent('Heartbeat').length, 4, 'no heartbeat once disconnected');
});

test('TrainTask -> train with the task -> TrainResult carrying the task fields -> ready', async () => {
  const r = rig();
  await r.connectTo(C1);
  r.trainTask('s:3:train:client/a', C1, 3);
  assert.is(r.h.state(), 'connected.training');
  const input = r.train.last().input;
  assert.equal([input.kind, input.taskId, input.sessionId, input.round, input.modelId, input.combiner], ['train', 's:3:train:client/a', 's', 3, 'g0', C1]);
  assert.equal([input.config!.localEpochs, input.config!.learningRate], [2, 0.05]);
  r.train.last().resolve({ updateId: 'u-1', numExamples: 42, metrics: { loss: 0.25 }, trainMs: 17 });
  await r.h.flush();
  assert.is(r.h.state(), 'connected.ready');
  assert.equal(r.h.sent('TrainResult', C1), [
    { type: 'TrainResult', taskId: 's:3:train:client/a', sessionId: 's', round: 3, baseModelId: 'g0', updateId: 'u-1', numExamples: 42, metrics: { loss: 0.25 }, trainMs: 17 },
  ]);
  assert.equal([r.h.snapshot().context.task, r.h.snapshot().context.stats.trained], [null, 1]);
  r.h.msg('UpdateAck', C1, { taskId: 's:3:train:client/a', accepted: true });
  r.h.msg('UpdateAck', C1, { taskId: 'older', accepted: false, reason: 'late' });
  assert.equal([r.h.snapshot().context.stats.accepted, r.h.snapshot().context.stats.rejected], [1, 1]);
});

test('a failing train answers TaskFailed with the error message', async () => {
  const r = rig();
  await r.connectTo(C1);
  r.trainTask('t1');
  r.train.last().reject(new Error('out of memory'));
  await r.h.flush();
  assert.is(r.h.state(), 'connected.ready');
  assert.equal(r.h.sent('TaskFailed', C1), [{ type: 'TaskFailed', taskId: 't1', reason: 'out of memory' }]);
  assert.equal(r.h.sent('TrainResult'), []);
  assert.is(r.h.snapshot().context.stats.failed, 1);
});

test('CancelTask for the current task aborts training through its AbortSignal and returns to ready; for another task it is ignored', async () => {
  const r = rig();
  await r.connectTo(C1);
  r.trainTask('t1');
  const call = r.train.last();
  r.h.msg('CancelTask', C1, { taskId: 't0', reason: 'round closed' });
  assert.is(r.h.state(), 'connected.training');
  assert.is(call.signal.aborted, false);
  r.h.msg('CancelTask', C1, { taskId: 't1', reason: 'round cancelled' });
  assert.is(r.h.state(), 'connected.ready');
  assert.ok(call.signal.aborted, 'the train actor was stopped');
  assert.equal([r.h.snapshot().context.task, r.h.snapshot().context.stats.cancelled], [null, 1]);
  // A training that finishes anyway after the cancel is not reported.
  call.resolve({ updateId: 'u', numExamples: 1, metrics: {}, trainMs: 1 });
  await r.h.flush();
  assert.equal(r.h.sent('TrainResult'), []);
  assert.equal(r.h.sent('TaskFailed'), []);
});

test('a new task replaces the one in progress (its training is aborted)', async () => {
  const r = rig();
  await r.connectTo(C1);
  r.trainTask('t1');
  const first = r.train.last();
  r.trainTask('t2', C1, 2);
  assert.ok(first.signal.aborted);
  assert.is(r.train.last().input.taskId, 't2');
  first.resolve({ updateId: 'u1', numExamples: 1, metrics: {}, trainMs: 1 });
  r.train.last().resolve({ updateId: 'u2', numExamples: 1, metrics: {}, trainMs: 1 });
  await r.h.flush();
  assert.equal(r.h.sent('TrainResult').map((x) => x.taskId), ['t2']);
});

// The heartbeat child belongs to `connected`; the task transition is declared on `connected` with
// `reenter: true`, which re-enters `connected` itself and restarts the heartbeat timer on every task.
// A combiner that pushes tasks more often than heartbeatMs then never hears a heartbeat from a busy
// client (its membership is refreshed only by Hello/Heartbeat) and drops it after clientTimeoutMs.
test('a TrainTask does not restart the heartbeat timer (fixed: task transitions live on the task states)', async () => {
  const r = rig();
  await r.connectTo(C1, 1_000);
  for (let i = 0; i < 5; i++) {
    await r.h.advance(600, 50);
    r.trainTask(`t${i}`);
  }
  assert.ok(r.h.sent('Heartbeat').length >= 2, `3 s connected at 1 s intervals, got ${r.h.sent('Heartbeat').length} heartbeats`);
  assert.equal(r.heartbeats.started, [1_000], 'one heartbeat actor for the whole connection');
});

test('ValidateTask -> validate -> ValidateResult; validate failure -> TaskFailed; CancelTask aborts validation', async () => {
  const r = rig();
  await r.connectTo(C1);
  const vt = (taskId: string): void => r.h.msg('ValidateTask', C1, { taskId, sessionId: 's', round: 4, modelId: 'g3' });
  vt('v1');
  assert.is(r.h.state(), 'connected.validating');
  assert.equal([r.validate.last().input.kind, r.validate.last().input.modelId, r.validate.last().input.config], ['validate', 'g3', undefined]);
  r.validate.last().resolve({ numExamples: 9, metrics: { acc: 0.75 } });
  await r.h.flush();
  assert.equal(r.h.sent('ValidateResult', C1), [{ type: 'ValidateResult', taskId: 'v1', sessionId: 's', round: 4, modelId: 'g3', numExamples: 9, metrics: { acc: 0.75 } }]);
  vt('v2');
  r.validate.last().reject(new Error('bad data'));
  await r.h.flush();
  assert.equal(r.h.sent('TaskFailed', C1), [{ type: 'TaskFailed', taskId: 'v2', reason: 'bad data' }]);
  vt('v3');
  r.h.msg('CancelTask', C1, { taskId: 'v2', reason: 'x' });
  assert.is(r.h.state(), 'connected.validating');
  r.h.msg('CancelTask', C1, { taskId: 'v3', reason: 'round closed' });
  assert.is(r.h.state(), 'connected.ready');
  assert.ok(r.validate.last().signal.aborted);
  assert.equal(r.h.snapshot().context.stats, { trained: 0, validated: 1, failed: 1, cancelled: 1, rejected: 0, accepted: 0, reconnects: 0 });
});

test('a task of either kind replaces a task of either kind in progress, aborting it', async () => {
  const r = rig();
  await r.connectTo(C1);
  const vt = (taskId: string): void => r.h.msg('ValidateTask', C1, { taskId, sessionId: 's', round: 5, modelId: 'g4' });
  r.trainTask('t1');
  const training = r.train.last();
  vt('v1');
  assert.is(r.h.state(), 'connected.validating');
  assert.ok(training.signal.aborted, 'training aborted by the validation task');
  const validating = r.validate.last();
  vt('v2');
  assert.is(r.h.state(), 'connected.validating');
  assert.ok(validating.signal.aborted, 'first validation aborted by the second');
  assert.is(r.validate.last().input.taskId, 'v2');
  r.trainTask('t2');
  assert.is(r.h.state(), 'connected.training');
  assert.is(r.train.last().input.taskId, 't2');
});

test('a ClientBye from its combiner (it no longer counts the client) makes the client greet it again on the same link', async () => {
  const r = rig();
  await r.connectTo(C1);
  const hellos = r.h.sent('ClientHello', C1).length;
  r.h.msg('ClientBye', 'combiner/other', { reason: 'x' });
  assert.is(r.h.state(), 'connected.ready', 'a ClientBye from another combiner is ignored');
  r.h.msg('ClientBye', C1, { reason: 'not a member: say hello again' });
  assert.ok(r.h.state().startsWith('connecting'), r.h.state());
  assert.equal(r.connect.last().input, { combiner: C1, endpoint: `ws://${C1}` }, 'the same combiner, not a rediscovery');
  r.connect.last().resolve();
  await r.h.flush();
  assert.is(r.h.sent('ClientHello', C1).length, hellos + 1, 'hello sent again');
  r.h.msg('ClientWelcome', C1, { combiner: C1, heartbeatMs: 1_000 });
  assert.is(r.h.state(), 'connected.ready');
});

test('a TrainTask or ValidateTask from anyone but the current combiner is ignored', async () => {
  const r = rig();
  await r.connectTo(C1);
  r.trainTask('evil', C2);
  r.trainTask('evil2', REDUCER);
  r.h.msg('ValidateTask', C2, { taskId: 'evil3', sessionId: 's', round: 1, modelId: 'g0' });
  assert.is(r.h.state(), 'connected.ready');
  assert.is(r.train.count + r.validate.count, 0);
  // Also while busy: it does not replace the real task.
  r.trainTask('t1');
  r.trainTask('evil4', C2);
  assert.equal([r.h.state(), r.train.count, r.train.last().signal.aborted], ['connected.training', 1, false]);
});

test('COMBINER_LOST while connected: disconnect, back off, rediscover (asking for the same combiner) and land on another', async () => {
  const r = rig();
  await r.connectTo(C1);
  r.trainTask('t1');
  const call = r.train.last();
  r.h.send({ type: 'COMBINER_LOST', reason: 'heartbeat timeout' });
  assert.is(r.h.state(), 'disconnected');
  assert.ok(call.signal.aborted, 'the running task is abandoned');
  assert.equal(r.disconnected, [C1]);
  const ctx = r.h.snapshot().context;
  assert.equal([ctx.attempt, ctx.lastError, ctx.task, ctx.stats.reconnects], [1, 'heartbeat timeout', null, 1]);
  const wait = await msUntilDiscover(r);
  assert.ok(wait >= 50 && wait <= 100, `first backoff ${wait} ms in [50, 100]`);
  // it asks for the combiner it had (which may be fetching its update); discovery decides
  assert.is(r.discover.last().input.preferred, C1);
  r.discover.last().resolve({ combiner: C2, endpoint: 'ws://c2' });
  await r.h.flush();
  r.connect.last().resolve();
  await r.h.flush();
  assert.equal(r.h.outbox.at(-1), { type: 'outbound', to: C2, body: { type: 'ClientHello', client: SELF, numExamples: 42 } });
  r.h.msg('ClientWelcome', C2, { combiner: C2, heartbeatMs: 0 });
  assert.equal([r.h.state(), r.h.snapshot().context.combiner, r.h.snapshot().context.heartbeatMs], ['connected.ready', C2, 2_000]);
  r.trainTask('t-old', C1);
  assert.is(r.h.state(), 'connected.ready', 'the old combiner is no longer obeyed');
});

test('STOP -> stopped with ClientBye to the combiner and the link closed', async () => {
  const r = rig();
  await r.connectTo(C1);
  r.trainTask('t1');
  r.h.send({ type: 'STOP' });
  assert.is(r.h.state(), 'stopped');
  assert.is(r.h.snapshot().status, 'done');
  assert.equal(r.h.outbox.at(-1), { type: 'outbound', to: C1, body: { type: 'ClientBye', reason: 'stopped' } });
  assert.equal(r.disconnected, [C1]);
  assert.ok(r.train.last().signal.aborted);
  assert.ok(r.heartbeats.started.length > 0);
  assert.is(r.heartbeats.stopped, r.heartbeats.started.length, 'no heartbeat actor outlives the client');
  await r.h.advance(5_000, 100);
  assert.equal(r.h.sent('Heartbeat'), []);
});

test('STOP before any combiner is known says goodbye to nobody', async () => {
  const r = rig();
  await r.h.advance(0);
  r.h.send({ type: 'STOP' });
  assert.is(r.h.state(), 'stopped');
  assert.equal(r.h.sent('ClientBye'), []);
  assert.ok(r.discover.last().signal.aborted);
});

// ---------------------------------------------------------------------------------------------------
// Coverage

/** Transitions no scenario can take, with the reason. Asserted exactly: a new one fails this test. */
const UNREACHABLE: Record<string, string> = {};

test('model-based coverage: every state node and every transition of the client was exercised', () => {
  assert.equal([...coverage.unknown], [], 'a transition was taken that the graph does not list');
  assert.equal(coverage.missingStates(), [], `states never reached (${coverage.summary()})`);
  assert.equal(coverage.missingTransitions(), Object.keys(UNREACHABLE).sort(), `transitions never taken (${coverage.summary()})`);
  assert.ok(coverage.states.length >= 10 && coverage.transitions.length >= 21, 'the graph has the machine in it');
  console.log(`client coverage: ${coverage.summary()}`);
});

test.run();
