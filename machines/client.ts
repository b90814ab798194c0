// The client statechart
//   disconnected -> discovering -> connecting -> connected{ ready <-> training | validating } -> ...
// A client only dials out: it asks the reducer which combiner to use (discovery), connects, says
// hello, and then works on the tasks its combiner pushes. Heartbeats run as a child actor while it
// is connected. When its combiner goes away it backs off (exponentially, with jitter) and discovers
// again, so a dead combiner's clients end up on the remaining ones. A task can be cancelled: leaving
// `training` stops the invoked actor, which aborts the user's training through its AbortSignal.
import { and, assign, emit, enqueueActions, fromCallback, fromPromise, setup } from 'xstate';
import type { RoundConfig } from '../src/protocol/generated.ts';
import { backoffMs, boundedDelay, outbound, type Inbound, type Outbound } from './common.ts';

export interface ClientInput {
  self: string;
  reducer: string;
  preferredCombiner?: string;
  /** Skip discovery and connect straight to this combiner (FEDn's "combiner" flag). */
  combiner?: { address: string; endpoint: string };
  backoff?: { initialMs: number; maxMs: number };
  seed?: number;
  connectTimeoutMs?: number;
  /** Examples the client holds, announced in its hello. */
  numExamples?: number;
}

export interface TaskInfo {
  kind: 'train' | 'validate';
  taskId: string;
  sessionId: string;
  round: number;
  modelId: string;
  config?: RoundConfig;
}

export interface ClientContext {
  self: string;
  reducer: string;
  preferredCombiner: string;
  fixedCombiner?: { address: string; endpoint: string };
  combiner: string;
  endpoint: string;
  heartbeatMs: number;
  attempt: number;
  backoff: { initialMs: number; maxMs: number };
  seed: number;
  connectTimeoutMs: number;
  numExamples: number;
  task: TaskInfo | null;
  lastError: string;
  stats: { trained: number; validated: number; failed: number; cancelled: number; rejected: number; accepted: number; reconnects: number };
}

export interface TrainOutput {
  updateId: string;
  numExamples: number;
  metrics: Record<string, number>;
  trainMs: number;
}

export interface ValidateOutput {
  numExamples: number;
  metrics: Record<string, number>;
}

export type ClientEvent =
  | Inbound<'ClientWelcome'>
  | Inbound<'TrainTask'>
  | Inbound<'ValidateTask'>
  | Inbound<'CancelTask'>
  | Inbound<'UpdateAck'>
  | Inbound<'ClientBye'>
  | { type: 'COMBINER_LOST'; reason: string }
  | { type: 'HEARTBEAT_DUE' }
  | { type: 'STOP' };

// A new task replaces whatever the client was doing (the combiner has moved on). The transitions
// live on the task states, not on `connected`, so taking a task never restarts the heartbeat child.
const taskTransitions = {
  TrainTask: { guard: 'fromMyCombiner', target: 'training', reenter: true, actions: 'takeTask' },
  ValidateTask: { guard: 'fromMyCombiner', target: 'validating', reenter: true, actions: 'takeTask' },
} as const;

// While a task runs: another task replaces it, and its combiner may cancel it (leaving the state stops
// the invoked actor, which aborts the user's code through its AbortSignal).
const busyTransitions = {
  ...taskTransitions,
  CancelTask: { guard: and(['isCurrentTask', 'fromMyCombiner']), target: 'ready', actions: 'countCancelled' },
} as const;

// What the train and validate actors are given, and what a failed task does: the same for both.
const taskInput = ({ context }: { context: ClientContext }): TaskInfo & { combiner: string } => ({ ...context.task!, combiner: context.combiner });
const taskFailed = { target: 'ready', actions: { type: 'reportFailure', params: ({ event }: { event: { error: unknown } }) => ({ error: event.error }) } } as const;

export const clientMachine = setup({
  types: {
    context: {} as ClientContext,
    events: {} as ClientEvent,
    input: {} as ClientInput,
    emitted: {} as Outbound,
  },
  actors: {
    /** Asks the reducer for a combiner; resolves with its address and endpoint, rejects to retry later. */
    discover: fromPromise<{ combiner: string; endpoint: string }, { self: string; reducer: string; preferred: string }>(async () => {
      throw new Error('discover not provided');
    }),
    /** Opens the link to the combiner's node. */
    connect: fromPromise<void, { combiner: string; endpoint: string }>(async () => {
      throw new Error('connect not provided');
    }),
    /** Sends HEARTBEAT_DUE back every interval while the client is connected. */
    heartbeat: fromCallback<{ type: 'noop' }, { intervalMs: number }>(() => () => undefined),
    train: fromPromise<TrainOutput, TaskInfo & { combiner: string }>(async () => {
      throw new Error('train not provided');
    }),
    validate: fromPromise<ValidateOutput, TaskInfo & { combiner: string }>(async () => {
      throw new Error('validate not provided');
    }),
  },
  actions: {
    /** Closes whatever link the client held to its combiner (provided by the assembly). */
    disconnect: (_, _params: { combiner: string }) => undefined,
    takeTask: assign(({ event }) => {
      const e = event as Inbound<'TrainTask'> | Inbound<'ValidateTask'>;
      const task: TaskInfo =
        e.type === 'TrainTask'
          ? { kind: 'train', taskId: e.taskId, sessionId: e.sessionId, round: e.round, modelId: e.modelId, config: e.config }
          : { kind: 'validate', taskId: e.taskId, sessionId: e.sessionId, round: e.round, modelId: e.modelId };
      return { task };
    }),
    reportFailure: enqueueActions(({ context, enqueue }, params: { error: unknown }) => {
      const reason = String((params.error as Error)?.message ?? params.error).slice(0, 500);
      enqueue.emit(outbound(context.combiner, { type: 'TaskFailed', taskId: context.task!.taskId, reason }));
      enqueue.assign({ task: null, stats: { ...context.stats, failed: context.stats.failed + 1 } });
    }),
    reportTrained: enqueueActions(({ context, enqueue }, out: TrainOutput) => {
      const t = context.task!;
      enqueue.emit(
        outbound(context.combiner, {
          type: 'TrainResult',
          taskId: t.taskId,
          sessionId: t.sessionId,
          round: t.round,
          baseModelId: t.modelId,
          updateId: out.updateId,
          numExamples: out.numExamples,
          metrics: out.metrics,
          trainMs: out.trainMs,
        }),
      );
      enqueue.assign({ task: null, stats: { ...context.stats, trained: context.stats.trained + 1 } });
    }),
    reportValidated: enqueueActions(({ context, enqueue }, out: ValidateOutput) => {
      const t = context.task!;
      enqueue.emit(
        outbound(context.combiner, { type: 'ValidateResult', taskId: t.taskId, sessionId: t.sessionId, round: t.round, modelId: t.modelId, numExamples: out.numExamples, metrics: out.metrics }),
      );
      enqueue.assign({ task: null, stats: { ...context.stats, validated: context.stats.validated + 1 } });
    }),
    countCancelled: assign(({ context }) => ({ task: null, stats: { ...context.stats, cancelled: context.stats.cancelled + 1 } })),
    lose: assign(({ context }, params: { reason: string }) => ({
      attempt: context.attempt + 1,
      lastError: params.reason,
      task: null,
      stats: { ...context.stats, reconnects: context.stats.reconnects + 1 },
    })),
  },
  delays: {
    backoff: ({ context }) => boundedDelay(backoffMs(context.attempt, context.backoff.initialMs, context.backoff.maxMs, context.seed)),
    connectTimeout: ({ context }) => boundedDelay(context.connectTimeoutMs),
  },
  guards: {
    hasFixedCombiner: ({ context }) => !!context.fixedCombiner,
    isCurrentTask: ({ context, event }) => event.type === 'CancelTask' && context.task?.taskId === event.taskId,
    fromMyCombiner: ({ context, event }) => 'from' in event && event.from === context.combiner,
  },
}).createMachine({
  id: 'client',
  context: ({ input }) => ({
    self: input.self,
    reducer: input.reducer,
    preferredCombiner: input.preferredCombiner ?? '',
    fixedCombiner: input.combiner,
    combiner: '',
    endpoint: '',
    heartbeatMs: 2_000,
    attempt: 0,
    backoff: input.backoff ?? { initialMs: 500, maxMs: 30_000 },
    seed: input.seed ?? 0,
    connectTimeoutMs: input.connectTimeoutMs ?? 10_000,
    numExamples: input.numExamples ?? 0,
    task: null,
    lastError: '',
    stats: { trained: 0, validated: 0, failed: 0, cancelled: 0, rejected: 0, accepted: 0, reconnects: 0 },
  }),
  initial: 'disconnected',
  on: {
    STOP: '.stopped',
  },
  states: {
    disconnected: {
      after: {
        backoff: [
          { guard: 'hasFixedCombiner', target: 'connecting', actions: assign({ combiner: ({ context }) => context.fixedCombiner!.address, endpoint: ({ context }) => context.fixedCombiner!.endpoint }) },
          { target: 'discovering' },
        ],
      },
    },
    discovering: {
      invoke: {
        src: 'discover',
        // back after a lost link: the combiner it had first (it may still be fetching this client's update)
        input: ({ context }) => ({ self: context.self, reducer: context.reducer, preferred: context.preferredCombiner || context.combiner }),
        onDone: { target: 'connecting', actions: assign({ combiner: ({ event }) => event.output.combiner, endpoint: ({ event }) => event.output.endpoint }) },
        onError: { target: 'disconnected', actions: assign({ attempt: ({ context }) => context.attempt + 1, lastError: ({ event }) => String((event.error as Error)?.message ?? event.error) }) },
      },
    },
    connecting: {
      initial: 'dialing',
      after: { connectTimeout: { target: 'disconnected', actions: [{ type: 'disconnect', params: ({ context }) => ({ combiner: context.combiner }) }, { type: 'lose', params: { reason: 'connect timeout' } }] } },
      on: { COMBINER_LOST: { target: 'disconnected', actions: { type: 'lose', params: ({ event }) => ({ reason: event.reason }) } } },
      states: {
        dialing: {
          invoke: {
            src: 'connect',
            input: ({ context }) => ({ combiner: context.combiner, endpoint: context.endpoint }),
            onDone: { target: 'greeting', actions: emit(({ context }) => outbound(context.combiner, { type: 'ClientHello', client: context.self, numExamples: context.numExamples })) },
            onError: { target: '#client.disconnected', actions: { type: 'lose', params: ({ event }) => ({ reason: String((event.error as Error)?.message ?? event.error) }) } },
          },
        },
        greeting: {
          on: {
            ClientWelcome: {
              guard: 'fromMyCombiner',
              target: '#client.connected',
              // a combiner's interval is clamped to [100 ms, 60 s]: a huge one must not become a 1 ms timer
              actions: assign({ heartbeatMs: ({ event }) => Math.min(60_000, Math.max(100, event.heartbeatMs || 2_000)), attempt: 0, lastError: '' }),
            },
          },
        },
      },
    },
    connected: {
      initial: 'ready',
      invoke: { id: 'heartbeat', src: 'heartbeat', input: ({ context }) => ({ intervalMs: context.heartbeatMs }) },
      on: {
        HEARTBEAT_DUE: { actions: emit(({ context }) => outbound(context.combiner, { type: 'Heartbeat', seq: 0 })) },
        COMBINER_LOST: { target: 'disconnected', actions: [{ type: 'disconnect', params: ({ context }) => ({ combiner: context.combiner }) }, { type: 'lose', params: ({ event }) => ({ reason: event.reason }) }] },
        // The combiner no longer counts this client (it timed it out while the link survived a network
        // cut): greet it again over the same link instead of staying an orphan that never trains.
        ClientBye: { guard: 'fromMyCombiner', target: 'connecting', actions: assign({ task: null, lastError: ({ event }) => `combiner: ${event.reason}` }) },
        UpdateAck: {
          actions: assign({
            stats: ({ context, event }) => (event.accepted ? { ...context.stats, accepted: context.stats.accepted + 1 } : { ...context.stats, rejected: context.stats.rejected + 1 }),
          }),
        },
      },
      states: {
        ready: { on: taskTransitions },
        training: {
          invoke: { src: 'train', input: taskInput, onDone: { target: 'ready', actions: { type: 'reportTrained', params: ({ event }) => event.output } }, onError: taskFailed },
          on: busyTransitions,
        },
        validating: {
          invoke: { src: 'validate', input: taskInput, onDone: { target: 'ready', actions: { type: 'reportValidated', params: ({ event }) => event.output } }, onError: taskFailed },
          on: busyTransitions,
        },
      },
    },
    stopped: {
      type: 'final',
      entry: [
        enqueueActions(({ context, enqueue }) => {
          if (context.combiner) enqueue.emit(outbound(context.combiner, { type: 'ClientBye', reason: 'stopped' }));
        }),
        { type: 'disconnect', params: ({ context }) => ({ combiner: context.combiner }) },
      ],
    },
  },
});

export type ClientMachine = typeof clientMachine;
