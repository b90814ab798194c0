// Registry: names, typed and validated options, CLI specs, plans.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import {
  createPlan,
  createServerOptimizer,
  createStrategy,
  describeStrategies,
  formatStrategySpec,
  parseStrategySpec,
  serverOptimizerNames,
  specNames,
  strategyNames,
} from '../src/strategies/index.ts';
import { FedError, isFedError } from '../src/errors.ts';

function configError(fn: () => unknown): FedError {
  try {
    fn();
  } catch (e) {
    assert.ok(isFedError(e, 'config'), `expected FedError(config), got ${String(e)}`);
    return e as FedError;
  }
  assert.unreachable('expected FedError(config)');
  throw new Error('unreachable');
}

test('names are exported and complete', () => {
  assert.equal(strategyNames, ['fedavg', 'fedprox', 'median', 'trimmedmean', 'krum', 'multikrum', 'dpfedavg']);
  assert.equal(serverOptimizerNames, ['fedavg', 'fedavgm', 'fedadam', 'fedyogi', 'fedadagrad']);
  assert.equal(specNames, ['fedavg', 'fedprox', 'median', 'trimmedmean', 'krum', 'multikrum', 'dpfedavg', 'fedavgm', 'fedadam', 'fedyogi', 'fedadagrad']);
  const help = describeStrategies();
  for (const n of specNames) assert.ok(help.includes(`  ${n} `), `help mentions ${n}`);
});

test('every strategy name builds a working strategy of that name', () => {
  const rows = [Float32Array.of(1, 2), Float32Array.of(1.5, 2), Float32Array.of(1, 2.5), Float32Array.of(1.2, 2.2), Float32Array.of(1.1, 2.1)];
  for (const name of strategyNames) {
    const s = name === 'dpfedavg' ? createStrategy(name, { clip: 10, z: 0 }) : createStrategy(name);
    assert.is(s.name, name);
    const acc = s.begin({ size: 2, base: Float32Array.of(1, 2), expected: 5 });
    rows.forEach((r) => acc.add(r, 10));
    const out = acc.finish();
    assert.is(out.length, 2);
    // every strategy here lands inside the inputs' bounding box
    assert.ok(out[0]! >= 1 && out[0]! <= 1.5 && out[1]! >= 2 && out[1]! <= 2.5, `${name}: ${out}`);
  }
  assert.is(createStrategy('fedavg').streaming, true);
  assert.is(createStrategy('median').streaming, false);
  assert.is(createStrategy('dpfedavg', { clip: 1 }).streaming, true);
});

test('typed options: createStrategy/createServerOptimizer with options', () => {
  const tm = createStrategy('trimmedmean', { beta: 0.2 });
  const acc = tm.begin({ size: 1 });
  for (const v of [0, 1, 2, 3, 100]) acc.add(Float32Array.of(v), 1);
  assert.equal(acc.finish(), Float32Array.of(2)); // floor(0.2 * 5) = 1 trimmed at each end
  const prox = createStrategy('fedprox', { mu: 0.05 });
  assert.is(prox.proximalMu, 0.05);
  assert.is(createStrategy('fedprox').proximalMu, 0.01);
  assert.is(createStrategy('fedprox', { proximalMu: 0.2 }).proximalMu, 0.2);
  configError(() => createStrategy('fedprox', { mu: 0.1, proximalMu: 0.2 }));
  assert.equal(createPlan('fedprox:proximalMu=0.3').clientSettings, { proximalMu: 0.3 });
  const adam = createServerOptimizer('fedadam', { lr: 0.5, tau: 0.01 });
  assert.is(adam.name, 'fedadam');
  const { state } = adam.step(Float32Array.of(0), Float32Array.of(1), undefined);
  assert.is(state.kind, 'fedadam');
  // @ts-expect-error a misspelled option key is a compile-time error...
  configError(() => createStrategy('trimmedmean', { bta: 0.1 }));
  // @ts-expect-error ...and an option of another strategy too
  configError(() => createServerOptimizer('fedadagrad', { beta2: 0.9 }));
  // @ts-expect-error unknown names do not compile
  configError(() => createStrategy('fedsgd'));
});

test('parseStrategySpec: CLI flags', () => {
  assert.equal(parseStrategySpec('trimmedmean:beta=0.1'), { level: 'aggregation', name: 'trimmedmean', options: { beta: 0.1 } });
  assert.equal(parseStrategySpec('fedprox:mu=0.01'), { level: 'aggregation', name: 'fedprox', options: { mu: 0.01, proximalMu: undefined, kernel: 'auto' } });
  assert.equal(parseStrategySpec('fedprox').options, { mu: undefined, proximalMu: undefined, kernel: 'auto' });
  assert.equal(parseStrategySpec('median'), { level: 'aggregation', name: 'median', options: {} });
  assert.equal(parseStrategySpec('multikrum:f=2'), { level: 'aggregation', name: 'multikrum', options: { f: 2, m: undefined } });
  assert.equal(parseStrategySpec(' FedAdam : lr=0.01, tau=1e-3 '), {
    level: 'server',
    name: 'fedadam',
    options: { lr: 0.01, beta1: 0.9, beta2: 0.99, tau: 0.001 },
  });
  assert.equal(parseStrategySpec('fedavg:kernel=js').options, { kernel: 'js' });
});

test('bad specs: FedError(config) naming the valid choices', () => {
  const e1 = configError(() => parseStrategySpec('trimedmean:beta=0.1'));
  for (const n of specNames) assert.ok(e1.message.includes(n), `message lists ${n}: ${e1.message}`);
  const e2 = configError(() => parseStrategySpec('trimmedmean:bta=0.1'));
  assert.match(e2.message, /unknown option 'bta'.*beta/);
  const e3 = configError(() => parseStrategySpec('fedadam:learning_rate=0.1'));
  assert.match(e3.message, /lr, beta1, beta2, tau/);
  assert.match(configError(() => parseStrategySpec('median:beta=0.1')).message, /\(none\)/);
  assert.match(configError(() => parseStrategySpec('dpfedavg:z=1')).message, /'clip' is required/);
  assert.match(configError(() => parseStrategySpec('fedavg:kernel=gpu')).message, /auto, wasm, js/);
  const bad = [
    'trimmedmean:beta=0.5',
    'trimmedmean:beta=-0.1',
    'trimmedmean:beta=',
    'trimmedmean:beta=abc',
    'trimmedmean:beta=NaN',
    'trimmedmean:beta=Infinity',
    'trimmedmean:beta',
    'trimmedmean:beta=0.1,beta=0.2',
    'krum:f=1.5',
    'krum:f=-1',
    'multikrum:m=0',
    'fedadam:lr=0',
    'fedadam:beta1=1',
    'fedavgm:momentum=1',
    'fedprox:mu=-1',
    'dpfedavg:clip=0',
    'dpfedavg:clip=1,z=-1',
    '',
  ];
  for (const spec of bad) configError(() => parseStrategySpec(spec));
});

test('formatStrategySpec is canonical: parse(format(parse(x))) = parse(x)', () => {
  const specs = ['fedavg', 'fedprox:mu=0.2', 'median', 'trimmedmean:beta=0.3', 'krum:f=3', 'multikrum:f=1,m=4', 'dpfedavg:clip=0.7,z=1.1,seed=5', 'fedavgm:momentum=0.5', 'fedadam', 'fedyogi:lr=1', 'fedadagrad:tau=0.01'];
  for (const s of specs) {
    const p = parseStrategySpec(s);
    assert.equal(parseStrategySpec(formatStrategySpec(p)), p, s);
  }
  fc.assert(
    fc.property(fc.double({ min: 0, max: 0.49, noNaN: true }), (beta) => {
      const p = parseStrategySpec(`trimmedmean:beta=${beta}`);
      assert.is(p.options.beta, beta);
      assert.equal(parseStrategySpec(formatStrategySpec(p)), p);
    }),
  );
});

test('createPlan: what the combiner, reducer, server and clients get', () => {
  const tm = createPlan('trimmedmean:beta=0.1');
  assert.equal([tm.combiner.name, tm.reducer.name, tm.server.name], ['trimmedmean', 'fedavg', 'fedavg']);
  assert.is(tm.spec, 'trimmedmean:beta=0.1');
  assert.equal(tm.clientSettings, {});

  const adam = createPlan('fedadam:lr=0.01');
  assert.equal([adam.combiner.name, adam.reducer.name, adam.server.name], ['fedavg', 'fedavg', 'fedadam']);
  assert.is(adam.spec, 'fedadam:lr=0.01,beta1=0.9,beta2=0.99,tau=0.0001');

  const both = createPlan('median+fedyogi:lr=0.1');
  assert.equal([both.combiner.name, both.server.name], ['median', 'fedyogi']);
  assert.is(both.spec, 'median+fedyogi:lr=0.1,beta1=0.9,beta2=0.99,tau=0.0001');
  assert.equal(createPlan(both.spec).spec, both.spec);
  assert.is(createPlan('krum:f=1', 'fedavgm').server.name, 'fedavgm');
  assert.is(createPlan('krum:f=1', 'fedavg').server.name, 'fedavg');

  const prox = createPlan('fedprox:mu=0.01');
  assert.equal(prox.clientSettings, { proximalMu: 0.01 });
  assert.is(prox.combiner.name, 'fedprox');

  configError(() => createPlan('fedadam+fedyogi'));
  configError(() => createPlan('median+krum'));
  configError(() => createPlan('median+fedadam+fedyogi'));
  configError(() => createPlan('fedadam', 'fedavgm'));

  // a whole round through a plan: two combiners, the reducer, the server step
  const plan = createPlan('fedavg');
  const c1 = plan.combiner.begin({ size: 2 });
  c1.add(Float32Array.of(1, 1), 100);
  const c2 = plan.combiner.begin({ size: 2 });
  c2.add(Float32Array.of(4, 4), 300);
  const r = plan.reducer.begin({ size: 2 });
  for (const c of [c1, c2]) r.add(c.finish(), c.totalWeight);
  const { params } = plan.server.step(Float32Array.of(0, 0), r.finish(), undefined);
  assert.equal(params, Float32Array.of(3.25, 3.25));
});

test.run();
