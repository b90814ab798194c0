import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { buildCnn, buildMlp, evaluate, getParams, initBackend, modelLayout, setParams, trainLocal, type TrainOptions } from '../src/model/tf.ts';
import { loadMnist, subset, type Dataset } from '../src/data/mnist.ts';
import { modelId } from '../src/model/hash.ts';
import { isFedError, type ErrorCode } from '../src/errors.ts';

const backend = await initBackend();
const { train, test: testSet } = loadMnist({ train: 2000, test: 1000, seed: 0 });
const small = subset(train, Array.from({ length: 200 }, (_, i) => i));

async function expectRefusal(name: string, code: ErrorCode, fn: () => unknown): Promise<void> {
  try {
    await fn();
  } catch (e) {
    assert.ok(isFedError(e, code), `${name}: expected FedError ${code}, got ${String(e)}`);
    return;
  }
  assert.unreachable(`${name}: was accepted`);
}

function distance(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i]! - b[i]!) ** 2;
  return Math.sqrt(s);
}

const sgd = (over: Partial<TrainOptions> = {}): TrainOptions => ({ epochs: 1, batchSize: 32, learningRate: 0.1, seed: 1, ...over });

test('initBackend picks wasm here (tfjs-node is not installable) and is idempotent', async () => {
  assert.is(backend, 'wasm');
  assert.is(await initBackend(), backend);
  assert.is(tf.getBackend(), backend);
});

test('buildMlp: 784-200-200-10 with stable layer names; same seed gives the same weights', () => {
  const a = buildMlp({ seed: 7 });
  const b = buildMlp({ seed: 7 });
  const c = buildMlp({ seed: 8 });
  assert.equal(modelLayout(a), [
    { name: 'hidden1/kernel', shape: [784, 200] },
    { name: 'hidden1/bias', shape: [200] },
    { name: 'hidden2/kernel', shape: [200, 200] },
    { name: 'hidden2/bias', shape: [200] },
    { name: 'output/kernel', shape: [200, 10] },
    { name: 'output/bias', shape: [10] },
  ]);
  assert.is(a.countParams(), 199_210);
  // the second model's TF.js variable names get a _1 suffix; layouts must not
  assert.equal(modelLayout(b), modelLayout(a));
  assert.is(modelId(getParams(a)), modelId(getParams(b)));
  assert.is.not(modelId(getParams(a)), modelId(getParams(c)));
  // initialised, not all zero
  assert.ok(getParams(a).data.some((v) => Math.abs(v) > 0.01));
  for (const m of [a, b, c]) m.dispose();
});

test('buildCnn: the McMahan et al. CNN with its 1,663,370 parameters', () => {
  const m = buildCnn({ seed: 1 });
  assert.is(m.countParams(), 1_663_370);
  assert.equal(
    modelLayout(m).map((t) => `${t.name}:${t.shape.join('x')}`),
    ['conv1/kernel:5x5x1x32', 'conv1/bias:32', 'conv2/kernel:5x5x32x64', 'conv2/bias:64', 'hidden/kernel:3136x512', 'hidden/bias:512', 'output/kernel:512x10', 'output/bias:10'],
  );
  assert.is(modelId(getParams(m)), modelId(getParams(buildCnn({ seed: 1 }))));
  m.dispose();
});

test('getParams/setParams round-trip: another model given the params predicts identically', () => {
  const a = buildMlp({ seed: 1 });
  const b = buildMlp({ seed: 2 });
  const p = getParams(a);
  setParams(b, p);
  assert.equal(getParams(b).data, p.data);
  const xs = tf.tensor2d(small.x.subarray(0, 5 * 784), [5, 784]);
  const ya = a.predict(xs) as tf.Tensor;
  const yb = b.predict(xs) as tf.Tensor;
  assert.equal(Array.from(yb.dataSync()), Array.from(ya.dataSync()));
  tf.dispose([xs, ya, yb]);
  // the model keeps its own copy: changing the caller's array afterwards changes nothing
  const before = getParams(b).data.slice();
  p.data.fill(0);
  assert.equal(getParams(b).data, before);
  a.dispose();
  b.dispose();
});

test('setParams refuses a layout that does not match, and leaves the model untouched', async () => {
  const m = buildMlp({ seed: 1 });
  const before = getParams(m);
  const cnn = buildCnn({ seed: 1 });
  await expectRefusal('CNN params into MLP', 'wrong-shape', () => setParams(m, getParams(cnn)));
  const renamed = { layout: before.layout.map((t, i) => (i === 0 ? { ...t, name: 'dense/kernel' } : t)), data: before.data };
  await expectRefusal('renamed tensor', 'wrong-shape', () => setParams(m, renamed));
  const narrower = getParams(buildMlp({ seed: 1, hidden: 100 }));
  await expectRefusal('other hidden size', 'wrong-shape', () => setParams(m, narrower));
  await expectRefusal('short data', 'wrong-shape', () => setParams(m, { layout: before.layout, data: new Float32Array(10) }));
  assert.equal(getParams(m).data, before.data);
  m.dispose();
  cnn.dispose();
});

test('one epoch of SGD on 2,000 digits takes the MLP from chance to > 75% held-out accuracy', async () => {
  const m = buildMlp({ seed: 3 });
  const untrained = evaluate(m, testSet);
  assert.ok(untrained.accuracy < 0.2, `untrained ${untrained.accuracy}`);
  assert.ok(Math.abs(untrained.loss - Math.log(10)) < 0.5, `untrained loss ${untrained.loss} should be near ln 10`);
  const r = await trainLocal(m, train, sgd());
  const trained = evaluate(m, testSet);
  console.log(`    [${backend}] 1 epoch on ${r.numExamples} digits: ${r.ms.toFixed(0)} ms, held-out accuracy ${untrained.accuracy.toFixed(3)} -> ${trained.accuracy.toFixed(3)}`);
  assert.is(r.numExamples, 2000);
  assert.ok(trained.accuracy > 0.75, `trained ${trained.accuracy}`);
  assert.ok(trained.loss < untrained.loss);
  assert.ok(r.accuracy > 0.3 && r.accuracy <= 1 && r.loss > 0 && Number.isFinite(r.loss), JSON.stringify(r));
  assert.is(trained.numExamples, 1000);
  m.dispose();
});

test('training is deterministic for a seed, and the seed changes the shuffle', async () => {
  const run = async (seed: number): Promise<string> => {
    const m = buildMlp({ seed: 1 });
    await trainLocal(m, small, sgd({ seed, batchSize: 20 }));
    const id = modelId(getParams(m));
    m.dispose();
    return id;
  };
  const first = await run(5);
  assert.is(await run(5), first);
  assert.is.not(await run(6), first);
});

test('FedProx: the proximal term keeps weights near the anchor, and an explicit base is honoured', async () => {
  const start = getParams(buildMlp({ seed: 4 }));
  const drift = async (opts: Partial<TrainOptions>): Promise<number> => {
    const m = buildMlp({ seed: 4 });
    await trainLocal(m, small, sgd({ epochs: 3, batchSize: 20, ...opts }));
    const d = distance(getParams(m).data, opts.base ?? start.data);
    m.dispose();
    return d;
  };
  const plain = await drift({});
  const prox = await drift({ proximalMu: 1 });
  assert.ok(prox < 0.8 * plain, `drift with mu=1 ${prox} vs plain ${plain}`);
  assert.is(await drift({ proximalMu: 0 }), plain, 'mu = 0 is exactly plain SGD');
  // anchored somewhere else, the weights are pulled towards that point instead
  const elsewhere = getParams(buildMlp({ seed: 99 })).data;
  const m = buildMlp({ seed: 4 });
  await trainLocal(m, small, sgd({ epochs: 3, batchSize: 20, proximalMu: 1, base: elsewhere }));
  const pulled = getParams(m).data;
  m.dispose();
  assert.ok(distance(pulled, elsewhere) < distance(start.data, elsewhere) - 0.5, 'moved towards the explicit base');
  await expectRefusal('base of the wrong length', 'wrong-shape', () => trainLocal(buildMlp({ seed: 4 }), small, sgd({ proximalMu: 1, base: new Float32Array(3) })));
});

test('an aborted signal cancels training between batches with FedError("cancelled")', async () => {
  const m = buildMlp({ seed: 1 });
  const before = getParams(m).data;
  const tensorsBefore = tf.memory().numTensors;
  await expectRefusal('already aborted', 'cancelled', () => trainLocal(m, train, sgd({ signal: AbortSignal.abort() })));
  assert.equal(getParams(m).data, before, 'no step taken');

  const controller = new AbortController();
  const started = performance.now();
  setTimeout(() => controller.abort(), 30);
  await expectRefusal('aborted mid-training', 'cancelled', () => trainLocal(m, train, sgd({ epochs: 50, batchSize: 10, signal: controller.signal })));
  const ms = performance.now() - started;
  assert.ok(ms < 1500, `stopped ${ms.toFixed(0)} ms after start, 50 epochs would take far longer`);
  assert.not.equal(getParams(m).data, before, 'some steps were taken before the abort');
  assert.is(tf.memory().numTensors, tensorsBefore, 'cancellation leaks no tensors');
  m.dispose();
});

test('no tensors leak from training (with and without FedProx), evaluation and parameter transfer', async () => {
  const m = buildMlp({ seed: 1 });
  const p = getParams(m);
  const before = tf.memory().numTensors;
  await trainLocal(m, small, sgd({ batchSize: 16 }));
  await trainLocal(m, small, sgd({ batchSize: 16, proximalMu: 0.1 }));
  await trainLocal(m, small, sgd({ batchSize: 16, proximalMu: 0.1, base: p.data }));
  evaluate(m, small, 64);
  setParams(m, getParams(m));
  assert.is(tf.memory().numTensors, before);
  m.dispose();
});

test('evaluate counts correct predictions in batches; an empty dataset gives zeros', () => {
  const m = buildMlp({ seed: 1 });
  const whole = evaluate(m, small, 1000);
  const batched = evaluate(m, small, 7);
  assert.ok(Math.abs(whole.accuracy - batched.accuracy) < 1e-9);
  assert.ok(Math.abs(whole.loss - batched.loss) < 1e-4);
  assert.is(whole.numExamples, 200);
  const empty: Dataset = { x: new Float32Array(0), y: new Uint8Array(0), n: 0 };
  assert.equal(evaluate(m, empty), { accuracy: 0, loss: 0, numExamples: 0 });
  m.dispose();
});

test('bad training options and mismatched data are refused', async () => {
  const m = buildMlp({ seed: 1 });
  await expectRefusal('epochs 0', 'config', () => trainLocal(m, small, sgd({ epochs: 0 })));
  await expectRefusal('batch 0', 'config', () => trainLocal(m, small, sgd({ batchSize: 0 })));
  await expectRefusal('fractional batch', 'config', () => trainLocal(m, small, sgd({ batchSize: 2.5 })));
  await expectRefusal('negative lr', 'config', () => trainLocal(m, small, sgd({ learningRate: -1 })));
  await expectRefusal('NaN mu', 'config', () => trainLocal(m, small, sgd({ proximalMu: NaN })));
  await expectRefusal('x too short', 'wrong-shape', () => trainLocal(m, { ...small, x: small.x.subarray(10) }, sgd()));
  await expectRefusal('other input size', 'wrong-shape', () => evaluate(buildMlp({ inputSize: 100 }), small));
  await expectRefusal('label beyond the classes', 'wrong-shape', () => trainLocal(buildMlp({ classes: 5 }), small, sgd()));
  m.dispose();
});

/** Runs fn on the cpu backend and on the default one, returning both results as plain arrays. */
async function onBothBackends(fn: () => tf.Tensor | tf.Tensor[]): Promise<[number[][], number[][]]> {
  const read = (): number[][] => {
    const out = tf.tidy(fn);
    const list = Array.isArray(out) ? out : [out];
    const values = list.map((t) => Array.from(t.dataSync()));
    tf.dispose(list);
    return values;
  };
  const here = read();
  await tf.setBackend('cpu');
  try {
    return [here, read()];
  } finally {
    await tf.setBackend(backend);
  }
}

function assertClose(actual: number[][], expected: number[][], tol: number, what: string): void {
  assert.is(actual.length, expected.length);
  actual.forEach((a, k) => {
    const e = expected[k]!;
    assert.is(a.length, e.length, what);
    const scale = Math.max(1, ...e.map(Math.abs));
    a.forEach((v, i) => assert.ok(Math.abs(v - e[i]!) <= tol * scale, `${what}[${k}][${i}]: ${v} vs ${e[i]}`));
  });
}

test('wasm kernel additions: conv filter gradients and transposed matmuls match the cpu backend', async () => {
  const values = (n: number, seed: number): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) * 0.5);
  // odd, even and non-square filters exercise symmetric and asymmetric 'same' padding
  for (const [pad, kh, kw] of [['same', 5, 5], ['valid', 5, 5], ['same', 4, 4], ['same', 3, 5], ['valid', 2, 3]] as const) {
    const [got, want] = await onBothBackends(() => {
      const x = tf.tensor4d(values(2 * 9 * 8 * 3, 1), [2, 9, 8, 3]);
      const w = tf.tensor4d(values(kh * kw * 3 * 4, 2), [kh, kw, 3, 4]);
      return tf.grads((xx: tf.Tensor, ww: tf.Tensor) => tf.sum(tf.square(tf.conv2d(xx as tf.Tensor4D, ww as tf.Tensor4D, 1, pad))))([x, w]);
    });
    assertClose(got, want, 1e-4, `conv2d ${pad} ${kh}x${kw} gradients (input, filter)`);
  }
  // strided input gradients keep the original wasm kernel
  const [got, want] = await onBothBackends(() => {
    const w = tf.tensor4d(values(5 * 5 * 3 * 4, 2), [5, 5, 3, 4]);
    return tf.grad((xx: tf.Tensor) => tf.sum(tf.square(tf.conv2d(xx as tf.Tensor4D, w, 2, 'same'))))(tf.tensor4d(values(2 * 9 * 9 * 3, 1), [2, 9, 9, 3]));
  });
  assertClose(got, want, 1e-4, 'strided conv2d input gradient');
  // strided convolutions are not supported by the wasm filter gradient: refused, not silently wrong
  await expectRefusal('strided conv gradient', 'internal', () =>
    tf.tidy(() => tf.grad((w: tf.Tensor) => tf.sum(tf.conv2d(tf.ones([1, 8, 8, 1]) as tf.Tensor4D, w as tf.Tensor4D, 2, 'same')))(tf.ones([3, 3, 1, 2]))),
  );
  for (const [ta, tb] of [[true, false], [false, true], [true, true]] as const) {
    const [got, want] = await onBothBackends(() => {
      const a = tf.tensor3d(values(2 * 6 * 5, 3), ta ? [2, 5, 6] : [2, 6, 5]);
      const b = tf.tensor3d(values(2 * 5 * 4, 4), tb ? [2, 4, 5] : [2, 5, 4]);
      return tf.matMul(a, b, ta, tb);
    });
    assertClose(got, want, 1e-5, `matMul transposeA=${ta} transposeB=${tb}`);
  }
});

test('the CNN trains on the default backend: a few SGD steps lower the loss on their batch', async () => {
  const m = buildCnn({ seed: 2 });
  const batch = subset(train, Array.from({ length: 32 }, (_, i) => i));
  const before = evaluate(m, batch);
  const tensorsBefore = tf.memory().numTensors;
  const r = await trainLocal(m, batch, sgd({ epochs: 4, batchSize: 32, learningRate: 0.05 }));
  const after = evaluate(m, batch);
  console.log(`    [${backend}] CNN: 4 steps of 32 digits in ${r.ms.toFixed(0)} ms, loss ${before.loss.toFixed(3)} -> ${after.loss.toFixed(3)}`);
  assert.ok(after.loss < before.loss - 0.1, `loss ${before.loss} -> ${after.loss}`);
  assert.is(tf.memory().numTensors, tensorsBefore);
  m.dispose();
});

test.run();
