// The reducer REST API over a real in-process federation (toy task): every endpoint, admin-token
// refusals, bad input, unknown ids, conflicting state and pagination. Every JSON answer is checked
// against the schema /api/openapi.json documents for its route and status.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startFederation, type Federation } from '../src/actors/federation.ts';
import { checkSchema, responseSchema } from '../src/api/openapi.ts';
import { MAX_LIMIT, mountReducerApi, type ReducerApi } from '../src/api/reducer-api.ts';
import { ApiServer } from '../src/api/server.ts';
import { encodeModel } from '../src/model/codec.ts';
import { toyLayout, toyTask } from './helpers/toy-task.ts';

const TOKEN = 'admin-secret';
const SIZE = 8;
let fed: Federation;
let api: ApiServer;
let mounted: ReducerApi;
let base = '';

interface Answer<T = any> {
  status: number;
  body: T;
  headers: Headers;
  bytes: Uint8Array;
}

async function call<T = any>(method: string, path: string, opts: { json?: unknown; raw?: string | Uint8Array; token?: string | null } = {}): Promise<Answer<T>> {
  const headers: Record<string, string> = {};
  const token = opts.token === undefined ? TOKEN : opts.token;
  if (token) headers.authorization = `Bearer ${token}`;
  let body: string | Uint8Array | undefined;
  if (opts.json !== undefined) {
    body = JSON.stringify(opts.json);
    headers['content-type'] = 'application/json';
  } else if (opts.raw !== undefined) {
    body = opts.raw;
    headers['content-type'] = typeof opts.raw === 'string' ? 'application/json' : 'application/octet-stream';
  }
  const res = await fetch(`${base}${path}`, { method, headers, body: body as BodyInit | undefined });
  const bytes = new Uint8Array(await res.arrayBuffer());
  const type = res.headers.get('content-type') ?? '';
  let parsed: unknown = bytes;
  if (type.startsWith('application/json')) {
    parsed = JSON.parse(Buffer.from(bytes).toString('utf8'));
    const doc = responseSchema(api, method, path.split('?')[0]!, res.status);
    assert.ok(doc.documented, `${method} ${path}: status ${res.status} is documented`);
    if (doc.schema) assert.equal(checkSchema(parsed, doc.schema), [], `${method} ${path} (${res.status}) matches its documented schema`);
  } else if (type.startsWith('text/')) parsed = Buffer.from(bytes).toString('utf8');
  return { status: res.status, body: parsed as T, headers: res.headers, bytes };
}

function refused(a: Answer, status: number, code?: string): void {
  assert.is(a.status, status, JSON.stringify(a.body));
  assert.type(a.body.error, 'string');
  assert.type(a.body.message, 'string');
  if (code) assert.is(a.body.error, code);
}

const seedModel = () => encodeModel({ layout: toyLayout(SIZE), data: new Float32Array(SIZE) });

async function waitFor(what: string, check: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test.before(async () => {
  const targets = [1, 2, 3].map((k) => Float32Array.from({ length: SIZE }, () => k));
  fed = await startFederation({
    combiners: 2,
    clients: targets.map((t) => toyTask({ target: t, numExamples: 10, delayMs: 20 })),
    evaluate: async (p) => ({ accuracy: 1 / (1 + Math.abs(p.data[0]! - 2)), loss: Math.abs(p.data[0]! - 2) }),
  });
  await fed.ready();
  api = new ApiServer({ adminToken: TOKEN });
  mounted = mountReducerApi(api, fed.reducer);
  base = await api.listen(0);
});

test.after(async () => {
  mounted.close();
  await api.close();
  await fed.close();
});

test('health and status', async () => {
  const h = await call('GET', '/api/health');
  assert.is(h.status, 200);
  assert.equal(h.body, { ok: true, state: 'idle' });
  const s = await call('GET', '/api/status');
  assert.is(s.status, 200);
  assert.is(s.body.state, 'idle');
  assert.is(s.body.combiners.length, 2);
});

test('writes need the admin token: none or a wrong one is 401 with WWW-Authenticate, and nothing happens', async () => {
  for (const [method, path] of [
    ['POST', '/api/models/seed'],
    ['POST', '/api/sessions'],
    ['POST', '/api/sessions/x/stop'],
  ] as const) {
    for (const token of [null, 'wrong', `${TOKEN}x`, '']) {
      const a = await call(method, path, { token, raw: method === 'POST' && path.endsWith('seed') ? seedModel() : '{}' });
      refused(a, 401, 'unauthenticated');
      assert.is(a.headers.get('www-authenticate'), 'Bearer');
    }
  }
  assert.is(fed.reducer.actor.getSnapshot().context.globalModelId, '', 'nothing was seeded');
});

test('a session cannot start before a seed model exists (409)', async () => {
  refused(await call('POST', '/api/sessions', { json: { rounds: 1 } }), 409, 'conflict');
});

test('seed upload: bad bytes are 400, a model is 201 and becomes the global model', async () => {
  refused(await call('POST', '/api/models/seed', { raw: new Uint8Array([1, 2, 3]) }), 400, 'malformed');
  refused(await call('POST', '/api/models/seed', { raw: new TextEncoder().encode('not a model at all, just some text') }), 400, 'malformed');
  const bad = seedModel();
  bad[0] = 0x58; // wrong magic
  refused(await call('POST', '/api/models/seed', { raw: bad }), 400, 'malformed');
  const ok = await call('POST', '/api/models/seed', { raw: seedModel() });
  assert.is(ok.status, 201);
  assert.match(ok.body.modelId, /^[0-9a-f]{64}$/);
  assert.is(fed.reducer.actor.getSnapshot().context.globalModelId, ok.body.modelId);
  assert.is((await call('GET', '/api/health')).body.state, 'seeded');
});

test('session create: malformed JSON, unknown settings and bad values are 400', async () => {
  refused(await call('POST', '/api/sessions', { raw: '{"rounds": 2,' }), 400, 'malformed');
  refused(await call('POST', '/api/sessions', { json: { rounds: 2, roundz: 3 } }), 400, 'config');
  refused(await call('POST', '/api/sessions', { json: { rounds: 0 } }), 400, 'config');
  refused(await call('POST', '/api/sessions', { json: { rounds: 2.5 } }), 400, 'config');
  refused(await call('POST', '/api/sessions', { json: { validate: 'yes' } }), 400, 'config');
  refused(await call('POST', '/api/sessions', { json: { sessionId: 'has space' } }), 400, 'config');
  refused(await call('POST', '/api/sessions', { json: [1, 2] }), 400, 'config');
  assert.is((await call('GET', '/api/health')).body.state, 'seeded', 'no session was started');
});

test('session: start (201), conflicting start (409), per-round results once done', async () => {
  const started = await call('POST', '/api/sessions', { json: { sessionId: 'one', rounds: 3, roundTimeoutMs: 10_000, validate: true } });
  assert.is(started.status, 201);
  assert.equal(started.body, { sessionId: 'one' });
  refused(await call('POST', '/api/sessions', { json: { sessionId: 'two', rounds: 1 } }), 409, 'conflict');
  refused(await call('POST', '/api/models/seed', { raw: seedModel() }), 409, 'conflict');
  const summary = await fed.reducer.finished();
  assert.is(summary.status, 'done', summary.failure);

  const s = await call('GET', '/api/sessions/one');
  assert.is(s.status, 200);
  assert.is(s.body.id, 'one');
  assert.is(s.body.state, 'done');
  assert.is(s.body.rounds.length, 3);
  for (const r of s.body.rounds) {
    assert.is(r.status, 'ok');
    assert.is(r.updates, 3);
    assert.ok(r.evalMetrics.accuracy > 0);
    assert.ok(r.validation.mse !== undefined);
  }
  refused(await call('POST', '/api/sessions/one/stop'), 409, 'conflict');
  refused(await call('POST', '/api/sessions', { json: { sessionId: 'one', rounds: 1 } }), 409, 'conflict');
});

test('rounds, one round, metrics and validations of a session; unknown ids 404, bad round 400', async () => {
  const rounds = await call('GET', '/api/sessions/one/rounds');
  assert.equal([rounds.body.total, rounds.body.items.length, rounds.body.limit, rounds.body.offset], [3, 3, 50, 0]);
  const page = await call('GET', '/api/sessions/one/rounds?limit=1&offset=1');
  assert.equal([page.body.total, page.body.items.length, page.body.items[0].round], [3, 1, 2]);
  const r2 = await call('GET', '/api/sessions/one/rounds/2');
  assert.is(r2.body.round, 2);
  assert.equal(r2.body, rounds.body.items[1]);
  refused(await call('GET', '/api/sessions/one/rounds/9'), 404, 'not-found');
  refused(await call('GET', '/api/sessions/one/rounds/two'), 400, 'config');
  refused(await call('GET', '/api/sessions/nope'), 404, 'not-found');
  refused(await call('GET', '/api/sessions/nope/rounds'), 404, 'not-found');
  refused(await call('POST', '/api/sessions/nope/stop'), 404, 'not-found');

  const m = await call('GET', '/api/sessions/one/metrics');
  assert.is(m.body.total, 3);
  for (const row of m.body.items) {
    assert.is(row.updates, 3);
    assert.ok(row.durationMs >= 0);
    assert.ok(row.evalMetrics.loss !== undefined);
    assert.equal(row.rejected, {});
  }
  const v = await call('GET', '/api/sessions/one/validations?limit=2');
  assert.equal([v.body.total, v.body.items.length], [3, 2]);
  assert.ok(v.body.items[0].validation.mse >= 0);
  assert.match(v.body.items[0].modelId, /^[0-9a-f]{64}$/);
});

test('sessions list: paginated, keeps the `sessions` field', async () => {
  const all = await call('GET', '/api/sessions');
  assert.is(all.body.total, 1);
  assert.equal(all.body.sessions, all.body.items);
  assert.is(all.body.items[0].id, 'one');
  const empty = await call('GET', '/api/sessions?offset=5');
  assert.equal([empty.body.items.length, empty.body.total, empty.body.offset], [0, 1, 5]);
});

test('pagination: limit and offset are checked, the max limit holds, unknown query parameters are 400', async () => {
  for (const q of ['limit=0', `limit=${MAX_LIMIT + 1}`, 'limit=-1', 'limit=abc', 'offset=-3', 'offset=1.5', 'limit=', 'page=2', 'order=sideways']) {
    refused(await call('GET', `/api/models?${q}`), 400, 'config');
  }
  const max = await call('GET', `/api/models?limit=${MAX_LIMIT}`);
  assert.is(max.body.limit, MAX_LIMIT);
  refused(await call('GET', '/api/clients?status=sleepy'), 400, 'config');
  refused(await call('GET', '/api/health?verbose=1'), 400, 'config');
});

test('models: the trail, newest first or seed first, one model, its bytes, its ancestors', async () => {
  const asc = await call('GET', '/api/models');
  assert.is(asc.body.total, 4, 'seed + 3 rounds');
  assert.equal(asc.body.items.map((e: any) => e.index), [0, 1, 2, 3]);
  assert.is(asc.body.globalModelId, fed.reducer.actor.getSnapshot().context.globalModelId);
  const desc = await call('GET', '/api/models?order=desc&limit=2');
  assert.equal(desc.body.items.map((e: any) => e.index), [3, 2]);
  const desc2 = await call('GET', '/api/models?order=desc&limit=2&offset=2');
  assert.equal(desc2.body.items.map((e: any) => e.index), [1, 0]);
  const page = await call('GET', '/api/models?limit=2&offset=1');
  assert.equal(page.body.items.map((e: any) => e.index), [1, 2]);

  const head = asc.body.items[3];
  const one = await call('GET', `/api/models/${head.modelId}`);
  assert.is(one.body.modelId, head.modelId);
  assert.is(one.body.parameters, SIZE);
  assert.equal(one.body.layout, toyLayout(SIZE));
  assert.is(one.body.isGlobal, true);
  assert.equal(one.body.trail, head);

  const dl = await call('GET', `/api/models/${head.modelId}/download`);
  assert.is(dl.status, 200);
  assert.is(dl.headers.get('content-type'), 'application/octet-stream');
  assert.equal(Buffer.from(dl.bytes), Buffer.from((await fed.reducer.store.getBlob(head.modelId))!));
  const { createHash } = await import('node:crypto');
  assert.is(createHash('sha256').update(dl.bytes).digest('hex'), head.modelId, 'the bytes hash to the model id');

  const anc = await call('GET', `/api/models/${head.modelId}/ancestors`);
  assert.equal(anc.body.items.map((e: any) => e.index), [2, 1, 0]);
  const anc1 = await call('GET', `/api/models/${head.modelId}/ancestors?limit=1&offset=2`);
  assert.equal([anc1.body.total, anc1.body.items[0].index], [3, 0]);

  const unknown = 'f'.repeat(64);
  refused(await call('GET', `/api/models/${unknown}`), 404, 'not-found');
  refused(await call('GET', `/api/models/${unknown}/download`), 404, 'not-found');
  refused(await call('GET', `/api/models/${unknown}/ancestors`), 404, 'not-found');
  refused(await call('GET', '/api/models/not-a-hash'), 400, 'malformed');
  refused(await call('GET', '/api/models/ABC/download'), 400, 'malformed');
  refused(await call('GET', '/api/models/%E0%A4%A'), 400, 'malformed');

  const verify = await call('GET', '/api/trail/verify');
  assert.equal(verify.body, { ok: true, entries: 4 });
});

test('combiners and clients: status, last seen, assignment; one by address or name; unknown 404', async () => {
  const cs = await call('GET', '/api/combiners');
  assert.equal(cs.body.items.map((c: any) => c.name), ['combiner/c1', 'combiner/c2']);
  const held = cs.body.items.flatMap((c: any) => c.clients).sort();
  assert.equal(held, ['client/k1', 'client/k2', 'client/k3']);
  for (const c of cs.body.items) {
    assert.ok(c.connected);
    assert.ok(c.lastSeen > Date.now() - 60_000);
  }
  const c1 = await call('GET', '/api/combiners/c1');
  assert.equal(c1.body, cs.body.items[0]);
  assert.equal((await call('GET', `/api/combiners/${encodeURIComponent('combiner/c1')}`)).body, c1.body);
  assert.equal((await call('GET', '/api/combiners?limit=1&offset=1')).body.items.map((c: any) => c.name), ['combiner/c2']);
  refused(await call('GET', '/api/combiners/c9'), 404, 'not-found');

  const ks = await call('GET', '/api/clients');
  assert.equal(ks.body.items.map((k: any) => [k.name, k.status]), [['client/k1', 'connected'], ['client/k2', 'connected'], ['client/k3', 'connected']]);
  for (const k of ks.body.items) assert.ok(cs.body.items.find((c: any) => c.name === k.combiner).clients.includes(k.name), 'a client is listed under its combiner');
  const k2 = await call('GET', '/api/clients/k2');
  assert.is(k2.body.name, 'client/k2');
  const ofC1 = await call('GET', '/api/clients?combiner=c1');
  assert.equal(ofC1.body.items.map((k: any) => k.name), c1.body.clients);
  assert.is((await call('GET', '/api/clients?status=gone')).body.total, 0);
  refused(await call('GET', '/api/clients/k9'), 404, 'not-found');
});

test('machines and inspected actors', async () => {
  const ms = await call('GET', '/api/machines');
  assert.equal(ms.body.items.map((m: any) => m.role), ['reducer', 'combiner', 'client']);
  const g = await call('GET', '/api/machines/reducer');
  assert.is(g.body.id, 'reducer');
  assert.ok(g.body.nodes.some((n: any) => n.id === 'reducer.running.awaitingCombiners'));
  refused(await call('GET', '/api/machines/gardener'), 404, 'not-found');

  const actors = await call('GET', '/api/actors');
  assert.equal(actors.body.items.map((a: any) => a.address), ['reducer/main']);
  const r = await call('GET', `/api/actors/${encodeURIComponent('reducer/main')}`);
  assert.is(r.body.state, 'done');
  assert.ok(r.body.events.some((e: any) => e.type === 'RoundReport'), 'recent events are kept');
  refused(await call('GET', `/api/actors/${encodeURIComponent('client/k1')}`), 404, 'not-found');
  refused(await call('GET', '/api/inspect'), 400, 'config');
});

test('stop a running session (200), then it is stopped and cannot be stopped again (409)', async () => {
  const s = await call('POST', '/api/sessions', { json: { sessionId: 'long', rounds: 10_000, roundTimeoutMs: 10_000 } });
  assert.is(s.status, 201);
  await waitFor('a round to close', () => fed.reducer.actor.getSnapshot().context.history.length >= 1);
  const stop = await call('POST', '/api/sessions/long/stop');
  assert.equal([stop.status, stop.body], [200, { stopping: 'long' }]);
  const summary = await fed.reducer.finished();
  assert.is(summary.status, 'stopped');
  refused(await call('POST', '/api/sessions/long/stop'), 409, 'conflict');
  await waitFor('the stopped session record', async () => (await call('GET', '/api/sessions/long')).body.status === 'stopped');
  assert.is((await call('GET', '/api/sessions')).body.total, 2);
});

test('metrics, OpenAPI document and dashboard are served; wrong method 405, unknown route 404', async () => {
  const m = await call('GET', '/metrics');
  assert.is(m.status, 200);
  assert.match(m.headers.get('content-type') ?? '', /^text\/plain/);
  assert.match(m.body, /fedstate_rounds_total\{status="ok"\} \d+/);
  const doc = await call('GET', '/api/openapi.json');
  assert.is(doc.body.openapi, '3.0.3');
  const page = await call('GET', '/');
  assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
  assert.match(page.body, /<script type="module" src="\/dashboard\/app.ts">/);
  const app = await call('GET', '/dashboard/app.ts');
  assert.match(app.headers.get('content-type') ?? '', /^text\/javascript/);
  assert.not.match(app.body, /: HTMLElement\b|declare const/, 'served transpiled');
  assert.match(app.body, /from ".\/statechart.ts"/);
  for (const f of ['/vendor/uPlot.iife.min.js', '/vendor/uPlot.min.css', '/vendor/elk.bundled.js', '/dashboard/statechart.ts', '/dashboard/style.css']) {
    const a = await call('GET', f);
    assert.is(a.status, 200, f);
    assert.ok(a.bytes.length > 100, f);
  }
  refused(await call('GET', '/vendor/../package.json'), 404);
  refused(await call('GET', '/vendor/constructor'), 404, 'not-found');
  refused(await call('DELETE', '/api/sessions/one'), 405);
  refused(await call('GET', '/api/nothing-here'), 404, 'not-found');
});

test.run();
