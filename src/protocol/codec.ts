// The wire codec: Frame <-> protobuf bytes, with the same validation applied to frames that never
// touch the wire (the in-process transport), so both paths accept and refuse exactly the same input.
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { FedError, errorMessage } from '../errors.ts';
import { envelopeFieldOf, type Envelope, type Frame, type Message, type MessageType } from './generated.ts';

const protoFile = fileURLToPath(new URL('../../proto/fedstate.proto', import.meta.url));
const root = protobuf.loadSync(protoFile);
root.resolveAll();

export const FrameType = root.lookupType('fedstate.v1.Frame');
export const EnvelopeType = root.lookupType('fedstate.v1.Envelope');

/** Default upper bound for one encoded frame; a model chunk is 1 MiB, control frames are tiny. */
export const DEFAULT_MAX_FRAME_BYTES = 8 * 1024 * 1024;

const typeOfField = new Map<string, MessageType>(
  Object.entries(envelopeFieldOf).map(([type, field]) => [field, type as MessageType]),
);

const toObjectOptions: protobuf.IConversionOptions = {
  defaults: true,
  arrays: true,
  objects: true,
  longs: Number,
  enums: String,
  bytes: Uint8Array as unknown as protobuf.IConversionOptions['bytes'],
  oneofs: true,
};

/** Fills absent sub-messages with their defaults, so decoded messages always have their full shape. */
function fillDefaults(type: protobuf.Type, obj: Record<string, unknown>): Record<string, unknown> {
  for (const field of type.fieldsArray) {
    if (field.partOf || field.map || field.repeated) continue;
    const sub = field.resolvedType;
    if (!(sub instanceof protobuf.Type)) continue;
    const value = obj[field.name];
    obj[field.name] = fillDefaults(sub, (value ?? sub.toObject(sub.create(), toObjectOptions)) as Record<string, unknown>);
  }
  return obj;
}

/** The Envelope field of a message type; own keys only, so "toString" or "__proto__" are not message types. */
function fieldOf(type: unknown): string {
  if (typeof type !== 'string' || !Object.hasOwn(envelopeFieldOf, type)) {
    throw new FedError('unknown-message', `no envelope field for message type ${String(type)}`);
  }
  return envelopeFieldOf[type as MessageType];
}

const UINT32_MAX = 0xffff_ffff;
/** Matches an unpaired surrogate, which UTF-8 cannot carry (the wire would turn it into U+FFFD). */
export const loneSurrogate = /\p{Cs}/u;
const INT32_MIN = -0x8000_0000;
const INT32_MAX = 0x7fff_ffff;

/** Why `value` is not a valid `scalar` (a proto scalar type name), or null. */
function scalarProblem(scalar: string, value: unknown): string | null {
  switch (scalar) {
    case 'string':
      if (typeof value !== 'string') return 'string expected';
      // UTF-8 cannot carry an unpaired surrogate: the wire would turn it into U+FFFD
      return loneSurrogate.test(value) ? 'string with an unpaired surrogate' : null;
    case 'bool':
      return typeof value === 'boolean' ? null : 'boolean expected';
    case 'double':
    case 'float':
      return typeof value === 'number' ? null : 'number expected';
    case 'bytes':
      return value instanceof Uint8Array ? null : 'Uint8Array expected';
    case 'uint32':
      return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= UINT32_MAX ? null : `uint32 expected, got ${String(value)}`;
    case 'int32':
      return typeof value === 'number' && Number.isInteger(value) && value >= INT32_MIN && value <= INT32_MAX ? null : `int32 expected, got ${String(value)}`;
    default:
      return null; // types the contract does not use are left to protobufjs' verify
  }
}

/**
 * What protobufjs' verify does not check: integers in the range of their wire type (the encoder would
 * silently wrap -1 to 4294967295), and, with `complete`, that every field is present, because the
 * decoder always yields the full shape and a message built in memory must look the same.
 */
function shapeProblem(type: protobuf.Type, obj: unknown, path: string, complete: boolean): string | null {
  const problem = messageProblem(type, obj, complete);
  return problem === null ? null : path + problem;
}

// The checks below run on every message sent, so they build no closures and no path strings while the
// input is valid: each returns the rest of its problem line after the path to the value it checked
// (": …", ".field…: …", "[3]…: …"), and its caller prepends its part of the path only then.

function messageProblem(type: protobuf.Type, obj: unknown, complete: boolean): string | null {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) return ': object expected';
  const o = obj as Record<string, unknown>;
  for (const field of type.fieldsArray) {
    if (field.partOf) continue; // oneof members are checked by the caller
    const value = o[field.name];
    if (value === undefined || value === null) {
      if (complete) return `.${field.name}: missing`;
      continue;
    }
    const problem = fieldProblem(field, value, complete);
    if (problem !== null) return `.${field.name}${problem}`;
  }
  return null;
}

function fieldProblem(field: protobuf.Field, value: unknown, complete: boolean): string | null {
  if (field.map) {
    if (typeof value !== 'object' || Array.isArray(value)) return ': object expected';
    const entries = value as Record<string, unknown>;
    const keyType = (field as unknown as protobuf.MapField).keyType;
    for (const k of Object.keys(entries)) {
      const keyProblem = scalarProblem(keyType, k);
      if (keyProblem !== null) return ` key: ${keyProblem}`;
      const problem = elementProblem(field, entries[k], complete);
      if (problem !== null) return `[${JSON.stringify(k)}]${problem}`;
    }
    return null;
  }
  if (field.repeated) {
    if (!Array.isArray(value)) return ': array expected';
    for (let i = 0; i < value.length; i++) {
      const problem = elementProblem(field, value[i], complete);
      if (problem !== null) return `[${i}]${problem}`;
    }
    return null;
  }
  return elementProblem(field, value, complete);
}

/** One value of `field`: the whole value, one element of a repeated field or one value of a map. */
function elementProblem(field: protobuf.Field, value: unknown, complete: boolean): string | null {
  const sub = field.resolvedType;
  if (sub instanceof protobuf.Type) return messageProblem(sub, value, complete);
  const problem = scalarProblem(field.type, value);
  return problem === null ? null : `: ${problem}`;
}

function checkBody(env: Envelope): void {
  const { type, fields } = envelopeParts(env);
  checkFields(type, fields);
}

function checkFields(type: MessageType, fields: Record<string, unknown>): void {
  const sub = EnvelopeType.fields[fieldOf(type)]?.resolvedType;
  if (!(sub instanceof protobuf.Type)) throw new FedError('unknown-message', `no message type for ${String(type)}`);
  const problem = shapeProblem(sub, fields, type, true);
  if (problem) throw new FedError('malformed', `invalid ${type}: ${problem}`);
}

/** The body's type, a copy of its fields, and the protobuf object holding that copy (shared, not copied again). */
function envelopeParts(env: Envelope): { type: MessageType; fields: Record<string, unknown>; proto: Record<string, unknown> } {
  const { type, ...fields } = env.body;
  return { type, fields, proto: { from: env.from, to: env.to, [fieldOf(type)]: fields } };
}

function envelopeToProto(env: Envelope): Record<string, unknown> {
  return envelopeParts(env).proto;
}

const frameKinds = new Set(FrameType.oneofs.kind?.oneof ?? []);

function frameToProto(frame: Frame): Record<string, unknown> {
  if (!frame || typeof frame !== 'object' || !frameKinds.has(frame.kind)) {
    throw new FedError('malformed', `unknown frame kind ${String((frame as { kind?: unknown } | null)?.kind)}`);
  }
  if (frame.kind === 'envelope') return { envelope: envelopeToProto(frame.envelope) };
  const { kind, ...rest } = frame as { kind: string } & Record<string, unknown>;
  return { [kind]: rest[kind] };
}

function envelopeFromProto(obj: Record<string, unknown>): Envelope {
  const field = obj.body;
  if (typeof field !== 'string') throw new FedError('malformed', 'envelope carries no message');
  const type = typeOfField.get(field);
  if (!type) throw new FedError('unknown-message', `unknown envelope field ${field}`);
  const sub = EnvelopeType.fields[field]?.resolvedType;
  const inner = obj[field] as Record<string, unknown>;
  if (sub instanceof protobuf.Type) fillDefaults(sub, inner);
  return { from: String(obj.from), to: String(obj.to), body: { type, ...inner } as Message };
}

/** Checks an envelope built in memory exactly as the decoder would check it off the wire. */
export function validateEnvelope(env: Envelope): Envelope {
  if (!env || typeof env !== 'object' || !env.body || typeof env.body !== 'object') {
    throw new FedError('malformed', 'envelope must be an object with a body');
  }
  // one copy of the body's fields serves both checks
  const { type, fields, proto } = envelopeParts(env);
  const problem = EnvelopeType.verify(proto);
  if (problem) throw new FedError('malformed', `invalid ${env.body.type}: ${problem}`);
  checkFields(type, fields);
  checkAddresses(env);
  return env;
}

const addressPattern = /^[a-z]+\/[A-Za-z0-9._:-]{1,128}$/;

function checkAddresses(env: Envelope): void {
  if (typeof env.from !== 'string' || !addressPattern.test(env.from)) throw new FedError('malformed', `bad sender address "${env.from}"`);
  if (typeof env.to !== 'string' || !addressPattern.test(env.to)) throw new FedError('malformed', `bad recipient address "${env.to}"`);
}

export function encodeFrame(frame: Frame): Uint8Array {
  const obj = frameToProto(frame);
  const problem = FrameType.verify(obj);
  if (problem) throw new FedError('malformed', `cannot encode ${frame.kind}: ${problem}`);
  if (frame.kind === 'envelope') {
    checkBody(frame.envelope);
    checkAddresses(frame.envelope);
  } else {
    const sub = FrameType.fields[frame.kind]?.resolvedType;
    const inner = (frame as unknown as Record<string, unknown>)[frame.kind];
    const shape = sub instanceof protobuf.Type ? shapeProblem(sub, inner, frame.kind, false) : null;
    if (shape) throw new FedError('malformed', `cannot encode ${frame.kind}: ${shape}`);
  }
  return FrameType.encode(FrameType.fromObject(obj)).finish();
}

export function decodeFrame(bytes: Uint8Array, maxBytes = DEFAULT_MAX_FRAME_BYTES): Frame {
  if (bytes.byteLength > maxBytes) {
    throw new FedError('oversized', `frame of ${bytes.byteLength} bytes exceeds the limit of ${maxBytes}`);
  }
  let obj: Record<string, unknown>;
  try {
    obj = FrameType.toObject(FrameType.decode(bytes), toObjectOptions) as Record<string, unknown>;
  } catch (e) {
    throw new FedError('malformed', `undecodable frame: ${errorMessage(e)}`);
  }
  const kind = obj.kind;
  if (typeof kind !== 'string') throw new FedError('malformed', 'frame carries nothing');
  const inner = obj[kind] as Record<string, unknown>;
  if (kind === 'envelope') {
    const envelope = envelopeFromProto(inner);
    checkAddresses(envelope);
    return { kind, envelope };
  }
  const sub = FrameType.fields[kind]?.resolvedType;
  if (sub instanceof protobuf.Type) fillDefaults(sub, inner);
  return { kind, [kind]: inner } as unknown as Frame;
}

export const encodeEnvelope = (envelope: Envelope): Uint8Array => encodeFrame({ kind: 'envelope', envelope });

export function decodeEnvelope(bytes: Uint8Array, maxBytes?: number): Envelope {
  const frame = decodeFrame(bytes, maxBytes);
  if (frame.kind !== 'envelope') throw new FedError('malformed', `expected an envelope frame, got ${frame.kind}`);
  return frame.envelope;
}

/** A message with every field at its proto default, overridden by `fields`. */
export function makeMessage<T extends MessageType>(
  type: T,
  fields: Partial<Omit<Extract<Message, { type: T }>, 'type'>> = {},
): Extract<Message, { type: T }> {
  const field = envelopeFieldOf[type];
  const sub = EnvelopeType.fields[field]?.resolvedType as protobuf.Type;
  const defaults = fillDefaults(sub, sub.toObject(sub.create(), toObjectOptions) as Record<string, unknown>);
  return { type, ...defaults, ...fields } as Extract<Message, { type: T }>;
}
