// Structured logs: pino JSON lines on stderr (stdout stays free for a command's own output, such as
// the one-line readiness record a supervisor reads). Nodes log what an operator needs to follow a
// federation from its logs alone: links up and down, rounds and sessions, refused frames and
// undeliverable messages (with the typed error code), and state changes at debug level. Errors go
// under "error" as { code, message } (pino's own "err" serializer would add an empty stack).
import pino, { type Logger } from 'pino';
import type { AnyActorRef } from 'xstate';
import type { Node } from './actors/node.ts';
import { FedError } from './errors.ts';

export type { Logger };

export const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof logLevels)[number];

export interface LogOptions {
  level?: string;
  /** Bound to every line, e.g. { role: 'combiner', name: 'c1' }. */
  bindings?: Record<string, unknown>;
  /** Defaults to stderr, written synchronously so the last lines before an exit are not lost. */
  destination?: pino.DestinationStream;
}

export function createLogger(opts: LogOptions = {}): Logger {
  const level = opts.level ?? 'info';
  if (!(logLevels as readonly string[]).includes(level)) throw new FedError('config', `log level must be one of ${logLevels.join(', ')}, got "${level}"`);
  return pino(
    { level, base: { pid: process.pid, ...opts.bindings }, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } },
    opts.destination ?? pino.destination({ dest: 2, sync: true }),
  );
}

/** Logs a node's link and delivery events; returns a function that stops logging them. */
export function logNode(node: Node, log: Logger): () => void {
  const up = (link: { remoteNode: string; channel: { peer: string }; remoteActors: Set<string> }): void => log.info({ peer: link.remoteNode, via: link.channel.peer, actors: [...link.remoteActors] }, 'link up');
  // A plain close is routine (a client drops its discovery link); the roles log what a loss means.
  const down = (link: { remoteNode: string; channel: { peer: string } }, unreachable: string[], error?: Error): void => {
    const quiet = !error || (error instanceof FedError && error.code === 'closed');
    log[quiet ? 'info' : 'warn']({ peer: link.remoteNode, via: link.channel.peer, unreachable, ...(error ? { error: errorFields(error) } : {}) }, 'link down');
  };
  const rejected = (error: FedError, link?: { remoteNode: string }): void => log.warn({ code: error.code, peer: link?.remoteNode, error: errorFields(error) }, 'rejected');
  const undeliverable = (envelope: { from: string; to: string; body: { type: string } }, error: FedError): void =>
    log.warn({ from: envelope.from, to: envelope.to, type: envelope.body.type, code: error.code, error: errorFields(error) }, 'undeliverable');
  node.on('linkUp', up);
  node.on('linkDown', down);
  node.on('rejected', rejected);
  node.on('undeliverable', undeliverable);
  return () => {
    node.off('linkUp', up);
    node.off('linkDown', down);
    node.off('rejected', rejected);
    node.off('undeliverable', undeliverable);
  };
}

export function errorFields(e: unknown): Record<string, unknown> {
  if (e instanceof FedError) return { code: e.code, message: e.message };
  if (e instanceof Error) return { message: e.message };
  return { message: String(e) };
}

/** The snapshot's state as one string ("running.collecting"), for logs and status lines. */
export function stateString(value: unknown): string {
  if (typeof value === 'string') return value;
  if (!value || typeof value !== 'object') return String(value);
  return Object.entries(value)
    .map(([k, sub]) => {
      const inner = stateString(sub);
      return inner ? `${k}.${inner}` : k;
    })
    .join(',');
}

interface Watch<C> {
  /** Called with each new snapshot's state string and context, and the previous ones. */
  onChange(state: string, context: C, prev: { state: string; context: C } | undefined): void;
}

function watch<C>(actor: AnyActorRef, w: Watch<C>): () => void {
  let prev: { state: string; context: C } | undefined;
  const sub = actor.subscribe({
    next: (snap: { value: unknown; context: C }) => {
      const state = stateString(snap.value);
      w.onChange(state, snap.context, prev);
      prev = { state, context: snap.context };
    },
    error: () => undefined,
  });
  return () => sub.unsubscribe();
}

interface ReducerCtxLike {
  session: { sessionId: string; rounds: number } | null;
  history: Array<{ round: number; status: string; reason: string; updates: number; evalMetrics: Record<string, number>; trainMetrics: Record<string, number>; rejected: Record<string, number>; modelId: string }>;
  failure: string;
  combiners: Record<string, { connected: boolean; clients: string[] }>;
}

/** Reducer: one line per round (with server-side accuracy when evaluated), and session outcomes. */
export function logReducer(actor: AnyActorRef, log: Logger): () => void {
  return watch<ReducerCtxLike>(actor, {
    onChange(state, c, prev) {
      if (prev && prev.state !== state) log.debug({ from: prev.state, to: state }, 'state');
      for (const r of c.history.slice(prev?.context.history.length ?? c.history.length)) {
        const fields = { session: c.session?.sessionId, round: r.round, status: r.status, updates: r.updates, accuracy: r.evalMetrics.accuracy, loss: r.evalMetrics.loss, rejected: r.rejected, modelId: r.modelId.slice(0, 12) };
        if (r.status === 'ok') log.info(fields, 'round');
        else log.warn({ ...fields, reason: r.reason }, 'round failed');
      }
      if (prev && prev.state !== state) {
        if (state.startsWith('running') && !prev.state.startsWith('running')) log.info({ session: c.session?.sessionId, rounds: c.session?.rounds }, 'session started');
        if (state === 'done') log.info({ session: c.session?.sessionId, rounds: c.history.length }, 'session done');
        if (state === 'failed') log.error({ session: c.session?.sessionId, failure: c.failure }, 'session failed');
        if (state === 'stopped') log.warn({ session: c.session?.sessionId, failure: c.failure }, 'session stopped');
      }
      if (prev) {
        for (const [name, x] of Object.entries(c.combiners)) {
          const before = prev.context.combiners[name];
          if (!before || before.connected !== x.connected) log[x.connected ? 'info' : 'warn']({ combiner: name, connected: x.connected, clients: x.clients.length }, x.connected ? 'combiner joined' : 'combiner left');
        }
      }
    },
  });
}

interface CombinerCtxLike {
  clients: Record<string, unknown>;
  lastRound: { sessionId: string; round: number; status?: string; accepted: number; totalWeight: number; rejected: Record<string, number>; failed: string[]; failure?: string; selected: string[] } | null;
}

/** Combiner: membership changes and one line per finished round with its acceptance counts. */
export function logCombiner(actor: AnyActorRef, log: Logger): () => void {
  // The machine updates its membership map in place, so snapshots share it: compare against our own copy.
  let members = new Set<string>();
  return watch<CombinerCtxLike>(actor, {
    onChange(state, c, prev) {
      if (prev && prev.state !== state) log.debug({ from: prev.state, to: state }, 'state');
      const now = Object.keys(c.clients);
      if (prev) {
        for (const k of now) if (!members.has(k)) log.info({ client: k, clients: now.length }, 'client joined');
        const present = new Set(now);
        for (const k of members) if (!present.has(k)) log.info({ client: k, clients: now.length }, 'client left');
      }
      members = new Set(now);
      const r = c.lastRound;
      if (r && r !== prev?.context.lastRound) {
        const fields = { session: r.sessionId, round: r.round, status: r.status, selected: r.selected.length, accepted: r.accepted, weight: r.totalWeight, rejected: r.rejected, failed: r.failed };
        if (r.status === 'ok') log.info(fields, 'round');
        else log.warn({ ...fields, reason: r.failure }, 'round failed');
      }
    },
  });
}

interface ClientCtxLike {
  combiner: string;
  lastError: string;
  task: { kind: string; round: number; sessionId: string } | null;
  stats: Record<string, number>;
}

/** Client: which combiner it joined, losses with their reason, and each task. */
export function logClient(actor: AnyActorRef, log: Logger): () => void {
  return watch<ClientCtxLike>(actor, {
    onChange(state, c, prev) {
      if (!prev || prev.state === state) return;
      log.debug({ from: prev.state, to: state }, 'state');
      if (state.startsWith('connected') && !prev.state.startsWith('connected')) log.info({ combiner: c.combiner }, 'connected');
      if (state === 'disconnected' && prev.state !== 'disconnected' && c.lastError) log.warn({ combiner: c.combiner, reason: c.lastError }, 'disconnected');
      if ((state === 'connected.training' || state === 'connected.validating') && c.task) log.info({ session: c.task.sessionId, round: c.task.round, task: c.task.kind }, 'task');
      if (prev.state === 'connected.training' && state === 'connected.ready') log.info({ trained: c.stats.trained, failed: c.stats.failed, cancelled: c.stats.cancelled }, 'task done');
    },
  });
}
