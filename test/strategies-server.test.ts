// Server optimizers at the reducer: definitions, FedAvg limits, persisted state, several combiners.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { deserialize, serialize } from 'node:v8';
import {
  createFedAvgM,
  createFedAvgServer,
  createFedOpt,
  fedOptDefaults,
  type FedOptName,
  type ServerOptimizerState,
} from '../src/strategies/server-optimizers.ts';
import { createServerOptimizer } from '../src/strategies/registry.ts';
import { FedAvgAccumulator } from '../src/strategies/fedavg.ts';
import type { ServerOptimizer } from '../src/strategies/types.ts';
import { expectCode } from './helpers/expect-code.ts';

const fedOptNames: FedOptName[] = ['fedadam', 'fedyogi', 'fedadagrad'];
const f32 = (min: number, max: number) => fc.float({ min: Math.fround(min), max: Math.fround(max), noNaN: true });
const vec = (d: number, lim = 10) => fc.array(f32(-lim, lim), { minLength: d, maxLength: d }).map((a) => Float32Array.from(a));
/** A global model and a sequence of aggregates (rounds). */
const trajectory = (rounds = 5) =>
  fc.integer({ min: 1, max: 20 }).chain((d) => fc.tuple(vec(d), fc.array(vec(d), { minLength: 1, maxLength: rounds })));


function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, tol: (i: number) => number, msg = ''): void {
  assert.is(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    if (!(Math.abs(a[i]! - b[i]!) <= tol(i))) assert.unreachable(`${msg} index ${i}: ${a[i]} vs ${b[i]} (tol ${tol(i)})`);
  }
}

/** Runs an optimizer over rounds, each round's aggregate given; returns the final params and state. */
function drive<S>(opt: ServerOptimizer<S>, global: Float32Array, aggregates: Float32Array[], state?: S) {
  let x: Float32Array = global;
  let s = state;
  for (const agg of aggregates) ({ params: x, state: s } = opt.step(x, agg, s));
  return { params: x, state: s! };
}

/** Reference FedOpt straight from Reddi et al. Algorithm 2, in Float64 with Float32 storage as in the implementation. */
function referenceFedOpt(name: FedOptName, o: typeof fedOptDefaults, global: Float32Array, aggregates: Float32Array[]): Float32Array {
  const d = global.length;
  let x: Float32Array = Float32Array.from(global);
  const m = new Float32Array(d);
  const v = new Float32Array(d).fill(o.tau * o.tau);
  for (const agg of aggregates) {
    const next = new Float32Array(d);
    for (let i = 0; i < d; i++) {
      const g = agg[i]! - x[i]!;
      const mi = o.beta1 * m[i]! + (1 - o.beta1) * g;
      const vi =
        name === 'fedadam' ? o.beta2 * v[i]! + (1 - o.beta2) * g * g : name === 'fedyogi' ? v[i]! - (1 - o.beta2) * g * g * Math.sign(v[i]! - g * g) : v[i]! + g * g;
      m[i] = mi;
      v[i] = vi;
      next[i] = x[i]! + (o.lr * mi) / (Math.sqrt(vi) + o.tau);
    }
    x = next;
  }
  return x;
}

test('fedavg server step is the identity on the aggregate', () => {
  fc.assert(
    fc.property(trajectory(), ([g, aggs]) => {
      const { params, state } = drive(createFedAvgServer(), g, aggs);
      assert.equal(params, aggs.at(-1));
      assert.is(state.round, aggs.length);
    }),
  );
  // the aggregate comes back as it is (no copy), so the reducer can store the bytes it was written into
  const agg = Float32Array.of(1, 2);
  assert.is(createFedAvgServer().step(Float32Array.of(0, 0), agg, undefined).params, agg);
  expectCode('not-finite', () => createFedAvgServer().step(Float32Array.of(0, 0), Float32Array.of(1, NaN), undefined));
  expectCode('wrong-shape', () => createFedAvgServer().step(Float32Array.of(0), agg, undefined));
});

test('limit: fedavgm with momentum 0 and lr 1 is FedAvg, every round', () => {
  fc.assert(
    fc.property(trajectory(), ([g, aggs]) => {
      const opt = createFedAvgM({ momentum: 0, lr: 1 });
      let x: Float32Array = g;
      let s;
      for (const agg of aggs) {
        const prev = x;
        ({ params: x, state: s } = opt.step(x, agg, s));
        // x + (agg - x) in Float64, then rounded: exact up to the last Float32 bit (subnormals included)
        assertClose(x, agg, (i) => (Math.abs(agg[i]!) + Math.abs(prev[i]!)) * 2 ** -24 + 2 ** -149);
      }
    }),
    { numRuns: 200 },
  );
});

test('fedavgm accumulates velocity: v = mu v + delta, x += lr v', () => {
  const opt = createFedAvgM({ momentum: 0.5, lr: 1 });
  // the aggregate always sits 1 above the current global: velocities 1, 1.5, 1.75
  let x: Float32Array = Float32Array.of(0);
  let s;
  const seen: number[] = [];
  for (let r = 0; r < 3; r++) {
    ({ params: x, state: s } = opt.step(x, Float32Array.of(x[0]! + 1), s));
    seen.push(x[0]!);
  }
  assert.equal(seen, [1, 2.5, 4.25]);
  assert.equal(s!.velocity, Float32Array.of(1.75));
});

for (const name of fedOptNames) {
  // Adam's v decays toward beta2^t tau^2, so its limit also needs beta2 -> 1
  const limitBeta2 = name === 'fedadam' ? 1 - 1e-12 : 0.99;
  test(`limit: ${name} with beta1 = 0, lr = 2 tau, tau >> |delta|${name === 'fedadam' ? ', beta2 -> 1' : ''} is FedAvg`, () => {
    fc.assert(
      fc.property(trajectory(), ([g, aggs]) => {
        const tau = 1e5;
        const opt = createFedOpt(name, { beta1: 0, lr: 2 * tau, tau, beta2: limitBeta2 });
        let x: Float32Array = g;
        let s;
        for (const agg of aggs) {
          const prev = x;
          ({ params: x, state: s } = opt.step(x, agg, s));
          // relative error of the step is O(delta^2 / tau^2) plus Float32 rounding of the result
          assertClose(x, agg, (i) => Math.abs(agg[i]! - prev[i]!) * 1e-6 + (Math.abs(agg[i]!) + Math.abs(prev[i]!)) * 2 ** -23 + 2 ** -149, `${name}`);
        }
      }),
      { numRuns: 200 },
    );
  });

  test(`${name} follows Reddi et al. Algorithm 2 over several rounds`, () => {
    fc.assert(
      fc.property(
        trajectory(6),
        fc.record({ lr: f32(1e-3, 1), beta1: f32(0, 0.99), beta2: f32(0, 0.999), tau: f32(1e-4, 1e-1) }),
        ([g, aggs], o) => {
          const opt = createFedOpt(name, o);
          const got = drive(opt, g, aggs).params;
          const want = referenceFedOpt(name, o, g, aggs);
          assertClose(got, want, (i) => Math.abs(want[i]!) * 2 ** -20 + 1e-6);
        },
      ),
      { numRuns: 200 },
    );
  });

  test(`${name}: the first step moves each parameter toward the aggregate by at most lr / (1 + ...)`, () => {
    fc.assert(
      fc.property(trajectory(1), ([g, [agg]]) => {
        const { params } = createFedOpt(name).step(g, agg!, undefined);
        for (let i = 0; i < g.length; i++) {
          const delta = agg![i]! - g[i]!;
          const step = params[i]! - g[i]!;
          const slack = Math.abs(g[i]!) * 2 ** -23;
          if (delta === 0) assert.ok(Math.abs(step) <= slack);
          // m = (1-b1) delta, sqrt(v) >= |delta| sqrt(1-b2) (adam/yogi) or |delta| (adagrad): |step| < lr
          else assert.ok(Math.sign(step) === Math.sign(delta) || Math.abs(step) <= slack, `index ${i}`);
          assert.ok(Math.abs(step) <= fedOptDefaults.lr + slack, `|step| ${step} exceeds lr`);
        }
      }),
      { numRuns: 200 },
    );
  });
}

test('defaults are FEDn\'s: lr 1e-3, beta1 0.9, beta2 0.99, tau 1e-4; momentum 0.9 lr 1 for fedavgm', () => {
  assert.equal(createFedOpt('fedadam').options, { lr: 1e-3, beta1: 0.9, beta2: 0.99, tau: 1e-4 });
  assert.equal(createFedAvgM().options, { lr: 1, momentum: 0.9 });
  // first adam step with defaults: m = 0.1 d, v = 0.99 tau^2 + 0.01 d^2
  const d = 0.5;
  const { params } = createFedOpt('fedadam').step(Float32Array.of(0), Float32Array.of(d), undefined);
  const want = (1e-3 * 0.1 * d) / (Math.sqrt(0.99 * 1e-8 + 0.01 * d * d) + 1e-4);
  assert.ok(Math.abs(params[0]! - want) <= want * 1e-6, `${params[0]} vs ${want}`);
});

test('yogi, adam and adagrad differ once the second moment matters', () => {
  const g = Float32Array.of(0, 0);
  const aggs = [Float32Array.of(1, -2), Float32Array.of(3, 1), Float32Array.of(-1, 0.5)];
  const out = fedOptNames.map((n) => drive(createFedOpt(n, { lr: 0.1, tau: 1e-3 }), g, aggs).params);
  assert.not.equal(out[0], out[1]);
  assert.not.equal(out[0], out[2]);
  assert.not.equal(out[1], out[2]);
});

test('state is plain data: survives structuredClone and v8 serialization, resuming gives the same model', () => {
  for (const name of ['fedavg', 'fedavgm', ...fedOptNames] as const) {
    const opt = createServerOptimizer(name, name === 'fedavg' || name === 'fedavgm' ? {} : { lr: 0.05 });
    const g = Float32Array.from({ length: 50 }, (_, i) => Math.sin(i));
    const aggs = Array.from({ length: 6 }, (_, r) => Float32Array.from({ length: 50 }, (_, i) => Math.sin(i) + Math.cos(i * r) * 0.3));
    const straight = drive(opt, g, aggs);
    const half = drive(opt, g, aggs.slice(0, 3));
    for (const restore of [(s: ServerOptimizerState) => structuredClone(s), (s: ServerOptimizerState) => deserialize(serialize(s)) as ServerOptimizerState]) {
      // a restarted reducer: a fresh optimizer object, the persisted state
      const fresh = createServerOptimizer(name, name === 'fedavg' || name === 'fedavgm' ? {} : { lr: 0.05 });
      const resumed = drive(fresh, half.params, aggs.slice(3), restore(half.state));
      assert.equal(resumed.params, straight.params, name);
      assert.equal(resumed.state, straight.state, name);
    }
    assert.is(straight.state.round, 6);
  }
});

test('server optimizers refuse mismatched inputs and foreign state with typed errors', () => {
  const adam = createFedOpt('fedadam');
  const { state } = adam.step(Float32Array.of(1, 2), Float32Array.of(2, 3), undefined);
  expectCode('wrong-shape', () => adam.step(Float32Array.of(1, 2), Float32Array.of(1), undefined));
  expectCode('wrong-shape', () => adam.step(Float32Array.of(1, 2, 3), Float32Array.of(1, 2, 3), state));
  expectCode('not-finite', () => adam.step(Float32Array.of(1, NaN), Float32Array.of(1, 2), undefined));
  expectCode('not-finite', () => adam.step(Float32Array.of(1, 2), Float32Array.of(Infinity, 2), undefined));
  expectCode('config', () => createFedOpt('fedyogi').step(Float32Array.of(1, 2), Float32Array.of(2, 3), state));
  const m = createFedAvgM();
  expectCode('config', () => m.step(Float32Array.of(1, 2), Float32Array.of(2, 3), state as never));
  // a step that overflows Float32 is refused rather than committed
  expectCode('not-finite', () => createFedAvgM({ lr: 1e30, momentum: 0 }).step(Float32Array.of(0), Float32Array.of(1e10), undefined));
  expectCode('config', () => createFedOpt('fedadam', { lr: 0 }));
  expectCode('config', () => createFedOpt('fedadam', { beta1: 1 }));
  expectCode('config', () => createFedOpt('fedadam', { tau: -1 }));
  expectCode('config', () => createFedAvgM({ momentum: 1 }));
});

test('several combiners: the optimizer runs once at the reducer, so hierarchical equals flat', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 12 }).chain((d) =>
        fc.tuple(
          vec(d),
          fc.array(fc.record({ x: vec(d), w: fc.integer({ min: 1, max: 1000 }), c: fc.integer({ min: 0, max: 3 }) }), { minLength: 1, maxLength: 12 }),
        ),
      ),
      ([g, clients]) => {
        const d = g.length;
        const flat = new FedAvgAccumulator(d);
        const combiners = new Map<number, FedAvgAccumulator>();
        for (const { x, w, c } of clients) {
          flat.add(x, w);
          const acc = combiners.get(c) ?? new FedAvgAccumulator(d);
          combiners.set(c, acc);
          acc.add(x, w);
        }
        const reducer = new FedAvgAccumulator(d);
        for (const acc of combiners.values()) reducer.add(acc.finish(), acc.totalWeight);
        for (const name of fedOptNames) {
          const opt = createFedOpt(name, { lr: 0.1, tau: 1e-2 });
          const a = opt.step(g, flat.finish(), undefined).params;
          const b = opt.step(g, reducer.finish(), undefined).params;
          // the reduced model differs from the flat mean by Float32 rounding; the step is Lipschitz in it
          assertClose(a, b, (i) => 1e-4 * (1 + Math.abs(a[i]!)), name);
        }
      },
    ),
    { numRuns: 200 },
  );
});

test.run();
