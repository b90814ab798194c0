// Median, trimmed mean, Krum and Multi-Krum: properties over random inputs (fast-check).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { createMedian } from '../src/strategies/median.ts';
import { createTrimmedMean, trimCount } from '../src/strategies/trimmed-mean.ts';
import { createKrum, createMultiKrum, krumSelect, KrumAccumulator } from '../src/strategies/krum.ts';
import { weightedMean } from '../src/strategies/fedavg.ts';
import { columnwise, medianOf, selectInPlace, type ColumnReduction } from '../src/strategies/kernels/select.ts';
import type { AggregationStrategy } from '../src/strategies/types.ts';
import { createStrategy } from '../src/strategies/registry.ts';
import { expectCode } from './helpers/expect-code.ts';

const f32 = fc.float({ min: -1000, max: 1000, noNaN: true, noDefaultInfinity: true });
// few distinct values as well, so ties and duplicates are common
const f32OrTie = fc.oneof(f32, fc.constantFrom(-1, 0, 1, 2.5));
const rowsOf = (minN: number, maxN: number, maxD = 24) =>
  fc.integer({ min: 1, max: maxD }).chain((d) =>
    fc.array(fc.array(f32OrTie, { minLength: d, maxLength: d }).map((a) => Float32Array.from(a)), { minLength: minN, maxLength: maxN }),
  );
const withShuffle = <T>(arb: fc.Arbitrary<T[]>) =>
  arb.chain((xs) => fc.tuple(fc.constant(xs), fc.shuffledSubarray(xs, { minLength: xs.length, maxLength: xs.length })));

function run(strategy: AggregationStrategy, rows: readonly Float32Array[], weights?: readonly number[]): Float32Array {
  const acc = strategy.begin({ size: rows[0]!.length, expected: rows.length });
  rows.forEach((r, i) => acc.add(r, weights?.[i] ?? 1));
  return acc.finish();
}


function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, msg = ''): void {
  assert.is(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    if (!(Math.abs(a[i]! - b[i]!) <= tol)) assert.unreachable(`${msg} index ${i}: ${a[i]} vs ${b[i]}`);
  }
}

const column = (rows: readonly Float32Array[], j: number): number[] => rows.map((r) => r[j]!);
const sorted = (xs: number[]): number[] => [...xs].sort((a, b) => a - b);

test('selectInPlace puts the k-th smallest at k and partitions around it', () => {
  fc.assert(
    fc.property(fc.array(f32OrTie, { minLength: 1, maxLength: 200 }), fc.nat(), (xs, kRaw) => {
      const a = Float32Array.from(xs);
      const k = kRaw % a.length;
      selectInPlace(a, 0, a.length - 1, k);
      const want = sorted([...Float32Array.from(xs)]);
      assert.is(a[k], want[k]);
      for (let i = 0; i < k; i++) assert.ok(a[i]! <= a[k]!);
      for (let i = k + 1; i < a.length; i++) assert.ok(a[i]! >= a[k]!);
      assert.equal(sorted([...a]), want, 'a permutation of the input');
    }),
    { numRuns: 500 },
  );
});

test('wasm and JS column kernels agree bit for bit (median and trimmed mean, ties, small n)', () => {
  fc.assert(
    fc.property(rowsOf(1, 40, 300), fc.double({ min: 0, max: 0.49, noNaN: true }), (rows, beta) => {
      const d = rows[0]!.length;
      const hows: ColumnReduction[] = [{ kind: 'median' }, { kind: 'trimmed', trim: trimCount(rows.length, beta) }];
      for (const how of hows) assert.equal(columnwise(rows, d, how, 'wasm'), columnwise(rows, d, how, 'js'), how.kind);
    }),
    { numRuns: 300 },
  );
  // more than one block of columns
  const rows = Array.from({ length: 7 }, (_, k) => Float32Array.from({ length: 600 }, (_, i) => Math.sin(i * 7 + k * 3)));
  assert.equal(columnwise(rows, 600, { kind: 'median' }, 'wasm'), columnwise(rows, 600, { kind: 'median' }, 'js'));
});

test('median is the sorted middle (mean of the two middles for even n)', () => {
  fc.assert(
    fc.property(rowsOf(1, 15), (rows) => {
      const got = run(createMedian(), rows);
      for (let j = 0; j < got.length; j++) {
        const s = sorted(column(rows, j));
        const n = s.length;
        const want = n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
        assert.is(got[j], Math.fround(want), `coordinate ${j}`);
      }
    }),
    { numRuns: 300 },
  );
  assert.is(medianOf(Float32Array.of(5, 1, 3, 2), 0, 4), 2.5);
});

for (const [name, make] of [
  ['median', () => createMedian()],
  ['trimmedmean beta=0.2', () => createTrimmedMean({ beta: 0.2 })],
  ['trimmedmean beta=0.45', () => createTrimmedMean({ beta: 0.45 })],
] as Array<[string, () => AggregationStrategy]>) {
  test(`${name}: inside the per-coordinate min/max`, () => {
    fc.assert(
      fc.property(rowsOf(1, 20), (rows) => {
        const got = run(make(), rows);
        for (let j = 0; j < got.length; j++) {
          const col = column(rows, j);
          assert.ok(got[j]! >= Math.min(...col) && got[j]! <= Math.max(...col), `coordinate ${j}: ${got[j]}`);
        }
      }),
      { numRuns: 300 },
    );
  });

  test(`${name}: permutation invariant and ignores weights`, () => {
    fc.assert(
      fc.property(withShuffle(rowsOf(1, 20)), fc.array(fc.integer({ min: 1, max: 1e6 }), { minLength: 20, maxLength: 20 }), ([rows, shuffled], weights) => {
        const a = run(make(), rows);
        const b = run(make(), shuffled, weights);
        // the kept values are the same; only their Float64 summation order differs
        assertClose(a, b, 1e-3 * 2 ** -10);
      }),
      { numRuns: 300 },
    );
  });

  test(`${name}: identity on identical inputs, totalWeight sums the weights`, () => {
    fc.assert(
      fc.property(rowsOf(1, 1, 40), fc.array(fc.integer({ min: 1, max: 1000 }), { minLength: 1, maxLength: 12 }), ([x], weights) => {
        const acc = make().begin({ size: x!.length });
        for (const w of weights) acc.add(x!, w);
        assert.equal(acc.finish(), x);
        assert.is(acc.totalWeight, weights.reduce((s, w) => s + w, 0));
      }),
      { numRuns: 200 },
    );
  });
}

test('trimmedmean: beta=0 equals the (unweighted) mean', () => {
  fc.assert(
    fc.property(rowsOf(1, 20), (rows) => {
      const mean = weightedMean(rows, rows.map(() => 1));
      assertClose(run(createTrimmedMean({ beta: 0 }), rows), mean, 1e-3 * 2 ** -10);
    }),
    { numRuns: 300 },
  );
});

test('trimmedmean: drops floor(beta*n) values at each end', () => {
  fc.assert(
    fc.property(rowsOf(1, 25), fc.double({ min: 0, max: 0.49, noNaN: true }), (rows, beta) => {
      const got = run(createTrimmedMean({ beta }), rows);
      const t = trimCount(rows.length, beta);
      for (let j = 0; j < got.length; j++) {
        const kept = sorted(column(rows, j)).slice(t, rows.length - t);
        const want = kept.reduce((s, v) => s + v, 0) / kept.length;
        // the Float64 sums may cancel differently by order: tolerance relative to the inputs, not the result
        const scale = Math.max(...kept.map(Math.abs));
        assert.ok(Math.abs(got[j]! - want) <= scale * 2 ** -22 + 2 ** -149, `coordinate ${j}: ${got[j]} vs ${want}`);
      }
    }),
    { numRuns: 300 },
  );
  // one huge outlier among 10 is gone with beta = 0.1, and drags the plain mean
  const rows = [...Array.from({ length: 9 }, () => Float32Array.of(1)), Float32Array.of(1e6)];
  assert.equal(run(createTrimmedMean({ beta: 0.1 }), rows), Float32Array.of(1));
  expectCode('config', () => createTrimmedMean({ beta: 0.5 }));
  expectCode('config', () => createTrimmedMean({ beta: -0.1 }));
  expectCode('config', () => createTrimmedMean({ beta: NaN }));
});

test('buffered strategies refuse bad input without keeping it, and bound their memory', () => {
  for (const make of [createMedian, () => createTrimmedMean({ beta: 0.1 }), () => createKrum({ f: 0 })]) {
    const acc = make().begin({ size: 3, expected: 3 });
    acc.add(Float32Array.of(1, 2, 3), 2);
    expectCode('bad-weight', () => acc.add(Float32Array.of(9, 9, 9), 0));
    expectCode('bad-weight', () => acc.add(Float32Array.of(9, 9, 9), NaN));
    expectCode('wrong-shape', () => acc.add(Float32Array.of(9, 9), 1));
    expectCode('not-finite', () => acc.add(Float32Array.of(9, NaN, 9), 1));
    expectCode('not-finite', () => acc.add(Float32Array.of(9, 9, -Infinity), 1));
    assert.is(acc.count, 1);
    assert.is(acc.totalWeight, 2);
    const buf = Float32Array.of(1, 2, 3);
    acc.add(buf, 1);
    buf.fill(100); // the store copied it
    acc.add(Float32Array.of(1, 2, 3), 1);
    expectCode('oversized', () => acc.add(Float32Array.of(1, 2, 3), 1));
    assert.equal(acc.finish(), Float32Array.of(1, 2, 3));
    expectCode('bad-weight', () => make().begin({ size: 3 }).finish());
  }
});

test('buffered strategies: stage() hands out a buffer that add() keeps without copying', () => {
  for (const make of [createMedian, () => createTrimmedMean({ beta: 0 }), () => createKrum({ f: 0 })]) {
    const acc = make().begin({ size: 2, expected: 3 });
    const values = [Float32Array.of(1, 5), Float32Array.of(2, 6), Float32Array.of(3, 7)];
    const staged = values.map((v) => {
      const buf = acc.stage!();
      assert.is(buf.length, 2);
      buf.set(v);
      acc.add(buf, 1);
      return buf;
    });
    const want = run(make(), values);
    assert.equal(acc.finish(), want);
    // adopted, not copied: the stored rows are the staged buffers themselves
    staged.forEach((b) => b.fill(100));
    assert.equal(acc.finish(), Float32Array.of(100, 100));
    // an ordinary array is still copied
    const other = make().begin({ size: 2 });
    const own = Float32Array.of(4, 4);
    for (let i = 0; i < 3; i++) other.add(own, 1);
    own.fill(9);
    assert.equal(other.finish(), Float32Array.of(4, 4));
  }
});

test('ctx.stageSlots reaches FedAvg through the registry', () => {
  const acc = createStrategy('fedavg').begin({ size: 3, stageSlots: 1 });
  const slot = acc.stage!(0);
  slot.set([1, 2, 3]);
  acc.add(slot, 2);
  assert.equal(acc.finish(), Float32Array.of(1, 2, 3));
});

// ---- Krum ----

test('krum selects one of its inputs and is permutation invariant', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 3 }).chain((f) => fc.tuple(fc.constant(f), withShuffle(rowsOf(2 * f + 3, 2 * f + 10)))),
      ([f, [rows, shuffled]]) => {
        const a = run(createKrum({ f }), rows);
        assert.ok(
          rows.some((r) => r.every((v, i) => Object.is(v, a[i]))),
          'output is one of the inputs',
        );
        assert.equal(run(createKrum({ f }), shuffled), a);
      },
    ),
    { numRuns: 200 },
  );
});

test('krum and multikrum: identity on identical inputs', () => {
  fc.assert(
    fc.property(rowsOf(1, 1), fc.integer({ min: 0, max: 3 }), ([x], f) => {
      const rows = Array.from({ length: 2 * f + 3 }, () => x!);
      assert.equal(run(createKrum({ f }), rows), x);
      assert.equal(run(createMultiKrum({ f }), rows), x);
    }),
    { numRuns: 100 },
  );
});

// Benign updates within 0.1 per coordinate of a centre; Byzantine ones at least 3 away in some coordinate
// (anywhere up to 1e4, or just outside the cluster), possibly colluding. With d <= 16 and n <= 2f+8 a
// benign score is at most (n-f-2) * d * 0.2^2 <= 6.4, while a Byzantine score includes at least
// n-2f-1 >= 1 benign neighbours at squared distance >= (3-0.1)^2 > 8: Krum must pick a benign update.
const awayFromCentre = (v: number[]): number[] => [v[0]! >= 0 ? Math.max(v[0]!, 3) : Math.min(v[0]!, -3), ...v.slice(1)];
const krumScenario = fc.integer({ min: 1, max: 4 }).chain((f) =>
  fc.integer({ min: 2, max: 16 }).chain((d) =>
    fc.record({
      f: fc.constant(f),
      centre: fc.array(fc.float({ min: -10, max: 10, noNaN: true }), { minLength: d, maxLength: d }),
      benign: fc.array(fc.array(fc.float({ min: Math.fround(-0.1), max: Math.fround(0.1), noNaN: true }), { minLength: d, maxLength: d }), {
        minLength: f + 3,
        maxLength: f + 8,
      }),
      byzantine: fc.array(
        fc.oneof(
          fc.array(fc.float({ min: -1e4, max: 1e4, noNaN: true }), { minLength: d, maxLength: d }).map(awayFromCentre),
          fc.array(fc.float({ min: 3, max: 4, noNaN: true }), { minLength: d, maxLength: d }),
        ),
        { minLength: f, maxLength: f },
      ),
      byzantineCollude: fc.boolean(),
    }),
  ),
);

test('krum with f Byzantine among n > 2f+2: the choice is benign when the benign updates are clustered', () => {
  fc.assert(
    fc.property(krumScenario, ({ f, centre, benign, byzantine, byzantineCollude }) => {
      const benignRows = benign.map((noise) => Float32Array.from(centre, (c, i) => c + noise[i]!));
      // colluding attackers send the same vector, which makes them each other's nearest neighbours
      const byz = byzantine.map((b) => Float32Array.from(centre, (c, i) => c + (byzantineCollude ? byzantine[0]! : b)[i]!));
      const rows = [...benignRows, ...byz];
      assert.ok(rows.length > 2 * f + 2);
      const { selected } = krumSelect(rows, f, 1);
      assert.ok(selected[0]! < benignRows.length, `selected a Byzantine update (index ${selected[0]}, ${benignRows.length} benign)`);
      const mk = createMultiKrum({ f, m: benignRows.length - f }).begin({ size: centre.length }) as KrumAccumulator;
      rows.forEach((r) => mk.add(r, 1));
      mk.finish();
      assert.ok(mk.lastResult!.selected.every((i) => i < benignRows.length), 'multikrum keeps only benign updates');
    }),
    { numRuns: 300 },
  );
});

test('multikrum averages the m best; m = n equals the plain mean; needs n > 2f+2', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 }).chain((f) => fc.tuple(fc.constant(f), rowsOf(2 * f + 3, 2 * f + 8))), ([f, rows]) => {
      const all = run(createMultiKrum({ f, m: rows.length }), rows);
      assertClose(all, weightedMean(rows, rows.map(() => 1)), 1e-3 * 2 ** -10);
      const one = run(createMultiKrum({ f, m: 1 }), rows);
      assert.equal(one, run(createKrum({ f }), rows));
    }),
    { numRuns: 200 },
  );
  const rows = [Float32Array.of(0), Float32Array.of(1), Float32Array.of(2), Float32Array.of(100)];
  expectCode('config', () => run(createKrum({ f: 1 }), rows)); // 4 <= 2*1+2
  assert.equal(run(createKrum({ f: 0 }), rows), Float32Array.of(1));
  expectCode('config', () => run(createMultiKrum({ f: 0, m: 5 }), rows));
  expectCode('config', () => createKrum({ f: -1 }));
  expectCode('config', () => createMultiKrum({ f: 1, m: 0 }));
});

test.run();
