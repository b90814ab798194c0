// DP-FedAvg: clipping bounds, the noise scale it reports and actually uses, refusals.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { clipToNorm, createDpFedAvg, DpFedAvgAccumulator, gaussianSource, l2Norm } from '../src/strategies/dp.ts';
import { weightedMean } from '../src/strategies/fedavg.ts';
import { createStrategy } from '../src/strategies/registry.ts';
import { expectCode } from './helpers/expect-code.ts';

const vec = (d: number, lim: number) =>
  fc.array(fc.float({ min: Math.fround(-lim), max: Math.fround(lim), noNaN: true }), { minLength: d, maxLength: d }).map((a) => Float32Array.from(a));


const sub = (a: Float32Array, b: Float32Array): Float32Array => a.map((v, i) => v - b[i]!);

test('clipToNorm bounds every clipped update and leaves small ones alone', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 300 }).chain((d) => vec(d, 1e6)),
      fc.double({ min: 1e-3, max: 1e3, noNaN: true }),
      (x, clip) => {
        const before = x.slice();
        const factor = clipToNorm(x, clip);
        assert.ok(l2Norm(x) <= clip, `norm ${l2Norm(x)} > ${clip}`);
        if (l2Norm(before) <= clip) {
          assert.is(factor, 1);
          assert.equal(x, before);
        } else {
          // same direction, just shorter
          const n = l2Norm(before);
          assert.ok(Math.abs(l2Norm(x) - clip) <= clip * 1e-5, 'clipped onto the sphere');
          for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i]! - (before[i]! * clip) / n) <= (Math.abs(before[i]!) * clip) / n * 1e-5 + 1e-30);
        }
      },
    ),
    { numRuns: 500 },
  );
});

test('without noise: result - base is the mean of the clipped deltas, so its norm is <= C', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 30 }).chain((d) => fc.tuple(vec(d, 10), fc.array(vec(d, 10), { minLength: 1, maxLength: 10 }))),
      fc.double({ min: 1e-2, max: 10, noNaN: true }),
      ([base, updates], clip) => {
        const acc = new DpFedAvgAccumulator({ size: base.length, base }, { clip, noiseMultiplier: 0 });
        updates.forEach((u, i) => acc.add(u, 1 + i * 100)); // weights do not matter
        const out = acc.finish();
        const delta = sub(out, base);
        assert.ok(l2Norm(delta) <= clip * (1 + 1e-5) + 1e-4, `|delta| ${l2Norm(delta)} > C ${clip}`);
        const clipped = updates.map((u) => {
          const d = sub(u, base);
          clipToNorm(d, clip);
          return d;
        });
        const want = weightedMean(clipped, clipped.map(() => 1));
        for (let i = 0; i < out.length; i++) assert.ok(Math.abs(delta[i]! - want[i]!) <= 1e-5 * (1 + Math.abs(base[i]!)), `index ${i}`);
        assert.is(acc.clippedCount, updates.filter((u) => l2Norm(sub(u, base)) > clip).length);
        assert.is(acc.totalWeight, updates.length);
        assert.is(acc.lastNoiseStd, 0);
      },
    ),
    { numRuns: 300 },
  );
});

test('noise std is z*C/n, reported before and after finish, and is what the output shows', () => {
  const size = 40000;
  const base = new Float32Array(size).fill(0.5);
  const strategy = createDpFedAvg({ clip: 2, noiseMultiplier: 1.5, seed: 7 });
  const acc = strategy.begin({ size, base });
  assert.is(acc.noiseStd, 0);
  for (let k = 0; k < 6; k++) acc.add(base, 1); // zero deltas: the output is base + noise alone
  assert.is(acc.noiseStd, (1.5 * 2) / 6);
  assert.is(strategy.noiseStdFor(6), 0.5);
  const out = acc.finish();
  assert.is(acc.lastNoiseStd, 0.5);
  let s = 0;
  let s2 = 0;
  for (let i = 0; i < size; i++) {
    const e = out[i]! - 0.5;
    s += e;
    s2 += e * e;
  }
  const mean = s / size;
  const std = Math.sqrt(s2 / size - mean * mean);
  // sample std of 40000 normals is within ~1.5% of sigma with overwhelming probability (and the seed is fixed)
  assert.ok(Math.abs(std - 0.5) < 0.5 * 0.03, `sample std ${std}`);
  assert.ok(Math.abs(mean) < 0.02, `sample mean ${mean}`);
});

test('gaussian source: seeded streams repeat, unseeded ones do not, moments are standard', () => {
  const a = gaussianSource(42);
  const b = gaussianSource(42);
  const xs = Array.from({ length: 20000 }, () => a());
  assert.equal(
    xs.slice(0, 10),
    Array.from({ length: 10 }, () => b()),
  );
  const m = xs.reduce((s, x) => s + x, 0) / xs.length;
  const v = xs.reduce((s, x) => s + (x - m) ** 2, 0) / xs.length;
  assert.ok(Math.abs(m) < 0.03 && Math.abs(v - 1) < 0.05, `mean ${m} var ${v}`);
  const c = gaussianSource();
  const d = gaussianSource();
  assert.not.equal([c(), c()], [d(), d()]);
});

test('each round of a seeded strategy draws fresh noise; unseeded rounds differ too', () => {
  for (const seed of [3, undefined]) {
    const s = createDpFedAvg(seed === undefined ? { clip: 1, noiseMultiplier: 1 } : { clip: 1, noiseMultiplier: 1, seed });
    const base = new Float32Array(16);
    const round = (): Float32Array => {
      const acc = s.begin({ size: 16, base });
      acc.add(base, 1);
      return acc.finish();
    };
    assert.not.equal(round(), round());
  }
  // but the same seed gives the same first round
  const first = (): Float32Array => {
    const acc = createDpFedAvg({ clip: 1, noiseMultiplier: 1, seed: 9 }).begin({ size: 8, base: new Float32Array(8) });
    acc.add(new Float32Array(8), 1);
    return acc.finish();
  };
  assert.equal(first(), first());
});

test('refusals are typed and do not change the aggregate', () => {
  const base = Float32Array.of(0, 0, 0);
  const make = () => new DpFedAvgAccumulator({ size: 3, base }, { clip: 1, noiseMultiplier: 0 });
  const acc = make();
  const twin = make();
  for (const a of [acc, twin]) a.add(Float32Array.of(3, 4, 0), 1);
  expectCode('bad-weight', () => acc.add(Float32Array.of(1, 1, 1), 0));
  expectCode('bad-weight', () => acc.add(Float32Array.of(1, 1, 1), NaN));
  expectCode('wrong-shape', () => acc.add(Float32Array.of(1, 1), 1));
  expectCode('not-finite', () => acc.add(Float32Array.of(1, NaN, 1), 1));
  // finite, but the delta overflows Float32
  const wide = new DpFedAvgAccumulator({ size: 1, base: Float32Array.of(-3e38) }, { clip: 1, noiseMultiplier: 0 });
  expectCode('not-finite', () => wide.add(Float32Array.of(3e38), 1));
  assert.is(wide.count, 0);
  assert.is(acc.count, 1);
  assert.equal(acc.finish(), twin.finish());
  // (3, 4, 0) has norm 5: clipped to (0.6, 0.8, 0), a hair inside the unit ball
  const out = acc.finish();
  assert.ok(l2Norm(out) <= 1 && Math.abs(out[0]! - 0.6) < 1e-6 && Math.abs(out[1]! - 0.8) < 1e-6 && out[2] === 0, `${out}`);
  expectCode('config', () => new DpFedAvgAccumulator({ size: 3 }, { clip: 1, noiseMultiplier: 1 }));
  expectCode('wrong-shape', () => new DpFedAvgAccumulator({ size: 4, base }, { clip: 1, noiseMultiplier: 1 }));
  expectCode('config', () => createDpFedAvg({ clip: 0, noiseMultiplier: 1 }));
  expectCode('config', () => createDpFedAvg({ clip: 1, noiseMultiplier: -1 }));
  expectCode('bad-weight', () => make().finish());
});

test('registry: dpfedavg:clip=C,z=Z builds the same mechanism', () => {
  const s = createStrategy('dpfedavg', { clip: 0.5, z: 2, seed: 1 });
  assert.is(s.name, 'dpfedavg');
  const acc = s.begin({ size: 2, base: Float32Array.of(0, 0) }) as DpFedAvgAccumulator;
  acc.add(Float32Array.of(10, 0), 1);
  acc.add(Float32Array.of(0, 10), 1);
  assert.is(acc.noiseStd, (2 * 0.5) / 2);
});

test.run();
