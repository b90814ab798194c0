// The reducer's REST API: health and status, seed model upload, sessions (start, stop, list, get).
import { FedError } from '../errors.ts';
import { decodeModel } from '../model/codec.ts';
import type { ReducerHandle } from '../actors/reducer.ts';
import type { ApiServer } from './server.ts';
import { parseSessionConfig } from './session-config.ts';

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

export function mountReducerApi(api: ApiServer, reducer: ReducerHandle): void {
  api.route('GET', '/api/health', () => ({ json: { ok: true, state: reducerState(reducer) } }));
  api.route('GET', '/api/status', () => ({ json: statusOf(reducer) }));

  api.route('POST', '/api/models/seed', async (req) => {
    const bytes = await req.body();
    decodeModel(bytes); // refuses anything that is not a well-formed model before it is stored
    const state = reducerState(reducer);
    if (state.startsWith('running')) throw new FedError('conflict', 'a session is running; stop it before seeding a new model');
    const modelId = await reducer.seedBytes(bytes);
    return { status: 201, json: { modelId } };
  });

  api.route('POST', '/api/sessions', async (req) => {
    const config = parseSessionConfig(await req.json());
    const state = reducerState(reducer);
    if (state.startsWith('running')) throw new FedError('conflict', 'a session is already running');
    if (state === 'idle') throw new FedError('conflict', 'no seed model: upload one first (POST /api/models/seed)');
    const sessionId = reducer.start(config);
    return { status: 201, json: { sessionId } };
  });

  api.route('POST', '/api/sessions/:id/stop', async (req) => {
    const c = reducer.actor.getSnapshot().context;
    if (c.session?.sessionId !== req.params.id) throw new FedError('not-found', `no current session ${req.params.id}`);
    if (!reducerState(reducer).startsWith('running')) throw new FedError('conflict', `session ${req.params.id} is not running`);
    reducer.stop('stopped by operator');
    return { json: { stopping: req.params.id } };
  });

  api.route('GET', '/api/sessions', async () => ({ json: { sessions: await reducer.store.listSessions() } }));

  api.route('GET', '/api/sessions/:id', async (req) => {
    const id = req.params.id!;
    const record = await reducer.store.getSession(id);
    if (!record) throw new FedError('not-found', `no session ${id}`);
    const rounds = (await reducer.store.listRounds(id)).map((r) => r.record);
    const live = reducer.actor.getSnapshot().context.session?.sessionId === id ? reducerState(reducer) : undefined;
    return { json: { ...record, state: live ?? record.status, rounds } };
  });
}
