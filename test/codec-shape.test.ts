// The codec's shape checks name the offending value by its path; the path is only assembled once a
// problem is found, so these pin every way a path can be formed (field, nested message, repeated
// element, map key, frame payload) to the exact text validateEnvelope and encodeFrame have always given.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { encodeFrame, makeMessage, validateEnvelope } from '../src/protocol/codec.ts';
import { FedError } from '../src/errors.ts';
import type { Frame, Message } from '../src/protocol/generated.ts';

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.instance(e, FedError);
    return (e as FedError).message;
  }
  return 'accepted';
}

const envelope = (body: unknown) => ({ from: 'combiner/c1', to: 'reducer/main', body: body as Message });

const withoutTaskId = (() => {
  const { taskId: _, ...rest } = makeMessage('TrainResult');
  return rest;
})();

const bodies: Array<[unknown, string]> = [
  [withoutTaskId, 'invalid TrainResult: TrainResult.taskId: missing'],
  [makeMessage('StartRound', { config: {} as never }), 'invalid StartRound: StartRound.config.minUpdates: missing'],
  [makeMessage('StartRound', { config: [] as never }), 'invalid StartRound: StartRound.config: object expected'],
  [makeMessage('TrainResult', { numExamples: -1 }), 'invalid TrainResult: TrainResult.numExamples: uint32 expected, got -1'],
  [makeMessage('StartRound', { config: { ...makeMessage('StartRound').config, bufferSize: 2 ** 31 } }), 'invalid StartRound: StartRound.config.bufferSize: int32 expected, got 2147483648'],
  [makeMessage('CombinerStatus', { clients: ['client/a', '\ud800'] }), 'invalid CombinerStatus: CombinerStatus.clients[1]: string with an unpaired surrogate'],
  [makeMessage('RoundReport', { rejected: [{ reason: 'stale', count: 1 }, { reason: 'late', count: -1 }] }), 'invalid RoundReport: RoundReport.rejected[1].count: uint32 expected, got -1'],
  [makeMessage('RoundReport', { rejected: [{ reason: 'stale' } as never] }), 'invalid RoundReport: RoundReport.rejected[0].count: missing'],
  [makeMessage('RoundReport', { metrics: { loss: 1, '\ud800': 2 } }), 'invalid RoundReport: RoundReport.metrics key: string with an unpaired surrogate'],
  [makeMessage('TaskFailed', { reason: 'a\udc00b' }), 'invalid TaskFailed: TaskFailed.reason: string with an unpaired surrogate'],
];

test('validateEnvelope and encodeFrame name the offending field by its full path', () => {
  for (const [body, message] of bodies) {
    assert.is(refusal(() => validateEnvelope(envelope(body))), `malformed: ${message}`);
    assert.is(refusal(() => encodeFrame({ kind: 'envelope', envelope: envelope(body) })), `malformed: ${message}`);
  }
});

test('frame payloads are checked without requiring every field, with the frame kind as the path root', () => {
  assert.is(refusal(() => encodeFrame({ kind: 'blobCredit', blobCredit: { streamId: 1, chunks: -1 } })), 'malformed: cannot encode blobCredit: blobCredit.chunks: uint32 expected, got -1');
  assert.is(refusal(() => encodeFrame({ kind: 'routeUpdate', routeUpdate: { added: ['\ud800'], removed: [] } } as Frame)), 'malformed: cannot encode routeUpdate: routeUpdate.added[0]: string with an unpaired surrogate');
  assert.is(refusal(() => encodeFrame({ kind: 'blobCredit', blobCredit: { streamId: 1 } } as never)), 'accepted');
});

test('valid messages of every shape pass', () => {
  for (const body of [makeMessage('RoundReport', { rejected: [{ reason: 'late', count: 2 }], metrics: { loss: 0.5 } }), makeMessage('CombinerStatus', { clients: ['client/a'] }), makeMessage('StartRound')]) {
    assert.is(validateEnvelope(envelope(body)).body, body);
  }
});

test.run();
