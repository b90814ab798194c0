// Compute packages: a client runs the reducer's package only if it hashes to the pin in the client's
// own configuration, and runs it in a worker thread.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startClient } from '../src/actors/client.ts';
import { startFederation } from '../src/actors/federation.ts';
import { Node } from '../src/actors/node.ts';
import { fetchPackage, packageTask } from '../src/actors/package.ts';
import { isFedError } from '../src/errors.ts';
import { contentHash } from '../src/model/hash.ts';
import { InprocTransport } from '../src/transport/inproc.ts';
import { toyLayout, toyTask, weightedMean } from './helpers/toy-task.ts';

const SIZE = 8;
// The package moves the model to a target given by the client's own settings (its "private data").
const source = `
export function numExamples(settings) { return settings.examples; }
export async function train(model, { settings }) {
  if (settings.fail) throw new Error('package refused to train');
  const data = new Float32Array(model.data.length).fill(settings.target);
  return { params: { layout: model.layout, data }, numExamples: settings.examples, metrics: { loss: 0.5 } };
}
export function validate(model, { settings }) { return { numExamples: settings.examples, metrics: { mean: model.data[0] } }; }
`;
const bytes = new TextEncoder().encode(source);
const pin = contentHash(bytes);

test('a client fetches the pinned package, runs it in a worker, and the federation aggregates its update', async () => {
  const cache = mkdtempSync(join(tmpdir(), 'fedstate-pkg-'));
  const fed = await startFederation({ combiners: 1, clients: [toyTask({ target: new Float32Array(SIZE).fill(1), numExamples: 10 })], strict: true });
  const network = (fed.reducer.node.transport as InprocTransport).network;
  const node = new Node({ name: 'client-pkg', transport: new InprocTransport(network, { strict: true }) });
  try {
    await fed.reducer.store.putBlob(bytes);
    const fetched = await fetchPackage(node, fed.reducer.endpoint, pin);
    const code = await packageTask({ bytes: fetched, sha256: pin, settings: { target: 4, examples: 30 }, cacheDir: cache });
    assert.is(code.numExamples, 30);
    const client = await startClient({ node, name: 'pkg', code, reducerEndpoint: fed.reducer.endpoint });
    await fed.ready();
    await new Promise((r) => setTimeout(r, 300));
    await fed.reducer.seed({ layout: toyLayout(SIZE), data: new Float32Array(SIZE) });
    fed.reducer.start({ sessionId: 'pkg', rounds: 1, roundTimeoutMs: 10_000, validate: true, minClients: 2 });
    const summary = await fed.reducer.finished();
    assert.is(summary.status, 'done', summary.failure);
    assert.is(summary.rounds[0]!.updates, 2);
    const global = await fed.reducer.globalModel();
    const expected = weightedMean([new Float32Array(SIZE).fill(1), new Float32Array(SIZE).fill(4)], [10, 30]);
    assert.ok(global.data.every((x, j) => Math.abs(x - expected[j]!) < 1e-6));
    await client.stop();
    await code.close();
  } finally {
    await fed.close();
    rmSync(cache, { recursive: true, force: true });
  }
});

test('a package that does not match the pin is never run', async () => {
  const fed = await startFederation({ combiners: 1, clients: [], strict: true });
  const network = (fed.reducer.node.transport as InprocTransport).network;
  const node = new Node({ name: 'client-x', transport: new InprocTransport(network) });
  try {
    await fed.reducer.store.putBlob(bytes);
    const tampered = new TextEncoder().encode(source.replace('0.5', '0.6'));
    // the reducer holds a different package than the one pinned: nothing under the pin
    await fetchPackage(node, fed.reducer.endpoint, contentHash(tampered)).then(
      () => assert.unreachable('fetched a package that is not there'),
      (e) => assert.ok(isFedError(e, 'not-found'), String(e)),
    );
    // bytes handed over out of band that do not hash to the pin are refused before being written
    await packageTask({ bytes: tampered, sha256: pin, settings: {} }).then(
      () => assert.unreachable('ran a tampered package'),
      (e) => assert.ok(isFedError(e, 'hash-mismatch'), String(e)),
    );
    await fetchPackage(node, fed.reducer.endpoint, 'not-a-hash').then(
      () => assert.unreachable(),
      (e) => assert.ok(isFedError(e, 'config'), String(e)),
    );
  } finally {
    await node.close();
    await fed.close();
  }
});

test('a package that throws fails the task, not the client', async () => {
  const cache = mkdtempSync(join(tmpdir(), 'fedstate-pkg-'));
  try {
    const code = await packageTask({ bytes, sha256: pin, settings: { examples: 5, fail: true }, cacheDir: cache });
    await code
      .train({ layout: toyLayout(SIZE), data: new Float32Array(SIZE) }, { config: {} as never, round: 1, signal: new AbortController().signal })
      .then(() => assert.unreachable(), (e) => assert.match(String(e), /package refused to train/));
    const v = await code.validate({ layout: toyLayout(SIZE), data: new Float32Array(SIZE).fill(2) }, { round: 1, signal: new AbortController().signal });
    assert.equal(v, { numExamples: 5, metrics: { mean: 2 } });
    await code.close();
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
});

test.run();
