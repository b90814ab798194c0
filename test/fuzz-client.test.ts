// Role inbound fuzz for the client statechart (issue 7): random sequences of tasks, cancellations,
// welcomes and acknowledgements (from its combiner, from other combiners, from the reducer, from other
// clients; with random task ids, sessions, rounds, configs and numbers), interleaved with losing the
// combiner, heartbeats, stops, clock ticks and its fake IO (discovery, connect, train, validate)
// settling either way, in any order.
//
// Checked after every step: the actor never errors; it only trains or validates tasks its current
// combiner sent; every result or failure it emits goes to that combiner, for the task that ran, with
// what the training produced; a task whose run was cancelled or replaced never answers; a task that ran
// to the end answers exactly once; nothing is ever sent to anyone but the combiner.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createActor, fromCallback, SimulatedClock } from 'xstate';
import { clientMachine, type TaskInfo, type TrainOutput, type ValidateOutput } from '../machines/client.ts';
import type { Inbound, Outbound } from '../machines/common.ts';
import type { Message, MessageType } from '../src/protocol/generated.ts';
import { Gate, type Call } from './helpers/machine-harness.ts';
import { startClient } from '../src/actors/client.ts';
import { Node } from '../src/actors/node.ts';
import { makeMessage } from '../src/protocol/codec.ts';
import { InprocNetwork, InprocTransport } from '../src/transport/inproc.ts';
import { catchingCrashes, fc, fuzzAsync, fuzzOptions, messageArb, messageTypes, wildDouble, wildString, wireUint32, type Overrides } from './helpers/fuzz-arbs.ts';

const SELF = 'client/k1';
const REDUCER = 'reducer/main';
const COMBINERS = ['combiner/c1', 'combiner/c2'];

type TaskIn = TaskInfo & { combiner: string };

type Command =
  | { k: 'msg'; from: string; body: Message; bindTask: boolean }
  | { k: 'lost' }
  | { k: 'heartbeat' }
  | { k: 'stop' }
  | { k: 'tick'; ms: number }
  | { k: 'discover'; ok: boolean; combiner: number }
  | { k: 'connect'; ok: boolean }
  | { k: 'finish'; ok: boolean; output: TrainOutput }
  | { k: 'flush' };

const overrides: Overrides = {
  taskId: fc.oneof({ weight: 4, arbitrary: fc.constantFrom('t1', 't2', 't3') }, { weight: 1, arbitrary: wildString }),
  sessionId: fc.oneof({ weight: 4, arbitrary: fc.constantFrom('s1', 's2') }, { weight: 1, arbitrary: wildString }),
  round: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(1, 2) }, { weight: 1, arbitrary: wireUint32 }),
  modelId: fc.oneof({ weight: 4, arbitrary: fc.constantFrom('M1', 'M2') }, { weight: 1, arbitrary: wildString }),
  combiner: fc.oneof(fc.constantFrom(...COMBINERS), wildString),
  heartbeatMs: fc.oneof(fc.constantFrom(0, 100, 2_000), wireUint32),
};
const o = { overrides } as const;
const m = <T extends MessageType>(t: T): fc.Arbitrary<Message> => messageArb(t, o) as fc.Arbitrary<Message>;

const outputArb: fc.Arbitrary<TrainOutput> = fc.record({
  updateId: fc.oneof(fc.constantFrom('u1', 'u2'), wildString),
  numExamples: fc.oneof(fc.constantFrom(1, 10), wireUint32),
  metrics: fc.dictionary(fc.constantFrom('loss', 'acc'), wildDouble, { maxKeys: 2 }),
  trainMs: wildDouble,
});

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.record({
      k: fc.constant('msg' as const),
      from: fc.oneof({ weight: 8, arbitrary: fc.constant('$combiner') }, { weight: 2, arbitrary: fc.constantFrom(...COMBINERS) }, { weight: 1, arbitrary: fc.constantFrom(REDUCER, 'client/k2', 'combiner/evil') }),
      body: fc.oneof(
        { weight: 5, arbitrary: m('TrainTask') },
        { weight: 2, arbitrary: m('ValidateTask') },
        { weight: 3, arbitrary: m('CancelTask') },
        { weight: 2, arbitrary: m('ClientWelcome') },
        { weight: 2, arbitrary: m('UpdateAck') },
        { weight: 1, arbitrary: fc.constantFrom(...messageTypes).chain((t) => m(t)) },
      ),
      bindTask: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.constant<Command>({ k: 'lost' }) },
  { weight: 1, arbitrary: fc.constant<Command>({ k: 'heartbeat' }) },
  { weight: 1, arbitrary: fc.constant<Command>({ k: 'stop' }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('tick' as const), ms: fc.oneof({ weight: 5, arbitrary: fc.nat({ max: 300 }) }, { weight: 1, arbitrary: fc.constantFrom(2_000, 11_000, 40_000) }) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('discover' as const), ok: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }), combiner: fc.nat({ max: 1 }) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('connect' as const), ok: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }) }) },
  { weight: 6, arbitrary: fc.record({ k: fc.constant('finish' as const), ok: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }), output: outputArb }) },
  { weight: 2, arbitrary: fc.constant<Command>({ k: 'flush' }) },
);

/** Discovery, connection and welcome go through, so the fuzzing starts with a connected client. */
const prelude: Command[] = [
  { k: 'tick', ms: 1_000 },
  { k: 'discover', ok: true, combiner: 0 },
  { k: 'connect', ok: true },
  { k: 'msg', from: '$combiner', body: { type: 'ClientWelcome', combiner: COMBINERS[0]!, heartbeatMs: 1_000 }, bindTask: false },
];

const stats: Record<string, number> = {};
const count = (k: string, n = 1): void => void (stats[k] = (stats[k] ?? 0) + n);

async function runClient(commands: Command[], stops: boolean): Promise<void> {
  const clock = new SimulatedClock();
  const discover = new Gate<{ self: string; reducer: string; preferred: string }, { combiner: string; endpoint: string }>();
  const connect = new Gate<{ combiner: string; endpoint: string }, void>();
  const train = new Gate<TaskIn, TrainOutput>();
  const validate = new Gate<TaskIn, ValidateOutput>();
  const disconnects: string[] = [];
  const logic = clientMachine.provide({
    actors: {
      discover: discover.logic,
      connect: connect.logic,
      train: train.logic,
      validate: validate.logic,
      heartbeat: fromCallback(() => () => undefined),
    },
    actions: { disconnect: (_, p) => void disconnects.push(p.combiner) },
  });
  const actor = createActor(logic, { input: { self: SELF, reducer: REDUCER, seed: 3, numExamples: 7, backoff: { initialMs: 100, maxMs: 1_000 } }, clock });
  let actorError: unknown;
  actor.subscribe({ error: (e) => (actorError = e) });
  const problems: string[] = [];
  /** Tasks the client received from its combiner at the time, by task id. */
  const offered: { from: string; body: Inbound<'TrainTask'> | Inbound<'ValidateTask'> }[] = [];
  const outbox: Outbound[] = [];
  actor.on('outbound', (e: Outbound) => {
    const combiner = actor.getSnapshot().context.combiner;
    if (!combiner || e.to !== combiner) problems.push(`${e.body.type} sent to ${e.to}, the combiner is "${combiner}"`);
    outbox.push(e);
    count(`out:${e.body.type}`);
  });
  actor.start();
  const flush = async (): Promise<void> => {
    for (let i = 0; i < 3; i++) await new Promise<void>((r) => setImmediate(r));
  };
  const live = <I, O>(g: Gate<I, O>): Call<I, O> | undefined => g.calls.find((c) => !c.settled && !c.signal.aborted);
  const checkedCalls = new Set<unknown>();

  for (const cmd of commands) {
    const ctx = actor.getSnapshot().context;
    switch (cmd.k) {
      case 'msg': {
        const from = cmd.from === '$combiner' ? ctx.combiner || COMBINERS[0]! : cmd.from;
        const body = { ...cmd.body } as Message & Record<string, unknown>;
        if (cmd.bindTask && ctx.task && 'taskId' in body) body.taskId = ctx.task.taskId;
        const event = { ...body, from, at: clock.now() } as Inbound;
        if ((body.type === 'TrainTask' || body.type === 'ValidateTask') && from === ctx.combiner) offered.push({ from, body: event as Inbound<'TrainTask'> });
        actor.send(event as never);
        count(`sent:${body.type}${from === ctx.combiner ? '' : ':stranger'}`);
        break;
      }
      case 'lost':
        actor.send({ type: 'COMBINER_LOST', reason: 'fuzz' });
        break;
      case 'heartbeat':
        actor.send({ type: 'HEARTBEAT_DUE' });
        break;
      case 'stop':
        if (stops) actor.send({ type: 'STOP' });
        break;
      case 'tick':
        clock.increment(cmd.ms);
        break;
      case 'discover': {
        const call = live(discover);
        if (!call) break;
        if (cmd.ok) call.resolve({ combiner: COMBINERS[cmd.combiner]!, endpoint: `inproc://${cmd.combiner}` });
        else call.reject(new Error('no combiner'));
        break;
      }
      case 'connect': {
        const call = live(connect);
        if (!call) break;
        if (cmd.ok) call.resolve(undefined);
        else call.reject(new Error('refused'));
        break;
      }
      case 'finish': {
        // the training or validation in flight ends: its answer (or failure) must go out exactly once,
        // to the combiner it came from, unless the run was cancelled (then nothing may go out)
        // cancelled runs (aborted signal) are settled too: their late answer must go nowhere
        const unsettled = <I, O>(g: Gate<I, O>): Call<I, O> | undefined => g.calls.find((c) => !c.settled);
        const call = (unsettled(train) ?? unsettled(validate)) as Call<TaskIn, TrainOutput> | undefined;
        if (!call) break;
        const before = outbox.length;
        const kind = call.input.kind;
        if (cmd.ok) call.resolve(cmd.output);
        else call.reject(new Error('user code failed'));
        await flush();
        const answers = outbox.slice(before).filter((x) => ['TrainResult', 'ValidateResult', 'TaskFailed'].includes(x.body.type));
        if (call.signal.aborted) {
          if (answers.length) problems.push('a cancelled task answered');
          count('finish:after-cancel');
        } else {
          if (answers.length !== 1) problems.push(`a finished ${kind} task answered ${answers.length} times`);
          const a = answers[0];
          if (a) {
            if (a.to !== call.input.combiner) problems.push(`answer to ${a.to}, the task came from ${call.input.combiner}`);
            if ((a.body as { taskId: string }).taskId !== call.input.taskId) problems.push('answer for another task id');
            const expected = cmd.ok ? (kind === 'train' ? 'TrainResult' : 'ValidateResult') : 'TaskFailed';
            if (a.body.type !== expected) problems.push(`answered ${a.body.type}, expected ${expected}`);
            if (a.body.type === 'TrainResult') {
              const b = a.body;
              if (b.updateId !== cmd.output.updateId || !Object.is(b.numExamples, cmd.output.numExamples) || b.sessionId !== call.input.sessionId || b.round !== call.input.round || b.baseModelId !== call.input.modelId) {
                problems.push(`TrainResult does not carry what the task and the training produced: ${JSON.stringify(b)}`);
              }
            }
          }
          count(`finish:${kind}:${cmd.ok}`);
        }
        break;
      }
      case 'flush':
        await flush();
        break;
    }
    await Promise.resolve();
    // every training/validation ever started was offered by the client's combiner of the time
    for (const call of [...train.calls, ...validate.calls]) {
      if (checkedCalls.has(call)) continue;
      checkedCalls.add(call);
      const i = call.input;
      const match = offered.find((t) => t.from === i.combiner && t.body.taskId === i.taskId && t.body.sessionId === i.sessionId && t.body.round === i.round && t.body.modelId === i.modelId && (t.body.type === 'TrainTask') === (i.kind === 'train'));
      if (!match) problems.push(`ran a ${i.kind} task nobody's combiner offered: ${JSON.stringify(i)}`);
      count(`ran:${i.kind}`);
    }
    const status = actor.getSnapshot().status;
    assert.ok(status === 'active' || (status === 'done' && stops), `actor ${status}: ${String(actorError)}`);
    if (problems.length) assert.unreachable(problems.join('; '));
    if (status === 'done') {
      count('stopped');
      break;
    }
  }
  count(`ended-in:${JSON.stringify(actor.getSnapshot().value)}`);
  actor.stop();
}

async function property(name: string, seed: number, numRuns: number, stops: boolean): Promise<void> {
  await fuzzAsync(
    name,
    fuzzOptions(seed, numRuns),
    fc.asyncProperty(fc.array(commandArb, { minLength: 5, maxLength: 100 }), async (commands) => {
      const { crashes } = await catchingCrashes(() => runClient([...prelude, ...commands], stops));
      assert.equal(crashes.map(String), [], 'an error escaped the actor');
      count('runs');
      count('commands', commands.length);
    }),
  );
}

test('client: random tasks, cancellations and acks from anyone never break it; it answers only its combiner, once per finished task', async () => {
  await property('client', 0xc11e, 400, false);
});

test('client: the same with STOP at random moments', async () => {
  await property('client with stops', 0xc11f, 150, true);
});

// BUG (src/actors/client.ts, the heartbeat actor; machines/client.ts takes ClientWelcome.heartbeatMs
// as is): a ClientWelcome with heartbeatMs >= 2^31 (the wire allows up to 2^32-1) reaches
// setInterval, which Node clamps to 1 ms (TimeoutOverflowWarning): the client then sends a Heartbeat
// every millisecond, about a thousand a second, to its combiner for as long as it is connected.
// Expected: the interval bounded (e.g. to [100 ms, 2^31-1 ms]) or the welcome refused; actual: the
// client below sends ~1,000 heartbeats in one second (measured: 1,037).
test('a huge heartbeatMs in ClientWelcome is clamped, not a 1 ms heartbeat (fixed)', async () => {
  const network = new InprocNetwork();
  const combiner = new Node({ name: 'fake-combiner', transport: new InprocTransport(network, { strict: true }) });
  let beats = 0;
  combiner.host('combiner/c1', (e) => {
    if (e.body.type === 'ClientHello') combiner.send('combiner/c1', e.from, makeMessage('ClientWelcome', { combiner: 'combiner/c1', heartbeatMs: 2 ** 32 - 1 }));
    if (e.body.type === 'Heartbeat') beats++;
  });
  await combiner.listen('inproc://fake-combiner');
  const client = await startClient({
    node: new Node({ name: 'k1', transport: new InprocTransport(network, { strict: true }) }),
    name: 'k1',
    code: { numExamples: 1, train: () => Promise.reject(new Error('unused')), validate: () => Promise.reject(new Error('unused')) },
    reducerEndpoint: 'inproc://nowhere',
    combiner: { address: 'combiner/c1', endpoint: 'inproc://fake-combiner' },
  });
  try {
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(client.actor.getSnapshot().matches('connected'));
    assert.ok(beats <= 2, `${beats} heartbeats in half a second`);
  } finally {
    await client.stop();
    await combiner.close();
  }
});

test('statistics', () => {
  const summary = Object.entries(stats)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  console.log(`  fuzz-client cases: ${summary}`);
  assert.ok((stats['finish:train:true'] ?? 0) > 50, summary);
  assert.ok((stats['finish:after-cancel'] ?? 0) > 5, summary);
});

test.run();
