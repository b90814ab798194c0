import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { deriveSeed, Rng } from '../src/data/random.ts';
import { IMAGE_SIZE, loadMnist, mnistPool, subset } from '../src/data/mnist.ts';
import {
  dirichlet,
  formatPartition,
  iid,
  parsePartition,
  partition,
  quantitySkew,
  shards,
  type Partition,
} from '../src/data/partition.ts';
import { isFedError, type ErrorCode } from '../src/errors.ts';

function expectRefusal(name: string, code: ErrorCode, fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    assert.ok(isFedError(e, code), `${name}: expected FedError ${code}, got ${String(e)}`);
    return;
  }
  assert.unreachable(`${name}: was accepted`);
}

/** Asserts the parts are disjoint, cover 0..n-1 exactly, are ascending and non-empty. */
function assertCover(parts: Partition, n: number, clients: number): void {
  assert.is(parts.length, clients);
  const seen = new Uint8Array(n);
  for (const p of parts) {
    assert.ok(p.length > 0, 'no client is empty');
    for (let i = 0; i < p.length; i++) {
      const j = p[i]!;
      assert.ok(Number.isInteger(j) && j >= 0 && j < n, `index ${j} in range`);
      assert.is(seen[j], 0, `index ${j} given twice`);
      seen[j] = 1;
      if (i > 0) assert.ok(p[i - 1]! < j, 'ascending');
    }
  }
  assert.ok(seen.every((s) => s === 1), 'every index given out');
}

const labelsOf = (part: number[], labels: ArrayLike<number>): Set<number> => new Set(part.map((i) => labels[i]!));

/** Mean over clients of the share of the client's most frequent label: 0.1 for a perfect IID split of 10 classes, 1 for one label each. */
function dominance(parts: Partition, labels: ArrayLike<number>): number {
  const shares = parts.map((p) => {
    const counts = new Map<number, number>();
    for (const i of p) counts.set(labels[i]!, (counts.get(labels[i]!) ?? 0) + 1);
    return Math.max(...counts.values()) / p.length;
  });
  return shares.reduce((s, x) => s + x, 0) / shares.length;
}

// ---------------------------------------------------------------- random

test('Rng: same seed gives the same stream, other seeds other streams', () => {
  const a = new Rng(42);
  const b = new Rng(42);
  const c = new Rng(43);
  const sa = Array.from({ length: 20 }, () => a.uint32());
  assert.equal(sa, Array.from({ length: 20 }, () => b.uint32()));
  assert.not.equal(sa, Array.from({ length: 20 }, () => c.uint32()));
  assert.not.equal(new Rng(0).permutation(50), new Rng(1).permutation(50));
  assert.is.not(deriveSeed(7, 'client', 1), deriveSeed(7, 'client', 2));
  assert.is(deriveSeed(7, 'client', 1), deriveSeed(7, 'client', 1));
});

test('Rng: next() is uniform on [0,1), int(n) covers 0..n-1 evenly, shuffle is a permutation', () => {
  const rng = new Rng(1);
  const buckets = new Array<number>(10).fill(0);
  let sum = 0;
  for (let i = 0; i < 100_000; i++) {
    const x = rng.next();
    assert.ok(x >= 0 && x < 1);
    sum += x;
    buckets[rng.int(10)]! += 1;
  }
  assert.ok(Math.abs(sum / 100_000 - 0.5) < 0.01, `mean ${sum / 100_000}`);
  for (const b of buckets) assert.ok(Math.abs(b - 10_000) < 500, `bucket ${b}`);
  const perm = rng.permutation(1000);
  assert.equal([...perm].sort((x, y) => x - y), Array.from({ length: 1000 }, (_, i) => i));
  assert.not.equal(perm, Array.from({ length: 1000 }, (_, i) => i));
});

test('Rng: normal and gamma have the right first two moments', () => {
  const rng = new Rng(3);
  const N = 50_000;
  const zs = Array.from({ length: N }, () => rng.normal());
  const mean = zs.reduce((s, z) => s + z, 0) / N;
  const variance = zs.reduce((s, z) => s + (z - mean) ** 2, 0) / N;
  assert.ok(Math.abs(mean) < 0.02 && Math.abs(variance - 1) < 0.03, `normal ${mean} ${variance}`);
  for (const shape of [0.3, 1, 4.5]) {
    const gs = Array.from({ length: N }, () => rng.gamma(shape));
    const m = gs.reduce((s, g) => s + g, 0) / N;
    const v = gs.reduce((s, g) => s + (g - m) ** 2, 0) / N;
    // Gamma(k, 1) has mean k and variance k
    assert.ok(Math.abs(m - shape) < 0.05 * shape + 0.01, `gamma(${shape}) mean ${m}`);
    assert.ok(Math.abs(v - shape) < 0.1 * shape + 0.02, `gamma(${shape}) variance ${v}`);
    assert.ok(gs.every((g) => g >= 0));
  }
});

test('Rng: dirichlet gives probability vectors, even for tiny alpha', () => {
  const rng = new Rng(5);
  for (const alpha of [0.001, 0.1, 1, 100]) {
    for (let i = 0; i < 200; i++) {
      const p = rng.dirichlet(alpha, 10);
      assert.is(p.length, 10);
      assert.ok(p.every((x) => x >= 0 && Number.isFinite(x)), `alpha ${alpha}`);
      assert.ok(Math.abs(p.reduce((s, x) => s + x, 0) - 1) < 1e-9);
    }
  }
  const peak = (alpha: number): number => {
    let total = 0;
    for (let i = 0; i < 500; i++) total += Math.max(...rng.dirichlet(alpha, 10));
    return total / 500;
  };
  // reference values of E[max component] for k = 10, from numpy.random.dirichlet: 0.78, 0.29, 0.116
  const p005 = peak(0.05);
  const p1 = peak(1);
  const p100 = peak(100);
  assert.ok(Math.abs(p005 - 0.78) < 0.04, `alpha 0.05: ${p005}`);
  assert.ok(Math.abs(p1 - 0.293) < 0.02, `alpha 1: ${p1}`);
  assert.ok(Math.abs(p100 - 0.116) < 0.005, `alpha 100: ${p100}`);
});

// ---------------------------------------------------------------- mnist

test('mnistPool: all 10,000 digits, 784 pixels in [0,1], every label present', () => {
  const pool = mnistPool();
  assert.is(pool.n, 10_000);
  assert.is(pool.x.length, pool.n * IMAGE_SIZE);
  assert.is(pool.y.length, pool.n);
  let min = Infinity;
  let max = -Infinity;
  for (const v of pool.x) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  assert.ok(min === 0 && max === 1, `pixel range ${min}..${max}`);
  const counts = new Array<number>(10).fill(0);
  for (const y of pool.y) counts[y]! += 1;
  assert.ok(counts.every((c) => c > 800), `class counts ${counts}`);
  assert.is(mnistPool(), pool, 'parsed once per process');
});

test('loadMnist: deterministic for a seed, disjoint train/test, stable test set across train sizes', () => {
  const a = loadMnist({ train: 8000, test: 2000, seed: 0 });
  const b = loadMnist({ train: 8000, test: 2000, seed: 0 });
  const c = loadMnist({ train: 8000, test: 2000, seed: 1 });
  const d = loadMnist({ train: 1000, test: 2000, seed: 0 });
  assert.is(a.train.n, 8000);
  assert.is(a.test.n, 2000);
  assert.equal(a.train.y, b.train.y);
  assert.equal(a.test.x, b.test.x);
  assert.not.equal(a.train.y, c.train.y);
  assert.equal(d.test.y, a.test.y);
  assert.equal(d.test.x, a.test.x);
  assert.is.not(a.train.x, b.train.x, 'each call returns its own arrays');
  // disjoint: no test image equals a train image in the same split (compare rows through a hash of pixels)
  const key = (x: Float32Array, i: number): string => x.subarray(i * IMAGE_SIZE, (i + 1) * IMAGE_SIZE).join(',');
  const trainRows = new Set(Array.from({ length: a.train.n }, (_, i) => key(a.train.x, i)));
  let shared = 0;
  for (let i = 0; i < a.test.n; i++) if (trainRows.has(key(a.test.x, i))) shared++;
  // the package holds a handful of pixel-identical duplicates; a real overlap would be thousands
  assert.ok(shared < 10, `${shared} test images also in train`);
  // the split is shuffled: the first 100 training labels are not all one digit
  assert.ok(new Set(a.train.y.subarray(0, 100)).size === 10);
});

test('loadMnist refuses impossible sizes; subset copies rows and refuses bad indices', () => {
  expectRefusal('too many', 'config', () => loadMnist({ train: 9000, test: 2000 }));
  expectRefusal('negative', 'config', () => loadMnist({ train: -1 }));
  expectRefusal('fractional', 'config', () => loadMnist({ test: 1.5 }));
  const { train } = loadMnist({ train: 100, test: 0 });
  const s = subset(train, [5, 2]);
  assert.is(s.n, 2);
  assert.equal(Array.from(s.y), [train.y[5], train.y[2]]);
  assert.equal(s.x.subarray(IMAGE_SIZE), train.x.subarray(2 * IMAGE_SIZE, 3 * IMAGE_SIZE));
  s.x[0] = 42;
  assert.is.not(train.x[5 * IMAGE_SIZE], 42);
  expectRefusal('out of range', 'config', () => subset(train, [100]));
  expectRefusal('negative index', 'config', () => subset(train, [-1]));
});

// ---------------------------------------------------------------- partition

// the real MNIST labels, so the skew checks see a realistic class balance
const labels = Uint8Array.from({ length: 8000 }, (_, i) => mnistPool().y[(i * 7919) % 10_000]!);

test('iid: disjoint, complete, equal sizes, deterministic per seed', () => {
  const parts = iid(8000, 5, 1);
  assertCover(parts, 8000, 5);
  assert.ok(parts.every((p) => p.length === 1600));
  assertCover(iid(10, 3, 1), 10, 3);
  assert.equal(iid(10, 3, 1).map((p) => p.length), [4, 3, 3]);
  assert.equal(iid(8000, 5, 1), parts);
  assert.not.equal(iid(8000, 5, 2), parts);
  assert.ok(dominance(parts, labels) < 0.15, 'IID clients see balanced labels');
});

test('dirichlet: disjoint and complete, skew grows as alpha shrinks, deterministic per seed', () => {
  const skewed = dirichlet(labels, 10, 0.1, 7);
  const mild = dirichlet(labels, 10, 100, 7);
  assertCover(skewed, labels.length, 10);
  assertCover(mild, labels.length, 10);
  assert.equal(dirichlet(labels, 10, 0.1, 7), skewed);
  assert.not.equal(dirichlet(labels, 10, 0.1, 8), skewed);
  const dSkewed = dominance(skewed, labels);
  const dMild = dominance(mild, labels);
  assert.ok(dSkewed > 0.5, `alpha 0.1 dominance ${dSkewed}`);
  assert.ok(dMild < 0.15, `alpha 100 dominance ${dMild}`);
});

test('dirichlet: no client is left empty even with tiny alpha and many clients', () => {
  for (const seed of [1, 2, 3]) {
    const parts = dirichlet(labels.subarray(0, 300), 50, 0.01, seed);
    assertCover(parts, 300, 50);
  }
  assertCover(dirichlet([0, 0, 0], 3, 0.01, 1), 3, 3);
});

test('shards: every client gets shardsPerClient shards, so at most that many labels (bar shard borders)', () => {
  const parts = shards(labels, 10, 2, 3);
  assertCover(parts, labels.length, 10);
  assert.ok(parts.every((p) => p.length === 800));
  const labelCounts = parts.map((p) => labelsOf(p, labels).size);
  // a shard that straddles the border between two labels adds one more
  assert.ok(labelCounts.every((k) => k <= 4), `labels per client ${labelCounts}`);
  assert.ok(labelCounts.filter((k) => k <= 2).length >= 5, `most clients have <= 2 labels: ${labelCounts}`);
  assert.equal(shards(labels, 10, 2, 3), parts);
  assert.not.equal(shards(labels, 10, 2, 4), parts);
  assert.ok(dominance(parts, labels) > 0.45);
});

test('quantitySkew: sizes vary with alpha, labels stay mixed, nothing is lost', () => {
  const skew = quantitySkew(8000, 10, 0.5, 1);
  assertCover(skew, 8000, 10);
  const sizes = skew.map((p) => p.length);
  assert.ok(Math.max(...sizes) > 3 * Math.min(...sizes), `sizes ${sizes}`);
  const even = quantitySkew(8000, 10, 1000, 1).map((p) => p.length);
  assert.ok(Math.max(...even) < 1.2 * Math.min(...even), `sizes ${even}`);
  assertCover(quantitySkew(20, 20, 0.01, 1), 20, 20);
  assert.equal(quantitySkew(8000, 10, 0.5, 1), skew);
  const largest = skew.reduce((a, b) => (b.length > a.length ? b : a));
  assert.ok(dominance([largest], labels) < 0.2, 'labels are IID within a client');
});

test('partitioners refuse impossible requests with config errors', () => {
  expectRefusal('more clients than examples', 'config', () => iid(3, 5, 0));
  expectRefusal('zero clients', 'config', () => iid(3, 0, 0));
  expectRefusal('fractional clients', 'config', () => iid(3, 1.5, 0));
  expectRefusal('alpha 0', 'config', () => dirichlet(labels, 5, 0, 0));
  expectRefusal('alpha NaN', 'config', () => quantitySkew(100, 5, NaN, 0));
  expectRefusal('too many shards', 'config', () => shards([0, 1, 2], 2, 2, 0));
  expectRefusal('zero shards', 'config', () => shards(labels, 2, 0, 0));
  expectRefusal('bad label', 'config', () => dirichlet([0, -1, 2], 2, 1, 0));
});

test('parsePartition accepts the documented specs and refuses everything else', () => {
  assert.equal(parsePartition('iid'), { kind: 'iid' });
  assert.equal(parsePartition(' Dirichlet:0.3 '), { kind: 'dirichlet', alpha: 0.3 });
  assert.equal(parsePartition('shards:2'), { kind: 'shards', shardsPerClient: 2 });
  assert.equal(parsePartition('quantity:0.5'), { kind: 'quantity', alpha: 0.5 });
  assert.equal(parsePartition('dirichlet:1e-1'), { kind: 'dirichlet', alpha: 0.1 });
  for (const spec of ['iid', 'dirichlet:0.3', 'shards:2', 'quantity:0.5']) assert.is(formatPartition(parsePartition(spec)), spec);
  for (const bad of ['', 'noniid', 'iid:1', 'dirichlet', 'dirichlet:', 'dirichlet:0', 'dirichlet:-1', 'dirichlet:abc', 'shards:0', 'shards:1.5', 'quantity:x', 'dirichlet:0.3:1', 'shards:2 extra']) {
    expectRefusal(`spec "${bad}"`, 'config', () => parsePartition(bad));
  }
  expectRefusal('non-string', 'config', () => parsePartition(undefined as unknown as string));
});

test('partition() applies a spec string the same way as calling the partitioner', () => {
  assert.equal(partition('iid', labels, 5, 9), iid(labels.length, 5, 9));
  assert.equal(partition('dirichlet:0.3', labels, 5, 9), dirichlet(labels, 5, 0.3, 9));
  assert.equal(partition('shards:2', labels, 5, 9), shards(labels, 5, 2, 9));
  assert.equal(partition({ kind: 'quantity', alpha: 0.5 }, labels, 5, 9), quantitySkew(labels.length, 5, 0.5, 9));
  expectRefusal('bad spec', 'config', () => partition('zipf:2', labels, 5, 9));
});

test.run();
