// The benchmark helpers: tables, the --json convention, robust (Theil–Sen) growth and the no-op task.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { slope } from '../bench/memory.ts';
import { markdownTable, num } from '../bench/lib/table.ts';
import { flatLayout, noopTask } from '../bench/lib/tasks.ts';
import { contentHash } from '../src/model/hash.ts';
import { encodeModel } from '../src/model/codec.ts';

test('num: thousands separators for integers, significant digits otherwise, a dash for non-finite', () => {
  assert.is(num(10000), '10,000');
  assert.is(num(0.123456), '0.123');
  assert.is(num(12.3456), '12.3');
  assert.is(num(1234.56), '1,235');
  assert.is(num(Number.NaN), '—');
  assert.is(num(0), '0');
});

test('markdownTable: header, rule with right-aligned numeric columns, one row per entry', () => {
  const t = markdownTable(['name', 'ms'], [['a', 1.5], ['bb', 1000]]).split('\n');
  assert.is(t.length, 4);
  assert.is(t[0], '| name |    ms |');
  assert.ok(/^\|-+\|-+:\|$/.test(t[1]!), t[1]);
  assert.ok(t[3]!.includes('1,000'));
  for (const line of t) assert.is(line.length, t[0]!.length);
});

test('slope: zero for flat series, the per-step increase for a line, unmoved by one stray reading', () => {
  assert.is(slope([5, 5, 5, 5]), 0);
  assert.ok(Math.abs(slope([1, 3, 5, 7]) - 2) < 1e-12);
  assert.is(slope([42]), 0);
  assert.is(slope([100, 100, 107, 100, 100, 100]), 0, 'one spike is not growth');
});

test('noopTask: the update differs from the model it was given (so it gets its own hash), copy or in place', async () => {
  const signal = new AbortController().signal;
  const config = { minUpdates: 1, bufferSize: -1, timeoutMs: 0, maxClients: 0, fraction: 1, localEpochs: 1, batchSize: 1, learningRate: 0.1, proximalMu: 0, seed: 0, strategy: 'fedavg' };
  const model = { layout: flatLayout(4), data: new Float32Array([1, 2, 3, 4]) };
  const before = contentHash(encodeModel(model));
  const copied = await noopTask(7).train(model, { config, round: 1, signal });
  assert.is(copied.numExamples, 7);
  assert.is.not(contentHash(encodeModel(copied.params)), before);
  assert.equal([...model.data], [1, 2, 3, 4], 'the copying task leaves its input alone');
  const inPlace = await noopTask(7, { inPlace: true }).train(model, { config, round: 1, signal });
  assert.is(inPlace.params.data, model.data);
  assert.is(model.data[0], 2);
});

test.run();
