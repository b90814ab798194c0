// Reducer role assembly: the reducer statechart provided with real IO. It serves discovery, keeps the
// global model and the hash-chained trail in the store, pulls the combiner models of each round over
// the links, reduces them weighted by each combiner's total number of examples (hierarchical FedAvg
// equals flat FedAvg), and resumes a running session from the store after a restart.
import { fromPromise, waitFor, type ActorRefFrom, type SnapshotFrom } from 'xstate';
import { defaultSessionConfig, reducerMachine, type ReducerInput, type RoundResult, type SessionConfig } from '../../machines/reducer.ts';
import { FedError } from '../errors.ts';
import { decodeModel, encodeModel, encodeModelFrom } from '../model/codec.ts';
import { sameLayout, type Params } from '../model/params.ts';
import { createMemoryStore } from '../store/memory.ts';
import type { Store } from '../store/types.ts';
import type { BlobStore } from './blobs.ts';
import { hostMachine, type HostOptions } from './host.ts';
import { Node, type NodeOptions } from './node.ts';
import type { Transport } from '../transport/types.ts';
import { planFor } from './strategy.ts';
import { recycleAccumulator } from '../strategies/fedavg.ts';
import { finishInto, receiveSlot } from '../strategies/in-place.ts';
import type { ServerOptimizerState } from '../strategies/server-optimizers.ts';

export interface ReducerOptions {
  transport: Transport;
  /** Node name (defaults to "reducer"). */
  name?: string;
  token?: string;
  /** Shared secret that verifies the tokens combiners and clients present (see src/security/token.ts). */
  secret?: string;
  /** Decides whether a peer's hello is acceptable (e.g. checks its token); throw to refuse the link. */
  authenticate?: NodeOptions['authenticate'];
  /** Link settings of the reducer's node (model-size limit, chunk size). */
  link?: NodeOptions['link'];
  resumeWithinMs?: NodeOptions['resumeWithinMs'];
  listen: string;
  store?: Store;
  /** Server-side evaluation of each new global model (e.g. on a held-out set). */
  evaluate?: (params: Params, round: number) => Promise<Record<string, number>>;
  tickMs?: number;
  inspect?: HostOptions['inspect'];
}

export interface SessionSummary {
  sessionId: string;
  status: 'done' | 'failed' | 'stopped';
  failure: string;
  rounds: RoundResult[];
  globalModelId: string;
}

export type ReducerActor = ActorRefFrom<typeof reducerMachine>;

export interface ReducerHandle {
  node: Node;
  address: string;
  endpoint: string;
  actor: ReducerActor;
  store: Store;
  seed(params: Params): Promise<string>;
  /** Seeds with an already encoded model (as uploaded); the bytes must decode. */
  seedBytes(bytes: Uint8Array): Promise<string>;
  start(config: Partial<SessionConfig> & { sessionId?: string }): string;
  stop(reason?: string): void;
  /** Resolves when the current session reaches done, failed or stopped. */
  finished(): Promise<SessionSummary>;
  globalModel(): Promise<Params>;
  /** Combiner models received straight into the reducer's FedAvg stage slot, and those copied in. */
  stats: { combinerModelsInPlace: number; combinerModelsCopied: number };
  close(): Promise<void>;
}

/** The reducer's node serves blobs straight from the store, so committed models survive restarts. */
export function storeBlobs(store: Store): BlobStore {
  return {
    get: (hash) => store.getBlob(hash),
    put: (bytes) => store.putBlob(bytes),
    delete: async (hash) => {
      // the trail keeps committed models; only uncommitted blobs may go
      if (!(await store.trailEntry(hash))) await store.deleteBlob(hash);
    },
  };
}

const SESSION_KEY = 'reducer/session';
const OPTIMIZER_KEY = 'server-optimizer/';

interface PersistedSession {
  id: string;
  config: SessionConfig;
  status: string;
  committed: number;
  roundNo: number;
  seedModelId: string;
}

async function resumeInput(store: Store): Promise<ReducerInput['resume']> {
  const current = await store.getState<{ id: string }>(SESSION_KEY);
  if (!current) return undefined;
  const s = await store.getSession<PersistedSession>(current.id);
  if (!s || s.status !== 'running') return undefined;
  const head = await store.trailHead();
  if (!head) return undefined;
  const rounds = (await store.listRounds<RoundResult>(s.id)).map((r) => r.record);
  // Committed rounds are what the trail holds for this session, whatever the session record last said:
  // the trail append is the commit point.
  const entries = (await store.trail()).filter((e) => e.sessionId === s.id);
  const lastRound = Math.max(s.roundNo, ...entries.map((e) => e.round), ...rounds.map((r) => r.round));
  return { session: s.config, globalModelId: head.modelId, seedModelId: s.seedModelId, committed: entries.length, roundNo: lastRound, history: rounds };
}

/** Round records are JSON: a diverged (NaN/Infinity) metric is dropped rather than refused by the store. */
function finiteOnly<T>(value: T): T {
  return JSON.parse(JSON.stringify(value, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? undefined : v))) as T;
}

export async function startReducer(opts: ReducerOptions): Promise<ReducerHandle> {
  // Store writes from actions run one after another, so a session record never overtakes its rounds,
  // and close() waits for them.
  let writes: Promise<void> = Promise.resolve();
  const persist = (write: () => Promise<void>): void => {
    writes = writes.then(write).catch((e: unknown) => {
      node.emit('rejected', new FedError('internal', `store write failed: ${String(e)}`));
    });
  };
  const store = opts.store ?? createMemoryStore();
  const node = new Node({ name: opts.name ?? 'reducer', transport: opts.transport, blobs: storeBlobs(store), token: opts.token, secret: opts.secret, authenticate: opts.authenticate, link: opts.link, resumeWithinMs: opts.resumeWithinMs });
  const address = 'reducer/main';
  const resume = await resumeInput(store);
  const head = await store.trailHead();

  const stats = { combinerModelsInPlace: 0, combinerModelsCopied: 0 };

  const logic = reducerMachine.provide({
    actors: {
      reduce: fromPromise(async ({ input }) => {
        const session = hosted.actor.getSnapshot().context.session;
        const plan = planFor(session?.strategy ?? 'fedavg');
        if (input.reports.length === 0) throw new FedError('bad-weight', 'no combiner models to reduce');
        const globalBytes = await store.getBlob(input.globalModelId);
        if (!globalBytes) throw new FedError('not-found', `global model ${input.globalModelId} not in store`);
        const global = decodeModel(globalBytes);
        const layout = global.layout;
        const size = global.data.length;
        // A combiner model has the global model's layout, so it encodes to as many bytes: it is received
        // straight into a stage slot of the accumulator (FedAvg), its data section landing on the slot,
        // and folded there without a fresh buffer or a copy.
        const acc = plan.reducer.begin({ size, expected: input.reports.length, stageSlots: 1, stageHeadroom: globalBytes.byteLength - size * 4 });
        for (const report of input.reports) {
          const slot = receiveSlot(acc, 0, globalBytes.byteLength);
          const model = decodeModel(await node.fetchBlob(report.combiner, report.modelId, { into: slot?.into }));
          if (slot?.holds(model.data)) stats.combinerModelsInPlace++;
          else stats.combinerModelsCopied++;
          if (!sameLayout(layout, model.layout)) {
            throw new FedError('wrong-shape', `combiner model ${report.modelId.slice(0, 12)} does not have the global model's layout`);
          }
          // weighted by the combiner's total number of examples: hierarchical FedAvg equals flat FedAvg
          acc.add(model.data, report.totalWeight);
        }
        // Server optimizer state belongs to the global model it produced, so a round that fails after
        // this point (or a crash before the commit) never advances it.
        const state = await store.getState<ServerOptimizerState>(`${OPTIMIZER_KEY}${input.globalModelId}`);
        // The aggregate is written once, into its encoded model; when the server step is the identity
        // (FedAvg), those very bytes are the new global model.
        const aggregateBytes = encodeModelFrom(layout, (data) => finishInto(acc, data));
        recycleAccumulator(acc);
        const aggregate = decodeModel(aggregateBytes).data;
        const step = plan.server.step(global.data, aggregate, state);
        const modelId = await store.putBlob(step.params === aggregate ? aggregateBytes : encodeModel({ layout, data: step.params }));
        if (plan.server.name !== 'fedavg') await store.putState(`${OPTIMIZER_KEY}${modelId}`, step.state);
        return { modelId };
      }),
      commit: fromPromise(async ({ input }) => {
        await store.appendTrail({
          modelId: input.modelId,
          parentModelId: input.parentModelId,
          sessionId: input.session.sessionId,
          round: input.round,
          strategy: planFor(input.session.strategy).spec,
          metrics: Object.fromEntries(Object.entries(input.metrics).filter(([, v]) => Number.isFinite(v))),
        });
      }),
      evaluate: fromPromise(async ({ input }) => {
        if (!opts.evaluate) return {};
        const bytes = await store.getBlob(input.modelId);
        if (!bytes) throw new FedError('not-found', `model ${input.modelId} not in store`);
        return opts.evaluate(decodeModel(bytes), input.round);
      }),
    },
    actions: {
      persistSession: ({ context }, p) => {
        const s = context.session;
        if (!s) return;
        const record: PersistedSession = { id: s.sessionId, config: s, status: p.status, committed: context.committed, roundNo: context.roundNo, seedModelId: context.seedModelId };
        const last = context.history[context.history.length - 1];
        persist(async () => {
          if (last) await store.putRound(s.sessionId, last.round, finiteOnly(last));
          await store.putSession(record);
          // The XState persisted snapshot is kept for operators and post-mortems; resuming rebuilds the
          // machine from the trail and the session record, which stay authoritative (a snapshot taken
          // mid-invoke would replay IO that already happened).
          await store.putSnapshot(address, finiteOnly(hosted.actor.getPersistedSnapshot()));
        });
      },
    },
  });

  // Hosted before listening, so the first peer's hello already names reducer/main.
  const hosted = hostMachine(node, address, logic, { self: address, resume } satisfies ReducerInput, { inspect: opts.inspect });
  const listener = await node.listen(opts.listen);
  if (!resume && head) hosted.actor.send({ type: 'SEED', modelId: head.modelId });

  const onLinkDown = (unreachable: string[]): void => {
    for (const a of unreachable) if (a.startsWith('combiner/')) hosted.actor.send({ type: 'COMBINER_GONE', combiner: a });
  };
  node.on('unreachable', onLinkDown);
  const tick = setInterval(() => hosted.actor.send({ type: 'TICK', now: Date.now() }), opts.tickMs ?? 1_000);
  tick.unref();
  hosted.actor.send({ type: 'TICK', now: Date.now() });

  async function seedBytes(bytes: Uint8Array): Promise<string> {
    decodeModel(bytes);
    const modelId = await store.putBlob(bytes);
    const headNow = await store.trailHead();
    if (headNow?.modelId !== modelId) {
      await store.appendTrail({ modelId, parentModelId: headNow?.modelId ?? null, sessionId: '', round: 0, strategy: 'seed', metrics: {} });
    }
    hosted.actor.send({ type: 'SEED', modelId });
    return modelId;
  }

  const terminal = (s: SnapshotFrom<typeof reducerMachine>): boolean => s.matches('done') || s.matches('failed') || s.matches('stopped');

  return {
    node,
    address,
    endpoint: listener.endpoint,
    actor: hosted.actor,
    store,
    seed: (params) => seedBytes(encodeModel(params)),
    seedBytes,
    stats,
    start: (config) => {
      const sessionId = config.sessionId ?? `s-${Date.now().toString(36)}`;
      const base = { ...defaultSessionConfig(sessionId), ...config, sessionId };
      const plan = planFor(base.strategy); // refuses an unknown or malformed spec before anything starts
      const session: SessionConfig = { ...base, strategy: plan.spec, proximalMu: plan.clientSettings.proximalMu ?? base.proximalMu };
      const record: PersistedSession = { id: sessionId, config: session, status: 'running', committed: 0, roundNo: 0, seedModelId: hosted.actor.getSnapshot().context.globalModelId };
      // Written before the machine starts so a crash right after still resumes the session.
      persist(async () => {
        await store.putSession(record);
        await store.putState(SESSION_KEY, { id: sessionId });
      });
      hosted.actor.send({ type: 'TICK', now: Date.now() });
      hosted.actor.send({ type: 'START', session });
      return sessionId;
    },
    stop: (reason) => hosted.actor.send({ type: 'STOP', reason }),
    finished: async () => {
      const snap = await waitFor(hosted.actor, terminal, { timeout: Infinity });
      const c = snap.context;
      return {
        sessionId: c.session?.sessionId ?? '',
        status: snap.matches('done') ? 'done' : snap.matches('failed') ? 'failed' : 'stopped',
        failure: c.failure,
        rounds: c.history,
        globalModelId: c.globalModelId,
      };
    },
    globalModel: async () => {
      const id = hosted.actor.getSnapshot().context.globalModelId;
      const bytes = await store.getBlob(id);
      if (!bytes) throw new FedError('not-found', `global model ${id} not in store`);
      return decodeModel(bytes);
    },
    close: async () => {
      clearInterval(tick);
      node.off('unreachable', onLinkDown);
      hosted.stop();
      await node.close();
      await writes;
      await store.close();
    },
  };
}
