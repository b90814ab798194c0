// The reducer statechart: membership of combiners, discovery for clients, and the session plan
//   idle -> seeded -> running{ planning -> dispatching -> awaitingCombiners -> reducing -> committing
//                              -> validating } -> done | failed | stopped
// A round needs a quorum of combiners and clients to start, waits for every participating
// combiner's report at most until the round timeout (plus a grace period), reduces only combiner
// models that reported ok, and a session fails explicitly after too many failed rounds in a row.
// `STOP` cancels the round on every combiner (which cancels every client task).
import { assign, enqueueActions, fromPromise, not, setup } from 'xstate';
import type { RoundConfig, RoundReport, ValidationReport } from '../src/protocol/generated.ts';
import { boundedDelay, outbound, type Inbound, type Outbound } from './common.ts';

export interface SessionConfig {
  sessionId: string;
  rounds: number;
  roundTimeoutMs: number;
  /** Combiners that must report an ok model for a round to count. */
  minCombiners: number;
  /** Connected clients (over all combiners) needed before a round starts. */
  minClients: number;
  /** Accepted updates a combiner needs for its own round to succeed. */
  minUpdates: number;
  bufferSize: number;
  maxClients: number;
  fraction: number;
  localEpochs: number;
  batchSize: number;
  learningRate: number;
  proximalMu: number;
  seed: number;
  strategy: string;
  validate: boolean;
  /** How long a round may wait in `planning` for the quorum before the session fails. */
  quorumTimeoutMs: number;
  maxConsecutiveFailures: number;
}

export const defaultSessionConfig = (sessionId: string): SessionConfig => ({
  sessionId,
  rounds: 5,
  roundTimeoutMs: 180_000,
  minCombiners: 1,
  minClients: 1,
  minUpdates: 1,
  bufferSize: -1,
  maxClients: 0,
  fraction: 1,
  localEpochs: 1,
  batchSize: 32,
  learningRate: 0.1,
  proximalMu: 0,
  seed: 0,
  strategy: 'fedavg',
  validate: false,
  quorumTimeoutMs: 60_000,
  maxConsecutiveFailures: 3,
});

export interface CombinerEntry {
  endpoint: string;
  maxClients: number;
  clients: string[];
  /**
   * Clients assigned by discovery (with the time) that have not shown up in a status report yet.
   * Updated in place: a burst of thousands of discoveries must not copy it per request.
   */
  assigned: Record<string, number>;
  assignedCount: number;
  connected: boolean;
  lastSeen: number;
  state: string;
}

export interface RoundResult {
  round: number;
  status: 'ok' | 'failed' | 'cancelled';
  reason: string;
  modelId: string;
  participants: string[];
  updates: number;
  totalWeight: number;
  rejected: Record<string, number>;
  trainMetrics: Record<string, number>;
  evalMetrics: Record<string, number>;
  validation: Record<string, number>;
  startedAt: number;
  endedAt: number;
}

export interface CurrentRound {
  round: number;
  participants: string[];
  reports: Record<string, RoundReport>;
  gone: string[];
  validations: Record<string, ValidationReport>;
  startedAt: number;
  reducedModelId?: string;
  evalMetrics: Record<string, number>;
  failure?: string;
}

export interface ReducerContext {
  self: string;
  combiners: Record<string, CombinerEntry>;
  seedModelId: string;
  globalModelId: string;
  session: SessionConfig | null;
  /** Last round number used; rounds number from 1 and keep counting across failed rounds. */
  roundNo: number;
  /** Rounds committed in this session. */
  committed: number;
  consecutiveFailures: number;
  current: CurrentRound | null;
  history: RoundResult[];
  failure: string;
  now: number;
}

export interface ReducerInput {
  self?: string;
  /** Resume a session after a restart: the trail head and how far the session got. */
  resume?: { session: SessionConfig; globalModelId: string; seedModelId: string; committed: number; roundNo: number; history: RoundResult[] };
}

export type ReducerEvent =
  | Inbound<'CombinerHello'>
  | Inbound<'CombinerStatus'>
  | Inbound<'AssignRequest'>
  | Inbound<'RoundReport'>
  | Inbound<'ValidationReport'>
  | { type: 'COMBINER_GONE'; combiner: string }
  | { type: 'SEED'; modelId: string }
  | { type: 'START'; session: SessionConfig }
  | { type: 'STOP'; reason?: string }
  | { type: 'TICK'; now: number };

const roundConfigOf = (s: SessionConfig, round: number): RoundConfig => ({
  minUpdates: s.minUpdates,
  bufferSize: s.bufferSize,
  timeoutMs: s.roundTimeoutMs,
  maxClients: s.maxClients,
  fraction: s.fraction,
  localEpochs: s.localEpochs,
  batchSize: s.batchSize,
  learningRate: s.learningRate,
  proximalMu: s.proximalMu,
  seed: (s.seed * 1_000_003 + round) >>> 0,
  strategy: s.strategy,
});

/** Combiners that can take part now: connected and holding at least one live client. */
export const eligibleCombiners = (ctx: ReducerContext): string[] =>
  Object.entries(ctx.combiners)
    .filter(([, c]) => c.connected && c.clients.length > 0)
    .map(([name]) => name)
    .sort();

export const connectedClients = (ctx: ReducerContext): number =>
  eligibleCombiners(ctx).reduce((n, name) => n + (ctx.combiners[name]?.clients.length ?? 0), 0);

/**
 * With a client fraction C < 1, how many clients each combiner samples so that the whole round has
 * round(C·K) clients (at least one), split in proportion to the combiners' clients by largest
 * remainder. Each combiner rounding up on its own share would sample more than C·K in total.
 */
export function clientQuotas(ctx: ReducerContext, s: SessionConfig): Record<string, number> {
  if (!(s.fraction > 0 && s.fraction < 1)) return {};
  const combiners = eligibleCombiners(ctx);
  const sizes = combiners.map((c) => ctx.combiners[c]!.clients.length);
  const total = sizes.reduce((a, b) => a + b, 0);
  if (total === 0) return {};
  const want = Math.max(1, Math.round(s.fraction * total));
  const exact = sizes.map((n) => (want * n) / total);
  const quota = exact.map(Math.floor);
  let left = want - quota.reduce((a, b) => a + b, 0);
  const order = exact.map((x, i) => ({ i, r: x - Math.floor(x) })).sort((a, b) => b.r - a.r || a.i - b.i);
  for (const { i } of order) {
    if (left-- <= 0) break;
    quota[i]!++;
  }
  return Object.fromEntries(combiners.map((c, i) => [c, quota[i]!]));
}

/** Least-packed discovery: the connected combiner with the fewest clients (counting pending assignments). */
export function chooseCombiner(ctx: ReducerContext, preferred: string, asking = ''): string | undefined {
  // The asking client's own earlier assignment (a retry after a failed connect) does not count against it.
  const load = (c: CombinerEntry): number => c.clients.length + c.assignedCount - (Object.hasOwn(c.assigned, asking) ? 1 : 0);
  const open = Object.entries(ctx.combiners).filter(([, c]) => c.connected && (c.maxClients === 0 || load(c) < c.maxClients));
  const pref = open.find(([name]) => name === preferred);
  if (pref) return pref[0];
  open.sort(([a, x], [b, y]) => load(x) - load(y) || (a < b ? -1 : 1));
  return open[0]?.[0];
}

function trainMetricsOf(r: CurrentRound): Record<string, number> {
  const reports = Object.values(r.reports).filter((x) => x.status === 'ok');
  const weight = reports.reduce((n, x) => n + x.totalWeight, 0);
  const out: Record<string, number> = { updates: reports.reduce((n, x) => n + x.updates, 0), weight };
  for (const x of reports) for (const [k, v] of Object.entries(x.metrics)) out[k] = (out[k] ?? 0) + (v * x.totalWeight) / (weight || 1);
  return out;
}

export type CombinerModel = RoundReport & { combiner: string };

/** How long a discovery assignment counts against a combiner while the client has not connected. */
const ASSIGNMENT_TTL_MS = 30_000;

const okReports = (r: CurrentRound): CombinerModel[] =>
  Object.entries(r.reports)
    // A combiner that went away after reporting cannot serve its model any more.
    .filter(([name, x]) => x.status === 'ok' && x.modelId !== '' && !r.gone.includes(name) && Number.isFinite(x.totalWeight) && x.totalWeight > 0)
    .map(([combiner, x]) => ({ ...x, combiner }));

export const reducerMachine = setup({
  types: {
    context: {} as ReducerContext,
    events: {} as ReducerEvent,
    input: {} as ReducerInput,
    emitted: {} as Outbound,
  },
  actors: {
    /** Pulls the ok combiner models, reduces them (weighted by total_weight) and stores the new global model. */
    reduce: fromPromise<{ modelId: string }, { sessionId: string; round: number; globalModelId: string; reports: CombinerModel[] }>(async () => {
      throw new Error('reduce not provided');
    }),
    /** Appends the new global model to the trail (durably) before anyone is told about it. */
    commit: fromPromise<void, { session: SessionConfig; round: number; modelId: string; parentModelId: string; metrics: Record<string, number> }>(async () => {
      throw new Error('commit not provided');
    }),
    /** Optional server-side evaluation of the new global model (e.g. a held-out set). */
    evaluate: fromPromise<Record<string, number>, { modelId: string; round: number }>(async () => ({})),
  },
  actions: {
    /** Persist the session's progress and the last round's record (assemblies provide it; a no-op in pure tests). */
    persistSession: (_, _params: { status: string }) => undefined,

    openSession: assign(({ event }) => {
      const e = event as Extract<ReducerEvent, { type: 'START' }>;
      return { session: e.session, roundNo: 0, committed: 0, consecutiveFailures: 0, history: [], failure: '', current: null };
    }),

    dispatch: enqueueActions(({ context, enqueue }) => {
      const s = context.session!;
      const round = context.roundNo + 1;
      const quotas = clientQuotas(context, s);
      // a combiner whose share of a sampled round is zero clients sits the round out
      const participants = eligibleCombiners(context).filter((c) => quotas[c] !== 0);
      enqueue.assign({
        roundNo: round,
        current: { round, participants, reports: {}, gone: [], validations: {}, startedAt: context.now, evalMetrics: {} },
      });
      for (const c of participants) {
        const config = roundConfigOf(s, round);
        if (quotas[c] !== undefined) config.maxClients = s.maxClients > 0 ? Math.min(s.maxClients, quotas[c]) : quotas[c];
        enqueue.emit(outbound(c, { type: 'StartRound', sessionId: s.sessionId, round, task: 'train', modelId: context.globalModelId, config }));
      }
    }),

    recordReport: assign(({ context, event }) => {
      const e = event as Inbound<'RoundReport'>;
      const r = context.current!;
      const { type: _t, from: _f, at, ...report } = e;
      return { current: { ...r, reports: { ...r.reports, [e.from]: { ...report } } }, now: Math.max(context.now, at) };
    }),

    recordValidation: assign(({ context, event }) => {
      const e = event as Inbound<'ValidationReport'>;
      const r = context.current!;
      const { type: _t, from: _f, at: _a, ...report } = e;
      return { current: { ...r, validations: { ...r.validations, [e.from]: report } } };
    }),

    cancelMissing: enqueueActions(({ context, enqueue }) => {
      const r = context.current!;
      for (const c of r.participants) {
        if (!r.reports[c] && !r.gone.includes(c) && context.combiners[c]?.connected) {
          enqueue.emit(outbound(c, { type: 'CancelRound', sessionId: context.session!.sessionId, round: r.round, reason: 'reducer round timeout' }));
        }
      }
    }),

    cancelAll: enqueueActions(({ context, enqueue }, params: { reason: string }) => {
      const s = context.session;
      if (!s) return;
      for (const [name, c] of Object.entries(context.combiners)) {
        if (c.connected) enqueue.emit(outbound(name, { type: 'CancelRound', sessionId: s.sessionId, round: 0, reason: params.reason }));
      }
    }),

    startValidation: enqueueActions(({ context, enqueue }) => {
      const r = context.current!;
      const s = context.session!;
      for (const c of Object.keys(r.reports)) {
        if (r.reports[c]?.status === 'ok' && context.combiners[c]?.connected) {
          enqueue.emit(outbound(c, { type: 'StartRound', sessionId: s.sessionId, round: r.round, task: 'validate', modelId: r.reducedModelId!, config: roundConfigOf(s, r.round) }));
        }
      }
    }),

    failCurrent: assign(({ context }, params: { reason: string }) => ({ current: { ...context.current!, failure: params.reason } })),

    closeRound: assign(({ context }) => {
      const r = context.current!;
      const ok = !r.failure && !!r.reducedModelId;
      const reports = Object.values(r.reports);
      const weight = reports.reduce((n, x) => n + (x.status === 'ok' ? x.totalWeight : 0), 0);
      const { updates: _u, weight: _w, ...trainMetrics } = trainMetricsOf(r);
      const rejected: Record<string, number> = {};
      for (const x of reports) for (const { reason, count } of x.rejected) rejected[reason] = (rejected[reason] ?? 0) + count;
      const vals = Object.values(r.validations);
      const vWeight = vals.reduce((n, v) => n + v.totalWeight, 0);
      const validation: Record<string, number> = {};
      for (const v of vals) for (const [k, m] of Object.entries(v.metrics)) validation[k] = (validation[k] ?? 0) + (m * v.totalWeight) / (vWeight || 1);
      const result: RoundResult = {
        round: r.round,
        status: ok ? 'ok' : 'failed',
        reason: r.failure ?? '',
        modelId: ok ? r.reducedModelId! : context.globalModelId,
        participants: r.participants,
        updates: reports.reduce((n, x) => n + (x.status === 'ok' ? x.updates : 0), 0),
        totalWeight: weight,
        rejected,
        trainMetrics,
        evalMetrics: r.evalMetrics,
        validation,
        startedAt: r.startedAt,
        endedAt: context.now,
      };
      return {
        history: [...context.history, result],
        current: null,
        globalModelId: result.modelId,
        committed: context.committed + (ok ? 1 : 0),
        consecutiveFailures: ok ? 0 : context.consecutiveFailures + 1,
      };
    }),
  },
  delays: {
    roundDeadline: ({ context }) => boundedDelay((context.session?.roundTimeoutMs ?? 180_000) + Math.min(30_000, Math.max(1_000, (context.session?.roundTimeoutMs ?? 0) * 0.25))),
    retryDelay: ({ context }) => boundedDelay(Math.min(context.session?.roundTimeoutMs ?? 5_000, 5_000, 500 * 2 ** Math.max(0, context.consecutiveFailures - 1))),
    quorumTimeout: ({ context }) => boundedDelay(context.session?.quorumTimeoutMs ?? 60_000),
    validationTimeout: ({ context }) => boundedDelay(context.session?.roundTimeoutMs ?? 180_000),
  },
  guards: {
    hasQuorum: ({ context }) => {
      const s = context.session!;
      return eligibleCombiners(context).length >= s.minCombiners && connectedClients(context) >= s.minClients;
    },
    allReported: ({ context }) => {
      const r = context.current!;
      return r.participants.every((c) => r.reports[c] || r.gone.includes(c));
    },
    enoughModels: ({ context }) => okReports(context.current!).length >= Math.max(1, context.session!.minCombiners),
    isParticipantReport: ({ context, event }) =>
      event.type === 'RoundReport' && !!context.current && event.sessionId === context.session?.sessionId && event.round === context.current.round && context.current.participants.includes(event.from) && !context.current.reports[event.from],
    isValidationReport: ({ context, event }) =>
      event.type === 'ValidationReport' && !!context.current && event.sessionId === context.session?.sessionId && event.round === context.current.round && !!context.current.reports[event.from] && !context.current.validations[event.from],
    validationsIn: ({ context }) => {
      const r = context.current!;
      return Object.keys(r.reports)
        .filter((c) => r.reports[c]?.status === 'ok' && context.combiners[c]?.connected && !r.gone.includes(c))
        .every((c) => r.validations[c]);
    },
    wantsValidation: ({ context }) => context.session!.validate,
    moreRounds: ({ context }) => context.committed < context.session!.rounds,
    tooManyFailures: ({ context }) => context.consecutiveFailures >= context.session!.maxConsecutiveFailures,
    hasSeed: ({ context }) => context.globalModelId !== '',
    fromCombiner: ({ event }) => 'from' in event && event.from.startsWith('combiner/'),
  },
}).createMachine({
  id: 'reducer',
  context: ({ input }) => ({
    self: input.self ?? 'reducer/main',
    combiners: {},
    seedModelId: input.resume?.seedModelId ?? '',
    globalModelId: input.resume?.globalModelId ?? '',
    session: input.resume?.session ?? null,
    roundNo: input.resume?.roundNo ?? 0,
    committed: input.resume?.committed ?? 0,
    consecutiveFailures: 0,
    current: null,
    history: input.resume?.history ?? [],
    failure: '',
    now: 0,
  }),
  initial: 'boot',
  on: {
    // Only combiners register and report membership, only clients ask for one (with authentication the
    // link guarantees the address prefix is the sender's authenticated role).
    CombinerHello: {
      guard: 'fromCombiner',
      actions: assign({
        combiners: ({ context, event }) => ({
          ...context.combiners,
          [event.from]: {
            endpoint: event.endpoint,
            maxClients: event.maxClients,
            clients: context.combiners[event.from]?.clients ?? [],
            assigned: context.combiners[event.from]?.assigned ?? {},
            assignedCount: context.combiners[event.from]?.assignedCount ?? 0,
            connected: true,
            lastSeen: event.at,
            state: 'idle',
          },
        }),
        now: ({ context, event }) => Math.max(context.now, event.at),
      }),
    },
    CombinerStatus: {
      guard: 'fromCombiner',
      actions: assign({
        combiners: ({ context, event }) => {
          const c = context.combiners[event.from];
          if (!c) return context.combiners; // status before hello: ignored until the combiner introduces itself
          // Assignments are settled once the client shows up, and forgotten if it never does.
          for (const client of event.clients) delete c.assigned[client];
          for (const [client, at] of Object.entries(c.assigned)) if (event.at - at > ASSIGNMENT_TTL_MS) delete c.assigned[client];
          return { ...context.combiners, [event.from]: { ...c, clients: event.clients, assignedCount: Object.keys(c.assigned).length, connected: true, lastSeen: event.at, state: event.state } };
        },
        now: ({ context, event }) => Math.max(context.now, event.at),
      }),
    },
    COMBINER_GONE: {
      actions: assign(({ context, event }) => {
        const c = context.combiners[event.combiner];
        if (!c) return {};
        const current = context.current && context.current.participants.includes(event.combiner) ? { ...context.current, gone: [...context.current.gone, event.combiner] } : context.current;
        return { combiners: { ...context.combiners, [event.combiner]: { ...c, connected: false, clients: [], assigned: {}, assignedCount: 0 } }, current };
      }),
    },
    AssignRequest: {
      guard: ({ event }) => event.from.startsWith('client/'),
      actions: enqueueActions(({ context, event, enqueue }) => {
        const choice = chooseCombiner(context, event.preferredCombiner, event.from);
        if (!choice) {
          enqueue.emit(outbound(event.from, { type: 'AssignResponse', status: 'retry', combiner: '', endpoint: '', reason: 'no combiner is accepting clients', retryAfterMs: 1_000 }));
          return;
        }
        const c = context.combiners[choice]!;
        const fresh = !Object.hasOwn(c.assigned, event.from);
        c.assigned[event.from] = event.at;
        enqueue.assign({ combiners: { ...context.combiners, [choice]: { ...c, assignedCount: c.assignedCount + (fresh ? 1 : 0) } } });
        enqueue.emit(outbound(event.from, { type: 'AssignResponse', status: 'assigned', combiner: choice, endpoint: c.endpoint, reason: '', retryAfterMs: 0 }));
      }),
    },
    TICK: { actions: assign({ now: ({ event }) => event.now }) },
  },
  states: {
    boot: {
      always: [{ guard: ({ context }) => context.session !== null && context.globalModelId !== '', target: 'running' }, { guard: 'hasSeed', target: 'seeded' }, { target: 'idle' }],
    },
    idle: {
      on: { SEED: { target: 'seeded', actions: assign({ seedModelId: ({ event }) => event.modelId, globalModelId: ({ event }) => event.modelId }) } },
    },
    seeded: {
      on: {
        SEED: { actions: assign({ seedModelId: ({ event }) => event.modelId, globalModelId: ({ event }) => event.modelId }) },
        START: { target: 'running', actions: 'openSession' },
      },
    },
    running: {
      initial: 'planning',
      on: {
        STOP: { target: 'stopped', actions: [{ type: 'cancelAll', params: ({ event }) => ({ reason: event.reason ?? 'session stopped' }) }, assign({ failure: ({ event }) => event.reason ?? 'stopped by operator' })] },
      },
      states: {
        planning: {
          always: [
            { guard: 'tooManyFailures', target: '#reducer.failed', actions: assign({ failure: ({ context }) => `${context.consecutiveFailures} rounds failed in a row` }) },
            { guard: 'hasQuorum', target: 'dispatching' },
          ],
          after: { quorumTimeout: { target: '#reducer.failed', actions: assign({ failure: 'no quorum of combiners and clients' }) } },
        },
        dispatching: {
          entry: 'dispatch',
          always: 'awaitingCombiners',
        },
        awaitingCombiners: {
          always: { guard: 'allReported', target: 'reducing' },
          after: { roundDeadline: { target: 'reducing', actions: 'cancelMissing' } },
          on: {
            RoundReport: { guard: 'isParticipantReport', actions: 'recordReport' },
          },
        },
        reducing: {
          always: { guard: not('enoughModels'), target: 'roundFailed', actions: { type: 'failCurrent', params: { reason: 'too-few-combiner-models' } } },
          invoke: {
            src: 'reduce',
            input: ({ context }) => ({ sessionId: context.session!.sessionId, round: context.current!.round, globalModelId: context.globalModelId, reports: okReports(context.current!) }),
            onDone: { target: 'committing', actions: assign({ current: ({ context, event }) => ({ ...context.current!, reducedModelId: event.output.modelId }) }) },
            onError: { target: 'roundFailed', actions: { type: 'failCurrent', params: { reason: 'reduce-failed' } } },
          },
        },
        committing: {
          invoke: {
            src: 'commit',
            input: ({ context }) => ({
              session: context.session!,
              round: context.current!.round,
              modelId: context.current!.reducedModelId!,
              parentModelId: context.globalModelId,
              metrics: trainMetricsOf(context.current!),
            }),
            onDone: 'validating',
            onError: { target: '#reducer.failed', actions: assign({ failure: 'could not commit the model to the trail' }) },
          },
        },
        validating: {
          initial: 'evaluating',
          states: {
            evaluating: {
              invoke: {
                src: 'evaluate',
                input: ({ context }) => ({ modelId: context.current!.reducedModelId!, round: context.current!.round }),
                onDone: { target: 'choosing', actions: assign({ current: ({ context, event }) => ({ ...context.current!, evalMetrics: event.output }) }) },
                onError: 'choosing',
              },
            },
            choosing: {
              always: [{ guard: 'wantsValidation', target: 'collecting', actions: 'startValidation' }, { target: 'complete' }],
            },
            collecting: {
              always: { guard: 'validationsIn', target: 'complete' },
              after: { validationTimeout: 'complete' },
              on: { ValidationReport: { guard: 'isValidationReport', actions: 'recordValidation' } },
            },
            complete: { type: 'final' },
          },
          onDone: { target: 'advancing', actions: 'closeRound' },
        },
        // After a failed round the next one waits a little (growing with the failures in a row), so a
        // transient loss (clients re-connecting, a stale membership report) costs one round, not the session.
        roundFailed: {
          entry: 'closeRound',
          after: { retryDelay: 'advancing' },
          always: { guard: 'tooManyFailures', target: 'advancing' },
        },
        advancing: {
          entry: { type: 'persistSession', params: { status: 'running' } },
          always: [{ guard: 'moreRounds', target: 'planning' }, { target: '#reducer.done' }],
        },
      },
    },
    done: {
      entry: { type: 'persistSession', params: { status: 'done' } },
      on: { START: { target: 'running', actions: 'openSession' }, SEED: { target: 'seeded', actions: assign({ seedModelId: ({ event }) => event.modelId, globalModelId: ({ event }) => event.modelId }) } },
    },
    failed: {
      entry: { type: 'persistSession', params: { status: 'failed' } },
      on: { START: { target: 'running', actions: 'openSession' } },
    },
    stopped: {
      entry: { type: 'persistSession', params: { status: 'stopped' } },
      on: { START: { target: 'running', actions: 'openSession' } },
    },
  },
});

export type ReducerMachine = typeof reducerMachine;
