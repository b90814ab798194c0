// Test harness for the pure statecharts in machines/: runs a machine on a simulated clock with fake IO
// (promise actors the test resolves or rejects), collects the `outbound` messages it asks to send,
// builds protocol events, and records which state nodes and transitions a scenario took so a test can
// assert coverage against the graph @xstate/graph computes from the machine definition.
import { createActor, fromPromise, SimulatedClock, type Actor, type AnyMachineSnapshot, type AnyStateMachine, type AnyTransitionDefinition, type EventFromLogic, type InputFrom, type InspectionEvent, type SnapshotFrom, type StateValue } from 'xstate';
import { getStateNodes, toDirectedGraph, type AnyStateNode, type DirectedGraphNode } from '@xstate/graph';
import { makeMessage } from '../../src/protocol/codec.ts';
import type { Message, MessageType } from '../../src/protocol/generated.ts';
import type { Inbound, Outbound } from '../../machines/common.ts';

// ---------------------------------------------------------------------------------------------------
// Time and microtasks

/** Lets pending promise callbacks (fake IO settling, actor done events) run. */
export async function flush(rounds = 3): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((r) => setImmediate(r));
}

// ---------------------------------------------------------------------------------------------------
// Protocol events

/** A protocol message as the machines receive it: defaults from the wire schema, plus sender and arrival time. */
export function inbound<T extends MessageType>(type: T, from: string, fields: Partial<Omit<Extract<Message, { type: T }>, 'type'>> = {}, at = 0): Inbound<T> {
  return { ...makeMessage(type, fields), from, at } as Inbound<T>;
}

// ---------------------------------------------------------------------------------------------------
// Fake IO: promise actors under test control

export interface Call<I, O> {
  input: I;
  signal: AbortSignal;
  settled: boolean;
  resolve(output: O): void;
  reject(error: unknown): void;
}

/**
 * A promise actor whose every invocation is recorded and stays pending until the test settles it, or
 * that answers by itself when given an `auto` function (which may throw to reject).
 */
export class Gate<I, O> {
  readonly calls: Call<I, O>[] = [];
  auto: ((input: I) => O) | undefined;
  readonly logic;

  constructor(auto?: (input: I) => O) {
    this.auto = auto;
    this.logic = fromPromise<O, I>(
      ({ input, signal }) =>
        new Promise<O>((resolve, reject) => {
          const call: Call<I, O> = {
            input,
            signal,
            settled: false,
            resolve: (o) => {
              call.settled = true;
              resolve(o);
            },
            reject: (e) => {
              call.settled = true;
              reject(e);
            },
          };
          this.calls.push(call);
          const auto = this.auto;
          if (auto) {
            queueMicrotask(() => {
              try {
                call.resolve(auto(input));
              } catch (e) {
                call.reject(e);
              }
            });
          }
        }),
    );
  }

  get count(): number {
    return this.calls.length;
  }

  /** The most recent invocation; throws if there was none, so a test cannot silently settle nothing. */
  last(): Call<I, O> {
    const c = this.calls[this.calls.length - 1];
    if (!c) throw new Error('no call recorded');
    return c;
  }

  /** The oldest invocation not settled yet. */
  pending(): Call<I, O> {
    const c = this.calls.find((x) => !x.settled);
    if (!c) throw new Error('no pending call');
    return c;
  }
}

// ---------------------------------------------------------------------------------------------------
// Graph and coverage

export interface TransitionInfo {
  key: string;
  source: string;
  event: string;
  targets: string[];
}

/** A stable name for one transition definition: source, event (or `always`), its index among that source's
 * candidates for the event (guarded alternatives are separate transitions), and its targets. */
export function transitionKey(t: AnyTransitionDefinition): string {
  const source = t.source as AnyStateNode;
  const isAlways = t.eventType === '';
  const list: readonly AnyTransitionDefinition[] = (isAlways ? source.always : source.transitions.get(t.eventType)) ?? [];
  const index = list.indexOf(t);
  const targets = t.target && t.target.length > 0 ? t.target.map((n) => n.id).join(',') : '(self)';
  return `${source.id} --${isAlways ? 'always' : t.eventType}#${index}--> ${targets}`;
}

/** All state nodes (ids, root excluded) and all transitions of a machine, from @xstate/graph. */
export function machineGraph(machine: AnyStateMachine): { states: string[]; transitions: TransitionInfo[] } {
  const nodes = getStateNodes(machine) as AnyStateNode[];
  const info = (t: AnyTransitionDefinition): TransitionInfo => ({
    key: transitionKey(t),
    source: (t.source as AnyStateNode).id,
    event: t.eventType === '' ? 'always' : t.eventType,
    targets: (t.target ?? []).map((n) => n.id),
  });
  // toDirectedGraph lists event, delayed and done/error transitions (a targetless one as a self edge);
  // eventless (`always`) transitions are not among a node's `transitions`, so they are added from the nodes.
  const edges: TransitionInfo[] = [];
  const walk = (g: DirectedGraphNode): void => {
    for (const e of g.edges) edges.push(info(e.transition));
    g.children.forEach(walk);
  };
  walk(toDirectedGraph(machine));
  for (const n of [machine.root as AnyStateNode, ...nodes]) for (const t of n.always ?? []) edges.push(info(t));
  const byKey = new Map(edges.map((e) => [e.key, e]));
  return { states: nodes.map((n) => n.id), transitions: [...byKey.values()] };
}

export interface Step {
  from: string;
  transition: string;
  to: string;
}

/** Records visited state nodes and taken transitions of every actor it inspects. */
export class Coverage {
  readonly states: string[];
  readonly transitions: TransitionInfo[];
  readonly visitedStates = new Set<string>();
  readonly taken = new Map<string, number>();
  /** Transitions taken that the graph does not know (would mean the graph is incomplete). */
  readonly unknown = new Set<string>();
  readonly steps: Step[] = [];

  constructor(machine: AnyStateMachine) {
    const g = machineGraph(machine);
    this.states = g.states;
    this.transitions = g.transitions;
  }

  private markStates(snapshot: AnyMachineSnapshot): void {
    for (const n of snapshot._nodes) if (n.parent) this.visitedStates.add(n.id);
  }

  /** Inspection observer: every microstep of a machine actor gives (state, transition, next state). */
  observe = (ev: InspectionEvent): void => {
    if (ev.type !== '@xstate.microstep') return;
    const snap = ev.snapshot as AnyMachineSnapshot;
    if (!snap || !('machine' in snap)) return;
    const known = new Set(this.transitions.map((t) => t.key));
    for (const t of ev._transitions) {
      const key = transitionKey(t);
      for (let n: AnyStateNode | undefined = t.source as AnyStateNode; n?.parent; n = n.parent) this.visitedStates.add(n.id);
      this.taken.set(key, (this.taken.get(key) ?? 0) + 1);
      if (!known.has(key)) this.unknown.add(key);
      this.steps.push({ from: (t.source as AnyStateNode).id, transition: key, to: stateString(snap.value) });
    }
    this.markStates(snap);
  };

  missingStates(): string[] {
    return this.states.filter((s) => !this.visitedStates.has(s)).sort();
  }

  missingTransitions(): string[] {
    return this.transitions.map((t) => t.key).filter((k) => !this.taken.has(k)).sort();
  }

  summary(): string {
    const ts = this.transitions.length;
    return `${this.states.length - this.missingStates().length}/${this.states.length} states, ${ts - this.missingTransitions().length}/${ts} transitions`;
  }
}

// ---------------------------------------------------------------------------------------------------
// Running a machine

/** `running.validating.collecting` style name of a state value. */
export function stateString(value: StateValue): string {
  if (typeof value === 'string') return value;
  return Object.entries(value)
    .map(([k, v]) => (v === undefined || (typeof v === 'object' && Object.keys(v).length === 0) ? k : `${k}.${stateString(v as StateValue)}`))
    .join('|');
}

export interface Harness<M extends AnyStateMachine> {
  actor: Actor<M>;
  clock: SimulatedClock;
  /** Every outbound message, in order. */
  outbox: Outbound[];
  state(): string;
  snapshot(): SnapshotFrom<M>;
  send(event: EventFromLogic<M>): void;
  /** Sends a protocol message from `from`, stamped with the simulated time. */
  msg<T extends MessageType>(type: T, from: string, fields?: Partial<Omit<Extract<Message, { type: T }>, 'type'>>): void;
  /** Bodies of the outbound messages of one type (optionally to one address), oldest first. */
  sent<T extends MessageType>(type: T, to?: string): Extract<Message, { type: T }>[];
  /** Outbound messages since the last drain, then forgets them. */
  drain(): Outbound[];
  /** Moves the simulated clock forward in steps (timers re-armed by a timer fire too), letting promises settle. */
  advance(ms: number, stepMs?: number): Promise<void>;
  flush(): Promise<void>;
  stop(): void;
}

export function run<M extends AnyStateMachine>(machine: M, input: InputFrom<M>, opts: { coverage?: Coverage; clock?: SimulatedClock } = {}): Harness<M> {
  const clock = opts.clock ?? new SimulatedClock();
  const outbox: Outbound[] = [];
  let drained = 0;
  const inspect = opts.coverage?.observe;
  const actor = createActor(machine, { input, clock, ...(inspect ? { inspect } : {}) } as Parameters<typeof createActor<M>>[1]) as Actor<M>;
  actor.on('outbound', (e: unknown) => {
    outbox.push(e as Outbound);
  });
  actor.start();
  const h: Harness<M> = {
    actor,
    clock,
    outbox,
    state: () => stateString((actor.getSnapshot() as AnyMachineSnapshot).value),
    snapshot: () => actor.getSnapshot(),
    send: (event) => actor.send(event),
    msg: (type, from, fields = {}) => actor.send(inbound(type, from, fields, clock.now()) as EventFromLogic<M>),
    sent: <T extends MessageType>(type: T, to?: string) =>
      outbox.filter((o) => o.body.type === type && (to === undefined || o.to === to)).map((o) => o.body as Extract<Message, { type: T }>),
    drain: () => {
      const out = outbox.slice(drained);
      drained = outbox.length;
      return out;
    },
    advance: async (ms, stepMs) => {
      const step = stepMs ?? ms;
      let left = ms;
      do {
        const d = Math.min(step, left);
        clock.increment(d);
        left -= d;
        await flush();
      } while (left > 0);
    },
    flush: () => flush(),
    stop: () => actor.stop(),
  };
  return h;
}
