// The live inspection stream (/api/inspect over WebSocket) and the Prometheus metrics (/metrics) over
// a real in-process federation that has one client sending non-finite updates.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { register as globalRegistry } from 'prom-client';
import WebSocket from 'ws';
import { startFederation, type Federation } from '../src/actors/federation.ts';
import { Inspector, summarizeEvent } from '../src/api/inspect.ts';
import { graphOf } from '../src/api/machine-graph.ts';
import { reducerMetrics } from '../src/api/metrics.ts';
import { mountReducerApi, type ReducerApi } from '../src/api/reducer-api.ts';
import { ApiServer } from '../src/api/server.ts';
import { toyLayout, toyTask } from './helpers/toy-task.ts';

const SIZE = 4096;
let fed: Federation;
let api: ApiServer;
let mounted: ReducerApi;
let inspector: Inspector;
let base = '';

test.before(async () => {
  inspector = new Inspector({ maxEvents: 40 });
  // Distinct targets, so whichever way discovery splits the clients the two combiner models differ.
  const targets = [1, 2, 5, 4].map((k) => Float32Array.from({ length: SIZE }, () => k));
  fed = await startFederation({
    combiners: 2,
    clients: targets.map((t, i) => toyTask({ target: t, numExamples: 10, delayMs: 30, corrupt: i === 3 ? (p) => ({ ...p, data: p.data.map(() => NaN) }) : undefined })),
    inspect: (address) => inspector.observer(address),
  });
  await fed.ready();
  api = new ApiServer();
  mounted = mountReducerApi(api, fed.reducer, { inspector });
  base = await api.listen(0);
});

test.after(async () => {
  mounted.close();
  inspector.close();
  await api.close();
  await fed.close();
});

interface Conn {
  ws: WebSocket;
  messages: any[];
  sizes: number[];
  next(pred: (m: any) => boolean, ms?: number): Promise<any>;
}

async function connect(query = ''): Promise<Conn> {
  const ws = new WebSocket(`${base.replace('http', 'ws')}/api/inspect${query}`);
  const messages: any[] = [];
  const sizes: number[] = [];
  const waiters: Array<{ pred: (m: any) => boolean; resolve: (m: any) => void; from: number }> = [];
  ws.on('message', (data) => {
    const text = String(data);
    sizes.push(Buffer.byteLength(text));
    const m = JSON.parse(text);
    messages.push(m);
    for (const w of [...waiters]) if (w.pred(m)) (waiters.splice(waiters.indexOf(w), 1), w.resolve(m));
  });
  await new Promise((resolve, reject) => (ws.once('open', resolve), ws.once('error', reject)));
  return {
    ws,
    messages,
    sizes,
    next: (pred, ms = 10_000) => {
      const seen = messages.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no matching inspection message')), ms);
        waiters.push({ pred, from: messages.length, resolve: (m) => (clearTimeout(t), resolve(m)) });
      });
    },
  };
}

test('the inspect option follows the reducer, every combiner and every client from their first state', () => {
  const actors = inspector.actors().map((a) => [a.address, a.state]);
  assert.equal(actors, [
    ['client/k1', 'connected.ready'],
    ['client/k2', 'connected.ready'],
    ['client/k3', 'connected.ready'],
    ['client/k4', 'connected.ready'],
    ['combiner/c1', 'idle'],
    ['combiner/c2', 'idle'],
    ['reducer/main', 'idle'],
  ]);
  const client = inspector.actor('client/k1')!;
  assert.equal(client.active, ['client', 'client.connected', 'client.connected.ready']);
  assert.ok(client.events.some((e) => e.type === 'ClientWelcome' && (e.from === 'combiner/c1' || e.from === 'combiner/c2')), 'the welcome is among the recent events');
});

test('event summaries keep scalars and describe payloads, never serializing them', () => {
  const big = new Float32Array(1_000_000);
  const s = summarizeEvent({ type: 'update.fetched', from: 'client/k1', at: 1, client: 'client/k1', ok: true, data: big, layoutKey: 'x'.repeat(500), nested: { a: 1 }, list: Array.from({ length: 100 }, (_, i) => i), output: { modelId: 'abc', n: 1.23456789 } });
  assert.is(s.type, 'update.fetched');
  assert.is(s.from, 'client/k1');
  assert.is(s.fields.data, 'Float32Array(1000000)');
  assert.is(s.fields.ok, true);
  assert.is((s.fields.layoutKey as string).length, 64);
  assert.is(s.fields.nested, '{a}');
  assert.is(s.fields.list, '[100 items]');
  assert.is(s.fields['output.modelId'], 'abc');
  assert.is(s.fields['output.n'], 1.23457);
  assert.ok(JSON.stringify(s).length < 400);
});

test('the stream: hello for the chosen actors, state changes and batched events of a real session, all small', async () => {
  const c = await connect('?actors=reducer/main,combiner/*');
  const hello = await c.next((m) => m.type === 'hello');
  assert.is(hello.protocol, 'fedstate-inspect/1');
  assert.equal(hello.actors.map((a: any) => a.address), ['combiner/c1', 'combiner/c2', 'reducer/main']);

  await fed.reducer.seed({ layout: toyLayout(SIZE), data: new Float32Array(SIZE) });
  fed.reducer.start({ sessionId: 'inspected', rounds: 2, roundTimeoutMs: 10_000 });
  const summary = await fed.reducer.finished();
  assert.is(summary.status, 'done', summary.failure);
  await c.next((m) => m.type === 'state' && m.address === 'reducer/main' && m.state === 'done');
  await new Promise((r) => setTimeout(r, 250)); // the last event batch

  const states = c.messages.filter((m) => m.type === 'state' && m.address === 'reducer/main').map((m) => m.state);
  for (const s of ['seeded', 'running.awaitingCombiners', 'running.reducing', 'running.validating.evaluating', 'done']) assert.ok(states.includes(s), `reducer passed through ${s}: ${states.join(' ')}`);
  const reducerGraph = graphOf('reducer');
  const edgeIds = new Set(reducerGraph.edges.map((e) => e.id));
  const nodeIds = new Set(reducerGraph.nodes.map((n) => n.id));
  for (const m of c.messages.filter((x) => x.type === 'state' && x.address === 'reducer/main')) {
    for (const id of m.active) assert.ok(nodeIds.has(id), `active ${id} is a state of the graph`);
    for (const id of m.taken) assert.ok(edgeIds.has(id), `taken ${id} is an edge of the graph`);
  }
  const done = c.messages.find((m) => m.type === 'state' && m.state === 'done');
  assert.ok(done.taken.some((id: string) => id.startsWith('reducer.running.advancing:always')), 'the last transition is named');

  const events = c.messages.filter((m) => m.type === 'events').flatMap((m) => m.items);
  assert.ok(events.every((e: any) => e.actor !== 'client/k1'), 'only subscribed actors');
  assert.ok(events.every((e: any) => !['TICK', 'Heartbeat', 'HEARTBEAT_DUE'].includes(e.type)), 'periodic events are not streamed');
  const reports = events.filter((e: any) => e.actor === 'reducer/main' && e.type === 'RoundReport');
  assert.is(reports.length, 4, '2 combiners x 2 rounds');
  assert.match(String(reports[0].from), /^combiner\/c[12]$/);
  const fetched = events.filter((e: any) => e.type === 'update.fetched');
  assert.ok(fetched.length >= 6);
  for (const e of fetched) assert.is(e.fields.data, e.fields.ok ? `Float32Array(${SIZE})` : undefined, 'update bytes are described, not sent');
  const seqs = events.map((e: any) => e.seq);
  assert.equal(seqs, [...seqs].sort((a, b) => a - b), 'events arrive in order');
  // A state change is never announced before the events that caused it.
  const firstDone = c.messages.findIndex((m) => m.type === 'state' && m.state === 'done');
  const lastReport = c.messages.findIndex((m) => m.type === 'events' && m.items.some((e: any) => e === reports[3]));
  assert.ok(lastReport < firstDone);

  const max = Math.max(...c.sizes);
  assert.ok(max < 16_384, `largest message ${max} bytes with ${SIZE}-parameter updates`);
  console.log(`inspection stream: ${c.messages.length} messages, ${c.sizes.reduce((a, b) => a + b, 0)} bytes, largest ${max} bytes for a 2-round session`);
  c.ws.close();
});

test('subscribe switches actors; a malformed message is answered with an error; buffers stay bounded', async () => {
  const c = await connect();
  const hello = await c.next((m) => m.type === 'hello');
  assert.is(hello.actors.length, 7, 'all actors without a filter');
  c.ws.send(JSON.stringify({ type: 'subscribe', actors: ['client/k1'] }));
  const again = await c.next((m) => m.type === 'hello' && m.actors.length === 1);
  assert.is(again.actors[0].address, 'client/k1');
  c.ws.send('{nope');
  const err = await c.next((m) => m.type === 'error');
  assert.is(err.error, 'malformed');
  c.ws.send(JSON.stringify({ type: 'subscribe', actors: 7 }));
  await c.next((m) => m.type === 'error' && /subscribe/.test(m.message));
  c.ws.close();

  for (const a of inspector.actors()) {
    assert.ok(a.events.length <= 40, `${a.address} keeps at most 40 events`);
    assert.ok(Object.values(a.counts).reduce((x, y) => x + y, 0) >= a.events.length);
  }
  const ticks = inspector.actor('reducer/main')!.counts.TICK ?? 0;
  const recorded = inspector.counters.eventsRecorded;
  fed.reducer.actor.send({ type: 'TICK', now: Date.now() });
  assert.is(inspector.actor('reducer/main')!.counts.TICK, ticks + 1, 'quiet events are counted');
  assert.is(inspector.counters.eventsRecorded, recorded, 'but neither kept nor streamed');
});

test('an upgrade on any other path is refused', async () => {
  const ws = new WebSocket(`${base.replace('http', 'ws')}/api/elsewhere`);
  const code = await new Promise<number>((resolve) => ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0)).on('error', () => resolve(-1)));
  assert.is(code, 404);
});

function value(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  assert.ok(line, `${series} is exposed`);
  return Number(line!.split(' ').pop());
}

test('/metrics: rounds, accepted and rejected updates by reason, bytes, round durations, connected nodes', async () => {
  const res = await fetch(`${base}/metrics`);
  assert.is(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  assert.is(value(text, 'fedstate_rounds_total{status="ok"}'), 2);
  assert.is(value(text, 'fedstate_rounds_total{status="failed"}'), 0);
  assert.is(value(text, 'fedstate_updates_accepted_total'), 6, '3 good clients x 2 rounds');
  assert.is(value(text, 'fedstate_updates_rejected_total{reason="not-finite"}'), 2, 'the NaN client, once per round');
  assert.is(value(text, 'fedstate_round_duration_seconds_count{status="ok"}'), 2);
  assert.ok(value(text, 'fedstate_round_duration_seconds_sum{status="ok"}') > 0.03, 'rounds took at least the training delay');
  const modelBytes = SIZE * 4;
  // Blobs move by content hash and only when the receiver lacks them: the seed and the round-1 global
  // model reach both combiners, and at least round 1's two (distinct) combiner models reach the reducer.
  const out = value(text, 'fedstate_transfer_bytes_total{direction="out",peer="combiner"}');
  const inb = value(text, 'fedstate_transfer_bytes_total{direction="in",peer="combiner"}');
  assert.ok(out >= 4 * modelBytes && out < 6 * modelBytes, `seed and round-1 model pulled by both combiners (${out} bytes)`);
  assert.ok(inb >= 2 * modelBytes && inb < 6 * modelBytes, `combiner models pulled (${inb} bytes)`);
  assert.is(value(text, 'fedstate_combiners_connected'), 2);
  assert.is(value(text, 'fedstate_clients_connected'), 4);
  assert.is(value(text, 'fedstate_rounds_committed'), 2);
  assert.is(value(text, 'fedstate_reducer_state{state="done"}'), 1);
  assert.match(text, /# TYPE fedstate_round_duration_seconds histogram/);
});

test('each reducer has its own registry: nothing lands in prom-client\'s global one, and two can coexist', async () => {
  const other = reducerMetrics(fed.reducer);
  const again = reducerMetrics(fed.reducer);
  assert.is.not(other.registry, again.registry);
  assert.match(await other.text(), /fedstate_rounds_total/);
  assert.is(value(await other.text(), 'fedstate_rounds_total{status="ok"}'), 0, 'a new registry counts from its own start');
  assert.not.match(await globalRegistry.metrics(), /fedstate_/);
  other.close();
  again.close();
});

test.run();
