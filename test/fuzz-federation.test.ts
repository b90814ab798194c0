// Federation fuzz (issue 7): "after a fuzzed session, the aggregate equals the one computed from the
// valid updates alone, bit for bit". An in-process federation (reducer, 2 combiners, 4 genuine clients
// with exact toy targets and weights drawn by fast-check) runs sessions while an attacker node — a
// legitimately connected client with its own token on an authenticated, strict federation; an
// unauthenticated one on an open, non-strict federation — joins a combiner, gets selected, and answers
// its tasks (and the reducer) with random and mutated TrainResult / ValidateResult / Heartbeat /
// TaskFailed / UpdateAck / ClientHello / reports, bound to the live round or not, and serves corrupted
// update blobs (wrong hash, NaN and Infinity payloads, wrong layouts, truncated, garbage, missing,
// failing). It also tries to speak as a genuine client.
//
// The expected global model of every round is recomputed with the same FedAvg code (the strategy plan
// the assemblies use) from the genuine updates only, following the order in which things were really
// folded: FedAvg sums weight * update in Float64 and rounds once, so the sum is exact only while the
// products fit 53 bits, and with weights up to 2^32 (uint32, as the wire allows) the last bits depend on
// the order (in practice the final rounding to float32 hides it almost always; the statistics count the
// rounds where folding the same updates in reverse order changes a bit). The combiners' fold order is the order of their accepting UpdateAcks (the ack is emitted in
// the same transition as the fold), and the reducer folds combiner models in the order their reports
// arrived (recorded from the reducer's snapshot when it enters `reducing`). Replaying those orders, the
// global model must equal the expectation bit for bit (Uint32 views), and the accepted updates must be
// exactly the genuine ones.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startFederation, type Federation } from '../src/actors/federation.ts';
import type { TaskCode } from '../src/actors/client.ts';
import type { BlobStore } from '../src/actors/blobs.ts';
import { Node } from '../src/actors/node.ts';
import { planFor } from '../src/actors/strategy.ts';
import { isFedError, type FedError } from '../src/errors.ts';
import { decodeModel, encodeModel } from '../src/model/codec.ts';
import { contentHash } from '../src/model/hash.ts';
import type { Params } from '../src/model/params.ts';
import { makeMessage, validateEnvelope } from '../src/protocol/codec.ts';
import type { Envelope, Message, MessageType } from '../src/protocol/generated.ts';
import { mintToken } from '../src/security/token.ts';
import { InprocTransport } from '../src/transport/inproc.ts';
import { toyLayout } from './helpers/toy-task.ts';
import { catchingCrashes, fc, firstBitDifference, fuzzAsync, fuzzOptions, hex64, messageArb, sameBits, wildDouble, wildString, wireUint32, type Overrides } from './helpers/fuzz-arbs.ts';

const SECRET = 'fuzz-federation-secret-0123456789';
const SIZE = 16;
const LAYOUT = toyLayout(SIZE);
const GENUINE = 4;
const EVIL = 'client/evil';

// ---------------------------------------------------------------------------------------------------
// Genuine clients: their update is their target, their weight what they declare; both set per run.

interface Genuine {
  target: Float32Array;
  weight: number;
}

function genuineTask(state: { current: Genuine }): TaskCode {
  return {
    numExamples: 1,
    async train(model) {
      return { params: { layout: model.layout, data: Float32Array.from(state.current.target) }, numExamples: state.current.weight, metrics: { loss: 0.5 } };
    },
    async validate() {
      return { numExamples: 1, metrics: { mse: 0 } };
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// The attacker's corrupted blobs

const blobKinds = ['nan', 'inf', 'bigger', 'smaller', 'renamed', 'truncated', 'garbage', 'wrong-hash', 'missing', 'failing'] as const;
type BlobKind = (typeof blobKinds)[number];

function corruptBlobs(): { ids: Record<BlobKind, string>; store: BlobStore } {
  const bytes = new Map<string, Uint8Array>();
  const put = (b: Uint8Array): string => {
    const id = contentHash(b);
    bytes.set(id, b);
    return id;
  };
  const model = (layout: Params['layout'], fill: (i: number) => number): Uint8Array => {
    const n = layout.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
    return encodeModel({ layout, data: Float32Array.from({ length: n }, (_, i) => fill(i)) });
  };
  const good = model(LAYOUT, (i) => i / 3);
  const wrongHash = contentHash(new TextEncoder().encode('not these bytes'));
  bytes.set(wrongHash, good); // a perfectly acceptable model, served under a hash it does not have
  const missing = contentHash(new TextEncoder().encode('never served'));
  const failing = contentHash(new TextEncoder().encode('the disk is on fire'));
  const ids: Record<BlobKind, string> = {
    nan: put(model(LAYOUT, (i) => (i === 5 ? NaN : i))),
    inf: put(model(LAYOUT, (i) => (i === 0 ? -Infinity : i))),
    bigger: put(model(toyLayout(SIZE + 1), (i) => i)),
    smaller: put(model(toyLayout(SIZE - 1), (i) => i)),
    renamed: put(model([{ name: 'v', shape: [SIZE] }], (i) => i)),
    truncated: put(good.slice(0, good.length - 3)),
    garbage: put(Uint8Array.from({ length: 97 }, (_, i) => (i * 37) & 0xff)),
    'wrong-hash': wrongHash,
    missing,
    failing,
  };
  const store: BlobStore = {
    get: (hash) => (hash === failing ? Promise.reject(new Error('the disk is on fire')) : bytes.get(hash)),
    put: (b) => put(b),
    delete: () => undefined,
  };
  return { ids, store };
}

// ---------------------------------------------------------------------------------------------------
// Attack plans

/** What an action takes from the task it answers (else the generated random value stays). */
interface Bind {
  taskId: boolean;
  session: boolean;
  round: boolean;
  base: boolean;
}

interface Action {
  to: 'combiner' | 'reducer';
  /** Speak as a genuine client (refused by the link: impersonation). */
  impersonate: boolean;
  body: Message;
  bind: Bind;
  blob: BlobKind;
}

interface Plan {
  /** Sent when the session starts, before any task. */
  injections: Action[];
  /** Per task received (cycled): what the attacker sends before its last word. */
  perTask: Action[][];
  /** Per task (cycled): its last word, which settles its answer for the round. */
  settle: { kind: 'fail' | 'result'; blob: BlobKind; numExamples: number }[];
}

const overrides: Overrides = {
  taskId: fc.oneof(fc.constantFrom('x', ''), wildString),
  sessionId: fc.oneof(fc.constantFrom('fz-0', 'other'), wildString),
  round: fc.oneof(fc.constantFrom(0, 1, 2, 3), wireUint32),
  baseModelId: fc.oneof(hex64, wildString),
  modelId: fc.oneof(hex64, wildString),
  updateId: fc.oneof(hex64, wildString),
  numExamples: fc.oneof(fc.constantFrom(1, 10, 0, 2 ** 32 - 1), wireUint32),
  metrics: fc.dictionary(fc.oneof(fc.constantFrom('loss', 'accuracy'), wildString), wildDouble, { maxKeys: 3 }),
  trainMs: wildDouble,
  totalWeight: wildDouble,
};
const o = { overrides } as const;
const m = <T extends MessageType>(t: T): fc.Arbitrary<Message> => messageArb(t, o) as fc.Arbitrary<Message>;

const actionArb: fc.Arbitrary<Action> = fc.record({
  to: fc.oneof({ weight: 5, arbitrary: fc.constant('combiner' as const) }, { weight: 1, arbitrary: fc.constant('reducer' as const) }),
  impersonate: fc.oneof({ weight: 8, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  body: fc.oneof(
    { weight: 8, arbitrary: m('TrainResult') },
    { weight: 2, arbitrary: m('ValidateResult') },
    { weight: 2, arbitrary: m('Heartbeat') },
    { weight: 2, arbitrary: m('TaskFailed') },
    { weight: 1, arbitrary: m('UpdateAck') },
    { weight: 1, arbitrary: m('ClientHello') },
    { weight: 1, arbitrary: m('RoundReport') },
    { weight: 1, arbitrary: m('CombinerStatus') },
    { weight: 1, arbitrary: m('AssignRequest') },
  ),
  bind: fc.oneof(
    fc.record({ taskId: fc.boolean(), session: fc.boolean(), round: fc.boolean(), base: fc.boolean() }),
    fc.constant({ taskId: true, session: true, round: true, base: true }),
  ),
  blob: fc.constantFrom(...blobKinds),
});

const planArb: fc.Arbitrary<Plan> = fc.record({
  injections: fc.array(actionArb, { maxLength: 8 }),
  perTask: fc.array(fc.array(actionArb, { maxLength: 10 }), { minLength: 1, maxLength: 3 }),
  settle: fc.array(fc.record({ kind: fc.constantFrom('fail' as const, 'result' as const), blob: fc.constantFrom(...blobKinds), numExamples: fc.oneof(fc.constantFrom(1, 2 ** 32 - 1), wireUint32) }), { minLength: 1, maxLength: 3 }),
});

// Genuine data: finite float32 targets of any magnitude, weights anywhere in uint32 (so the fold order
// matters for the last bits).
const f32 = fc.float({ noNaN: true, noDefaultInfinity: true, min: Math.fround(-1e30), max: Math.fround(1e30) });
const genuineArb: fc.Arbitrary<Genuine[]> = fc.array(
  fc.record({
    target: fc.array(f32, { minLength: SIZE, maxLength: SIZE }).map((a) => Float32Array.from(a)),
    weight: fc.oneof(fc.integer({ min: 1, max: 1_000 }), fc.integer({ min: 1, max: 2 ** 32 - 1 })),
  }),
  { minLength: GENUINE, maxLength: GENUINE },
);

// ---------------------------------------------------------------------------------------------------
// The rig: one federation per mode, one session per property run

interface Rig {
  fed: Federation;
  attacker: Node;
  state: { current: Genuine }[];
  plan: Plan;
  /** accepted acks per combiner address and `${session}#${round}`, in order */
  accepted: Map<string, string[]>;
  /** combiner reports by `${combiner}|${session}#${round}` */
  reports: Map<string, { totalWeight: number; status: string; updates: number }>;
  /** the reducer's fold order by `${session}#${round}` */
  reduceOrder: Map<string, string[]>;
  rejected: FedError[];
  stats: Record<string, number>;
  /** The attacker (re)joins its combiner. */
  rehello(): void;
  /** The attacker sends the plan's injections (bound to the last task it saw, where asked). */
  inject(): void;
  close(): Promise<void>;
}

const count = (stats: Record<string, number>, k: string, n = 1): void => void (stats[k] = (stats[k] ?? 0) + n);

async function rig(mode: 'auth' | 'open'): Promise<Rig> {
  const cleanup: (() => Promise<void>)[] = [];
  try {
    return await setup(mode, cleanup);
  } catch (e) {
    for (const c of cleanup.reverse()) await c().catch(() => undefined);
    throw e;
  }
}

async function setup(mode: 'auth' | 'open', cleanup: (() => Promise<void>)[]): Promise<Rig> {
  const state = Array.from({ length: GENUINE }, () => ({ current: { target: new Float32Array(SIZE), weight: 1 } }));
  const strict = mode === 'auth';
  const fed = await startFederation({ combiners: 2, clients: state.map((s) => genuineTask(s)), strict, ...(mode === 'auth' ? { auth: { secret: SECRET } } : {}) });
  cleanup.push(() => fed.close());
  await fed.ready();
  await fed.reducer.seed({ layout: LAYOUT, data: new Float32Array(SIZE) });
  const stats: Record<string, number> = {};
  const rejected: FedError[] = [];
  for (const n of [fed.reducer.node, ...fed.combiners.map((c) => c.node)]) n.on('rejected', (e) => rejected.push(e));

  const accepted = new Map<string, string[]>();
  const reports = new Map<string, { totalWeight: number; status: string; updates: number }>();
  for (const c of fed.combiners) {
    c.actor.on('outbound', (e) => {
      if (e.body.type === 'UpdateAck' && e.body.accepted) {
        const [session, round, task] = e.body.taskId.split(':');
        if (task !== 'train') return;
        const key = `${c.address}|${session}#${round}`;
        accepted.set(key, [...(accepted.get(key) ?? []), e.to]);
      }
      if (e.body.type === 'RoundReport') reports.set(`${c.address}|${e.body.sessionId}#${e.body.round}`, { totalWeight: e.body.totalWeight, status: e.body.status, updates: e.body.updates });
    });
  }
  const reduceOrder = new Map<string, string[]>();
  fed.reducer.actor.subscribe((snap) => {
    const cur = snap.context.current;
    if (!snap.matches({ running: 'reducing' }) || !cur || !snap.context.session) return;
    const key = `${snap.context.session.sessionId}#${cur.round}`;
    if (reduceOrder.has(key)) return;
    // exactly what the reducer hands to reduce (machines/reducer.ts okReports): insertion order
    reduceOrder.set(key, Object.entries(cur.reports).filter(([name, x]) => x.status === 'ok' && x.modelId !== '' && !cur.gone.includes(name)).map(([name]) => name));
  });

  // the attacker
  const network = (fed.reducer.node.transport as InprocTransport).network;
  const blobs = corruptBlobs();
  const attacker = new Node({
    name: 'evil-node',
    transport: new InprocTransport(network, { strict }),
    blobs: blobs.store,
    ...(mode === 'auth' ? { token: mintToken(SECRET, { sub: 'evil', role: 'client' }) } : {}),
  });
  cleanup.push(() => attacker.close());
  const r: Rig = {
    fed,
    attacker,
    state,
    plan: { injections: [], perTask: [[]], settle: [{ kind: 'fail', blob: 'nan', numExamples: 1 }] },
    accepted,
    reports,
    reduceOrder,
    rejected,
    stats,
    rehello: () => undefined,
    inject: () => undefined,
    close: async () => undefined,
  };
  let tasks = 0;
  let lastTask: Extract<Message, { type: 'TrainTask' }> | undefined;
  const target = fed.combiners[0]!;

  const send = (a: Action, task: Extract<Message, { type: 'TrainTask' }> | undefined): void => {
    const body = { ...a.body } as Message & Record<string, unknown>;
    if (task) {
      if (a.bind.taskId && 'taskId' in body) body.taskId = task.taskId;
      if (a.bind.session && 'sessionId' in body) body.sessionId = task.sessionId;
      if (a.bind.round && 'round' in body) body.round = task.round;
      if (a.bind.base && body.type === 'TrainResult') body.baseModelId = task.modelId;
      if (a.bind.base && body.type === 'ValidateResult') body.modelId = task.modelId;
    }
    if (body.type === 'TrainResult') body.updateId = blobs.ids[a.blob];
    const from = a.impersonate ? 'client/k1' : EVIL;
    const to = a.to === 'combiner' ? target.address : 'reducer/main';
    const env: Envelope = { from, to, body };
    // On a strict link the attacker's own encoder refuses what the wire cannot carry (and a refused
    // frame would end the attacker's link; see fuzz-link): such messages are not sent.
    if (strict) {
      try {
        validateEnvelope(env);
      } catch {
        count(stats, 'attacker:unencodable-skipped');
        return;
      }
    }
    attacker.send(from, to, body);
    count(stats, `attacker:sent:${body.type}${a.impersonate ? ':as-k1' : ''}`);
  };

  attacker.host(EVIL, (env) => {
    count(stats, `attacker:got:${env.body.type}${env.body.type === 'UpdateAck' ? `:${env.body.accepted ? 'accepted' : env.body.reason}` : ''}`);
    if (env.body.type === 'UpdateAck' && env.body.accepted) count(stats, 'ATTACKER-ACCEPTED');
    if (env.body.type !== 'TrainTask') return;
    const task = env.body;
    lastTask = task;
    const i = tasks++;
    const actions = r.plan.perTask[i % r.plan.perTask.length]!;
    const last = r.plan.settle[i % r.plan.settle.length]!;
    void (async () => {
      for (const a of actions) {
        send(a, task);
        await new Promise((res) => setTimeout(res, 0));
      }
      if (last.kind === 'fail') attacker.send(EVIL, target.address, makeMessage('TaskFailed', { taskId: task.taskId, reason: 'evil' }));
      else {
        attacker.send(
          EVIL,
          target.address,
          makeMessage('TrainResult', { taskId: task.taskId, sessionId: task.sessionId, round: task.round, baseModelId: task.modelId, updateId: blobs.ids[last.blob], numExamples: last.numExamples, metrics: { loss: NaN } }),
        );
      }
      count(stats, `attacker:settled:${last.kind === 'fail' ? 'fail' : last.blob}`);
    })();
  });
  await attacker.dial(target.endpoint);
  await attacker.dial(fed.reducer.endpoint);
  // announcing a genuine client's address after the hello: refused (impersonation), the link stays
  if (mode === 'auth') attacker.host('client/k1', () => undefined);
  r.rehello = () => void attacker.send(EVIL, target.address, makeMessage('ClientHello', { client: EVIL, numExamples: 2 ** 32 - 1 }));
  r.inject = () => {
    for (const a of r.plan.injections) send(a, lastTask);
  };
  r.rehello();

  // in the authenticated federation, an unauthenticated node gets nowhere
  if (mode === 'auth') {
    const anon = new Node({ name: 'anon', transport: new InprocTransport(network, { strict }) });
    anon.host('client/anon', () => undefined);
    for (const endpoint of [target.endpoint, fed.reducer.endpoint]) {
      await anon.dial(endpoint).then(
        () => assert.unreachable('an unauthenticated node got a link'),
        (e: unknown) => {
          assert.ok(isFedError(e), String(e));
          count(stats, `anon-refused:${(e as FedError).code}`);
        },
      );
    }
    await anon.close();
  }

  r.close = async () => {
    await attacker.close();
    await fed.close();
  };
  return r;
}

// ---------------------------------------------------------------------------------------------------
// Expected aggregate

function expectedGlobal(r: Rig, session: string, round: number, previous: Float32Array, reverse = false): Float32Array {
  const plan = planFor('fedavg');
  const key = `${session}#${round}`;
  const genuineBy = new Map(r.fed.clients.map((c, i) => [c.address, r.state[i]!.current]));
  const order = r.reduceOrder.get(key);
  assert.ok(order && order.length > 0, `no reduce order recorded for ${key}`);
  const red = plan.reducer.begin({ size: SIZE, expected: order.length });
  for (const combiner of reverse ? [...order].reverse() : order) {
    const accepted = r.accepted.get(`${combiner}|${key}`) ?? [];
    const clients = reverse ? [...accepted].reverse() : accepted;
    const rep = r.reports.get(`${combiner}|${key}`);
    assert.ok(rep && rep.status === 'ok', `${combiner} reported ${rep?.status} for ${key}`);
    assert.is(rep.updates, clients.length, `${combiner}: report vs acks`);
    const acc = plan.combiner.begin({ size: SIZE, expected: clients.length });
    let weight = 0;
    for (const c of clients) {
      const g = genuineBy.get(c);
      assert.ok(g, `${combiner} accepted an update from ${c}, which is not a genuine client`);
      acc.add(Float32Array.from(g.target), g.weight);
      weight += g.weight;
    }
    assert.is(rep.totalWeight, weight, `${combiner}: total weight`);
    // the combiner model is stored as float32 (encodeModel), exactly what finish() returns
    red.add(acc.finish(), rep.totalWeight);
  }
  return plan.server.step(previous, red.finish(), undefined).params;
}

let sessionNo = 0;

async function runSession(r: Rig, genuine: Genuine[], plan: Plan): Promise<void> {
  genuine.forEach((g, i) => (r.state[i]!.current = g));
  r.plan = plan;
  r.rehello();
  await new Promise((res) => setTimeout(res, 5));
  const sessionId = `fz-${++sessionNo}`;
  const before = r.fed.reducer.actor.getSnapshot().context.globalModelId;
  r.fed.reducer.start({ sessionId, rounds: 2, roundTimeoutMs: 3_000, quorumTimeoutMs: 10_000 });
  r.inject();
  const summary = await r.fed.reducer.finished();
  assert.is(summary.status, 'done', summary.failure);
  let previous = decodeModel((await r.fed.reducer.store.getBlob(before))!, { copy: true }).data;
  for (const round of summary.rounds) {
    assert.is(round.status, 'ok', `round ${round.round}: ${round.reason}`);
    assert.is(round.updates, GENUINE, `round ${round.round}: ${round.updates} updates accepted, rejected ${JSON.stringify(round.rejected)}`);
    const got = decodeModel((await r.fed.reducer.store.getBlob(round.modelId))!, { copy: true }).data;
    const want = expectedGlobal(r, sessionId, round.round, previous);
    assert.ok(sameBits(got, want), `round ${round.round}: global model differs from FedAvg over the genuine updates at ${firstBitDifference(got, want)}`);
    // every genuine client was folded exactly once
    const folded = r.fed.combiners.flatMap((c) => r.accepted.get(`${c.address}|${sessionId}#${round.round}`) ?? []).sort();
    assert.equal(folded, r.fed.clients.map((c) => c.address).sort());
    for (const [reason, n] of Object.entries(round.rejected)) count(r.stats, `rejected:${reason}`, n);
    count(r.stats, 'rounds-bit-exact');
    // how often the replayed order mattered: the same updates folded in reverse order differ in some bit
    if (!sameBits(got, expectedGlobal(r, sessionId, round.round, previous, true))) count(r.stats, 'rounds-where-fold-order-changes-bits');
    previous = got;
  }
  for (const c of r.fed.combiners) assert.is(c.actor.getSnapshot().status, 'active');
  assert.is(r.fed.reducer.actor.getSnapshot().status, 'active');
}

async function property(mode: 'auth' | 'open', seed: number, numRuns: number): Promise<Record<string, number>> {
  const r = await rig(mode);
  await new Promise((res) => setTimeout(res, 20));
  try {
    await fuzzAsync(
      `federation ${mode}`,
      fuzzOptions(seed, numRuns),
      fc.asyncProperty(genuineArb, planArb, async (genuine, plan) => {
        const { crashes } = await catchingCrashes(() => runSession(r, genuine, plan));
        assert.equal(crashes.map(String), [], 'the process would have crashed');
        count(r.stats, 'sessions');
      }),
    );
    for (const e of r.rejected) assert.ok(isFedError(e), String(e));
    for (const e of r.rejected) count(r.stats, `node-rejected:${e.code}`);
    assert.not.ok(r.stats['ATTACKER-ACCEPTED'], 'an attacker update was accepted');
    return r.stats;
  } finally {
    await r.close();
  }
}

function show(name: string, stats: Record<string, number>): string {
  const summary = Object.entries(stats)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  console.log(`  ${name}: ${summary}`);
  return summary;
}

test('authenticated strict federation with a token-holding attacker: the global model is FedAvg of the genuine updates, bit for bit', async () => {
  const stats = await property('auth', 0xfed1, 40);
  const summary = show('fuzz-federation auth', stats);
  assert.ok((stats['rounds-bit-exact'] ?? 0) >= 80, summary);
  assert.ok((stats['node-rejected:impersonation'] ?? 0) > 0 && (stats['anon-refused:closed'] ?? stats['anon-refused:unauthenticated'] ?? 0) > 0, summary);
});

test('open non-strict federation with an unauthenticated attacker: the same', async () => {
  const stats = await property('open', 0xfed2, 40);
  const summary = show('fuzz-federation open', stats);
  assert.ok((stats['rounds-bit-exact'] ?? 0) >= 80, summary);
});

test.run();
