// Client dropout and stragglers as a TaskCode wrapper, so any task (TF.js, a user's --task module, a
// test's toy task) can be made unreliable in a controlled, reproducible way, in one process or in a
// `fedstate client` process (--dropout F --stragglers F).
//
// Each round, exactly round(F * clientsTotal) clients drop out and round(S * clientsTotal) straggle.
// Who does is decided by a seeded hash of (seed, round, client index): every client ranks all
// indices 0..clientsTotal-1 by that hash and looks up its own rank, so clients agree on the plan
// without talking to each other, the same seed gives the same plan in every mode, and a round re-run
// after a reducer restart (same round number) has the same fate.
//  - a dropout vanishes: its training task fails (mode 'fail': the combiner gets TaskFailed and
//    settles that client at once) or it disconnects from its combiner (mode 'disconnect': the link is
//    closed, the combiner drops the client, the task is cancelled and the client rediscovers later);
//  - a straggler stalls longer than the round timeout: it waits until its task is cancelled (the
//    combiner cancels what is still running when the round closes) and never answers in time.
// Validation tasks are never affected.
import { fnv1a } from '../../machines/common.ts';
import { FedError } from '../errors.ts';
import type { TaskCode } from './client.ts';

export type Fate = 'train' | 'drop' | 'straggle';
export type DropoutMode = 'fail' | 'disconnect';
export const dropoutModes: readonly DropoutMode[] = ['fail', 'disconnect'];

export interface FaultPlan {
  /** Fraction of clients that drop out each round, 0..1. */
  dropout: number;
  /** Fraction of clients that straggle each round, 0..1 (dropouts are chosen first). */
  stragglers: number;
  seed: number;
  /** Clients taking part in the plan (the same number every client is given). */
  clientsTotal: number;
}

export interface DropoutOptions extends FaultPlan {
  /** This client's index, 0..clientsTotal-1. */
  index: number;
  /** How a dropout vanishes; 'disconnect' needs `disconnect`, else it falls back to 'fail'. */
  mode?: DropoutMode;
  /** Closes this client's link to its combiner (provided by whoever holds the client). */
  disconnect?: () => void;
  /**
   * Longest a straggler stalls when nobody cancels it; defaults to twice the round's timeout
   * (at least 1 s). It then gives up with an error, still never in time.
   */
  stallMs?: number;
  /** Told about every round's decision for this client (for logs). */
  onFate?: (round: number, fate: Fate) => void;
}

function checkFraction(name: string, x: number): void {
  if (!Number.isFinite(x) || x < 0 || x > 1) throw new FedError('config', `${name} must be a fraction between 0 and 1, got ${x}`);
}

export function checkPlan(p: FaultPlan): void {
  checkFraction('dropout', p.dropout);
  checkFraction('stragglers', p.stragglers);
  if (p.dropout + p.stragglers > 1) throw new FedError('config', `dropout ${p.dropout} + stragglers ${p.stragglers} is more than every client`);
  if (!Number.isSafeInteger(p.clientsTotal) || p.clientsTotal < 1) throw new FedError('config', `clientsTotal must be a positive integer, got ${p.clientsTotal}`);
}

/** How many clients drop out and straggle each round under a plan. */
export function faultCounts(p: FaultPlan): { drop: number; straggle: number } {
  const drop = Math.min(p.clientsTotal, Math.round(p.dropout * p.clientsTotal));
  const straggle = Math.min(p.clientsTotal - drop, Math.round(p.stragglers * p.clientsTotal));
  return { drop, straggle };
}

/** The round's plan for every client index: the same for every caller with the same plan. */
export function roundFates(p: FaultPlan, round: number): Fate[] {
  const { drop, straggle } = faultCounts(p);
  const order = Array.from({ length: p.clientsTotal }, (_, j) => ({ j, h: fnv1a(`fedstate-faults:${p.seed}:${round}:${j}`) })).sort((a, b) => a.h - b.h || a.j - b.j);
  const fates: Fate[] = new Array<Fate>(p.clientsTotal).fill('train');
  order.forEach(({ j }, rank) => {
    if (rank < drop) fates[j] = 'drop';
    else if (rank < drop + straggle) fates[j] = 'straggle';
  });
  return fates;
}

export function fateOf(p: FaultPlan, round: number, index: number): Fate {
  if (!Number.isSafeInteger(index) || index < 0 || index >= p.clientsTotal) throw new FedError('config', `client index ${index} is outside 0..${p.clientsTotal - 1}`);
  return roundFates(p, round)[index]!;
}

/** Resolves when `signal` aborts, or after `ms`; never both. */
function waitForAbort(signal: AbortSignal, ms: number): Promise<'aborted' | 'elapsed'> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve('aborted');
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve('elapsed');
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve('aborted');
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Wraps `code` so the plan's dropouts and stragglers happen to this client (see the file comment). */
export function withDropout<T extends TaskCode>(code: T, o: DropoutOptions): TaskCode & { readonly inner: T; readonly fates: Array<{ round: number; fate: Fate }> } {
  checkPlan(o);
  fateOf(o, 1, o.index); // refuses a bad index up front
  const fates: Array<{ round: number; fate: Fate }> = [];
  return {
    inner: code,
    fates,
    get numExamples() {
      return code.numExamples;
    },
    async train(model, opts) {
      const fate = fateOf(o, opts.round, o.index);
      fates.push({ round: opts.round, fate });
      o.onFate?.(opts.round, fate);
      if (fate === 'train') return code.train(model, opts);
      if (fate === 'drop') {
        if ((o.mode ?? 'fail') === 'disconnect' && o.disconnect) {
          o.disconnect();
          // Losing the link cancels the task; if it somehow does not, the client still never answers.
          await waitForAbort(opts.signal, o.stallMs ?? Math.max(1_000, 2 * opts.config.timeoutMs));
          throw new FedError('closed', `client dropped out of round ${opts.round} (disconnected)`);
        }
        throw new FedError('cancelled', `client dropped out of round ${opts.round}`);
      }
      const why = await waitForAbort(opts.signal, o.stallMs ?? Math.max(1_000, 2 * opts.config.timeoutMs));
      throw new FedError(why === 'aborted' ? 'cancelled' : 'timeout', `straggler in round ${opts.round}: ${why === 'aborted' ? 'cancelled while stalling' : 'gave up after stalling'}`);
    },
    validate: (model, opts) => code.validate(model, opts),
  };
}
