// Live inspection: follows actors through XState's inspection API (the `inspect` option at creation,
// or `actor.system.inspect` after the fact), keeps each one's current state and a bounded ring of
// summarized recent events, and streams both to WebSocket subscribers (the dashboard) at /api/inspect.
//
// Events are summarized, never serialized whole: a train result or a fetched update can carry a
// Float32Array of millions of parameters, and the stream must stay small whatever the model size.
import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { AnyActorRef, InspectionEvent, StateValue } from 'xstate';
import { activeIds, graphOf, isRole, stateName, type Role } from './machine-graph.ts';

export type FieldValue = string | number | boolean;

export interface EventSummary {
  /** Increases by one per recorded event over the whole inspector. */
  seq: number;
  at: number;
  actor: string;
  type: string;
  from: string | null;
  fields: Record<string, FieldValue>;
}

export interface ActorView {
  address: string;
  role: Role | null;
  machine: string | null;
  value: StateValue;
  /** Readable state, e.g. "running.awaitingCombiners". */
  state: string;
  /** Ids of the active state nodes in the machine graph (/api/machines/:role). */
  active: string[];
  /** Graph edge ids of the transitions taken by the last state change. */
  taken: string[];
  status: string;
  changedAt: number;
  events: EventSummary[];
  /** Every event seen by type, the quiet ones included. */
  counts: Record<string, number>;
}

export interface InspectorOptions {
  /** Recent events kept per actor. */
  maxEvents?: number;
  /** Event types counted but neither kept nor streamed (periodic noise). */
  quiet?: readonly string[];
  /** Milliseconds between batched event messages to each subscriber. */
  flushMs?: number;
  /** A subscriber whose socket has more than this many bytes queued misses event batches. */
  maxBufferedBytes?: number;
}

export interface InspectorStats {
  actors: number;
  subscribers: number;
  eventsSeen: number;
  eventsRecorded: number;
  messagesSent: number;
  bytesSent: number;
  batchesDropped: number;
}

const MAX_FIELDS = 10;
const MAX_STRING = 64;

const clip = (s: string, n = MAX_STRING): string => (s.length > n ? `${s.slice(0, n - 1)}…` : s);
const num = (x: number): number => (Number.isInteger(x) ? x : Number(x.toPrecision(6)));

function brief(v: unknown): FieldValue | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'number') return Number.isFinite(v) ? num(v) : String(v);
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string') return clip(v);
  if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${(v as unknown as { length?: number }).length ?? v.byteLength})`;
  if (Array.isArray(v)) {
    if (v.length <= 5 && v.every((x) => typeof x === 'string' || typeof x === 'number')) return clip(`[${v.join(',')}]`);
    return `[${v.length} items]`;
  }
  if (typeof v === 'object') {
    const keys = Object.keys(v as object);
    return clip(`{${keys.join(',')}}`);
  }
  return undefined;
}

/** A bounded, payload-free summary of an event: scalars kept, arrays and objects described. */
export function summarizeEvent(event: Record<string, unknown>): { type: string; from: string | null; fields: Record<string, FieldValue> } {
  const fields: Record<string, FieldValue> = {};
  const put = (k: string, v: unknown): void => {
    if (Object.keys(fields).length >= MAX_FIELDS) return;
    const b = brief(v);
    if (b !== undefined) fields[k] = b;
  };
  for (const [k, v] of Object.entries(event)) {
    if (k === 'type' || k === 'from' || k === 'at' || k === 'actorId') continue;
    // done/error events of invoked actors carry the actor's output: one level of it is the useful part
    if ((k === 'output' || k === 'error' || k === 'body') && v && typeof v === 'object' && !ArrayBuffer.isView(v) && !Array.isArray(v)) {
      if (v instanceof Error) put(k, v.message);
      else for (const [kk, vv] of Object.entries(v as object)) put(`${k}.${kk}`, vv);
      continue;
    }
    put(k, v);
  }
  return { type: clip(String(event.type ?? '?'), 96), from: typeof event.from === 'string' ? clip(event.from) : null, fields };
}

function roleOf(address: string): Role | null {
  const r = address.split('/')[0] ?? '';
  return isRole(r) ? r : null;
}

interface Tracked {
  view: ActorView;
  pendingTaken: string[];
  edgeIndex: Map<string, string> | null;
}

type TransitionLike = { eventType?: string; source?: { path?: string[] }; target?: Array<{ path?: string[] }> };

interface Subscriber {
  ws: WebSocket;
  match: (address: string) => boolean;
  queue: EventSummary[];
}

/** Parses "reducer/main,combiner/*" (or "*") into a predicate; an empty list means everything. */
export function actorMatcher(spec: string | readonly string[] | undefined): (address: string) => boolean {
  const list = (typeof spec === 'string' ? spec.split(',') : spec ?? []).map((s) => s.trim()).filter(Boolean);
  if (list.length === 0 || list.includes('*')) return () => true;
  return (a) => list.some((p) => (p.endsWith('*') ? a.startsWith(p.slice(0, -1)) : a === p));
}

export class Inspector extends EventEmitter<{ state: [ActorView]; event: [EventSummary]; actor: [ActorView] }> {
  private readonly tracked = new Map<string, Tracked>();
  private readonly subscribers = new Set<Subscriber>();
  private readonly maxEvents: number;
  private readonly quiet: Set<string>;
  private readonly flushMs: number;
  private readonly maxBuffered: number;
  private seq = 0;
  private timer: NodeJS.Timeout | undefined;
  private wss: WebSocketServer | undefined;
  private readonly detachers: Array<() => void> = [];
  readonly counters = { eventsSeen: 0, eventsRecorded: 0, messagesSent: 0, bytesSent: 0, batchesDropped: 0 };

  constructor(opts: InspectorOptions = {}) {
    super();
    this.maxEvents = opts.maxEvents ?? 50;
    this.quiet = new Set(opts.quiet ?? ['TICK', 'HEARTBEAT_DUE', 'Heartbeat']);
    this.flushMs = opts.flushMs ?? 100;
    this.maxBuffered = opts.maxBufferedBytes ?? 1 << 20;
  }

  /** An observer for createActor's `inspect` option (startReducer/startCombiner/startClient/startFederation). */
  observer = (address: string): ((event: InspectionEvent) => void) => (ev) => this.onInspection(address, ev);

  /** Follows an actor that is already running, through its system's inspection API. */
  attach(address: string, actor: AnyActorRef): () => void {
    this.track(address, actor.getSnapshot() as { value?: StateValue; status?: string });
    const sub = actor.system.inspect((ev: InspectionEvent) => this.onInspection(address, ev));
    const off = (): void => sub.unsubscribe();
    this.detachers.push(off);
    return off;
  }

  actors(match: (address: string) => boolean = () => true): ActorView[] {
    return [...this.tracked.values()].map((t) => t.view).filter((v) => match(v.address)).sort((a, b) => a.address.localeCompare(b.address));
  }

  actor(address: string): ActorView | undefined {
    return this.tracked.get(address)?.view;
  }

  stats(): InspectorStats {
    return { actors: this.tracked.size, subscribers: this.subscribers.size, ...this.counters };
  }

  private track(address: string, snap: { value?: StateValue; status?: string } | undefined): Tracked {
    let t = this.tracked.get(address);
    if (t) return t;
    const role = roleOf(address);
    const graph = role ? graphOf(role) : null;
    const value: StateValue = snap?.value ?? {};
    t = {
      view: { address, role, machine: graph?.id ?? null, value, state: stateName(value), active: graph ? activeIds(graph.id, value) : [], taken: [], status: snap?.status ?? 'active', changedAt: Date.now(), events: [], counts: {} },
      pendingTaken: [],
      edgeIndex: graph ? new Map(graph.edges.map((e) => [`${e.source}|${e.event}|${e.target}`, e.id])) : null,
    };
    this.tracked.set(address, t);
    this.emit('actor', t.view);
    this.broadcast((s) => s.match(address), { type: 'actor', actor: t.view });
    return t;
  }

  private onInspection(address: string, ev: InspectionEvent): void {
    // Only the hosted machine itself: invoked promises and callbacks are its children, and what they
    // report shows up as events delivered to it.
    if ((ev.actorRef as { sessionId?: string }).sessionId !== ev.rootId) return;
    if (ev.type === '@xstate.actor') {
      this.track(address, undefined);
      return;
    }
    const t = this.track(address, undefined);
    if (ev.type === '@xstate.event') {
      this.counters.eventsSeen++;
      const type = String(ev.event.type);
      t.view.counts[type] = (t.view.counts[type] ?? 0) + 1;
      if (this.quiet.has(type) || type === 'xstate.init') return;
      const s = summarizeEvent(ev.event as Record<string, unknown>);
      const source = ev.sourceRef as { id?: unknown } | undefined;
      const from = s.from ?? (source && source !== ev.actorRef && typeof source.id === 'string' ? clip(source.id) : null);
      const summary: EventSummary = { seq: ++this.seq, at: Date.now(), actor: address, type: s.type, from, fields: s.fields };
      t.view.events.push(summary);
      if (t.view.events.length > this.maxEvents) t.view.events.splice(0, t.view.events.length - this.maxEvents);
      this.counters.eventsRecorded++;
      this.emit('event', summary);
      for (const sub of this.subscribers) if (sub.match(address)) sub.queue.push(summary);
      this.schedule();
      return;
    }
    if (ev.type === '@xstate.microstep') {
      const transitions = (ev as unknown as { _transitions?: TransitionLike[] })._transitions ?? [];
      const machine = t.view.machine;
      if (!machine || !t.edgeIndex) return;
      for (const tr of transitions) {
        const source = [machine, ...(tr.source?.path ?? [])].join('.');
        for (const target of tr.target ?? []) {
          const id = t.edgeIndex.get(`${source}|${tr.eventType ?? ''}|${[machine, ...(target.path ?? [])].join('.')}`);
          if (id) t.pendingTaken.push(id);
        }
      }
      return;
    }
    if (ev.type === '@xstate.snapshot') {
      const snap = ev.snapshot as { value?: StateValue; status?: string };
      const value = snap.value ?? {};
      const state = stateName(value);
      const status = snap.status ?? 'active';
      if (state === t.view.state && status === t.view.status) {
        t.pendingTaken = [];
        return;
      }
      t.view.value = value;
      t.view.state = state;
      t.view.status = status;
      t.view.active = t.view.machine ? activeIds(t.view.machine, value) : [];
      t.view.taken = t.pendingTaken;
      t.view.changedAt = Date.now();
      t.pendingTaken = [];
      this.emit('state', t.view);
      const { events: _e, counts: _c, ...rest } = t.view;
      this.flushTo((s) => s.match(address));
      this.broadcast((s) => s.match(address), { type: 'state', ...rest });
    }
  }

  private schedule(): void {
    if (this.timer || this.subscribers.size === 0) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flushTo(() => true);
    }, this.flushMs);
    this.timer.unref();
  }

  /** Sends queued events first, so a state change never arrives before the event that caused it. */
  private flushTo(which: (s: Subscriber) => boolean): void {
    for (const s of this.subscribers) {
      if (!which(s) || s.queue.length === 0) continue;
      const items = s.queue;
      s.queue = [];
      if (s.ws.bufferedAmount > this.maxBuffered) {
        this.counters.batchesDropped++;
        continue;
      }
      this.sendTo(s, { type: 'events', items });
    }
  }

  private sendTo(s: Subscriber, msg: unknown): void {
    if (s.ws.readyState !== s.ws.OPEN) return;
    const text = JSON.stringify(msg);
    this.counters.messagesSent++;
    this.counters.bytesSent += Buffer.byteLength(text);
    s.ws.send(text);
  }

  private broadcast(which: (s: Subscriber) => boolean, msg: unknown): void {
    for (const s of this.subscribers) if (which(s)) this.sendTo(s, msg);
  }

  private hello(s: Subscriber): void {
    this.sendTo(s, { type: 'hello', protocol: 'fedstate-inspect/1', actors: this.actors(s.match) });
  }

  /** Handles an HTTP upgrade for /api/inspect (`?actors=reducer/main,combiner/*` picks actors). */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    this.wss ??= new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });
    const query = new URL(req.url ?? '/', 'http://localhost').searchParams;
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const sub: Subscriber = { ws, match: actorMatcher(query.get('actors') ?? undefined), queue: [] };
      this.subscribers.add(sub);
      ws.on('close', () => this.subscribers.delete(sub));
      ws.on('error', () => this.subscribers.delete(sub));
      ws.on('message', (data) => {
        let msg: { type?: unknown; actors?: unknown };
        try {
          msg = JSON.parse(String(data)) as typeof msg;
        } catch {
          this.sendTo(sub, { type: 'error', error: 'malformed', message: 'messages must be JSON' });
          return;
        }
        if (msg.type === 'subscribe' && (typeof msg.actors === 'string' || (Array.isArray(msg.actors) && msg.actors.every((a) => typeof a === 'string')))) {
          sub.match = actorMatcher(msg.actors as string | string[]);
          sub.queue = [];
          this.hello(sub);
        } else {
          this.sendTo(sub, { type: 'error', error: 'malformed', message: 'expected {"type":"subscribe","actors":[...]}' });
        }
      });
      this.hello(sub);
    });
  }

  close(): void {
    for (const d of this.detachers.splice(0)) d();
    clearTimeout(this.timer);
    for (const s of this.subscribers) s.ws.close(1001, 'inspector closing');
    this.subscribers.clear();
    this.wss?.close();
  }
}
