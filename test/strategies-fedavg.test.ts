import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { FedAvgAccumulator, createFedAvg, recycleAccumulator, weightedMean } from '../src/strategies/fedavg.ts';
import { BATCH, createWeightedSum, wasmAvailable, type KernelKind } from '../src/strategies/kernels/weighted-sum.ts';
import { isFedError, type ErrorCode } from '../src/errors.ts';
import { createMedian, finishInto, tryAdd } from '../src/strategies/index.ts';
import { decodeModel, encodeModel } from '../src/model/codec.ts';
import { expectCode } from './helpers/expect-code.ts';

const kernels: KernelKind[] = ['wasm', 'js'];

// Finite Float32 values of moderate magnitude, plus exact zeros and tiny values.
const f32 = fc.float({ min: -1000, max: 1000, noNaN: true, noDefaultInfinity: true });
const weight = fc.oneof(fc.integer({ min: 1, max: 60000 }), fc.double({ min: 1e-3, max: 1e6, noNaN: true }));

/** n updates of d parameters with weights. */
const batch = (maxN = 8, maxD = 40) =>
  fc.integer({ min: 1, max: maxD }).chain((d) =>
    fc.array(fc.record({ x: fc.array(f32, { minLength: d, maxLength: d }).map((a) => Float32Array.from(a)), w: weight }), {
      minLength: 1,
      maxLength: maxN,
    }),
  );

/** Reference weighted mean, straight from the definition in Float64. */
function reference(items: Array<{ x: Float32Array; w: number }>): Float64Array {
  const d = items[0]!.x.length;
  const out = new Float64Array(d);
  let total = 0;
  for (const { x, w } of items) {
    total += w;
    for (let i = 0; i < d; i++) out[i]! += w * x[i]!;
  }
  return out.map((v) => v / total);
}

function mean(items: Array<{ x: Float32Array; w: number }>, kernel: KernelKind): Float32Array {
  const acc = new FedAvgAccumulator(items[0]!.x.length, kernel);
  for (const { x, w } of items) acc.add(x, w);
  return acc.finish();
}

const scaleOf = (items: Array<{ x: Float32Array }>): number => Math.max(1, ...items.flatMap(({ x }) => [...x].map(Math.abs)));

function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, msg = ''): void {
  assert.is(a.length, b.length, `${msg} length`);
  for (let i = 0; i < a.length; i++) {
    const diff = Math.abs(a[i]! - b[i]!);
    if (!(diff <= tol)) assert.unreachable(`${msg} index ${i}: ${a[i]} vs ${b[i]} (|diff| ${diff} > ${tol})`);
  }
}


test('the wasm SIMD kernel is available and used by default', () => {
  assert.ok(wasmAvailable());
  assert.is(new FedAvgAccumulator(10).kernel, 'wasm');
  assert.is(new FedAvgAccumulator(10, 'js').kernel, 'js');
});

test('wasm kernel and JS fallback agree bit for bit (odd sizes, block edges)', () => {
  const sizes = [0, 1, 3, 15, 16, 17, 33, 16383, 16384, 16385, 40001];
  for (const size of sizes) {
    const sums = kernels.map((k) => createWeightedSum(size, k));
    let seed = size + 1;
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
    for (let u = 0; u < 5; u++) {
      const x = Float32Array.from({ length: size }, () => rnd() * 10 ** Math.floor(rnd() * 6));
      const w = 1 + Math.abs(rnd()) * 1000;
      for (const s of sums) s.add(x, w);
    }
    const [a, b] = sums.map((s) => s.snapshot());
    assert.equal(a, b, `acc, size ${size}`);
    const [ra, rb] = sums.map((s) => s.scaled(1 / 1234.5));
    assert.equal(ra, rb, `scaled, size ${size}`);
  }
  fc.assert(
    fc.property(batch(6, 80), (items) => {
      const [a, b] = kernels.map((k) => mean(items, k));
      assert.equal(a, b);
    }),
    { numRuns: 200 },
  );
});

for (const kernel of kernels) {
  test(`[${kernel}] matches the Float64 definition and is a convex combination`, () => {
    fc.assert(
      fc.property(batch(), (items) => {
        const got = mean(items, kernel);
        const want = reference(items);
        // rounding to Float32 once: half an ulp of the largest magnitude
        assertClose(got, want, scaleOf(items) * 2 ** -23, 'vs reference');
        const d = got.length;
        for (let i = 0; i < d; i++) {
          const col = items.map(({ x }) => x[i]!);
          const lo = Math.min(...col);
          const hi = Math.max(...col);
          const tol = Math.max(Math.abs(lo), Math.abs(hi)) * 2 ** -22;
          assert.ok(got[i]! >= lo - tol && got[i]! <= hi + tol, `coordinate ${i}: ${got[i]} outside [${lo}, ${hi}]`);
        }
      }),
      { numRuns: 300 },
    );
  });

  test(`[${kernel}] permutation invariant`, () => {
    fc.assert(
      fc.property(
        batch().chain((items) => fc.tuple(fc.constant(items), fc.shuffledSubarray(items, { minLength: items.length, maxLength: items.length }))),
        ([items, shuffled]) => {
          assertClose(mean(items, kernel), mean(shuffled, kernel), scaleOf(items) * 2 ** -22);
        },
      ),
      { numRuns: 300 },
    );
  });

  test(`[${kernel}] identity on identical models, exactly`, () => {
    fc.assert(
      fc.property(batch(1, 60), fc.array(weight, { minLength: 1, maxLength: 12 }), (items, weights) => {
        const x = items[0]!.x;
        const acc = new FedAvgAccumulator(x.length, kernel);
        for (const w of weights) acc.add(x, w);
        assert.equal(acc.finish(), x);
        assert.is(acc.count, weights.length);
      }),
      { numRuns: 300 },
    );
  });

  test(`[${kernel}] weight-scale invariant`, () => {
    fc.assert(
      fc.property(batch(), fc.double({ min: 1e-3, max: 1e3, noNaN: true }), (items, c) => {
        const scaled = items.map(({ x, w }) => ({ x, w: w * c }));
        assertClose(mean(items, kernel), mean(scaled, kernel), scaleOf(items) * 2 ** -22);
      }),
      { numRuns: 300 },
    );
  });

  test(`[${kernel}] hierarchical FedAvg (combiners weighted by totals) equals flat FedAvg`, () => {
    fc.assert(
      fc.property(
        batch(16).chain((items) =>
          fc.tuple(fc.constant(items), fc.array(fc.integer({ min: 0, max: 4 }), { minLength: items.length, maxLength: items.length })),
        ),
        ([items, assignment]) => {
          const d = items[0]!.x.length;
          const combiners = new Map<number, FedAvgAccumulator>();
          items.forEach(({ x, w }, i) => {
            const c = assignment[i]!;
            const acc = combiners.get(c) ?? new FedAvgAccumulator(d, kernel);
            combiners.set(c, acc);
            acc.add(x, w);
          });
          // the reducer folds combiner models with the same strategy, weights = combiner totals
          const reducer = createFedAvg({ kernel }).begin({ size: d });
          for (const acc of combiners.values()) reducer.add(acc.finish(), acc.totalWeight);
          const flat = mean(items, kernel);
          const total = items.reduce((s, { w }) => s + w, 0);
          assert.ok(Math.abs(reducer.totalWeight - total) <= total * 1e-12, 'total weight is preserved');
          assert.is(reducer.count, combiners.size);
          // each combiner model is rounded to Float32 once more than the flat mean
          assertClose(reducer.finish(), flat, scaleOf(items) * 2 ** -21, 'hierarchical vs flat');
        },
      ),
      { numRuns: 300 },
    );
  });

  test(`[${kernel}] refused adds are typed and leave the aggregate untouched`, () => {
    const size = 40000; // more than two kernel blocks, so a late NaN is found after early blocks passed
    const good = (k: number): Float32Array => Float32Array.from({ length: size }, (_, i) => Math.sin(i * 0.001 + k));
    const acc = new FedAvgAccumulator(size, kernel);
    const twin = new FedAvgAccumulator(size, kernel);
    for (const a of [acc, twin]) {
      a.add(good(1), 3);
      a.add(good(2), 5);
    }
    const bad: Array<[ErrorCode, Float32Array, number]> = [
      ['bad-weight', good(3), 0],
      ['bad-weight', good(3), -2],
      ['bad-weight', good(3), NaN],
      ['bad-weight', good(3), Infinity],
      ['wrong-shape', good(3).subarray(1), 1],
      ['wrong-shape', new Float32Array(size + 1), 1],
      ['bad-weight', good(3), Number.MAX_VALUE],
      ['bad-weight', good(3), 2 ** 800],
    ];
    for (const at of [0, 17, 16383, 16384, 39999]) {
      for (const v of [NaN, Infinity, -Infinity]) {
        const x = good(4);
        x[at] = v;
        bad.push(['not-finite', x, 1]);
      }
    }
    acc.add(good(9), 2 ** 790);
    twin.add(good(9), 2 ** 790);
    for (const [code, x, w] of bad) {
      expectCode(code, () => acc.add(x, w));
      assert.is(acc.count, twin.count);
      assert.is(acc.totalWeight, twin.totalWeight);
    }
    assert.equal(acc.finish(), twin.finish());
    acc.add(good(5), 2);
    twin.add(good(5), 2);
    assert.equal(acc.finish(), twin.finish(), 'still usable after refusals');
  });
}

test('zero-copy stage slots: same bits as the copy path, exact refusal, reusable, both kernels', () => {
  fc.assert(
    fc.property(batch(6, 70), (items) => {
      const d = items[0]!.x.length;
      const want = mean(items, 'js');
      for (const kernel of kernels) {
        const acc = new FedAvgAccumulator(d, { kernel, stageSlots: 2 });
        items.forEach(({ x, w }, i) => {
          const slot = acc.stage(i % 2);
          slot.set(x);
          acc.add(slot, w);
        });
        assert.equal(acc.finish(), want, kernel);
      }
    }),
    { numRuns: 200 },
  );
  for (const kernel of kernels) {
    const size = 40000;
    const told: number[] = [];
    const acc = new FedAvgAccumulator(size, { kernel, stageSlots: 1, onRefused: (r) => told.push(r.tag) });
    const twin = new FedAvgAccumulator(size, { kernel });
    let slot = acc.stage();
    assert.is(slot.length, size);
    slot.fill(0.25);
    acc.add(slot, 2);
    twin.add(new Float32Array(size).fill(0.25), 2);
    for (const at of [0, 39999]) {
      slot = acc.stage(); // folds the waiting update first, so the slot can be rewritten
      slot.fill(1);
      slot[at] = Infinity;
      // the js kernel refuses at once; the wasm kernel when the batch is folded, through onRefused
      if (kernel === 'js') expectCode('not-finite', () => acc.add(slot, 1));
      else acc.add(slot, 1);
    }
    assert.equal(acc.finish(), twin.finish(), `${kernel}: refused staged updates left no trace`);
    assert.is(acc.count, 1);
    assert.is(acc.totalWeight, 2);
    if (kernel === 'wasm') {
      assert.equal(told, [1, 2]);
      assert.equal(acc.refused.map((r) => r.error.code), ['not-finite', 'not-finite']);
    }
    expectCode('config', () => acc.stage(1));
    expectCode('config', () => new FedAvgAccumulator(4, { kernel, stageSlots: -1 }));
  }
  // adding a slot again while its update still waits would fold whatever was written over it: refused
  const waits = new FedAvgAccumulator(8, { kernel: 'wasm', stageSlots: 1 });
  const s0 = waits.stage(0).fill(2);
  waits.add(s0, 1);
  expectCode('config', () => waits.add(s0, 1));
  waits.stage(0).fill(4);
  waits.add(waits.stage(0), 1);
  assert.equal(waits.finish(), new Float32Array(8).fill(3));
  // a view that merely shares the kernel's memory but is not a slot goes through the copy path
  const acc = new FedAvgAccumulator(8, { kernel: 'wasm', stageSlots: 2 });
  const inner = new Float32Array(acc.stage(1).buffer, acc.stage(1).byteOffset + 4, 8).fill(3);
  acc.add(inner, 1);
  assert.equal(acc.finish(), new Float32Array(8).fill(3));
});

test('batched staged folds: mixed staged, copied and non-finite updates give the sequential result bit for bit', () => {
  // more slots than a batch, so full batches and every shorter one are folded
  const SLOTS = BATCH + 4;
  const poison = fc.constantFrom(NaN, Infinity, -Infinity);
  const step = (d: number) =>
    fc.record({
      x: fc.array(f32, { minLength: d, maxLength: d }).map((a) => Float32Array.from(a)),
      w: weight,
      staged: fc.boolean(),
      slot: fc.integer({ min: 0, max: SLOTS - 1 }),
      bad: fc.option(fc.tuple(fc.nat(d - 1), poison), { freq: 4 }),
    });
  const plan = fc.integer({ min: 1, max: 70 }).chain((d) => fc.array(step(d), { minLength: 1, maxLength: 2 * BATCH + 8 }));
  fc.assert(
    fc.property(plan, (steps) => {
      const d = steps[0]!.x.length;
      const refused: number[] = [];
      const acc = new FedAvgAccumulator(d, { kernel: 'wasm', stageSlots: SLOTS, onRefused: (r) => refused.push(r.tag) });
      const seq = new FedAvgAccumulator(d, 'js');
      const wantRefused: number[] = [];
      steps.forEach((s, tag) => {
        const x = s.x.slice();
        if (s.bad) x[s.bad[0]] = s.bad[1];
        const ok = tryAdd(seq, x, s.w) === undefined;
        if (s.staged) {
          const slot = acc.stage(s.slot);
          slot.set(x);
          acc.add(slot, s.w);
          if (!ok) wantRefused.push(tag);
        } else {
          assert.is(tryAdd(acc, x, s.w) === undefined, ok, 'a copied update is refused at once');
        }
      });
      assert.is(acc.count, seq.count);
      assert.is(acc.totalWeight, seq.totalWeight);
      assert.equal(refused, wantRefused);
      if (seq.count > 0) assert.equal(acc.finish(), seq.finish());
      else expectCode('bad-weight', () => acc.finish());
    }),
    { numRuns: 300 },
  );
});

test('every batch size, 1 to BATCH staged updates in one pass, with or without a poisoned one, folds like the sequential kernel', () => {
  const plan = fc
    .record({ d: fc.integer({ min: 1, max: 70 }), k: fc.integer({ min: 1, max: BATCH }) })
    .chain(({ d, k }) =>
      fc.record({
        xs: fc.array(fc.array(f32, { minLength: d, maxLength: d }), { minLength: k, maxLength: k }),
        ws: fc.array(weight, { minLength: k, maxLength: k }),
        bad: fc.option(fc.tuple(fc.nat(k - 1), fc.nat(d - 1), fc.constantFrom(NaN, Infinity, -Infinity)), { freq: 3 }),
      }),
    );
  fc.assert(
    fc.property(plan, ({ xs, ws, bad }) => {
      const d = xs[0]!.length;
      const refused: number[] = [];
      const acc = new FedAvgAccumulator(d, { kernel: 'wasm', stageSlots: BATCH, onRefused: (r) => refused.push(r.tag) });
      const seq = new FedAvgAccumulator(d, 'js');
      seq.add(new Float32Array(d).fill(0.5), 3); // a non-zero sum to fold onto
      acc.add(new Float32Array(d).fill(0.5), 3);
      xs.forEach((values, i) => {
        const slot = acc.stage(i);
        slot.set(values);
        if (bad && bad[0] === i) slot[bad[1]] = bad[2];
        if (!bad || bad[0] !== i) seq.add(slot.slice(), ws[i]!);
        acc.add(slot, ws[i]!);
      });
      assert.equal(acc.finish(), seq.finish()); // folds the waiting batch, so refusals are known after it
      assert.equal(refused, bad ? [bad[0] + 1] : []);
      assert.is(acc.count, seq.count);
    }),
    { numRuns: 300 },
  );
});

test('finishInto: FedAvg writes the mean into the given array, bit for bit finish(); others through one copy', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 50 }), fc.integer({ min: 1, max: 6 }), fc.integer({ min: 0, max: 7 }), (d, n, skew) => {
      const xs = Array.from({ length: n }, (_, k) => Float32Array.from({ length: d }, (_, i) => Math.sin(i * 7 + k) * 100));
      for (const kernel of kernels) {
        const acc = new FedAvgAccumulator(d, kernel);
        xs.forEach((x, k) => acc.add(x, k + 1));
        // an array at any 4-byte offset of plain memory, as an encoded model's data section is
        const out = new Float32Array(new ArrayBuffer(4 * (d + skew)), 4 * skew, d);
        assert.is(finishInto(acc, out), out);
        assert.equal(out, acc.finish());
      }
      const median = createMedian().begin({ size: d });
      xs.forEach((x) => median.add(x, 1));
      assert.equal(finishInto(median, new Float32Array(d)), median.finish());
    }),
    { numRuns: 100 },
  );
  const acc = new FedAvgAccumulator(3);
  acc.add(Float32Array.of(1, 2, 3), 1);
  expectCode('wrong-shape', () => finishInto(acc, new Float32Array(2)));
  const median = createMedian().begin({ size: 3 });
  median.add(Float32Array.of(1, 2, 3), 1);
  expectCode('wrong-shape', () => finishInto(median, new Float32Array(4)));
  expectCode('bad-weight', () => finishInto(new FedAvgAccumulator(3), new Float32Array(3)));
});

test('stageBytes: a whole encoded model received into it decodes to the slot itself, folded without a copy', () => {
  const layout = [{ name: 'w', shape: [3, 7] }];
  for (const kernel of kernels) {
    const models = [1, 2, 3].map((k) => encodeModel({ layout, data: Float32Array.from({ length: 21 }, (_, i) => k * i) }));
    const prefix = models[0]!.byteLength - 21 * 4;
    const acc = new FedAvgAccumulator(21, { kernel, stageSlots: 2, stageHeadroom: prefix });
    models.forEach((bytes, k) => {
      const into = acc.stageBytes(k % 2, prefix);
      assert.is(into.byteLength, bytes.byteLength);
      into.set(bytes);
      const p = decodeModel(into);
      assert.ok(p.data.buffer === acc.stage(k % 2).buffer && p.data.byteOffset === acc.stage(k % 2).byteOffset, `${kernel}: the data is the slot`);
      acc.add(p.data, 1);
    });
    assert.equal(acc.finish(), Float32Array.from({ length: 21 }, (_, i) => 2 * i), kernel);
    expectCode('config', () => acc.stageBytes(0, prefix + 64));
    expectCode('config', () => new FedAvgAccumulator(4, { kernel, stageSlots: 1, stageHeadroom: -1 }));
  }
});

test('recycled accumulators: the next begin() of the same shape gets one back, emptied; other shapes do not', () => {
  const strategy = createFedAvg();
  const ctx = { size: 1000, stageSlots: 2, stageHeadroom: 40 };
  const first = strategy.begin(ctx) as FedAvgAccumulator;
  first.add(new Float32Array(1000).fill(5), 2);
  const slot = first.stage(0).fill(7);
  first.add(slot, 1); // still waiting in its batch when recycled: dropped by the reset
  recycleAccumulator(first);
  recycleAccumulator(first); // twice is once
  assert.ok(strategy.begin({ size: 999, stageSlots: 2, stageHeadroom: 40 }) !== first, 'another size: a new one');
  const again = strategy.begin(ctx) as FedAvgAccumulator;
  assert.ok(again === first, 'same shape: reused');
  assert.is(again.count, 0);
  assert.is(again.totalWeight, 0);
  again.add(new Float32Array(1000).fill(3), 1);
  assert.equal(again.finish(), new Float32Array(1000).fill(3));
  assert.ok(strategy.begin(ctx) !== first, 'handed out once, not twice');
  // with a consumer's callback, or not FedAvg's own, nothing is kept
  const told = new FedAvgAccumulator(1000, { stageSlots: 2, stageHeadroom: 40, onRefused: () => undefined });
  recycleAccumulator(told);
  assert.ok(strategy.begin(ctx) !== told);
});

test('finish before any add is a typed error; finish does not consume', () => {
  const acc = new FedAvgAccumulator(4);
  expectCode('bad-weight', () => acc.finish());
  acc.add(Float32Array.of(1, 2, 3, 4), 1);
  assert.equal(acc.finish(), Float32Array.of(1, 2, 3, 4));
  acc.add(Float32Array.of(3, 4, 5, 6), 1);
  assert.equal(acc.finish(), Float32Array.of(2, 3, 4, 5));
  expectCode('config', () => new FedAvgAccumulator(-1));
  expectCode('config', () => new FedAvgAccumulator(1.5));
  expectCode('config', () => weightedMean([Float32Array.of(1)], [1, 2]));
});

test('reset() empties the accumulator for another round, both kernels', () => {
  for (const kernel of kernels) {
    const acc = new FedAvgAccumulator(20000, { kernel, stageSlots: 1 });
    acc.add(new Float32Array(20000).fill(7), 3);
    acc.reset();
    assert.is(acc.count, 0);
    assert.is(acc.totalWeight, 0);
    expectCode('bad-weight', () => acc.finish());
    acc.add(new Float32Array(20000).fill(1), 1);
    const slot = acc.stage();
    slot.fill(3);
    acc.add(slot, 1);
    assert.equal(acc.finish(), new Float32Array(20000).fill(2), kernel);
  }
});

test('tryAdd returns the refusal instead of throwing (e.g. weights whose sum overflows)', () => {
  const acc = new FedAvgAccumulator(2);
  assert.is(tryAdd(acc, Float32Array.of(1, 2), 2 ** 799), undefined);
  const refused = tryAdd(acc, Float32Array.of(3, 4), 2 ** 799 + 2 ** 798);
  assert.ok(isFedError(refused, 'bad-weight'), String(refused));
  assert.ok(isFedError(tryAdd(acc, Float32Array.of(3, 4), 1e308), 'bad-weight'));
  assert.ok(isFedError(tryAdd(acc, Float32Array.of(NaN, 4), 1), 'not-finite'));
  assert.ok(isFedError(tryAdd(acc, Float32Array.of(1), 1), 'wrong-shape'));
  assert.is(acc.count, 1);
  assert.equal(acc.finish(), Float32Array.of(1, 2));
});

test('the largest admitted weights with the largest Float32 values still give a finite mean', () => {
  for (const kernel of kernels) {
    const big = 3.4028234663852886e38;
    const acc = new FedAvgAccumulator(3, kernel);
    acc.add(Float32Array.of(big, -big, 1), 2 ** 799);
    acc.add(Float32Array.of(big, -big, 3), 2 ** 799);
    assert.equal(acc.finish(), Float32Array.of(big, -big, 2), kernel);
  }
});

test('the caller may reuse its update buffer after add', () => {
  const acc = new FedAvgAccumulator(3);
  const buf = Float32Array.of(1, 1, 1);
  acc.add(buf, 1);
  buf.fill(3);
  acc.add(buf, 1);
  assert.equal(acc.finish(), Float32Array.of(2, 2, 2));
});

test('weights are num_examples: a 3:1 split weights the mean 3:1', () => {
  assert.equal(weightedMean([Float32Array.of(0, 8), Float32Array.of(4, 0)], [300, 100]), Float32Array.of(1, 6));
});

test.run();
