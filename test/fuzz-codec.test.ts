// Decoder fuzz (issue 7): random bytes, and mutations / truncations / extensions of valid encodings of
// every frame kind and every message type, into decodeFrame and decodeModel. Nothing may crash, hang
// or throw anything but a FedError with a known code, and whatever decodes must re-encode to bytes that
// decode to the same value (frames) or to the very same bytes (models, whose encoding is canonical).
// Also: what validateEnvelope/encodeFrame accept in memory is exactly what survives the wire.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { decodeFrame, encodeFrame, validateEnvelope, DEFAULT_MAX_FRAME_BYTES } from '../src/protocol/codec.ts';
import { decodeModel, encodeModel } from '../src/model/codec.ts';
import { layoutSize, type Layout, type Params } from '../src/model/params.ts';
import { errorCodes } from '../src/errors.ts';
import type { Frame } from '../src/protocol/generated.ts';
import { SPLIT_MIN_BYTES, WireChannel, decodeWireFrame, encodeForSend, encodeWireFrame } from '../src/transport/chunk-frame.ts';
import { FedError } from '../src/errors.ts';
import {
  envelopeArb,
  fc,
  frameArb,
  fuzz,
  fuzzAsync,
  fuzzOptions,
  mutate,
  mutationArb,
  sameBits,
  sameValue,
  seedFrames,
  typedRefusal,
  wildString,
} from './helpers/fuzz-arbs.ts';

const known = new Set<string>(errorCodes);
const seeds = seedFrames();
const counts: Record<string, number> = {};
const count = (k: string): void => void (counts[k] = (counts[k] ?? 0) + 1);

/** The property every input to decodeFrame must satisfy; returns what happened for the statistics. */
function checkFrameBytes(bytes: Uint8Array): string {
  const started = performance.now();
  const r = typedRefusal(() => decodeFrame(bytes));
  const ms = performance.now() - started;
  assert.ok(ms < 1_000, `decodeFrame took ${ms.toFixed(0)} ms on ${bytes.length} bytes`);
  if (!r.ok) {
    assert.ok(known.has(r.code), `unknown error code ${r.code}`);
    return `refused:${r.code}`;
  }
  const frame = r.value as Frame;
  // round-trip stability: decode(encode(decoded)) equals decoded, and the encoding is a fixed point
  const again = encodeFrame(frame);
  const back = decodeFrame(again);
  assert.ok(sameValue(back, frame), `re-decoded frame differs:\n${JSON.stringify(frame)}\n${JSON.stringify(back)}`);
  assert.ok(sameValue(encodeFrame(back), again), 'the re-encoding is not a fixed point');
  if (frame.kind === 'envelope') validateEnvelope(frame.envelope); // what came off the wire passes the in-memory check
  return `decoded:${frame.kind === 'envelope' ? frame.envelope.body.type : frame.kind}`;
}

test('decodeFrame: random bytes are refused with typed codes or decode to round-trip-stable frames', () => {
  const opts = fuzzOptions(0x5eed0001, 3_000);
  // random bytes, half of them starting with a valid Frame tag and length so the decoder goes deeper
  const tagged = fc
    .tuple(fc.constantFrom(0x0a, 0x12, 0x1a, 0x22, 0x2a, 0x32, 0x3a), fc.uint8Array({ maxLength: 96 }))
    .map(([tag, rest]) => Uint8Array.from([tag, rest.length, ...rest]));
  fuzz('random frame bytes', opts, fc.property(fc.oneof(fc.uint8Array({ maxLength: 128 }), tagged), (bytes) => count(checkFrameBytes(bytes))));
});

test('decodeFrame: mutated, truncated and extended encodings of every frame kind and message type', () => {
  const opts = fuzzOptions(0x5eed0002, 6_000);
  const arb = fc.tuple(fc.integer({ min: 0, max: seeds.length - 1 }), fc.array(mutationArb, { minLength: 1, maxLength: 4 }));
  fuzz('mutated frames', opts, fc.property(arb, ([i, ms]) => count(checkFrameBytes(mutate(seeds[i]!.bytes, ms)))));
  // every seed itself decodes to what was encoded
  for (const s of seeds) assert.ok(sameValue(decodeFrame(s.bytes), s.frame), s.name);
});

test('decodeFrame: every truncation of every seed frame', () => {
  let n = 0;
  for (const s of seeds) {
    for (let len = 0; len < s.bytes.length; len++) {
      count(checkFrameBytes(s.bytes.subarray(0, len)));
      n++;
    }
  }
  assert.ok(n > 500);
});

test('decodeFrame: frames over the size limit are refused as oversized before decoding', () => {
  const r = typedRefusal(() => decodeFrame(new Uint8Array(DEFAULT_MAX_FRAME_BYTES + 1)));
  assert.equal(r, { ok: false, code: 'oversized' });
});

test('wire-valid random frames of every kind round-trip; in-memory validation agrees with the wire', () => {
  const opts = fuzzOptions(0x5eed0003, 3_000);
  fuzz(
    'random frames',
    opts,
    fc.property(frameArb(), (frame) => {
      const enc = typedRefusal(() => encodeFrame(frame));
      if (frame.kind === 'envelope') {
        const val = typedRefusal(() => validateEnvelope(frame.envelope));
        // the strict (wire) path and the in-memory path accept and refuse the same envelopes
        assert.is(enc.ok, val.ok, `encode ${enc.ok ? 'accepted' : 'refused'} but validate ${val.ok ? 'accepted' : 'refused'} ${JSON.stringify(frame)}`);
      }
      if (!enc.ok) {
        count(`encode-refused:${enc.code}`);
        return;
      }
      count(`encoded:${frame.kind}`);
      checkFrameBytes(enc.value as Uint8Array);
    }),
  );
});

test('out-of-contract values are refused before the wire could silently change them', () => {
  // A uint32 of -1 used to be encoded as 4294967295 (a weight of four billion); a body missing fields
  // or of a type named like an Object.prototype member used to pass validateEnvelope.
  const opts = fuzzOptions(0x5eed0004, 1_500);
  const wild = envelopeArb({ mode: 'wild', from: fc.constant('client/k1'), to: fc.constant('combiner/c1') });
  fuzz(
    'wild envelopes',
    opts,
    fc.property(wild, (envelope) => {
      const enc = typedRefusal(() => encodeFrame({ kind: 'envelope', envelope }));
      const val = typedRefusal(() => validateEnvelope(envelope));
      assert.is(enc.ok, val.ok, JSON.stringify(envelope));
      if (!enc.ok) return count('wild-refused');
      // accepted: the wire carries it unchanged
      const back = decodeFrame(enc.value as Uint8Array);
      assert.ok(sameValue(back, { kind: 'envelope', envelope }, false), `the wire changed ${JSON.stringify(envelope)} into ${JSON.stringify(back)}`);
      count('wild-accepted');
    }),
  );
  const specific: Array<[string, unknown]> = [
    ['negative uint32', { type: 'TrainResult', taskId: 't', sessionId: 's', round: 1, baseModelId: 'm', updateId: 'u', numExamples: -1, metrics: {}, trainMs: 0 }],
    ['uint32 overflow', { type: 'Heartbeat', seq: 2 ** 32 }],
    ['int32 overflow', { type: 'StartRound', sessionId: 's', round: 1, task: 'train', modelId: 'm', config: { minUpdates: 1, bufferSize: 2 ** 31, timeoutMs: 1, maxClients: 0, fraction: 1, localEpochs: 1, batchSize: 1, learningRate: 0.1, proximalMu: 0, seed: 0, strategy: '' } }],
    ['missing field', { type: 'TrainResult', taskId: 't' }],
    ['missing nested field', { type: 'StartRound', sessionId: 's', round: 1, task: 'train', modelId: 'm', config: {} }],
    ['prototype name as type', { type: 'toString' }],
    ['__proto__ as type', { type: '__proto__' }],
    ['wrong map value', { type: 'ValidateResult', taskId: 't', sessionId: 's', round: 1, modelId: 'm', numExamples: 1, metrics: { loss: 'x' } }],
  ];
  for (const [name, body] of specific) {
    const envelope = { from: 'client/k1', to: 'combiner/c1', body } as never;
    for (const [path, fn] of [
      ['validate', () => validateEnvelope(envelope)],
      ['encode', () => encodeFrame({ kind: 'envelope', envelope })],
    ] as const) {
      const r = typedRefusal(fn);
      assert.not.ok(r.ok, `${name} accepted by ${path}`);
      assert.ok(!r.ok && ['malformed', 'unknown-message'].includes(r.code), `${name}: ${JSON.stringify(r)}`);
    }
  }
  for (const n of [-1, 2 ** 32, 0.5, NaN]) {
    const r = typedRefusal(() => encodeFrame({ kind: 'blobCredit', blobCredit: { streamId: 1, chunks: n } }));
    assert.not.ok(r.ok, `blobCredit.chunks ${n} encoded`);
  }
  const r = typedRefusal(() => encodeFrame({ kind: 'toString' } as never));
  assert.not.ok(r.ok, 'a frame kind named like an Object.prototype member encoded');
});

// The socket transports (grpc, ws) decode with decodeWireFrame, which has its own hand-written fast
// path for blob chunks; it must agree with the generic decoder on every input.
const chunkSeeds = seeds.filter((s) => s.frame.kind === 'blobChunk');

function sameDecoding(bytes: Uint8Array): string {
  const generic = typedRefusal(() => decodeFrame(bytes, 1 << 24));
  const wire = typedRefusal(() => decodeWireFrame(Uint8Array.from(bytes), 1 << 24));
  assert.is(wire.ok, generic.ok, `decodeWireFrame ${wire.ok ? 'accepted' : 'refused'} what decodeFrame ${generic.ok ? 'accepted' : 'refused'}: ${Buffer.from(bytes).toString('hex')}`);
  if (generic.ok && wire.ok) assert.ok(sameValue(wire.value, generic.value), `decoders disagree on ${Buffer.from(bytes).toString('hex')}`);
  if (!generic.ok && !wire.ok) assert.is(wire.code, generic.code);
  return generic.ok ? 'wire-agrees:decoded' : 'wire-agrees:refused';
}

test('decodeWireFrame (socket fast path for chunks) agrees with decodeFrame on mutated and random chunk frames', () => {
  const opts = fuzzOptions(0x5eed0006, 4_000);
  const chunk = fc
    .record({
      streamId: fc.oneof(fc.constantFrom(0, 1, 0xffff_ffff), fc.nat()),
      offset: fc.double(),
      total: fc.double(),
      data: fc.uint8Array({ maxLength: 40 }),
      last: fc.boolean(),
      error: fc.constantFrom('', 'not-found: x'),
    })
    .map((blobChunk) => encodeFrame({ kind: 'blobChunk', blobChunk }));
  const mutated = fc
    .tuple(fc.oneof(fc.constantFrom(...chunkSeeds.map((s) => s.bytes)), chunk), fc.array(mutationArb, { minLength: 0, maxLength: 3 }))
    .map(([b, ms]) => mutate(b, ms));
  const prefixed = fc.uint8Array({ maxLength: 48 }).map((rest) => Uint8Array.from([0x22, rest.length, ...rest]));
  fuzz('wire decoder agreement', opts, fc.property(fc.oneof(mutated, prefixed), (bytes) => count(sameDecoding(bytes))));
  for (const s of seeds) sameDecoding(s.bytes);
});

test('encodeWireFrame agrees with encodeFrame on every frame encodeFrame accepts', () => {
  const opts = fuzzOptions(0x5eed0007, 2_000);
  fuzz(
    'wire encoder agreement',
    opts,
    fc.property(frameArb(), (frame) => {
      const generic = typedRefusal(() => encodeFrame(frame));
      if (!generic.ok) return;
      const wire = typedRefusal(() => encodeWireFrame(frame));
      assert.ok(wire.ok, `encodeWireFrame refused ${JSON.stringify(frame)}`);
      assert.ok(sameValue(decodeFrame(wire.value as Uint8Array), decodeFrame(generic.value as Uint8Array)), `encoders disagree on ${JSON.stringify(frame)}`);
      count('wire-encoder-agrees');
    }),
  );
});

// Found by this fuzzing (fixed): the blob-chunk fast path of encodeWireFrame did not run the codec's
// string check, so a chunk whose `error` held an unpaired surrogate went out over grpc/ws with U+FFFD in
// its place while encodeFrame (the strict inproc path) refused it. The two paths accept the same frames.
test('chunk-frame: encodeWireFrame refuses the chunk frames encodeFrame refuses (a lone surrogate in the error)', () => {
  const frame: Frame = { kind: 'blobChunk', blobChunk: { streamId: 1, offset: 0, total: 0, data: new Uint8Array(0), last: true, error: '\ud800' } };
  assert.not.ok(typedRefusal(() => encodeFrame(frame)).ok);
  assert.not.ok(typedRefusal(() => encodeWireFrame(frame)).ok, 'encodeWireFrame accepted it');
});

// ---------------------------------------------------------------------------------------------------
// Models

const nameArb = fc.oneof(wildString, fc.constantFrom('dense/kernel', 'w', 'é'));
const layoutArb: fc.Arbitrary<Layout> = fc.array(
  fc.record({ name: nameArb, shape: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }) }),
  { maxLength: 4 },
);
const paramsArb: fc.Arbitrary<Params> = layoutArb.chain((layout) => {
  const n = layoutSize(layout);
  return fc.array(fc.integer({ min: 0, max: 0xffff_ffff }), { minLength: n, maxLength: n }).map((bits) => ({ layout, data: new Float32Array(Uint32Array.from(bits).buffer) }));
});

function checkModelBytes(bytes: Uint8Array, copy: boolean): string {
  const r = typedRefusal(() => decodeModel(bytes, { copy }));
  if (!r.ok) {
    assert.ok(['malformed', 'wrong-shape'].includes(r.code), `decodeModel refused with ${r.code}`);
    return `model-refused:${r.code}`;
  }
  const p = r.value as Params;
  assert.is(p.data.length, layoutSize(p.layout));
  const again = encodeModel(p);
  // the encoding is canonical: what decodes re-encodes to exactly the same bytes (so the same hash)
  assert.ok(sameValue(again, bytes), 're-encoding differs from the decoded bytes');
  const back = decodeModel(again);
  assert.equal(back.layout, p.layout);
  assert.ok(sameBits(back.data, p.data));
  return 'model-decoded';
}

test('decodeModel: random bytes, and mutated / truncated / extended / misaligned valid models', () => {
  const opts = fuzzOptions(0x5eed0005, 4_000);
  const magic = fc.uint8Array({ maxLength: 80 }).map((b) => Uint8Array.from([0x46, 0x53, 0x4d, 0x31, ...b]));
  const mutated = fc.tuple(paramsArb, fc.array(mutationArb, { minLength: 1, maxLength: 3 })).map(([p, ms]) => mutate(encodeModel(p), ms));
  const valid = paramsArb.map((p) => encodeModel(p));
  // decoding from an odd offset in a larger buffer exercises the copy path of unaligned data
  const shifted = fc.tuple(fc.oneof(valid, mutated), fc.integer({ min: 1, max: 3 })).map(([b, off]) => {
    const buf = new Uint8Array(b.length + off);
    buf.set(b, off);
    return buf.subarray(off);
  });
  fuzz(
    'model bytes',
    opts,
    fc.property(fc.oneof(fc.uint8Array({ maxLength: 80 }), magic, valid, mutated, shifted), fc.boolean(), (bytes, copy) => count(checkModelBytes(bytes, copy))),
  );
});

test('decodeModel: every truncation and one-byte extension of valid models', () => {
  const models: Params[] = [
    { layout: [{ name: 'w', shape: [3] }, { name: 'b', shape: [] }], data: Float32Array.from([1, NaN, -0, Infinity]) },
    { layout: [], data: new Float32Array(0) },
    { layout: [{ name: 'é\u{1F600}', shape: [2, 0, 3] }], data: new Float32Array(0) },
  ];
  for (const p of models) {
    const bytes = encodeModel(p);
    assert.is(checkModelBytes(bytes, false), 'model-decoded');
    for (let len = 0; len < bytes.length; len++) assert.ok(checkModelBytes(bytes.subarray(0, len), len % 2 === 0).startsWith('model-refused'), `truncation to ${len} decoded`);
    for (let v = 0; v < 256; v += 17) assert.ok(checkModelBytes(Uint8Array.from([...bytes, v]), false).startsWith('model-refused'), 'extension decoded');
  }
});

test('statistics', () => {
  const summary = Object.entries(counts)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  console.log(`  fuzz-codec cases: ${summary}`);
  // the fuzzing reached deep: frames of every kind and envelopes of many message types decoded
  assert.ok(Object.keys(counts).filter((k) => k.startsWith('decoded:')).length >= 15, summary);
  assert.ok((counts['model-decoded'] ?? 0) > 100, summary);
});

// A socket channel reads a chunk frame with a large payload from two messages (head, then payload);
// whatever sequence of messages a peer sends, the channel delivers exactly the frames of the
// well-formed messages before the first bad one, then ends once with a typed error, never a crash.
class FedChannel extends WireChannel {
  readonly peer = 'fuzz';
  constructor(maxFrameBytes: number) {
    super(maxFrameBytes);
  }
  feed(bytes: Uint8Array): void {
    this.receive(bytes);
  }
  protected write(): Promise<void> {
    return Promise.resolve();
  }
  protected endGracefully(): void {}
  protected abort(): void {}
}

/** A bad item is `surely` bad when no reading of it is a frame; mutated bytes may still decode. */
type Item = { frame: Frame; messages: Uint8Array[] } | { bad: Uint8Array[]; surely: boolean };

test('socket channel: any message sequence gives the frames of the good messages before the first bad one, then one typed error', async () => {
  const opts = fuzzOptions(0x5eed0009, 300);
  const max = 4 * SPLIT_MIN_BYTES;
  const chunk = fc.record({
    streamId: fc.nat({ max: 9 }),
    offset: fc.nat({ max: 2 ** 40 }),
    total: fc.nat({ max: 2 ** 40 }),
    size: fc.oneof(fc.nat({ max: 40 }), fc.integer({ min: SPLIT_MIN_BYTES - 1, max: SPLIT_MIN_BYTES + 3 }), fc.constant(2 * SPLIT_MIN_BYTES)),
    last: fc.boolean(),
  });
  const good: fc.Arbitrary<Item> = fc.oneof(
    chunk.map(({ size, ...c }): Item => {
      const frame: Frame = { kind: 'blobChunk', blobChunk: { ...c, data: new Uint8Array(size).fill(c.streamId + 1), error: '' } };
      const { bytes, tail } = encodeForSend(frame);
      return { frame, messages: tail ? [bytes, tail] : [bytes] };
    }),
    frameArb().filter((f) => typedRefusal(() => encodeFrame(f)).ok && encodeFrame(f).byteLength <= max).map((frame): Item => ({ frame, messages: [encodeWireFrame(frame)] })),
  );
  const split = chunk.filter((c) => c.size >= SPLIT_MIN_BYTES).map(({ size, ...c }) => encodeForSend({ kind: 'blobChunk', blobChunk: { ...c, data: new Uint8Array(size), error: '' } }));
  const bad: fc.Arbitrary<Item> = fc.oneof(
    // a head whose payload is one byte short or long, or missing (another frame's head follows)
    fc.tuple(split, fc.constantFrom(-1, 1)).map(([e, d]): Item => ({ bad: [e.bytes, new Uint8Array(e.tail!.byteLength + d)], surely: true })),
    fc.tuple(split, split).map(([a, b]): Item => ({ bad: [a.bytes, b.bytes], surely: true })),
    // a head announcing a frame over the limit
    fc.constant<Item>({ bad: [encodeForSend({ kind: 'blobChunk', blobChunk: { streamId: 1, offset: 0, total: 0, data: new Uint8Array(max), last: false, error: '' } }).bytes], surely: true }),
    // bytes mutated from a seed frame or a head; they may still decode, so this item ends what is checked
    fc.tuple(fc.oneof(fc.constantFrom(...seeds.map((x) => x.bytes)), split.map((e) => e.bytes)), fc.array(mutationArb, { minLength: 1, maxLength: 3 })).map(
      ([b, ms]): Item => ({ bad: [mutate(b, ms)], surely: false }),
    ),
  );
  const sequences = fc.tuple(fc.array(good, { maxLength: 6 }), fc.option(bad, { nil: undefined }), fc.array(good, { maxLength: 3 }));
  await fuzzAsync('socket channel message sequences', opts, fc.asyncProperty(sequences, async ([before, wrong, after]) => {
    const ch = new FedChannel(max);
    const delivered: Frame[] = [];
    const closes: (Error | undefined)[] = [];
    ch.onFrame = (f) => delivered.push(f);
    ch.onClose = (e) => closes.push(e);
    for (const item of [...before, ...(wrong ? [wrong] : []), ...after]) for (const m of 'bad' in item ? item.bad : item.messages) ch.feed(m);
    await new Promise((r) => setImmediate(r));
    assert.ok(delivered.length >= before.length, `${delivered.length} of the ${before.length} good frames before the bad item`);
    before.forEach((item, i) => assert.ok('frame' in item && sameValue(delivered[i], item.frame), `frame ${i} delivered as sent`));
    if (!wrong) {
      assert.is(delivered.length, before.length + after.length);
      assert.is(closes.length, 0);
      return;
    }
    assert.ok(closes.length <= 1, `${closes.length} closes`);
    const e = closes[0];
    if (e) assert.ok(e instanceof FedError && known.has(e.code) && e.code !== 'internal', String(e));
    if ('bad' in wrong && wrong.surely) {
      assert.is(closes.length, 1, 'a surely bad message ends the channel');
      assert.is(delivered.length, before.length, 'nothing is delivered from or after a bad message');
    }
  }));
});

test.run();
