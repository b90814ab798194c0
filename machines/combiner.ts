// The combiner statechart: membership of its clients, and one round at a time
//   idle -> selecting -> requesting -> collecting -> aggregating -> reporting -> idle
// `collecting` ends when every selected client has answered, when the buffer is full, or at the
// round timeout. Below the minimum number of accepted updates the round fails explicitly. Every
// update is checked before it can touch the aggregate: session, round, sender, duplicate, base
// model, weight, then (once its bytes arrived) shape and finiteness; each refusal is counted with
// its reason and acknowledged to the client.
import { and, assign, emit, enqueueActions, fromCallback, fromPromise, raise, setup } from 'xstate';
import type { RoundConfig } from '../src/protocol/generated.ts';
import { firstNonFinite } from '../src/model/params.ts';
import { addMetrics, boundedDelay, meanMetrics, outbound, sample, type Inbound, type Outbound, type RejectionReason } from './common.ts';

export interface CombinerInput {
  self: string;
  reducer: string;
  /** Clients not heard from for this long are dropped from membership. */
  clientTimeoutMs?: number;
  heartbeatMs?: number;
  maxClients?: number;
}

export interface ClientInfo {
  lastSeen: number;
  numExamples: number;
}

export interface StagedModel {
  size: number;
  layoutKey: string;
}

export type AnswerState = 'waiting' | 'pending' | 'answered';

export interface RoundState {
  sessionId: string;
  round: number;
  task: 'train' | 'validate';
  modelId: string;
  config: RoundConfig;
  selected: string[];
  /**
   * Where each selected client's answer stands: waiting, pending (its bytes are being fetched) or
   * answered (accepted, rejected or failed). This map, `declared`, `failed` and the membership map are
   * owned by the machine and updated in place, so one event costs O(1) however many clients a round
   * has (copying them per event made a 10,000-client round quadratic).
   */
  answers: Record<string, AnswerState>;
  answeredCount: number;
  pendingCount: number;
  /** Aggregation weight (num_examples) and training metrics each admitted client declared. */
  declared: Record<string, { weight: number; metrics: Record<string, number> }>;
  accepted: number;
  totalWeight: number;
  rejected: Partial<Record<RejectionReason, number>>;
  failed: string[];
  metricSums: Record<string, number>;
  startedAt: number;
  staged?: StagedModel;
  modelOut?: string;
  aggregateMs?: number;
  failure?: string;
  status?: 'ok' | 'failed' | 'cancelled';
}

export interface CombinerContext {
  self: string;
  reducer: string;
  clientTimeoutMs: number;
  heartbeatMs: number;
  maxClients: number;
  clients: Record<string, ClientInfo>;
  /** Membership changed since the last CombinerStatus; status reports are throttled, not sent per hello. */
  statusDirty: boolean;
  lastStatusAt: number;
  round: RoundState | null;
  lastRound: RoundState | null;
  now: number;
  totals: { rounds: number; accepted: number; rejected: Partial<Record<RejectionReason, number>>; failedRounds: number };
}

/** What the fetcher child reports about one update: decoded parameters or why it could not. */
export type FetchedUpdate =
  | { type: 'update.fetched'; sessionId: string; round: number; client: string; ok: true; data: Float32Array; layoutKey: string }
  | { type: 'update.fetched'; sessionId: string; round: number; client: string; ok: false; reason: 'hash-mismatch' | 'fetch-failed' | 'wrong-shape' };

export interface FetchRequest {
  type: 'FETCH';
  sessionId: string;
  round: number;
  client: string;
  updateId: string;
}

export type CombinerEvent =
  | Inbound<'StartRound'>
  | Inbound<'CancelRound'>
  | Inbound<'ClientHello'>
  | Inbound<'Heartbeat'>
  | Inbound<'ClientBye'>
  | Inbound<'TrainResult'>
  | Inbound<'ValidateResult'>
  | Inbound<'TaskFailed'>
  | FetchedUpdate
  | { type: 'TICK'; now: number }
  | { type: 'REDUCER_CONNECTED'; endpoint: string }
  | { type: 'CLIENT_GONE'; client: string; reason: string };

export interface AggregationBegin {
  sessionId: string;
  round: number;
  size: number;
  strategy: string;
  /** Updates the round can fold at most (selected clients), for strategies that hold them all. */
  expected: number;
}

const ms = (cfg: RoundConfig): number => (cfg.timeoutMs > 0 ? cfg.timeoutMs : 180_000);

function wanted(r: RoundState): number {
  return r.config.bufferSize > 0 ? Math.min(r.config.bufferSize, r.selected.length) : r.selected.length;
}

const minUpdates = (r: RoundState): number => Math.max(1, r.config.minUpdates);

function reject(r: RoundState, reason: RejectionReason): RoundState {
  return { ...r, rejected: { ...r.rejected, [reason]: (r.rejected[reason] ?? 0) + 1 } };
}

export const taskIdOf = (r: RoundState, client: string): string => `${r.sessionId}:${r.round}:${r.task}:${client}`;

const isSelected = (r: RoundState, client: string): boolean => Object.hasOwn(r.answers, client);

/** Marks a selected client's answer as settled (in place) and returns a new round object. */
function settle(r: RoundState, client: string): RoundState {
  const was = r.answers[client];
  if (was === undefined || was === 'answered') return r;
  if (was === 'pending') r.pendingCount--;
  r.answers[client] = 'answered';
  r.answeredCount++;
  return { ...r };
}

function settleFailed(r: RoundState, client: string): RoundState {
  if (r.answers[client] === undefined || r.answers[client] === 'answered') return r;
  r.failed.push(client);
  return settle(r, client);
}

/** Minimum time between two CombinerStatus reports caused by membership changes. */
const STATUS_INTERVAL_MS = 200;
/** A status report goes out at least this often, as the combiner's keepalive towards the reducer. */
const STATUS_KEEPALIVE_MS = 5_000;

/** Admission checks that need no bytes; the first failing one names the reason. */
export function admissionProblem(r: RoundState | null, e: Inbound<'TrainResult'> | Inbound<'ValidateResult'>, collecting: boolean): RejectionReason | null {
  if (!r) return 'stale-round';
  if (e.sessionId !== r.sessionId) return 'wrong-session';
  if (e.round !== r.round) return 'stale-round';
  if (!collecting) return 'late';
  if (!isSelected(r, e.from)) return 'unselected';
  if (r.answers[e.from] !== 'waiting') return 'duplicate';
  if (e.type === 'TrainResult' && r.task !== 'train') return 'stale-round';
  if (e.type === 'ValidateResult' && r.task !== 'validate') return 'stale-round';
  if (e.type === 'TrainResult' && e.baseModelId !== r.modelId) return 'base-mismatch';
  if (e.type === 'ValidateResult' && e.modelId !== r.modelId) return 'base-mismatch';
  // a weight is a count of examples: an integer the wire's uint32 can carry, so sums cannot overflow
  if (!Number.isInteger(e.numExamples) || e.numExamples <= 0 || e.numExamples > 0xffff_ffff) return 'bad-weight';
  return null;
}

/** Checks on the update's bytes, once fetched. */
export function contentProblem(r: RoundState, e: Extract<FetchedUpdate, { ok: true }>): RejectionReason | null {
  if (!r.staged || e.data.length !== r.staged.size || e.layoutKey !== r.staged.layoutKey) return 'wrong-shape';
  if (firstNonFinite(e.data) >= 0) return 'not-finite';
  return null;
}

function reasonCounts(r: Partial<Record<RejectionReason, number>>): { reason: string; count: number }[] {
  return Object.entries(r).map(([reason, count]) => ({ reason, count: count ?? 0 }));
}

function mergeCounts(a: Partial<Record<RejectionReason, number>>, b: Partial<Record<RejectionReason, number>>): Partial<Record<RejectionReason, number>> {
  const out = { ...a };
  for (const [k, v] of Object.entries(b) as [RejectionReason, number][]) out[k] = (out[k] ?? 0) + v;
  return out;
}

// A StartRound for another round while one is in progress means the reducer has moved on (it was
// restarted, or timed this combiner out): the current round is cancelled and the new one is taken up
// once the cancellation is reported (the event is raised again and handled in `idle`).
const supersede = {
  guard: 'isOtherRound',
  target: 'reporting',
  actions: ['cancelRound', 'reraise'],
} as const;

export const combinerMachine = setup({
  types: {
    context: {} as CombinerContext,
    events: {} as CombinerEvent,
    input: {} as CombinerInput,
    emitted: {} as Outbound,
  },
  actors: {
    /** Fetches the round's global model into the combiner's blob store; resolves with its shape. */
    stageModel: fromPromise<StagedModel, { modelId: string; from: string }>(async () => {
      throw new Error('stageModel not provided');
    }),
    /** Folds everything accepted into the combiner model, stores it and resolves with its hash. */
    aggregate: fromPromise<{ modelId: string; ms: number }, { sessionId: string; round: number }>(async () => {
      throw new Error('aggregate not provided');
    }),
    /** Long-lived child that pulls update bytes from clients (FETCH in, update.fetched out). */
    fetcher: fromCallback<FetchRequest>(() => () => undefined),
  },
  actions: {
    // IO the assembly provides: the accumulator lives outside the context so a streaming strategy can
    // fold in place with O(parameters) memory.
    beginAggregation: (_, _params: AggregationBegin) => undefined,
    foldUpdate: (_, _params: { sessionId: string; round: number; data: Float32Array; weight: number }) => undefined,
    discardAggregation: (_, _params: { sessionId: string; round: number }) => undefined,

    /** Reports membership now, unless one went out moments ago (then the next TICK sends it) or `force`. */
    reportStatus: enqueueActions(({ context, enqueue }, params?: { force: boolean }) => {
      if (!params?.force && context.now - context.lastStatusAt < STATUS_INTERVAL_MS) {
        enqueue.assign({ statusDirty: true });
        return;
      }
      enqueue.assign({ statusDirty: false, lastStatusAt: context.now });
      enqueue.emit(outbound(context.reducer, { type: 'CombinerStatus', clients: Object.keys(context.clients).sort(), state: context.round ? 'busy' : 'idle' }));
    }),

    dropClient: assign(({ context }, params: { client: string; linkLost?: boolean }) => {
      if (!context.clients[params.client]) return {};
      delete context.clients[params.client];
      const r = context.round;
      // A selected client that vanished will never answer: settle it so the round need not wait for the
      // timeout. Except one whose update was being fetched when its link was lost: the fetch settles it
      // (the transfer goes on if the client is back within the resume window, and fails otherwise). A
      // client that said goodbye or went silent is settled at once either way.
      const keep = params.linkLost === true && r?.answers[params.client] === 'pending';
      return { clients: context.clients, round: r && !keep ? settleFailed(r, params.client) : r, statusDirty: true };
    }),

    openRound: assign(({ context, event }) => {
      const e = event as Inbound<'StartRound'>;
      const round: RoundState = {
        sessionId: e.sessionId,
        round: e.round,
        task: e.task === 'validate' ? 'validate' : 'train',
        modelId: e.modelId,
        config: e.config,
        selected: [],
        answers: {},
        answeredCount: 0,
        pendingCount: 0,
        declared: {},
        accepted: 0,
        totalWeight: 0,
        rejected: {},
        failed: [],
        metricSums: {},
        startedAt: e.at,
      };
      return { round, now: Math.max(context.now, e.at) };
    }),

    selectClients: assign(({ context }) => {
      const r = context.round!;
      const members = Object.keys(context.clients);
      const fraction = r.config.fraction > 0 && r.config.fraction < 1 ? r.config.fraction : 1;
      let count = Math.max(minUpdates(r), Math.ceil(fraction * members.length));
      const cap = r.config.maxClients || context.maxClients;
      if (cap > 0) count = Math.min(count, cap);
      const selected = sample(members, count, r.config.seed, r.round);
      const answers: Record<string, AnswerState> = {};
      for (const c of selected) answers[c] = 'waiting';
      return { round: { ...r, selected, answers } };
    }),

    sendTasks: enqueueActions(({ context, enqueue }) => {
      const r = context.round!;
      for (const client of r.selected) {
        const taskId = taskIdOf(r, client);
        const body =
          r.task === 'train'
            ? ({ type: 'TrainTask', taskId, sessionId: r.sessionId, round: r.round, modelId: r.modelId, config: r.config } as const)
            : ({ type: 'ValidateTask', taskId, sessionId: r.sessionId, round: r.round, modelId: r.modelId } as const);
        enqueue.emit(outbound(client, body));
      }
    }),

    refuseOutside: enqueueActions(({ context, enqueue }, params: { event: Inbound<'TrainResult'> | Inbound<'ValidateResult'> }) => {
      // Against the round just closed, a result that would otherwise have been fine is simply late.
      const reason = admissionProblem(context.round ?? context.lastRound, params.event, false) ?? 'late';
      enqueue.assign({ totals: { ...context.totals, rejected: mergeCounts(context.totals.rejected, { [reason]: 1 }) } });
      enqueue.emit(outbound(params.event.from, { type: 'UpdateAck', taskId: params.event.taskId, accepted: false, reason }));
    }),

    admit: enqueueActions(({ context, enqueue }, params: { event: Inbound<'TrainResult'> | Inbound<'ValidateResult'> }) => {
      const e = params.event;
      const r = context.round!;
      const reason = admissionProblem(r, e, true);
      if (reason) {
        // A malformed answer from a selected client is its answer for the round (it is settled, so the
        // round need not wait for it); a refused duplicate or stray must not touch the real one.
        const answeredBadly = (reason === 'base-mismatch' || reason === 'bad-weight') && isSelected(r, e.from);
        const counted = answeredBadly ? settle(reject(r, reason), e.from) : reject(r, reason);
        enqueue.assign({ round: counted, totals: { ...context.totals, rejected: mergeCounts(context.totals.rejected, { [reason]: 1 }) } });
        enqueue.emit(outbound(e.from, { type: 'UpdateAck', taskId: e.taskId, accepted: false, reason }));
        return;
      }
      if (e.type === 'ValidateResult') {
        const next = settle({ ...r, accepted: r.accepted + 1, totalWeight: r.totalWeight + e.numExamples, metricSums: addMetrics(r.metricSums, e.metrics, e.numExamples) }, e.from);
        enqueue.assign({ round: next });
        enqueue.emit(outbound(e.from, { type: 'UpdateAck', taskId: e.taskId, accepted: true, reason: '' }));
        return;
      }
      r.answers[e.from] = 'pending';
      r.declared[e.from] = { weight: e.numExamples, metrics: e.metrics };
      enqueue.assign({ round: { ...r, pendingCount: r.pendingCount + 1 } });
      enqueue.sendTo('fetcher', { type: 'FETCH', sessionId: r.sessionId, round: r.round, client: e.from, updateId: e.updateId } satisfies FetchRequest);
    }),

    acceptFetched: enqueueActions(({ context, enqueue }, params: { event: FetchedUpdate }) => {
      const r = context.round!;
      const client = params.event.client;
      const d = r.declared[client] ?? { weight: 0, metrics: {} };
      enqueue.assign({
        round: settle({ ...r, accepted: r.accepted + 1, totalWeight: r.totalWeight + d.weight, metricSums: addMetrics(r.metricSums, d.metrics, d.weight) }, client),
      });
      enqueue.emit(outbound(client, { type: 'UpdateAck', taskId: taskIdOf(r, client), accepted: true, reason: '' }));
    }),

    rejectFetched: enqueueActions(({ context, enqueue }, params: { event: FetchedUpdate }) => {
      const e = params.event;
      const r = context.round!;
      const why: RejectionReason = (e.ok ? contentProblem(r, e) : e.reason) ?? 'fetch-failed';
      enqueue.assign({ round: settle(reject(r, why), e.client), totals: { ...context.totals, rejected: mergeCounts(context.totals.rejected, { [why]: 1 }) } });
      enqueue.emit(outbound(e.client, { type: 'UpdateAck', taskId: taskIdOf(r, e.client), accepted: false, reason: why }));
    }),

    reraise: raise(({ event }) => event),

    failRound: assign(({ context }, params: { reason: string }) => ({ round: { ...context.round!, status: 'failed' as const, failure: params.reason } })),

    cancelRound: assign(({ context, event }) => ({
      round: {
        ...context.round!,
        status: 'cancelled' as const,
        failure: event.type === 'CancelRound' ? event.reason || 'cancelled' : event.type === 'StartRound' ? 'superseded by a newer round' : 'cancelled',
      },
    })),

    sendReport: emit(({ context }) => {
      const r = context.round!;
      const body =
        r.task === 'validate'
          ? ({ type: 'ValidationReport', sessionId: r.sessionId, round: r.round, modelId: r.modelId, totalWeight: r.totalWeight, reports: r.accepted, metrics: meanMetrics(r.metricSums, r.totalWeight) } as const)
          : ({
              type: 'RoundReport',
              sessionId: r.sessionId,
              round: r.round,
              status: r.status ?? 'failed',
              reason: r.failure ?? '',
              modelId: r.status === 'ok' ? r.modelOut ?? '' : '',
              totalWeight: r.totalWeight,
              updates: r.accepted,
              selected: r.selected.length,
              rejected: reasonCounts(r.rejected),
              collectMs: Math.max(0, context.now - r.startedAt),
              aggregateMs: r.aggregateMs ?? 0,
              metrics: meanMetrics(r.metricSums, r.totalWeight),
            } as const);
      return outbound(context.reducer, body);
    }),

    cancelStragglers: enqueueActions(({ context, enqueue }) => {
      const r = context.round!;
      for (const client of r.selected) {
        if (r.answers[client] === 'answered' || !context.clients[client]) continue;
        enqueue.emit(outbound(client, { type: 'CancelTask', taskId: taskIdOf(r, client), reason: r.status === 'cancelled' ? 'round cancelled' : 'round closed' }));
      }
    }),

    closeRound: assign(({ context }) => {
      const r = context.round!;
      return {
        round: null,
        lastRound: r,
        totals: {
          rounds: context.totals.rounds + 1,
          accepted: context.totals.accepted + r.accepted,
          rejected: context.totals.rejected,
          failedRounds: context.totals.failedRounds + (r.status === 'ok' ? 0 : 1),
        },
      };
    }),
  },
  delays: {
    roundTimeout: ({ context }) => boundedDelay(context.round ? ms(context.round.config) : 180_000),
  },
  guards: {
    tooFewClients: ({ context }) => Object.keys(context.clients).length < minUpdates(context.round!),
    // A full buffer closes the round at once, even with fetches in flight: their updates arrive for a
    // closed round and are dropped, so the aggregate never holds more than the buffer size.
    collectingDone: ({ context }) => {
      const r = context.round!;
      return r.accepted >= wanted(r) || (r.pendingCount === 0 && r.answeredCount >= r.selected.length);
    },
    tooFewUpdates: ({ context }) => context.round!.accepted < minUpdates(context.round!),
    isValidation: ({ context }) => context.round!.task === 'validate',
    /** The fetched update belongs to this round and is still awaited (not from a closed round). */
    fetchAwaited: ({ context, event }) =>
      event.type === 'update.fetched' && !!context.round && event.sessionId === context.round.sessionId && event.round === context.round.round && context.round.answers[event.client] === 'pending',
    fetchAcceptable: ({ context, event }) => event.type === 'update.fetched' && event.ok && contentProblem(context.round!, event) === null,
    fromReducer: ({ context, event }) => 'from' in event && event.from === context.reducer,
    isOtherRound: ({ context, event }) => event.type === 'StartRound' && event.from === context.reducer && !!context.round && (context.round.sessionId !== event.sessionId || context.round.round !== event.round || context.round.task !== (event.task === 'validate' ? 'validate' : 'train')),
    isCurrentRound: ({ context, event }) =>
      event.type === 'CancelRound' && event.from === context.reducer && !!context.round && context.round.sessionId === event.sessionId && (event.round === 0 || context.round.round === event.round),
  },
}).createMachine({
  id: 'combiner',
  context: ({ input }) => ({
    self: input.self,
    reducer: input.reducer,
    clientTimeoutMs: input.clientTimeoutMs ?? 10_000,
    heartbeatMs: input.heartbeatMs ?? 2_000,
    maxClients: input.maxClients ?? 0,
    clients: {},
    statusDirty: false,
    lastStatusAt: Number.NEGATIVE_INFINITY,
    round: null,
    lastRound: null,
    now: 0,
    totals: { rounds: 0, accepted: 0, rejected: {}, failedRounds: 0 },
  }),
  invoke: { id: 'fetcher', src: 'fetcher' },
  initial: 'idle',
  on: {
    ClientHello: {
      actions: [
        assign({
          clients: ({ context, event }) => {
            context.clients[event.from] = { lastSeen: event.at, numExamples: event.numExamples };
            return context.clients;
          },
          now: ({ context, event }) => Math.max(context.now, event.at),
        }),
        emit(({ context, event }) => outbound(event.from, { type: 'ClientWelcome', combiner: context.self, heartbeatMs: context.heartbeatMs })),
        'reportStatus',
      ],
    },
    Heartbeat: [
      {
        guard: ({ context, event }) => Object.hasOwn(context.clients, event.from),
        actions: assign({
          clients: ({ context, event }) => {
            context.clients[event.from]!.lastSeen = event.at;
            return context.clients;
          },
          now: ({ context, event }) => Math.max(context.now, event.at),
        }),
      },
      // A heartbeat from a client that is not a member (it never said hello, or was dropped after a
      // network cut its link survived) does not make it one: it is told to say hello again.
      { actions: emit(({ event }) => outbound(event.from, { type: 'ClientBye', reason: 'not a member: say hello again' })) },
    ],
    ClientBye: { actions: [{ type: 'dropClient', params: ({ event }) => ({ client: event.from }) }, 'reportStatus'] },
    CLIENT_GONE: { actions: [{ type: 'dropClient', params: ({ event }) => ({ client: event.client, linkLost: true }) }, 'reportStatus'] },
    TICK: {
      actions: enqueueActions(({ context, event, enqueue }) => {
        enqueue.assign({ now: event.now });
        let dropped = false;
        for (const [client, c] of Object.entries(context.clients)) {
          if (event.now - c.lastSeen > context.clientTimeoutMs) {
            enqueue({ type: 'dropClient', params: { client } });
            dropped = true;
          }
        }
        if (dropped || context.statusDirty || event.now - context.lastStatusAt >= STATUS_KEEPALIVE_MS) enqueue({ type: 'reportStatus', params: { force: true } });
      }),
    },
    REDUCER_CONNECTED: {
      actions: [
        emit(({ context, event }) => outbound(context.reducer, { type: 'CombinerHello', name: context.self, endpoint: event.endpoint, maxClients: context.maxClients })),
        // a (re)connected reducer needs the whole membership at once
        { type: 'reportStatus', params: { force: true } },
      ],
    },
    // Results that arrive outside `collecting` are refused (and acknowledged) here, never folded.
    TrainResult: { actions: { type: 'refuseOutside', params: ({ event }) => ({ event }) } },
    ValidateResult: { actions: { type: 'refuseOutside', params: ({ event }) => ({ event }) } },
  },
  states: {
    idle: {
      on: { StartRound: { guard: 'fromReducer', target: 'selecting', actions: ['openRound', { type: 'reportStatus', params: { force: true } }] } },
    },
    selecting: {
      always: [
        { guard: 'tooFewClients', target: 'reporting', actions: { type: 'failRound', params: { reason: 'too-few-clients' } } },
        { target: 'requesting', actions: 'selectClients' },
      ],
    },
    requesting: {
      invoke: {
        src: 'stageModel',
        input: ({ context }) => ({ modelId: context.round!.modelId, from: context.reducer }),
        onDone: {
          target: 'collecting',
          actions: [
            assign({ round: ({ context, event }) => ({ ...context.round!, staged: event.output }) }),
            enqueueActions(({ context, enqueue }) => {
              const r = context.round!;
              if (r.task === 'train') enqueue({ type: 'beginAggregation', params: { sessionId: r.sessionId, round: r.round, size: r.staged!.size, strategy: r.config.strategy || 'fedavg', expected: r.selected.length } });
            }),
            'sendTasks',
          ],
        },
        onError: { target: 'reporting', actions: { type: 'failRound', params: { reason: 'model-unavailable' } } },
      },
      on: { CancelRound: { guard: 'isCurrentRound', target: 'reporting', actions: 'cancelRound' }, StartRound: supersede },
    },
    collecting: {
      after: { roundTimeout: { target: 'aggregating' } },
      always: { guard: 'collectingDone', target: 'aggregating' },
      on: {
        TrainResult: { actions: { type: 'admit', params: ({ event }) => ({ event }) } },
        ValidateResult: { actions: { type: 'admit', params: ({ event }) => ({ event }) } },
        'update.fetched': [
          {
            guard: and(['fetchAwaited', 'fetchAcceptable']),
            actions: [
              {
                type: 'foldUpdate',
                params: ({ context, event }) => ({
                  sessionId: context.round!.sessionId,
                  round: context.round!.round,
                  data: (event as Extract<FetchedUpdate, { ok: true }>).data,
                  weight: context.round!.declared[event.client]?.weight ?? 0,
                }),
              },
              { type: 'acceptFetched', params: ({ event }) => ({ event }) },
            ],
          },
          { guard: 'fetchAwaited', actions: { type: 'rejectFetched', params: ({ event }) => ({ event }) } },
        ],
        TaskFailed: {
          actions: assign({
            round: ({ context, event }) => {
              const r = context.round!;
              const owned = r.answers[event.from] === 'waiting' && taskIdOf(r, event.from) === event.taskId;
              return owned ? settleFailed(r, event.from) : r;
            },
          }),
        },
        CancelRound: { guard: 'isCurrentRound', target: 'reporting', actions: 'cancelRound' },
        StartRound: supersede,
      },
    },
    aggregating: {
      always: [
        { guard: 'isValidation', target: 'reporting', actions: assign({ round: ({ context }) => ({ ...context.round!, status: 'ok' as const }) }) },
        { guard: 'tooFewUpdates', target: 'reporting', actions: { type: 'failRound', params: { reason: 'too-few-updates' } } },
      ],
      invoke: {
        src: 'aggregate',
        input: ({ context }) => ({ sessionId: context.round!.sessionId, round: context.round!.round }),
        onDone: {
          target: 'reporting',
          actions: assign({ round: ({ context, event }) => ({ ...context.round!, status: 'ok' as const, modelOut: event.output.modelId, aggregateMs: event.output.ms }) }),
        },
        onError: { target: 'reporting', actions: { type: 'failRound', params: { reason: 'aggregation-failed' } } },
      },
      on: { CancelRound: { guard: 'isCurrentRound', target: 'reporting', actions: 'cancelRound' }, StartRound: supersede },
    },
    reporting: {
      entry: [
        'sendReport',
        'cancelStragglers',
        { type: 'discardAggregation', params: ({ context }) => ({ sessionId: context.round!.sessionId, round: context.round!.round }) },
        'closeRound',
        // the reducer (and its dashboard) sees the combiner idle again at once
        { type: 'reportStatus', params: { force: true } },
      ],
      always: 'idle',
    },
  },
});

export type CombinerMachine = typeof combinerMachine;
