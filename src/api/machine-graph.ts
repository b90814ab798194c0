// The statecharts as plain JSON graphs: state nodes (nested) and transitions with readable labels.
// Read from the machine definitions themselves (StateNode tree), so the dashboard, the CLI and the
// tests can never drift from what the runtime executes.
import type { AnyStateMachine, StateValue } from 'xstate';
import { clientMachine } from '../../machines/client.ts';
import { combinerMachine } from '../../machines/combiner.ts';
import { reducerMachine } from '../../machines/reducer.ts';
import { FedError } from '../errors.ts';

export type StateKind = 'atomic' | 'compound' | 'parallel' | 'final' | 'history';
export type EdgeKind = 'event' | 'always' | 'after' | 'done' | 'error' | 'state-done';

export interface GraphNode {
  /** Dotted path from the machine id, e.g. "reducer.running.planning"; the root is the machine id. */
  id: string;
  key: string;
  parent: string | null;
  type: StateKind;
  /** Id of the initial child, for compound states. */
  initial: string | null;
  children: string[];
  /** Actor sources invoked while in this state. */
  invokes: string[];
  /** Events handled without changing state (targetless transitions), with their guards. */
  internal: Array<{ event: string; guard: string | null }>;
}

export interface GraphEdge {
  id: string;
  source: string;
  target: string;
  /** The raw event type XState uses ("" for eventless transitions). */
  event: string;
  kind: EdgeKind;
  /** Event label without the guard, e.g. "START", "after roundDeadline", "reduce.done", "always". */
  label: string;
  guard: string | null;
  reenter: boolean;
}

export interface MachineGraph {
  id: string;
  root: string;
  nodes: GraphNode[];
  edges: GraphEdge[];
}

export const machines = { reducer: reducerMachine, combiner: combinerMachine, client: clientMachine } as const;
export type Role = keyof typeof machines;
export const roles = Object.keys(machines) as Role[];

export function isRole(x: string): x is Role {
  return Object.hasOwn(machines, x);
}

export function machineOf(role: string): AnyStateMachine {
  if (!isRole(role)) throw new FedError('not-found', `no machine for role "${role}"; known: ${roles.join(', ')}`);
  return machines[role] as unknown as AnyStateMachine;
}

// StateNode's public typing hides the fields we read (transitions, always, invoke); this is the shape
// XState 5 actually has, narrowed to what the graph needs.
interface NodeLike {
  key: string;
  id: string;
  path: string[];
  type: StateKind;
  states: Record<string, NodeLike>;
  initial?: { target?: NodeLike[] };
  transitions: Map<string, TransitionLike[]>;
  always?: TransitionLike[];
  invoke: Array<{ id: string; src: unknown }>;
}
interface TransitionLike {
  eventType: string;
  target?: NodeLike[];
  guard?: unknown;
  reenter?: boolean;
}

export function guardName(guard: unknown): string | null {
  if (guard === undefined || guard === null) return null;
  if (typeof guard === 'string') return guard;
  if (typeof guard === 'object' && 'type' in guard) return String((guard as { type: unknown }).type);
  if (typeof guard === 'function') {
    const f = guard as { name?: string; guards?: unknown[] };
    const parts = (f.guards ?? []).map((g) => guardName(g) ?? '?');
    if (f.name === 'not' && parts.length === 1) return `!${parts[0]}`;
    if ((f.name === 'and' || f.name === 'or') && parts.length) return parts.join(f.name === 'and' ? ' && ' : ' || ');
    return 'inline';
  }
  return 'inline';
}

const nodeId = (machineId: string, path: readonly string[]): string => [machineId, ...path].join('.');

function labelOf(node: NodeLike, eventType: string): { kind: EdgeKind; label: string } {
  if (eventType === '') return { kind: 'always', label: 'always' };
  const after = /^xstate\.after\.([^.]+)\./.exec(eventType);
  if (after) return { kind: 'after', label: `after ${after[1]}` };
  const actor = /^xstate\.(done|error)\.actor\.(.+)$/.exec(eventType);
  if (actor) {
    const inv = node.invoke.find((i) => i.id === actor[2]);
    const src = typeof inv?.src === 'string' ? inv.src : actor[2]!;
    return { kind: actor[1] === 'done' ? 'done' : 'error', label: `${src}.${actor[1]}` };
  }
  if (eventType.startsWith('xstate.done.state.')) return { kind: 'state-done', label: 'done' };
  return { kind: 'event', label: eventType };
}

/** The machine as a graph of state nodes and transitions. */
export function machineGraph(machine: AnyStateMachine): MachineGraph {
  const nodes: GraphNode[] = [];
  const edges: GraphEdge[] = [];
  const mid = machine.id;
  const visit = (n: NodeLike, parent: string | null): void => {
    const id = nodeId(mid, n.path);
    const children = Object.values(n.states);
    const internal: GraphNode['internal'] = [];
    const transitions: TransitionLike[] = [...[...n.transitions.values()].flat(), ...(n.always ?? [])];
    const counts = new Map<string, number>();
    for (const t of transitions) {
      const guard = guardName(t.guard);
      if (!t.target || t.target.length === 0) {
        internal.push({ event: labelOf(n, t.eventType).label, guard });
        continue;
      }
      for (const target of t.target) {
        const { kind, label } = labelOf(n, t.eventType);
        const base = `${id}:${t.eventType || 'always'}`;
        const k = counts.get(base) ?? 0;
        counts.set(base, k + 1);
        edges.push({ id: `${base}:${k}`, source: id, target: nodeId(mid, target.path), event: t.eventType, kind, label, guard, reenter: !!t.reenter });
      }
    }
    const initialTarget = n.initial?.target?.[0];
    nodes.push({
      id,
      key: n.path.length ? n.key : mid,
      parent,
      type: n.type,
      initial: initialTarget ? nodeId(mid, initialTarget.path) : null,
      children: children.map((c) => nodeId(mid, c.path)),
      invokes: n.invoke.map((i) => (typeof i.src === 'string' ? i.src : i.id)),
      internal,
    });
    for (const c of children) visit(c, id);
  };
  visit(machine.root as unknown as NodeLike, null);
  return { id: mid, root: mid, nodes, edges };
}

const cache = new Map<Role, MachineGraph>();
export function graphOf(role: string): MachineGraph {
  machineOf(role);
  const r = role as Role;
  let g = cache.get(r);
  if (!g) cache.set(r, (g = machineGraph(machines[r] as unknown as AnyStateMachine)));
  return g;
}

/** Ids of the active state nodes (root included) for a snapshot's state value. */
export function activeIds(machineId: string, value: StateValue): string[] {
  const out = [machineId];
  const walk = (v: StateValue, prefix: string): void => {
    if (typeof v === 'string') {
      out.push(`${prefix}.${v}`);
      return;
    }
    for (const [k, sub] of Object.entries(v)) {
      out.push(`${prefix}.${k}`);
      if (sub !== undefined) walk(sub as StateValue, `${prefix}.${k}`);
    }
  };
  walk(value, machineId);
  return out;
}

/** "running.awaitingCombiners" style name of the deepest active states. */
export function stateName(value: StateValue): string {
  if (typeof value === 'string') return value;
  return Object.entries(value)
    .map(([k, sub]) => (sub === undefined || (typeof sub === 'object' && Object.keys(sub).length === 0) ? k : `${k}.${stateName(sub as StateValue)}`))
    .join(',');
}
