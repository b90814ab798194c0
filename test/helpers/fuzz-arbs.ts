// Shared fast-check machinery for the fuzz tests (test/fuzz-*.test.ts): fixed seeds (overridable with
// FUZZ_SEED / FUZZ_RUNS for a longer local hunt), a wrapper that prints the seed and counterexample on
// failure, and arbitraries derived from the wire contract itself (proto/fedstate.proto through
// protobufjs reflection), so every message and frame kind is covered and new fields are fuzzed without
// touching this file.
import fc from 'fast-check';
import protobuf from 'protobufjs';
import { EnvelopeType, FrameType, encodeFrame, makeMessage } from '../../src/protocol/codec.ts';
import { envelopeFieldOf, type Envelope, type Frame, type FrameKind, type Message, type MessageType } from '../../src/protocol/generated.ts';
import { isFedError } from '../../src/errors.ts';
import { PROTOCOL_VERSION } from '../../src/transport/link.ts';

export const messageTypes = Object.keys(envelopeFieldOf) as MessageType[];
export const frameKinds = (FrameType.oneofs.kind?.oneof ?? []) as FrameKind[];

// ---------------------------------------------------------------------------------------------------
// Running properties

export interface FuzzOptions {
  seed: number;
  numRuns: number;
}

/** Seed and run count for one property: fixed in CI, FUZZ_SEED / FUZZ_RUNS override them locally. */
export function fuzzOptions(seed: number, numRuns: number): FuzzOptions {
  const envSeed = process.env.FUZZ_SEED;
  const envRuns = process.env.FUZZ_RUNS;
  return { seed: envSeed ? Number(envSeed) : seed, numRuns: envRuns ? Number(envRuns) : numRuns };
}

function report(name: string, opts: FuzzOptions, e: unknown): never {
  console.error(`\n[fuzz] "${name}" failed with seed ${opts.seed} (numRuns ${opts.numRuns}); rerun with FUZZ_SEED=${opts.seed}`);
  throw e;
}

/** fc.assert with a fixed seed; the seed is printed (with fast-check's counterexample) on failure. */
export function fuzz<Ts extends [unknown, ...unknown[]]>(name: string, opts: FuzzOptions, property: fc.IProperty<Ts>): void {
  try {
    fc.assert(property, { seed: opts.seed, numRuns: opts.numRuns, includeErrorInReport: true });
  } catch (e) {
    report(name, opts, e);
  }
}

export async function fuzzAsync<Ts extends [unknown, ...unknown[]]>(name: string, opts: FuzzOptions, property: fc.IAsyncProperty<Ts>): Promise<void> {
  try {
    await fc.assert(property, { seed: opts.seed, numRuns: opts.numRuns, includeErrorInReport: true });
  } catch (e) {
    report(name, opts, e);
  }
}

// ---------------------------------------------------------------------------------------------------
// Scalars

export const UINT32_MAX = 0xffff_ffff;

/** Doubles with the values that break arithmetic over-represented: NaN, infinities, -0, extremes. */
export const wildDouble: fc.Arbitrary<number> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(NaN, Infinity, -Infinity, -0, 0, 1, -1, Number.MAX_VALUE, -Number.MAX_VALUE, Number.MIN_VALUE, 2 ** 53, 2 ** 32, 0.5) },
  { weight: 3, arbitrary: fc.double() },
  { weight: 2, arbitrary: fc.integer({ min: -1000, max: 1000 }) },
);

/** Values of a uint32 field the wire can carry: edges and random ones. */
export const wireUint32: fc.Arbitrary<number> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(0, 1, 2, 3, 10, 2 ** 31 - 1, 2 ** 31, UINT32_MAX) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: UINT32_MAX }) },
);

export const wireInt32: fc.Arbitrary<number> = fc.oneof(
  fc.constantFrom(-1, 0, 1, 2, -(2 ** 31), 2 ** 31 - 1),
  fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
);

/** Numbers for an integer field that the wire could never carry (only reach a machine in memory). */
export const outOfContractInt: fc.Arbitrary<number> = fc.constantFrom(-1, -(2 ** 40), 2 ** 32, 2 ** 53, 1e308, 0.5, 1.5, NaN, Infinity, -Infinity, -0);

export const hex64 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('hex'));

/** Strings that stress parsers and keys: empty, separators, unicode, prototype names, long. */
export const wildString: fc.Arbitrary<string> = fc.oneof(
  { weight: 2, arbitrary: fc.constantFrom('', ' ', ':', '/', 'client/k1', 'combiner/c1', 'reducer/main', '__proto__', 'constructor', 'toString', 'é\u0000\uffff', '\ud800', 'x'.repeat(300)) },
  { weight: 3, arbitrary: fc.string({ maxLength: 24 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 12 }) },
);

export const validAddress: fc.Arbitrary<string> = fc
  .tuple(fc.constantFrom('client', 'combiner', 'reducer', 'admin', 'x'), fc.stringMatching(/^[A-Za-z0-9._:-]{1,12}$/))
  .map(([role, name]) => `${role}/${name}`);

// ---------------------------------------------------------------------------------------------------
// Messages from the proto

export type Overrides = Record<string, fc.Arbitrary<unknown>>;

export interface ShapeOptions {
  /** 'wire': every value representable on the wire; 'wild': integer fields also get out-of-contract numbers. */
  mode?: 'wire' | 'wild';
  /** Per-field arbitraries by field name (camelCase), used instead of the generic one. */
  overrides?: Overrides;
}

function scalarArb(type: string, mode: 'wire' | 'wild'): fc.Arbitrary<unknown> {
  const wild = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<unknown> => (mode === 'wild' ? fc.oneof({ weight: 4, arbitrary: a as fc.Arbitrary<unknown> }, { weight: 1, arbitrary: outOfContractInt }) : a);
  switch (type) {
    case 'string':
      return wildString;
    case 'bool':
      return fc.boolean();
    case 'double':
    case 'float':
      return wildDouble;
    case 'uint32':
      return wild(wireUint32);
    case 'int32':
      return wild(wireInt32);
    case 'bytes':
      return fc.uint8Array({ maxLength: 64 });
    default:
      throw new Error(`fuzz-arbs: no arbitrary for proto type ${type}`);
  }
}

/** Every field of a proto message type, with a random value of its type (nested messages included). */
export function shapeArb(type: protobuf.Type, opts: ShapeOptions = {}): fc.Arbitrary<Record<string, unknown>> {
  const mode = opts.mode ?? 'wire';
  const record: Record<string, fc.Arbitrary<unknown>> = {};
  for (const field of type.fieldsArray) {
    if (field.partOf) continue;
    const override = opts.overrides?.[field.name];
    if (override) {
      record[field.name] = override;
      continue;
    }
    const sub = field.resolvedType;
    const one: fc.Arbitrary<unknown> = sub instanceof protobuf.Type ? shapeArb(sub, { mode }) : scalarArb(field.type, mode);
    if (field.map) record[field.name] = fc.dictionary(fc.oneof(wildString, fc.constantFrom('loss', 'accuracy')), one, { maxKeys: 4 });
    else if (field.repeated) record[field.name] = fc.array(one, { maxLength: 4 });
    else record[field.name] = one;
  }
  return fc.record(record);
}

const bodyType = (type: MessageType): protobuf.Type => EnvelopeType.fields[envelopeFieldOf[type]]!.resolvedType as protobuf.Type;

/** A message of `type` with every field set to a random value of its proto type. */
export function messageArb<T extends MessageType>(type: T, opts: ShapeOptions = {}): fc.Arbitrary<Extract<Message, { type: T }>> {
  return shapeArb(bodyType(type), opts).map((fields) => ({ type, ...fields }) as Extract<Message, { type: T }>);
}

export function anyMessageArb(opts: ShapeOptions = {}, types: readonly MessageType[] = messageTypes): fc.Arbitrary<Message> {
  return fc.oneof(...types.map((t) => messageArb(t, opts) as fc.Arbitrary<Message>));
}

export function envelopeArb(opts: ShapeOptions & { from?: fc.Arbitrary<string>; to?: fc.Arbitrary<string> } = {}): fc.Arbitrary<Envelope> {
  return fc.record({ from: opts.from ?? validAddress, to: opts.to ?? validAddress, body: anyMessageArb(opts) });
}

/** Any frame the wire can carry, of every kind, with random field values. */
export function frameArb(opts: ShapeOptions & { envelope?: fc.Arbitrary<Envelope> } = {}): fc.Arbitrary<Frame> {
  return fc.oneof(
    ...frameKinds.map((kind): fc.Arbitrary<Frame> => {
      if (kind === 'envelope') return (opts.envelope ?? envelopeArb(opts)).map((envelope) => ({ kind, envelope }));
      const sub = FrameType.fields[kind]!.resolvedType as protobuf.Type;
      return shapeArb(sub, { mode: opts.mode }).map((inner) => ({ kind, [kind]: inner }) as unknown as Frame);
    }),
  );
}

/** One valid encoded frame per frame kind and per message type (the seeds mutations start from). */
export function seedFrames(): { name: string; frame: Frame; bytes: Uint8Array }[] {
  const out: { name: string; frame: Frame; bytes: Uint8Array }[] = [];
  for (const type of messageTypes) {
    const body = makeMessage(type) as Message & Record<string, unknown>;
    // populate maps and lists so their encodings are in the seeds too
    if ('metrics' in body) body.metrics = { loss: 0.25, accuracy: 0.75 };
    if ('clients' in body) body.clients = ['client/a', 'client/b'];
    if ('rejected' in body) body.rejected = [{ reason: 'late', count: 2 }];
    if ('sessionId' in body) body.sessionId = 's1';
    if ('round' in body) body.round = 3;
    const frame: Frame = { kind: 'envelope', envelope: { from: 'client/k1', to: 'combiner/c1', body } };
    out.push({ name: type, frame, bytes: encodeFrame(frame) });
  }
  const others: Frame[] = [
    { kind: 'hello', hello: { node: 'n1', actors: ['client/k1', 'client/k2'], protocolVersion: PROTOCOL_VERSION, token: 'a.b.c' } },
    { kind: 'routeUpdate', routeUpdate: { added: ['client/k3'], removed: ['client/k1'] } },
    { kind: 'blobRequest', blobRequest: { streamId: 7, hash: 'ab'.repeat(32), window: 8, offset: 1048576 } },
    { kind: 'blobChunk', blobChunk: { streamId: 7, offset: 0, total: 16, data: Uint8Array.from({ length: 16 }, (_, i) => i), last: true, error: '' } },
    { kind: 'blobCredit', blobCredit: { streamId: 7, chunks: 4 } },
    { kind: 'blobCancel', blobCancel: { streamId: 7, reason: 'no' } },
  ];
  for (const frame of others) out.push({ name: frame.kind, frame, bytes: encodeFrame(frame) });
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Byte mutations

export type Mutation =
  | { op: 'set'; at: number; value: number }
  | { op: 'flip'; at: number; bit: number }
  | { op: 'insert'; at: number; bytes: Uint8Array }
  | { op: 'delete'; at: number; count: number }
  | { op: 'truncate'; at: number }
  | { op: 'extend'; bytes: Uint8Array }
  | { op: 'varint'; at: number }; // an overlong / huge varint where a length or tag was

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('extend' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
  fc.record({ op: fc.constant('varint' as const), at: fc.nat() }),
);

export function mutate(input: Uint8Array, mutations: readonly Mutation[]): Uint8Array {
  let b = Uint8Array.from(input);
  for (const m of mutations) {
    const at = b.length === 0 ? 0 : ('at' in m ? m.at : 0) % (b.length + 1);
    switch (m.op) {
      case 'set':
        if (b.length) b[at % b.length] = m.value;
        break;
      case 'flip':
        if (b.length) b[at % b.length]! ^= 1 << m.bit;
        break;
      case 'insert':
        b = Uint8Array.from([...b.subarray(0, at), ...m.bytes, ...b.subarray(at)]);
        break;
      case 'delete':
        b = Uint8Array.from([...b.subarray(0, at), ...b.subarray(at + m.count)]);
        break;
      case 'truncate':
        b = b.slice(0, at);
        break;
      case 'extend':
        b = Uint8Array.from([...b, ...m.bytes]);
        break;
      case 'varint':
        b = Uint8Array.from([...b.subarray(0, at), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, ...b.subarray(at + 1)]);
        break;
    }
  }
  return b;
}

// ---------------------------------------------------------------------------------------------------
// Comparisons

/**
 * Deep equality for decoded frames: bytes by content, numbers with Object.is (NaN equals NaN, -0 is not
 * 0) unless `signedZero` is false (integer fields carry no sign of zero on the wire).
 */
export function sameValue(a: unknown, b: unknown, signedZero = true): boolean {
  const same = (x: unknown, y: unknown): boolean => sameValue(x, y, signedZero);
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    return a instanceof Uint8Array && b instanceof Uint8Array && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
  }
  if (typeof a === 'number' && typeof b === 'number') return Object.is(a, b) || (!signedZero && a === b);
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => same(x, b[i]));
  }
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const ka = Object.keys(a).sort();
    const kb = Object.keys(b).sort();
    return same(ka, kb) && ka.every((k) => same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
  }
  return a === b;
}

/** Float32 arrays equal bit for bit (NaN payloads and the sign of zero included). */
export function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** First differing index of two float arrays, with both values and bit patterns, for assertion messages. */
export function firstBitDifference(a: Float32Array, b: Float32Array): string {
  if (a.length !== b.length) return `lengths ${a.length} and ${b.length}`;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) {
    if (x[i] !== y[i]) return `index ${i}: ${a[i]} (0x${x[i]!.toString(16)}) vs ${b[i]} (0x${y[i]!.toString(16)})`;
  }
  return 'none';
}

/** Runs fn; returns the thrown error, or undefined. Asserts the error is a FedError with a known code. */
export function typedRefusal(fn: () => unknown): { ok: true; value: unknown } | { ok: false; code: string } {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    if (!isFedError(e)) throw new Error(`non-FedError escaped: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`, { cause: e });
    return { ok: false, code: e.code };
  }
}

/** Collects process-level crashes (uncaught exceptions, unhandled rejections) while `fn` runs. */
export async function catchingCrashes<T>(fn: () => Promise<T>): Promise<{ value: T; crashes: unknown[] }> {
  const crashes: unknown[] = [];
  const onError = (e: unknown): void => {
    crashes.push(e);
  };
  process.on('uncaughtException', onError);
  process.on('unhandledRejection', onError);
  try {
    const value = await fn();
    // let any deferred throw (xstate reports unhandled actor errors on a timer) surface
    await new Promise((r) => setTimeout(r, 5));
    return { value, crashes };
  } finally {
    process.off('uncaughtException', onError);
    process.off('unhandledRejection', onError);
  }
}

export { fc };
