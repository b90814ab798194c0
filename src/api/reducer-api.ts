// The reducer's REST API: health and status, sessions (start, stop, list, get, rounds, metrics,
// validations), seed upload, models and the model trail, combiners and clients, inspection (HTTP and
// WebSocket), statechart graphs, Prometheus metrics, the OpenAPI document and the dashboard.
// Every route carries its documentation; /api/openapi.json is generated from this table.
import type { RoundResult } from '../../machines/reducer.ts';
import type { ReducerHandle } from '../actors/reducer.ts';
import { FedError } from '../errors.ts';
import { decodeModel } from '../model/codec.ts';
import { layoutSize } from '../model/params.ts';
import { verifyTrail } from '../store/trail.ts';
import { mountDashboard } from './dashboard.ts';
import { Inspector, actorMatcher } from './inspect.ts';
import { graphOf, roles } from './machine-graph.ts';
import { reducerMetrics, type ReducerMetrics } from './metrics.ts';
import { openApiDocument, page, refs } from './openapi.ts';
import type { ApiServer, QueryDoc, Request, RouteDoc } from './server.ts';
import { parseSessionConfig } from './session-config.ts';

const { ref } = refs;

export function reducerState(reducer: ReducerHandle): string {
  const v = reducer.actor.getSnapshot().value;
  return typeof v === 'string' ? v : Object.entries(v).map(([k, sub]) => `${k}.${typeof sub === 'string' ? sub : Object.keys(sub as object)[0]}`)[0]!;
}

export function statusOf(reducer: ReducerHandle) {
  const c = reducer.actor.getSnapshot().context;
  return {
    state: reducerState(reducer),
    session: c.session ? { id: c.session.sessionId, rounds: c.session.rounds, committed: c.committed, round: c.roundNo } : null,
    failure: c.failure,
    globalModelId: c.globalModelId,
    combiners: Object.entries(c.combiners).map(([name, x]) => ({ name, connected: x.connected, clients: x.clients, state: x.state, endpoint: x.endpoint, lastSeen: x.lastSeen })),
    history: c.history,
  };
}

// --- pagination ----------------------------------------------------------------------------------

export const MAX_LIMIT = 500;
export const DEFAULT_LIMIT = 50;

export const pageQuery: Record<string, QueryDoc> = {
  limit: { description: `items per page (1..${MAX_LIMIT})`, schema: { type: 'integer', minimum: 1, maximum: MAX_LIMIT, default: DEFAULT_LIMIT } },
  offset: { description: 'items to skip', schema: { type: 'integer', minimum: 0, default: 0 } },
};

function intParam(raw: string | null, name: string, min: number, max: number, fallback: number): number {
  if (raw === null) return fallback;
  if (!/^\d+$/.test(raw)) throw new FedError('config', `${name} must be a non-negative integer, got "${raw}"`);
  const n = Number(raw);
  if (n < min || n > max) throw new FedError('config', `${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

export function pageOf(req: Pick<Request, 'query'>): { limit: number; offset: number } {
  return { limit: intParam(req.query.get('limit'), 'limit', 1, MAX_LIMIT, DEFAULT_LIMIT), offset: intParam(req.query.get('offset'), 'offset', 0, Number.MAX_SAFE_INTEGER, 0) };
}

export function paged<T>(all: readonly T[], p: { limit: number; offset: number }): { items: T[]; total: number; limit: number; offset: number } {
  return { items: all.slice(p.offset, p.offset + p.limit), total: all.length, limit: p.limit, offset: p.offset };
}

// --- helpers -------------------------------------------------------------------------------------

const MODEL_ID = /^[0-9a-f]{64}$/;
function modelIdParam(raw: string | undefined): string {
  if (!raw || !MODEL_ID.test(raw)) throw new FedError('malformed', `model id must be 64 lowercase hex characters (a sha256), got "${raw ?? ''}"`);
  return raw;
}

const withRole = (role: string, name: string): string => (name.includes('/') ? name : `${role}/${name}`);

const running = (reducer: ReducerHandle): boolean => reducerState(reducer).startsWith('running');

export interface RoundMetrics {
  round: number;
  status: string;
  updates: number;
  rejected: Record<string, number>;
  trainMetrics: Record<string, number>;
  evalMetrics: Record<string, number>;
  validation: Record<string, number>;
  durationMs: number;
}

const metricsOf = (r: RoundResult): RoundMetrics => ({
  round: r.round,
  status: r.status,
  updates: r.updates,
  rejected: r.rejected,
  trainMetrics: r.trainMetrics,
  evalMetrics: r.evalMetrics,
  validation: r.validation,
  durationMs: Math.max(0, r.endedAt - r.startedAt),
});

// --- clients: the reducer knows them through combiner status reports; the roster remembers the ones
// that went away, so an operator can see a client dropped rather than have it vanish.

export interface ClientRow {
  name: string;
  status: 'connected' | 'assigned' | 'gone';
  combiner: string | null;
  lastSeen: number;
  state?: string | null;
}

class Roster {
  private readonly rows = new Map<string, ClientRow>();
  private lastCombiners: unknown;
  constructor(private readonly reducer: ReducerHandle) {}

  refresh(): void {
    const combiners = this.reducer.actor.getSnapshot().context.combiners;
    if (combiners === this.lastCombiners) return;
    this.lastCombiners = combiners;
    const present = new Map<string, ClientRow>();
    for (const [name, c] of Object.entries(combiners)) {
      if (!c.connected) continue;
      for (const k of c.clients) present.set(k, { name: k, status: 'connected', combiner: name, lastSeen: c.lastSeen });
    }
    for (const [name, c] of Object.entries(combiners)) {
      if (!c.connected) continue;
      for (const k of Object.keys(c.assigned)) if (!present.has(k)) present.set(k, { name: k, status: 'assigned', combiner: name, lastSeen: this.rows.get(k)?.lastSeen ?? 0 });
    }
    for (const [k, row] of this.rows) if (!present.has(k) && row.status !== 'gone') this.rows.set(k, { ...row, status: 'gone' });
    for (const [k, row] of present) this.rows.set(k, row);
  }

  list(): ClientRow[] {
    this.refresh();
    return [...this.rows.values()].sort((a, b) => a.name.localeCompare(b.name));
  }
}

// --- mounting ------------------------------------------------------------------------------------

export interface ReducerApiOptions {
  /** Inspector to stream from; one that follows the reducer actor is made when absent. */
  inspector?: Inspector;
  /** Serve the dashboard page and its assets (default true). */
  dashboard?: boolean;
}

export interface ReducerApi {
  inspector: Inspector;
  metrics: ReducerMetrics;
  close(): void;
}

const tags = { system: ['system'], sessions: ['sessions'], models: ['models'], nodes: ['combiners and clients'], inspect: ['inspection'], ui: ['dashboard'] };

export function mountReducerApi(api: ApiServer, reducer: ReducerHandle, opts: ReducerApiOptions = {}): ReducerApi {
  const ownInspector = !opts.inspector;
  const inspector = opts.inspector ?? new Inspector();
  if (!inspector.actor(reducer.address)) inspector.attach(reducer.address, reducer.actor);
  const metrics = reducerMetrics(reducer, { inspector });
  const roster = new Roster(reducer);
  const rosterSub = reducer.actor.subscribe(() => roster.refresh());
  const store = reducer.store;
  const ctx = () => reducer.actor.getSnapshot().context;

  const doc = (d: RouteDoc): RouteDoc => d;

  // --- system
  api.route('GET', '/api/health', () => ({ json: { ok: true, state: reducerState(reducer) } }), doc({
    summary: 'Liveness and the reducer state',
    tags: tags.system,
    responses: { 200: { description: 'up', schema: { type: 'object', required: ['ok', 'state'], properties: { ok: { type: 'boolean' }, state: { type: 'string' } } } } },
  }));
  api.route('GET', '/api/status', () => ({ json: statusOf(reducer) }), doc({
    summary: 'Reducer state, current session, combiners and the round history of the current session',
    tags: tags.system,
    responses: { 200: { description: 'status', schema: ref('Status') } },
  }));
  api.route('GET', '/api/openapi.json', () => ({ json: openApiDocument(api) }), doc({
    summary: 'This document (OpenAPI 3)',
    tags: tags.system,
    responses: { 200: { description: 'the OpenAPI document', schema: { type: 'object', required: ['openapi', 'paths'] } } },
  }));
  api.route('GET', '/metrics', async () => ({ body: await metrics.text(), type: metrics.contentType }), doc({
    summary: 'Prometheus metrics of this reducer',
    tags: tags.system,
    responses: { 200: { description: 'Prometheus text exposition', contentType: 'text/plain', schema: { type: 'string' } } },
  }));

  // --- models and the trail
  api.route('POST', '/api/models/seed', async (req) => {
    const bytes = await req.body();
    decodeModel(bytes); // refuses anything that is not a well-formed model before it is stored
    if (running(reducer)) throw new FedError('conflict', 'a session is running; stop it before seeding a new model');
    const modelId = await reducer.seedBytes(bytes);
    return { status: 201, json: { modelId } };
  }, doc({
    summary: 'Upload the seed model (fedstate model codec bytes) and make it the global model',
    tags: tags.models,
    body: { contentType: 'application/octet-stream', schema: { type: 'string', format: 'binary' }, description: 'an encoded model (src/model/codec.ts)' },
    responses: {
      201: { description: 'seeded', schema: { type: 'object', required: ['modelId'], properties: { modelId: { type: 'string' } } } },
      400: { description: 'the bytes are not a model' },
      409: { description: 'a session is running' },
    },
  }));

  const orderQuery: QueryDoc = { description: 'asc (seed first, default) or desc (newest first)', schema: { type: 'string', enum: ['asc', 'desc'], default: 'asc' } };
  api.route('GET', '/api/models', async (req) => {
    const p = pageOf(req);
    const order = req.query.get('order') ?? 'asc';
    if (order !== 'asc' && order !== 'desc') throw new FedError('config', `order must be asc or desc, got "${order}"`);
    const total = await store.trailLength();
    let items;
    if (order === 'asc') items = await store.trail({ from: p.offset, limit: p.limit });
    else {
      const end = Math.max(0, total - p.offset);
      const from = Math.max(0, end - p.limit);
      items = (await store.trail({ from, limit: end - from })).reverse();
    }
    return { json: { items, total, limit: p.limit, offset: p.offset, globalModelId: ctx().globalModelId } };
  }, doc({
    summary: 'The model trail: every committed global model, seed first',
    tags: tags.models,
    query: { ...pageQuery, order: orderQuery },
    responses: { 200: { description: 'a page of trail entries', schema: page(ref('TrailEntry'), { globalModelId: { type: 'string' } }) } },
  }));
  api.route('GET', '/api/models/:id', async (req) => {
    const id = modelIdParam(req.params.id);
    const bytes = await store.getBlob(id);
    if (!bytes) throw new FedError('not-found', `no model ${id}`);
    const model = decodeModel(bytes);
    const trail = (await store.trailEntry(id)) ?? null;
    return { json: { modelId: id, bytes: bytes.length, parameters: layoutSize(model.layout), layout: model.layout, trail, isGlobal: ctx().globalModelId === id } };
  }, doc({
    summary: 'One model: size, layout and its trail entry',
    tags: tags.models,
    params: { id: 'model id (sha256 hex of its bytes)' },
    responses: { 200: { description: 'the model', schema: ref('Model') }, 400: { description: 'not a model id' }, 404: { description: 'no such model' } },
  }));
  api.route('GET', '/api/models/:id/download', async (req) => {
    const id = modelIdParam(req.params.id);
    const bytes = await store.getBlob(id);
    if (!bytes) throw new FedError('not-found', `no model ${id}`);
    return { body: bytes, type: 'application/octet-stream', headers: { 'content-disposition': `attachment; filename="${id}.fsm"`, etag: `"${id}"` } };
  }, doc({
    summary: 'The model bytes (fedstate model codec)',
    tags: tags.models,
    params: { id: 'model id' },
    responses: { 200: { description: 'model bytes', contentType: 'application/octet-stream', schema: { type: 'string', format: 'binary' } }, 400: { description: 'not a model id' }, 404: { description: 'no such model' } },
  }));
  api.route('GET', '/api/models/:id/ancestors', async (req) => {
    const id = modelIdParam(req.params.id);
    return { json: paged(await store.ancestors(id), pageOf(req)) };
  }, doc({
    summary: "A model's ancestors in the trail, nearest first, ending at the seed",
    tags: tags.models,
    params: { id: 'model id' },
    query: pageQuery,
    responses: { 200: { description: 'a page of trail entries', schema: page(ref('TrailEntry')) }, 400: { description: 'not a model id' }, 404: { description: 'model not in the trail' } },
  }));
  api.route('GET', '/api/trail/verify', async () => ({ json: await verifyTrail(store) }), doc({
    summary: 'Verify the hash chain of the model trail',
    tags: tags.models,
    responses: { 200: { description: '{ok, entries} or the first bad entry', schema: { type: 'object', required: ['ok', 'entries'], properties: { ok: { type: 'boolean' }, entries: { type: 'integer' }, badIndex: { type: 'integer' }, modelId: { type: 'string' }, reason: { type: 'string' } } } } },
  }));

  // --- sessions
  api.route('POST', '/api/sessions', async (req) => {
    const config = parseSessionConfig(await req.json());
    const state = reducerState(reducer);
    if (state.startsWith('running')) throw new FedError('conflict', 'a session is already running');
    if (state === 'idle') throw new FedError('conflict', 'no seed model: upload one first (POST /api/models/seed)');
    if (config.sessionId && (await store.getSession(config.sessionId))) throw new FedError('conflict', `session ${config.sessionId} exists; choose another sessionId`);
    const sessionId = reducer.start(config);
    return { status: 201, json: { sessionId } };
  }, doc({
    summary: 'Create and start a session (partial configuration; the rest takes defaults)',
    tags: tags.sessions,
    body: { contentType: 'application/json', schema: ref('SessionConfig') },
    responses: {
      201: { description: 'started', schema: { type: 'object', required: ['sessionId'], properties: { sessionId: { type: 'string' } } } },
      400: { description: 'malformed JSON or a bad/unknown setting' },
      409: { description: 'a session is running, no seed model, or the session id is taken' },
    },
  }));
  api.route('POST', '/api/sessions/:id/stop', async (req) => {
    const id = req.params.id!;
    if (ctx().session?.sessionId !== id) {
      if (await store.getSession(id)) throw new FedError('conflict', `session ${id} is not running`);
      throw new FedError('not-found', `no session ${id}`);
    }
    if (!running(reducer)) throw new FedError('conflict', `session ${id} is not running`);
    reducer.stop('stopped by operator');
    return { json: { stopping: id } };
  }, doc({
    summary: 'Stop the running session (cancels the round on every combiner and client)',
    tags: tags.sessions,
    params: { id: 'session id' },
    responses: { 200: { description: 'stopping', schema: { type: 'object', required: ['stopping'], properties: { stopping: { type: 'string' } } } }, 404: { description: 'no such session' }, 409: { description: 'the session is not running' } },
  }));
  api.route('GET', '/api/sessions', async (req) => {
    const body = paged(await store.listSessions(), pageOf(req));
    // `sessions` is the field the first API version answered with; kept for existing callers.
    return { json: { ...body, sessions: body.items } };
  }, doc({
    summary: 'Sessions, ordered by id',
    tags: tags.sessions,
    query: pageQuery,
    responses: { 200: { description: 'a page of sessions (`sessions` repeats `items`)', schema: page(ref('Session'), { sessions: { type: 'array', items: ref('Session') } }) } },
  }));

  const roundsOf = async (id: string): Promise<RoundResult[]> => {
    // The live session's history is ahead of the store (round records are written after the fact).
    if (ctx().session?.sessionId === id) return ctx().history;
    if (!(await store.getSession(id))) throw new FedError('not-found', `no session ${id}`);
    return (await store.listRounds<RoundResult>(id)).map((r) => r.record);
  };
  api.route('GET', '/api/sessions/:id', async (req) => {
    const id = req.params.id!;
    const record = await store.getSession(id);
    if (!record) throw new FedError('not-found', `no session ${id}`);
    const rounds = await roundsOf(id);
    const live = ctx().session?.sessionId === id ? reducerState(reducer) : undefined;
    return { json: { ...record, state: live ?? record.status, rounds } };
  }, doc({
    summary: 'One session with its per-round results',
    tags: tags.sessions,
    params: { id: 'session id' },
    responses: { 200: { description: 'the session', schema: ref('SessionDetail') }, 404: { description: 'no such session' } },
  }));
  api.route('GET', '/api/sessions/:id/rounds', async (req) => ({ json: paged(await roundsOf(req.params.id!), pageOf(req)) }), doc({
    summary: 'Rounds of a session',
    tags: tags.sessions,
    params: { id: 'session id' },
    query: pageQuery,
    responses: { 200: { description: 'a page of round results', schema: page(ref('RoundResult')) }, 404: { description: 'no such session' } },
  }));
  api.route('GET', '/api/sessions/:id/rounds/:round', async (req) => {
    const n = intParam(req.params.round ?? null, 'round', 1, Number.MAX_SAFE_INTEGER, 0);
    const r = (await roundsOf(req.params.id!)).find((x) => x.round === n);
    if (!r) throw new FedError('not-found', `session ${req.params.id} has no round ${n}`);
    return { json: r };
  }, doc({
    summary: 'One round of a session',
    tags: tags.sessions,
    params: { id: 'session id', round: 'round number (from 1)' },
    responses: { 200: { description: 'the round result', schema: ref('RoundResult') }, 400: { description: 'not a round number' }, 404: { description: 'no such session or round' } },
  }));
  api.route('GET', '/api/sessions/:id/metrics', async (req) => ({ json: paged((await roundsOf(req.params.id!)).map(metricsOf), pageOf(req)) }), doc({
    summary: 'Per-round metrics of a session: training, server evaluation, validation, participation, rejections, duration',
    tags: tags.sessions,
    params: { id: 'session id' },
    query: pageQuery,
    responses: { 200: { description: 'a page of per-round metrics', schema: page(ref('RoundMetrics')) }, 404: { description: 'no such session' } },
  }));
  api.route('GET', '/api/sessions/:id/validations', async (req) => {
    const rows = (await roundsOf(req.params.id!))
      .filter((r) => Object.keys(r.validation).length > 0 || Object.keys(r.evalMetrics).length > 0)
      .map((r) => ({ round: r.round, modelId: r.modelId, validation: r.validation, evalMetrics: r.evalMetrics }));
    return { json: paged(rows, pageOf(req)) };
  }, doc({
    summary: 'Validation results per round: client-side validation of each new global model and server-side evaluation',
    tags: tags.sessions,
    params: { id: 'session id' },
    query: pageQuery,
    responses: { 200: { description: 'a page of validations', schema: page(ref('Validation')) }, 404: { description: 'no such session' } },
  }));

  // --- combiners and clients
  const combinerRows = () =>
    Object.entries(ctx().combiners)
      .map(([name, c]) => ({ name, endpoint: c.endpoint, connected: c.connected, state: c.state, lastSeen: c.lastSeen, maxClients: c.maxClients, clients: c.clients, assigned: Object.keys(c.assigned).sort() }))
      .sort((a, b) => a.name.localeCompare(b.name));
  api.route('GET', '/api/combiners', (req) => ({ json: paged(combinerRows(), pageOf(req)) }), doc({
    summary: 'Combiners known to the reducer: connection, state, last status report, clients and pending assignments',
    tags: tags.nodes,
    query: pageQuery,
    responses: { 200: { description: 'a page of combiners', schema: page(ref('Combiner')) } },
  }));
  api.route('GET', '/api/combiners/:name', (req) => {
    const name = withRole('combiner', req.params.name!);
    const row = combinerRows().find((c) => c.name === name);
    if (!row) throw new FedError('not-found', `no combiner ${name}`);
    return { json: row };
  }, doc({
    summary: 'One combiner',
    tags: tags.nodes,
    params: { name: 'combiner address ("combiner/c1", URL-encoded) or name ("c1")' },
    responses: { 200: { description: 'the combiner', schema: ref('Combiner') }, 404: { description: 'no such combiner' } },
  }));
  const clientRows = (): ClientRow[] => roster.list().map((r) => ({ ...r, state: inspector.actor(r.name)?.state ?? null }));
  api.route('GET', '/api/clients', (req) => {
    const status = req.query.get('status');
    if (status !== null && !['connected', 'assigned', 'gone'].includes(status)) throw new FedError('config', `status must be connected, assigned or gone, got "${status}"`);
    const combiner = req.query.get('combiner');
    const rows = clientRows().filter((r) => (status === null || r.status === status) && (combiner === null || r.combiner === withRole('combiner', combiner)));
    return { json: paged(rows, pageOf(req)) };
  }, doc({
    summary: 'Clients seen through combiner status reports and discovery, including ones that went away',
    tags: tags.nodes,
    query: {
      ...pageQuery,
      status: { description: 'only clients with this status', schema: { type: 'string', enum: ['connected', 'assigned', 'gone'] } },
      combiner: { description: 'only clients of this combiner', schema: { type: 'string' } },
    },
    responses: { 200: { description: 'a page of clients', schema: page(ref('Client')) } },
  }));
  api.route('GET', '/api/clients/:name', (req) => {
    const name = withRole('client', req.params.name!);
    const row = clientRows().find((c) => c.name === name);
    if (!row) throw new FedError('not-found', `no client ${name}`);
    return { json: row };
  }, doc({
    summary: 'One client',
    tags: tags.nodes,
    params: { name: 'client address ("client/k1", URL-encoded) or name ("k1")' },
    responses: { 200: { description: 'the client', schema: ref('Client') }, 404: { description: 'no such client' } },
  }));

  // --- inspection and statecharts
  api.route('GET', '/api/machines', () => ({ json: { items: roles.map((role) => ({ role, id: graphOf(role).id, states: graphOf(role).nodes.length, transitions: graphOf(role).edges.length })) } }), doc({
    summary: 'The statecharts this runtime executes',
    tags: tags.inspect,
    responses: { 200: { description: 'roles', schema: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: { type: 'object', required: ['role', 'id', 'states', 'transitions'], properties: { role: { type: 'string' }, id: { type: 'string' }, states: { type: 'integer' }, transitions: { type: 'integer' } } } } } } } },
  }));
  api.route('GET', '/api/machines/:role', (req) => ({ json: graphOf(req.params.role!) }), doc({
    summary: 'A statechart as a graph of (nested) states and transitions, read from the machine definition',
    tags: tags.inspect,
    params: { role: roles.join(' | ') },
    responses: { 200: { description: 'the graph', schema: ref('MachineGraph') }, 404: { description: 'no such role' } },
  }));
  api.route('GET', '/api/actors', (req) => {
    const match = actorMatcher(req.query.get('actors') ?? undefined);
    return { json: { ...paged(inspector.actors(match), pageOf(req)), stats: inspector.stats() } };
  }, doc({
    summary: 'Inspected actors: current state, last transitions, recent events (summaries)',
    tags: tags.inspect,
    query: { ...pageQuery, actors: { description: 'comma-separated addresses; a trailing * matches a prefix (combiner/*)', schema: { type: 'string' } } },
    responses: { 200: { description: 'a page of actor views', schema: page(ref('ActorView'), { stats: { type: 'object' } }) } },
  }));
  api.route('GET', '/api/actors/:address', (req) => {
    const view = inspector.actor(req.params.address!);
    if (!view) throw new FedError('not-found', `actor ${req.params.address} is not inspected here`);
    return { json: view };
  }, doc({
    summary: 'One inspected actor',
    tags: tags.inspect,
    params: { address: 'actor address, URL-encoded (reducer%2Fmain)' },
    responses: { 200: { description: 'the actor view', schema: ref('ActorView') }, 404: { description: 'not inspected here' } },
  }));
  api.upgrade('/api/inspect', (req, socket, head) => inspector.handleUpgrade(req, socket, head));
  api.route('GET', '/api/inspect', () => {
    throw new FedError('config', 'this is a WebSocket endpoint: connect with Upgrade: websocket');
  }, doc({
    summary: 'Live inspection stream (WebSocket)',
    description:
      'Upgrade to a WebSocket. The server sends JSON messages: {type:"hello", protocol:"fedstate-inspect/1", actors:[ActorView]} on connect and after each subscribe; {type:"actor", actor:ActorView} when an actor appears; {type:"state", address, value, state, active, taken, status, changedAt} on every state change; {type:"events", items:[EventSummary]} in batches (every 100 ms at most). The client may send {type:"subscribe", actors:["reducer/main","combiner/*"]}. Periodic events (TICK, HEARTBEAT_DUE, Heartbeat) are counted, not streamed.',
    tags: tags.inspect,
    query: { actors: { description: 'comma-separated addresses to follow (trailing * = prefix); all when absent', schema: { type: 'string' } } },
    responses: { 101: { description: 'switching protocols' }, 400: { description: 'not a WebSocket upgrade' } },
  }));

  if (opts.dashboard ?? true) mountDashboard(api);

  return {
    inspector,
    metrics,
    close: () => {
      rosterSub.unsubscribe();
      metrics.close();
      if (ownInspector) inspector.close();
    },
  };
}
