// Splits one dataset among simulated clients. Federated learning behaves very differently on IID and
// on skewed data, so the sandbox and the benchmarks need the standard skews from the literature:
//   iid        uniform random split, equal sizes
//   dirichlet  label skew (Hsu et al. 2019): each class is spread over clients by Dirichlet(alpha) weights;
//              small alpha gives clients few dominant labels, large alpha approaches IID
//   shards     McMahan et al. 2017's pathological split: sort by label, cut into shards, deal each
//              client a few shards, so most clients see only shardsPerClient labels
//   quantity   sizes from Dirichlet(alpha), labels IID
// Every partitioner is a pure function of its arguments and seed. Each returns one ascending index
// array per client; together they are disjoint and cover 0..n-1 exactly, and none is empty.
import { FedError } from '../errors.ts';
import { Rng } from './random.ts';

export type Partition = number[][];

export type PartitionSpec =
  | { kind: 'iid' }
  | { kind: 'dirichlet'; alpha: number }
  | { kind: 'shards'; shardsPerClient: number }
  | { kind: 'quantity'; alpha: number };

function checkClients(n: number, clients: number): void {
  if (!Number.isInteger(clients) || clients < 1) throw new FedError('config', `clients must be a positive integer, got ${clients}`);
  if (!Number.isInteger(n) || n < clients) {
    throw new FedError('config', `cannot give ${clients} clients at least one of ${n} examples each`);
  }
}

function checkAlpha(alpha: number): void {
  if (!(alpha > 0) || !Number.isFinite(alpha)) throw new FedError('config', `alpha must be a positive finite number, got ${alpha}`);
}

function sorted(parts: Partition): Partition {
  return parts.map((p) => p.sort((a, b) => a - b));
}

/** Cuts `items` into consecutive runs of the given sizes. */
function cut<T>(items: readonly T[], sizes: readonly number[]): T[][] {
  let at = 0;
  return sizes.map((size) => items.slice(at, (at += size)));
}

/** Sizes for `parts` nearly equal runs (differing by at most one) that add up to `n`. */
function evenSizes(n: number, parts: number): number[] {
  return Array.from({ length: parts }, (_, i) => Math.floor(n / parts) + (i < n % parts ? 1 : 0));
}

/**
 * Integer sizes proportional to `weights` adding up to `total` (largest-remainder rounding), so the
 * rounding never loses or invents an example.
 */
function apportion(total: number, weights: readonly number[]): number[] {
  const sum = weights.reduce((s, w) => s + w, 0);
  const exact = weights.map((w) => (w / sum) * total);
  const sizes = exact.map(Math.floor);
  let left = total - sizes.reduce((s, x) => s + x, 0);
  const byRemainder = exact.map((x, i) => [x - Math.floor(x), i] as const).sort((p, q) => q[0] - p[0] || p[1] - q[1]);
  for (let r = 0; left > 0; r = (r + 1) % byRemainder.length, left--) sizes[byRemainder[r]![1]]! += 1;
  return sizes;
}

export function iid(n: number, clients: number, seed: number): Partition {
  checkClients(n, clients);
  const perm = new Rng(seed).permutation(n);
  return sorted(cut(perm, evenSizes(n, clients)));
}

function labelsAsNumbers(labels: ArrayLike<number>): number[] {
  const out = Array.from(labels);
  for (const l of out) {
    if (!Number.isInteger(l) || l < 0) throw new FedError('config', `labels must be non-negative integers, got ${l}`);
  }
  return out;
}

export function dirichlet(labels: ArrayLike<number>, clients: number, alpha: number, seed: number): Partition {
  const ys = labelsAsNumbers(labels);
  checkClients(ys.length, clients);
  checkAlpha(alpha);
  const rng = new Rng(seed);
  const byClass = new Map<number, number[]>();
  ys.forEach((y, i) => {
    const list = byClass.get(y);
    if (list) list.push(i);
    else byClass.set(y, [i]);
  });
  const parts: Partition = Array.from({ length: clients }, () => []);
  for (const cls of [...byClass.keys()].sort((a, b) => a - b)) {
    const members = rng.shuffle(byClass.get(cls)!);
    const sizes = apportion(members.length, rng.dirichlet(alpha, clients));
    cut(members, sizes).forEach((chunk, c) => parts[c]!.push(...chunk));
  }
  fillEmpty(parts);
  return sorted(parts);
}

/**
 * Small alphas routinely leave a client with nothing, and a client without data cannot take part.
 * Rather than resampling until lucky (which may never end for tiny alpha), each empty client takes
 * one example from the currently largest client: deterministic, and the skew stays as drawn.
 */
function fillEmpty(parts: Partition): void {
  for (const part of parts) {
    if (part.length > 0) continue;
    const largest = parts.reduce((best, p) => (p.length > best.length ? p : best));
    part.push(largest.pop()!);
  }
}

export function shards(labels: ArrayLike<number>, clients: number, shardsPerClient: number, seed: number): Partition {
  const ys = labelsAsNumbers(labels);
  if (!Number.isInteger(shardsPerClient) || shardsPerClient < 1) {
    throw new FedError('config', `shardsPerClient must be a positive integer, got ${shardsPerClient}`);
  }
  checkClients(ys.length, clients);
  const totalShards = clients * shardsPerClient;
  if (ys.length < totalShards) throw new FedError('config', `${ys.length} examples cannot fill ${totalShards} shards`);
  const rng = new Rng(seed);
  // Shuffle first so the order inside each label run, and so each shard's members, depends on the seed.
  const order = rng.permutation(ys.length).sort((a, b) => ys[a]! - ys[b]!);
  const shardList = cut(order, evenSizes(order.length, totalShards));
  const dealt = rng.permutation(totalShards);
  const parts = Array.from({ length: clients }, (_, c) =>
    dealt.slice(c * shardsPerClient, (c + 1) * shardsPerClient).flatMap((s) => shardList[s]!),
  );
  return sorted(parts);
}

export function quantitySkew(n: number, clients: number, alpha: number, seed: number): Partition {
  checkClients(n, clients);
  checkAlpha(alpha);
  const rng = new Rng(seed);
  // Everyone gets one example up front so no client is empty; the rest follows the Dirichlet weights.
  const sizes = apportion(n - clients, rng.dirichlet(alpha, clients)).map((s) => s + 1);
  return sorted(cut(rng.permutation(n), sizes));
}

const number = String.raw`(\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+(?:e[+-]?\d+)?)`;
const specPattern = new RegExp(`^(iid|dirichlet|shards|quantity)(?::${number})?$`);

/** Parses `iid`, `dirichlet:<alpha>`, `shards:<per client>` or `quantity:<alpha>`. */
export function parsePartition(spec: string): PartitionSpec {
  const text = typeof spec === 'string' ? spec.trim().toLowerCase() : '';
  const m = specPattern.exec(text);
  if (!m) {
    throw new FedError('config', `unknown partition "${String(spec)}"; use iid, dirichlet:<alpha>, shards:<n> or quantity:<alpha>`);
  }
  const kind = m[1]!;
  const arg = m[2] === undefined ? undefined : Number(m[2]);
  if (kind === 'iid') {
    if (arg !== undefined) throw new FedError('config', `partition "iid" takes no argument, got "${spec}"`);
    return { kind: 'iid' };
  }
  if (arg === undefined) throw new FedError('config', `partition "${kind}" needs an argument, e.g. ${kind}:${kind === 'shards' ? 2 : 0.5}`);
  if (kind === 'shards') {
    if (!Number.isInteger(arg) || arg < 1) throw new FedError('config', `shards needs a positive integer, got "${spec}"`);
    return { kind: 'shards', shardsPerClient: arg };
  }
  if (!(arg > 0) || !Number.isFinite(arg)) throw new FedError('config', `${kind} needs a positive alpha, got "${spec}"`);
  return kind === 'dirichlet' ? { kind: 'dirichlet', alpha: arg } : { kind: 'quantity', alpha: arg };
}

export function formatPartition(spec: PartitionSpec): string {
  switch (spec.kind) {
    case 'iid':
      return 'iid';
    case 'dirichlet':
      return `dirichlet:${spec.alpha}`;
    case 'shards':
      return `shards:${spec.shardsPerClient}`;
    case 'quantity':
      return `quantity:${spec.alpha}`;
  }
}

/** Splits a labelled dataset among `clients` as the spec says (a string is parsed first). */
export function partition(spec: string | PartitionSpec, labels: ArrayLike<number>, clients: number, seed: number): Partition {
  const s = typeof spec === 'string' ? parsePartition(spec) : spec;
  switch (s.kind) {
    case 'iid':
      return iid(labels.length, clients, seed);
    case 'dirichlet':
      return dirichlet(labels, clients, s.alpha, seed);
    case 'shards':
      return shards(labels, clients, s.shardsPerClient, seed);
    case 'quantity':
      return quantitySkew(labels.length, clients, s.alpha, seed);
  }
}
