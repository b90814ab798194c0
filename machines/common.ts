// Shared vocabulary of the statecharts. Machines are pure: they see protocol messages as events and
// say what to send by emitting `outbound` events; the role assemblies in src/actors/ deliver them.
import type { Message, MessageType } from '../src/protocol/generated.ts';

/** A protocol message as a machine event: the message plus the sender and the arrival time (ms). */
export type Inbound<T extends MessageType = MessageType> = Extract<Message, { type: T }> & { from: string; at: number };

/** What a machine asks its host to send. */
export interface Outbound {
  type: 'outbound';
  to: string;
  body: Message;
}

export const outbound = (to: string, body: Message): Outbound => ({ type: 'outbound', to, body });

/** Why an update never reaches the aggregate; reported per round and counted in metrics. */
export const rejectionReasons = [
  'wrong-session',
  'stale-round',
  'late',
  'unselected',
  'duplicate',
  'base-mismatch',
  'bad-weight',
  'wrong-shape',
  'not-finite',
  'hash-mismatch',
  'fetch-failed',
] as const;
export type RejectionReason = (typeof rejectionReasons)[number];

/**
 * Longest delay a timer can hold: Node clamps anything at or above 2^31 ms to 1 ms, which would turn a
 * very long (or hostile) timeout into an immediate one.
 */
export const MAX_DELAY_MS = 2 ** 31 - 1;

export const boundedDelay = (ms: number): number => (Number.isFinite(ms) && ms > 0 ? Math.min(ms, MAX_DELAY_MS) : 0);

/** 32-bit FNV-1a: a stable, dependency-free hash for deterministic sampling. */
export function fnv1a(text: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/**
 * Picks `count` of `candidates` deterministically for (seed, round): the same inputs always give the
 * same choice, different rounds give different samples, and no Math.random enters a pure machine.
 */
export function sample(candidates: readonly string[], count: number, seed: number, round: number): string[] {
  if (count >= candidates.length) return [...candidates].sort();
  return [...candidates]
    .map((c) => ({ c, k: fnv1a(`${seed}:${round}:${c}`) }))
    .sort((a, b) => a.k - b.k || (a.c < b.c ? -1 : 1))
    .slice(0, count)
    .map((x) => x.c)
    .sort();
}

/** Exponential backoff with deterministic jitter in [0.5, 1) of the capped delay. */
export function backoffMs(attempt: number, initialMs: number, maxMs: number, seed: number): number {
  if (attempt <= 0) return 0;
  const capped = Math.min(maxMs, initialMs * 2 ** (attempt - 1));
  const jitter = 0.5 + (fnv1a(`${seed}:${attempt}`) / 0x1_0000_0000) * 0.5;
  return Math.round(capped * jitter);
}

/** Weighted running sums of metrics, turned into weighted means when a round closes. */
export function addMetrics(sums: Record<string, number>, metrics: Record<string, number>, weight: number): Record<string, number> {
  const next = { ...sums };
  for (const [k, v] of Object.entries(metrics)) if (Number.isFinite(v)) next[k] = (next[k] ?? 0) + v * weight;
  return next;
}

export function meanMetrics(sums: Record<string, number>, totalWeight: number): Record<string, number> {
  if (totalWeight <= 0) return {};
  return Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, v / totalWeight]));
}
