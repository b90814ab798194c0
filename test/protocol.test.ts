import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { generate, generatedPath } from '../scripts/gen-protocol.ts';
import { decodeFrame, encodeFrame, makeMessage, validateEnvelope } from '../src/protocol/codec.ts';
import { envelopeFieldOf, type Envelope, type MessageType } from '../src/protocol/generated.ts';
import { isFedError } from '../src/errors.ts';

test('generated TypeScript types match proto/fedstate.proto', () => {
  assert.is(readFileSync(generatedPath, 'utf8'), generate(), 'run `npm run gen:protocol`');
});

test('every message type round-trips through the wire codec unchanged', () => {
  for (const type of Object.keys(envelopeFieldOf) as MessageType[]) {
    const env: Envelope = { from: 'client/c1', to: 'combiner/c-1', body: makeMessage(type) };
    const back = decodeFrame(encodeFrame({ kind: 'envelope', envelope: env }));
    assert.equal(back, { kind: 'envelope', envelope: env }, type);
  }
});

test('nested messages and maps survive the wire', () => {
  const body = makeMessage('TrainResult', { round: 7, numExamples: 1600, metrics: { loss: 0.25, accuracy: 0.9 } });
  const env: Envelope = { from: 'client/a', to: 'combiner/b', body };
  const back = decodeFrame(encodeFrame({ kind: 'envelope', envelope: env }));
  assert.equal(back, { kind: 'envelope', envelope: env });
});

test('malformed input is refused with a typed error', () => {
  const bad: Array<[string, () => unknown]> = [
    ['garbage bytes', () => decodeFrame(new Uint8Array([0xff, 0xff, 0xff, 0x01, 0x02]))],
    ['empty frame', () => decodeFrame(new Uint8Array(0))],
    ['wrong field type', () => validateEnvelope({ from: 'client/a', to: 'combiner/b', body: { ...makeMessage('Heartbeat'), seq: 'x' } as never })],
    ['bad address', () => validateEnvelope({ from: 'nobody', to: 'combiner/b', body: makeMessage('Heartbeat') })],
    ['unknown type', () => encodeFrame({ kind: 'envelope', envelope: { from: 'client/a', to: 'combiner/b', body: { type: 'Nope' } as never } })],
  ];
  for (const [name, fn] of bad) {
    try {
      fn();
      assert.unreachable(name);
    } catch (e) {
      assert.ok(isFedError(e), `${name}: ${String(e)}`);
      assert.ok(['malformed', 'unknown-message'].includes((e as { code: string }).code), name);
    }
  }
});

test('oversized frames are refused before decoding', () => {
  const bytes = encodeFrame({ kind: 'blobChunk', blobChunk: { streamId: 1, offset: 0, total: 10, data: new Uint8Array(2048), last: true, error: '' } });
  try {
    decodeFrame(bytes, 1024);
    assert.unreachable();
  } catch (e) {
    assert.ok(isFedError(e, 'oversized'));
  }
});

test.run();
