// Role inbound fuzz for the reducer statechart (issue 7): random sequences of membership messages,
// discovery requests, round and validation reports (bound to the running round or not, from
// participants or anyone, with NaN/Infinity/negative weights and metrics, random statuses and model
// ids), interleaved with seeds, session starts and stops, lost combiners, clock ticks and the fake IO
// (reduce, commit, evaluate) settling either way, in any order.
//
// Checked after every step: the actor never errors; only a participant's first report for the current
// round is recorded; reduce only ever sees ok reports with a model from participants of that round,
// exactly as they were sent; the global model only changes to a seed or a reduced model that was
// committed; committed rounds equal the ok rounds of the history and never exceed the plan; rounds are
// numbered upwards; StartRound goes only to combiners that introduced themselves; discovery only
// hands out connected combiners, and only to clients.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createActor, SimulatedClock } from 'xstate';
import { defaultSessionConfig, reducerMachine, type CombinerModel, type SessionConfig } from '../machines/reducer.ts';
import type { Inbound, Outbound } from '../machines/common.ts';
import type { Message, MessageType, RoundReport } from '../src/protocol/generated.ts';
import { Gate } from './helpers/machine-harness.ts';
import { catchingCrashes, fc, fuzzAsync, fuzzOptions, messageArb, messageTypes, wildDouble, wildString, wireUint32, type Overrides } from './helpers/fuzz-arbs.ts';

const COMBINERS = ['combiner/c1', 'combiner/c2', 'combiner/c3'];
const CLIENTS = ['client/a', 'client/b', 'client/c', 'client/d'];
const SEEDS = ['m-seed-1', 'm-seed-2'];

type ReduceIn = { sessionId: string; round: number; globalModelId: string; reports: CombinerModel[] };
type CommitIn = { session: SessionConfig; round: number; modelId: string; parentModelId: string; metrics: Record<string, number> };

type Command =
  | { k: 'msg'; from: string; body: Message; bindSession: boolean; bindRound: boolean }
  /** A participant's well-formed ok report for the current round (so rounds do get reduced). */
  | { k: 'good-report'; combiner: number; totalWeight: number }
  | { k: 'seed'; modelId: string }
  | { k: 'start'; session: Partial<SessionConfig> }
  | { k: 'stop' }
  | { k: 'gone'; combiner: string }
  | { k: 'tick'; ms: number }
  /** Settles the IO call in flight (reduce, commit or evaluate; at most one is live at a time). */
  | { k: 'settle'; ok: boolean; metrics: Record<string, number> }
  | { k: 'flush' };

const overrides: Overrides = {
  sessionId: fc.oneof({ weight: 5, arbitrary: fc.constantFrom('sess-1', 'sess-2') }, { weight: 1, arbitrary: wildString }),
  round: fc.oneof({ weight: 5, arbitrary: fc.constantFrom(1, 2, 3) }, { weight: 1, arbitrary: wireUint32 }),
  status: fc.oneof({ weight: 6, arbitrary: fc.constantFrom('ok', 'ok', 'failed', 'cancelled') }, { weight: 1, arbitrary: wildString }),
  modelId: fc.oneof({ weight: 6, arbitrary: fc.constantFrom('cm-1', 'cm-2', '') }, { weight: 1, arbitrary: wildString }),
  totalWeight: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(10, 1, 0) }, { weight: 2, arbitrary: wildDouble }),
  clients: fc.array(fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...CLIENTS) }, { weight: 1, arbitrary: wildString }), { maxLength: 5 }),
  endpoint: fc.constantFrom('inproc://c', 'grpc://h:1', ''),
  maxClients: fc.oneof(fc.constantFrom(0, 1, 2), wireUint32),
  preferredCombiner: fc.oneof(fc.constantFrom(...COMBINERS, ''), wildString),
  metrics: fc.dictionary(fc.oneof(fc.constantFrom('loss', 'accuracy'), wildString), wildDouble, { maxKeys: 3 }),
};

const o = { overrides } as const;
const m = <T extends MessageType>(t: T): fc.Arbitrary<Message> => messageArb(t, o) as fc.Arbitrary<Message>;

const sessionArb: fc.Arbitrary<Partial<SessionConfig>> = fc.record({
  sessionId: fc.constantFrom('sess-1', 'sess-2'),
  rounds: fc.integer({ min: 1, max: 4 }),
  roundTimeoutMs: fc.constantFrom(100, 1_000, 10_000),
  minCombiners: fc.integer({ min: 1, max: 2 }),
  minClients: fc.integer({ min: 1, max: 3 }),
  validate: fc.boolean(),
  quorumTimeoutMs: fc.constantFrom(0, 500, 30_000),
  maxConsecutiveFailures: fc.integer({ min: 1, max: 3 }),
});

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.record({
      k: fc.constant('msg' as const),
      from: fc.oneof({ weight: 8, arbitrary: fc.constantFrom(...COMBINERS) }, { weight: 2, arbitrary: fc.constantFrom(...CLIENTS) }, { weight: 1, arbitrary: fc.constantFrom('reducer/main', 'admin/x', 'combiner/evil') }),
      body: fc.oneof(
        { weight: 5, arbitrary: m('RoundReport') },
        { weight: 2, arbitrary: m('ValidationReport') },
        { weight: 3, arbitrary: m('CombinerStatus') },
        { weight: 2, arbitrary: m('CombinerHello') },
        { weight: 2, arbitrary: m('AssignRequest') },
        { weight: 1, arbitrary: fc.constantFrom(...messageTypes).chain((t) => m(t)) },
      ),
      bindSession: fc.boolean(),
      bindRound: fc.boolean(),
    }),
  },
  { weight: 6, arbitrary: fc.record({ k: fc.constant('good-report' as const), combiner: fc.nat({ max: 3 }), totalWeight: fc.oneof(fc.constantFrom(1, 10, 1_000), wireUint32) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('seed' as const), modelId: fc.constantFrom(...SEEDS) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('start' as const), session: sessionArb }) },
  { weight: 1, arbitrary: fc.constant<Command>({ k: 'stop' }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('gone' as const), combiner: fc.constantFrom(...COMBINERS) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('tick' as const), ms: fc.oneof({ weight: 6, arbitrary: fc.nat({ max: 200 }) }, { weight: 1, arbitrary: fc.constantFrom(1_500, 15_000, 60_000) }) }) },
  {
    weight: 10,
    arbitrary: fc.record({
      k: fc.constant('settle' as const),
      ok: fc.oneof({ weight: 5, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
      metrics: fc.dictionary(fc.constantFrom('acc', 'loss'), wildDouble, { maxKeys: 2 }),
    }),
  },
  { weight: 2, arbitrary: fc.constant<Command>({ k: 'flush' }) },
);

/** Two combiners with clients, a seed and a session: the fuzzing starts with a round in flight. */
function prelude(session: Partial<SessionConfig>): Command[] {
  const msg = (from: string, body: Message): Command => ({ k: 'msg', from, body, bindSession: false, bindRound: false });
  return [
    msg(COMBINERS[0]!, { type: 'CombinerHello', name: COMBINERS[0]!, endpoint: 'inproc://c1', maxClients: 0 }),
    msg(COMBINERS[0]!, { type: 'CombinerStatus', clients: [CLIENTS[0]!, CLIENTS[1]!], state: 'idle' }),
    msg(COMBINERS[1]!, { type: 'CombinerHello', name: COMBINERS[1]!, endpoint: 'inproc://c2', maxClients: 0 }),
    msg(COMBINERS[1]!, { type: 'CombinerStatus', clients: [CLIENTS[2]!], state: 'idle' }),
    { k: 'seed', modelId: SEEDS[0]! },
    { k: 'start', session },
  ];
}

const stats: Record<string, number> = {};
const count = (k: string, n = 1): void => void (stats[k] = (stats[k] ?? 0) + n);

async function runReducer(commands: Command[]): Promise<void> {
  const clock = new SimulatedClock();
  let now = 1_000;
  const reduce = new Gate<ReduceIn, { modelId: string }>();
  const commit = new Gate<CommitIn, void>();
  const evaluate = new Gate<{ modelId: string; round: number }, Record<string, number>>();
  const logic = reducerMachine.provide({ actors: { reduce: reduce.logic, commit: commit.logic, evaluate: evaluate.logic } });
  const actor = createActor(logic, { input: {}, clock });
  let actorError: unknown;
  actor.subscribe({ error: (e) => (actorError = e) });
  const problems: string[] = [];
  const introduced = new Set<string>(); // combiners that sent a CombinerHello
  const sentReports: Inbound<'RoundReport'>[] = [];
  const seeds = new Set<string>();
  const reduced = new Map<string, number>(); // reduce outputs -> round
  const committed = new Set<string>();
  let reduceNo = 0;
  actor.on('outbound', (e: Outbound) => {
    const ctx = actor.getSnapshot().context;
    if (e.body.type === 'StartRound' && !introduced.has(e.to)) problems.push(`StartRound to ${e.to}, which never introduced itself`);
    if (e.body.type === 'AssignResponse') {
      if (!e.to.startsWith('client/')) problems.push(`AssignResponse to ${e.to}`);
      if (e.body.status === 'assigned' && !ctx.combiners[e.body.combiner]?.connected) problems.push(`assigned ${e.body.combiner}, which is not connected`);
      count(`assign:${e.body.status}`);
    }
    count(`out:${e.body.type}`);
  });
  actor.start();
  const flush = async (): Promise<void> => {
    for (let i = 0; i < 3; i++) await new Promise<void>((r) => setImmediate(r));
  };

  let lastGlobal = actor.getSnapshot().context.globalModelId;
  let lastRoundNo = 0;
  const check = (): void => {
    const snap = actor.getSnapshot();
    assert.is(snap.status, 'active', `actor ${snap.status}: ${String(actorError)}`);
    const c = snap.context;
    if (c.globalModelId !== lastGlobal) {
      if (!seeds.has(c.globalModelId) && !committed.has(c.globalModelId)) problems.push(`global model became ${c.globalModelId}, neither a seed nor a committed model`);
      lastGlobal = c.globalModelId;
      count(committed.has(c.globalModelId) ? 'global:committed-model' : 'global:seed');
    }
    // a new session restarts the numbering (with an empty history); otherwise it only goes up
    if (c.roundNo < lastRoundNo && c.history.length) problems.push(`round number went down from ${lastRoundNo} to ${c.roundNo}`);
    lastRoundNo = c.roundNo;
    const ok = c.history.filter((h) => h.status === 'ok').length;
    if (c.committed !== ok) problems.push(`committed ${c.committed}, ok rounds in history ${ok}`);
    if (c.session && c.committed > c.session.rounds) problems.push(`committed ${c.committed} of ${c.session.rounds} planned rounds`);
    for (let i = 1; i < c.history.length; i++) if (c.history[i]!.round <= c.history[i - 1]!.round) problems.push('history rounds not increasing');
    const r = c.current;
    if (r) for (const from of Object.keys(r.reports)) if (!r.participants.includes(from)) problems.push(`recorded a report from non-participant ${from}`);
    if (problems.length) assert.unreachable(problems.join('; '));
  };

  for (const command of commands) {
    let cmd: Exclude<Command, { k: 'good-report' }>;
    if (command.k !== 'good-report') cmd = command;
    else {
      const ctx = actor.getSnapshot().context;
      const who = ctx.current?.participants[command.combiner % Math.max(1, ctx.current.participants.length)] ?? COMBINERS[0]!;
      const body: RoundReport = {
        sessionId: ctx.session?.sessionId ?? 'sess-1',
        round: ctx.current?.round ?? 1,
        status: 'ok',
        reason: '',
        modelId: `cm-${who}`,
        totalWeight: command.totalWeight,
        updates: 1,
        selected: 1,
        rejected: [],
        collectMs: 1,
        aggregateMs: 1,
        metrics: { loss: 0.5 },
      };
      cmd = { k: 'msg', from: who, body: { type: 'RoundReport', ...body }, bindSession: false, bindRound: false };
    }
    switch (cmd.k) {
      case 'msg': {
        const ctx = actor.getSnapshot().context;
        const body = { ...cmd.body } as Message & Record<string, unknown>;
        if (cmd.bindSession && ctx.session && 'sessionId' in body) body.sessionId = ctx.session.sessionId;
        if (cmd.bindRound && ctx.current && 'round' in body) body.round = ctx.current.round;
        const event = { ...body, from: cmd.from, at: now } as Inbound;
        if (body.type === 'CombinerHello' && cmd.from.startsWith('combiner/')) introduced.add(cmd.from);
        const before = ctx.current ? { ...ctx.current.reports } : undefined;
        actor.send(event as never);
        if (body.type === 'RoundReport') {
          sentReports.push(event as Inbound<'RoundReport'>);
          const after = actor.getSnapshot().context.current;
          const recorded = !!after && !!before && !before[cmd.from] && !!after.reports[cmd.from];
          if (recorded) {
            const first = before && ctx.current && ctx.current.participants.includes(cmd.from) && body.sessionId === ctx.session?.sessionId && body.round === ctx.current.round;
            if (!first) problems.push(`recorded a report that is not a participant's first for the round: ${JSON.stringify(body)}`);
          }
          count(recorded ? 'report:recorded' : 'report:ignored');
        }
        count(`sent:${body.type}`);
        break;
      }
      case 'seed':
        seeds.add(cmd.modelId);
        actor.send({ type: 'SEED', modelId: cmd.modelId });
        break;
      case 'start':
        actor.send({ type: 'START', session: { ...defaultSessionConfig(cmd.session.sessionId ?? 'sess-1'), ...cmd.session } });
        break;
      case 'stop':
        actor.send({ type: 'STOP', reason: 'fuzz' });
        break;
      case 'gone':
        actor.send({ type: 'COMBINER_GONE', combiner: cmd.combiner });
        break;
      case 'tick':
        now += cmd.ms;
        clock.increment(cmd.ms);
        actor.send({ type: 'TICK', now });
        break;
      case 'settle': {
        const live = <I, O>(g: Gate<I, O>) => g.calls.find((c) => !c.settled && !c.signal.aborted);
        const which = live(reduce) ? 'reduce' : live(commit) ? 'commit' : live(evaluate) ? 'evaluate' : undefined;
        const call = live(reduce) ?? live(commit) ?? live(evaluate);
        if (!call || !which) break;
        if (which === 'reduce') {
          const input = call.input as ReduceIn;
          const ctx = actor.getSnapshot().context;
          // reduce sees only ok reports with a model, from participants of this round, as they were sent
          for (const rep of input.reports) {
            if (rep.status !== 'ok' || rep.modelId === '') problems.push(`reduce got a ${rep.status} report with model "${rep.modelId}"`);
            if (!ctx.current?.participants.includes(rep.combiner)) problems.push(`reduce got a report from non-participant ${rep.combiner}`);
            if (rep.sessionId !== ctx.session?.sessionId || rep.round !== input.round) problems.push('reduce got a report for another round');
            const sent = sentReports.find((s) => s.from === rep.combiner && s.sessionId === rep.sessionId && s.round === rep.round && s.modelId === rep.modelId && Object.is(s.totalWeight, rep.totalWeight));
            if (!sent) problems.push(`reduce got a report nobody sent: ${JSON.stringify(rep)}`);
          }
          count(`reduce:${input.reports.length}-models`);
        }
        if (!cmd.ok) call.reject(new Error('fuzz: io failed'));
        else if (which === 'reduce') {
          const id = `g-${++reduceNo}`;
          reduced.set(id, (call.input as ReduceIn).round);
          (call as (typeof reduce.calls)[number]).resolve({ modelId: id });
        } else if (which === 'commit') {
          committed.add((call.input as CommitIn).modelId);
          if (!reduced.has((call.input as CommitIn).modelId)) problems.push('commit of a model reduce never produced');
          (call as (typeof commit.calls)[number]).resolve(undefined);
        } else (call as (typeof evaluate.calls)[number]).resolve(cmd.metrics);
        count(`settle:${which}:${cmd.ok}`);
        await flush();
        break;
      }
      case 'flush':
        await flush();
        break;
    }
    check();
  }
  // wind down: let every call succeed and every deadline pass, checking all along
  for (let i = 0; i < 12; i++) {
    const call = reduce.calls.find((c) => !c.settled && !c.signal.aborted);
    if (call) {
      const id = `g-${++reduceNo}`;
      reduced.set(id, call.input.round);
      call.resolve({ modelId: id });
    }
    const c2 = commit.calls.find((c) => !c.settled && !c.signal.aborted);
    if (c2) {
      committed.add(c2.input.modelId);
      c2.resolve(undefined);
    }
    evaluate.calls.find((c) => !c.settled && !c.signal.aborted)?.resolve({ acc: 1 });
    await flush();
    now += 70_000;
    clock.increment(70_000);
    actor.send({ type: 'TICK', now });
    await flush();
    check();
  }
  const snap = actor.getSnapshot();
  count(`ended-in:${typeof snap.value === 'string' ? snap.value : Object.keys(snap.value)[0]}`);
  count('rounds-closed', snap.context.history.length);
  actor.stop();
}

test('reducer: random reports, membership and discovery never break it, and only participants\' ok models are reduced', async () => {
  await fuzzAsync(
    'reducer',
    fuzzOptions(0x4ed0, 400),
    fc.asyncProperty(sessionArb, fc.array(commandArb, { minLength: 5, maxLength: 120 }), async (session, commands) => {
      const { crashes } = await catchingCrashes(() => runReducer([...prelude(session), ...commands]));
      assert.equal(crashes.map(String), [], 'an error escaped the actor');
      count('runs');
      count('commands', commands.length);
    }),
  );
});

// BUG (src/api/session-config.ts has no upper bound for quorumTimeoutMs; machines/reducer.ts uses it
// as an XState delay): a session started with quorumTimeoutMs >= 2^31 (e.g. "wait up to 30 days for
// the federation to assemble": 2,592,000,000 ms) gets a timer Node clamps to 1 ms (TimeoutOverflowWarning):
// without an immediate quorum the session fails at once with "no quorum of combiners and clients".
// Expected: the session waits (the delay capped to what timers support, or the value refused by the
// session config with a 'config' error); actual: 'failed' within milliseconds. roundTimeoutMs is capped
// at 7 days by the session config, so only quorumTimeoutMs is reachable through the REST API.
test('a quorum timeout of 2^31 ms or more is capped, not fired at once (fixed)', async () => {
  const actor = createActor(reducerMachine, { input: {} });
  actor.start();
  actor.send({ type: 'SEED', modelId: 'm' });
  actor.send({ type: 'START', session: { ...defaultSessionConfig('long-wait'), quorumTimeoutMs: 2_592_000_000 } });
  await new Promise((r) => setTimeout(r, 100));
  const state = actor.getSnapshot();
  actor.stop();
  assert.ok(state.matches('running'), `after 100 ms the session is ${JSON.stringify(state.value)}: ${state.context.failure}`);
});

test('statistics', () => {
  const summary = Object.entries(stats)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  console.log(`  fuzz-reducer cases: ${summary}`);
  assert.ok((stats['report:recorded'] ?? 0) > 50, summary);
  assert.ok((stats['global:committed-model'] ?? 0) > 50, summary);
});

test.run();
