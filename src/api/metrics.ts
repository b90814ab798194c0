// Prometheus metrics for one reducer, on a Registry of its own (several reducers in one process, as in
// tests, must not share or clash over the global registry). Round counters follow the reducer's round
// history as it grows; link byte counters fold in each link's stats, including what a link carried
// before it closed.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { RoundResult } from '../../machines/reducer.ts';
import type { ReducerHandle } from '../actors/reducer.ts';
import type { Link } from '../transport/link.ts';
import type { Inspector } from './inspect.ts';
import { reducerState } from './reducer-api.ts';

export interface ReducerMetrics {
  registry: Registry;
  /** Prometheus text exposition. */
  text(): Promise<string>;
  contentType: string;
  close(): void;
}

const peerRole = (link: Link): string => {
  for (const a of link.remoteActors) {
    const role = a.split('/')[0];
    if (role === 'combiner' || role === 'client' || role === 'reducer') return role;
  }
  return 'other';
};

export function reducerMetrics(reducer: ReducerHandle, opts: { inspector?: Inspector } = {}): ReducerMetrics {
  const registry = new Registry();
  const rounds = new Counter({ name: 'fedstate_rounds_total', help: 'Rounds closed by the reducer, by status', labelNames: ['status'] as const, registers: [registry] });
  const accepted = new Counter({ name: 'fedstate_updates_accepted_total', help: 'Client updates accepted into combiner aggregates (rounds closed by the reducer)', registers: [registry] });
  const rejected = new Counter({ name: 'fedstate_updates_rejected_total', help: 'Client updates refused before aggregation, by reason', labelNames: ['reason'] as const, registers: [registry] });
  const duration = new Histogram({
    name: 'fedstate_round_duration_seconds',
    help: 'Wall time from dispatching a round to closing it',
    labelNames: ['status'] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900],
    registers: [registry],
  });
  const bytes = new Counter({ name: 'fedstate_transfer_bytes_total', help: 'Model bytes moved over the reducer node links (blob chunks), by direction and peer role', labelNames: ['direction', 'peer'] as const, registers: [registry] });
  new Gauge({
    name: 'fedstate_combiners_connected',
    help: 'Combiners connected to the reducer',
    registers: [registry],
    collect() {
      this.set(Object.values(reducer.actor.getSnapshot().context.combiners).filter((c) => c.connected).length);
    },
  });
  new Gauge({
    name: 'fedstate_clients_connected',
    help: 'Clients held by connected combiners (as of their last status report)',
    registers: [registry],
    collect() {
      this.set(Object.values(reducer.actor.getSnapshot().context.combiners).reduce((n, c) => n + (c.connected ? c.clients.length : 0), 0));
    },
  });
  new Gauge({
    name: 'fedstate_rounds_committed',
    help: 'Rounds committed in the current session',
    registers: [registry],
    collect() {
      this.set(reducer.actor.getSnapshot().context.committed);
    },
  });
  new Gauge({
    name: 'fedstate_reducer_state',
    help: 'The reducer statechart state (1 for the current one)',
    labelNames: ['state'] as const,
    registers: [registry],
    collect() {
      this.reset();
      this.set({ state: reducerState(reducer) }, 1);
    },
  });
  const inspector = opts.inspector;
  if (inspector) {
    new Gauge({
      name: 'fedstate_inspect_subscribers',
      help: 'WebSocket subscribers of the inspection stream',
      registers: [registry],
      collect() {
        this.set(inspector.stats().subscribers);
      },
    });
    new Gauge({
      name: 'fedstate_inspect_sent_bytes',
      help: 'Bytes sent on the inspection stream since start',
      registers: [registry],
      collect() {
        this.set(inspector.counters.bytesSent);
      },
    });
  }
  // Zero-valued series for every known reason make absent and zero distinguishable in queries.
  rounds.inc({ status: 'ok' }, 0);
  rounds.inc({ status: 'failed' }, 0);

  // Rounds: count each closed round once, in this process (a resumed session's earlier rounds were
  // counted by the process that ran them).
  const startedAt = new Map<number, number>();
  let session = reducer.actor.getSnapshot().context.session?.sessionId ?? '';
  let seen = reducer.actor.getSnapshot().context.history.length;
  const onRound = (r: RoundResult): void => {
    rounds.inc({ status: r.status });
    accepted.inc(r.updates);
    for (const [reason, n] of Object.entries(r.rejected)) if (n > 0) rejected.inc({ reason }, n);
    const t0 = startedAt.get(r.round);
    const seconds = t0 !== undefined ? (performance.now() - t0) / 1000 : Math.max(0, r.endedAt - r.startedAt) / 1000;
    duration.observe({ status: r.status }, seconds);
    startedAt.delete(r.round);
  };
  const sub = reducer.actor.subscribe((snap) => {
    const c = snap.context;
    const id = c.session?.sessionId ?? '';
    if (id !== session || c.history.length < seen) {
      session = id;
      seen = 0;
      startedAt.clear();
    }
    if (c.current && !startedAt.has(c.current.round)) startedAt.set(c.current.round, performance.now());
    while (seen < c.history.length) onRound(c.history[seen++]!);
  });

  // Links: fold deltas since the last look, and a closing link's remainder when it goes down.
  const last = new WeakMap<Link, { in: number; out: number }>();
  const fold = (link: Link): void => {
    const prev = last.get(link) ?? { in: 0, out: 0 };
    const peer = peerRole(link);
    const dIn = link.stats.bytesIn - prev.in;
    const dOut = link.stats.bytesOut - prev.out;
    if (dIn > 0) bytes.inc({ direction: 'in', peer }, dIn);
    if (dOut > 0) bytes.inc({ direction: 'out', peer }, dOut);
    last.set(link, { in: link.stats.bytesIn, out: link.stats.bytesOut });
  };
  const onDown = (link: Link): void => fold(link);
  reducer.node.on('linkDown', onDown);
  bytes.inc({ direction: 'in', peer: 'combiner' }, 0);
  bytes.inc({ direction: 'out', peer: 'combiner' }, 0);

  return {
    registry,
    contentType: registry.contentType,
    text: async () => {
      for (const link of reducer.node.openLinks) fold(link);
      return registry.metrics();
    },
    close: () => {
      sub.unsubscribe();
      reducer.node.off('linkDown', onDown);
    },
  };
}
