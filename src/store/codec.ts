// Byte encodings shared by every backend, so a record written by one store reads back identically
// from another. JSON is checked before it is written: JSON.stringify silently turns NaN into null,
// drops undefined array slots and flattens class instances, and the store would rather refuse a
// record at write time than hand back something different from what was stored.
import { FedError } from '../errors.ts';

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder('utf-8', { fatal: true });

type Visit = (value: unknown, path: string) => unknown;

function isPlainObject(value: object): boolean {
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Walks a value as JSON would see it and rebuilds it. `leaf` gets a chance to replace values JSON
 * cannot hold (typed arrays in state); anything else JSON would alter is refused with its path.
 */
function walk(value: unknown, path: string, what: string, seen: Set<object>, leaf?: Visit, sortKeys = false): unknown {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new FedError('malformed', `${what}: ${path || 'value'} is ${value}, which JSON cannot hold`);
    return value;
  }
  if (typeof value !== 'object') {
    throw new FedError('malformed', `${what}: ${path || 'value'} is a ${typeof value}, which JSON cannot hold`);
  }
  if (leaf && ArrayBuffer.isView(value)) return leaf(value, path);
  if (ArrayBuffer.isView(value)) {
    throw new FedError('malformed', `${what}: ${path || 'value'} is a typed array; store binary state with putState`);
  }
  if (seen.has(value)) throw new FedError('malformed', `${what}: ${path || 'value'} is a cycle`);
  seen.add(value);
  try {
    if (Array.isArray(value)) {
      return value.map((item: unknown, i) => {
        if (item === undefined) throw new FedError('malformed', `${what}: ${path}[${i}] is undefined`);
        return walk(item, `${path}[${i}]`, what, seen, leaf, sortKeys);
      });
    }
    if (!isPlainObject(value)) {
      const name = (value as { constructor?: { name?: string } }).constructor?.name ?? 'object';
      throw new FedError('malformed', `${what}: ${path || 'value'} is a ${name}, not a plain object`);
    }
    const out: Record<string, unknown> = {};
    const keys = Object.keys(value);
    if (sortKeys) keys.sort();
    for (const key of keys) {
      const item = (value as Record<string, unknown>)[key];
      // JSON drops undefined properties; XState snapshots carry some (error, output), so allow it.
      if (item === undefined) continue;
      out[key] = walk(item, `${path}.${key}`, what, seen, leaf, sortKeys);
    }
    return out;
  } finally {
    seen.delete(value);
  }
}

/** JSON with keys sorted at every level and no whitespace: the input to entry hashes. */
export function canonicalJson(value: unknown, what = 'value'): string {
  return JSON.stringify(walk(value, '', what, new Set(), undefined, true));
}

export function encodeJson(value: unknown, what: string): Uint8Array {
  return utf8.encode(JSON.stringify(walk(value, '', what, new Set())));
}

export function decodeJson(bytes: Uint8Array, what: string): unknown {
  try {
    return JSON.parse(fromUtf8.decode(bytes)) as unknown;
  } catch (e) {
    throw new FedError('malformed', `${what} does not decode as JSON`, { cause: String(e) });
  }
}

// --- State: JSON plus typed arrays, bit-exact ------------------------------------------------------
//
// Layout: "FST1" | u32le header length | header JSON | zero padding to 8 | segments, each 8-aligned.
// The header is { v: value with every typed array replaced by { [marker]: i }, s: [[kind, offset,
// byteLength], ...] } with offsets relative to the start of the segment area. Typed array bytes are
// copied as they sit in memory (little-endian on every platform Node ships for), so NaN payloads and
// -0 survive exactly, which a JSON number array would not guarantee.

const magic = [0x46, 0x53, 0x54, 0x31]; // "FST1"
const marker = '\u0000typed';

const kinds = {
  f32: Float32Array,
  f64: Float64Array,
  i32: Int32Array,
  u8: Uint8Array,
} as const;
type Kind = keyof typeof kinds;

function kindOf(view: ArrayBufferView): Kind | undefined {
  if (view instanceof Float32Array) return 'f32';
  if (view instanceof Float64Array) return 'f64';
  if (view instanceof Int32Array) return 'i32';
  // Buffer is a Uint8Array subclass; it comes back as a plain Uint8Array.
  if (view instanceof Uint8Array) return 'u8';
  return undefined;
}

const align8 = (n: number): number => (n + 7) & ~7;

export function encodeState(value: unknown): Uint8Array {
  const views: ArrayBufferView[] = [];
  const segments: Array<[Kind, number, number]> = [];
  let offset = 0;
  const leaf: Visit = (v, path) => {
    const view = v as ArrayBufferView;
    const kind = kindOf(view);
    if (!kind) throw new FedError('malformed', `state: ${path || 'value'} is a ${view.constructor.name}; use Float32Array, Float64Array, Int32Array or Uint8Array`);
    segments.push([kind, offset, view.byteLength]);
    views.push(view);
    offset = align8(offset + view.byteLength);
    return { [marker]: views.length - 1 };
  };
  const tree = walk(value, '', 'state', new Set(), leaf);
  if (value !== null && typeof value === 'object') assertNoMarker(value, '');
  const header = utf8.encode(JSON.stringify({ v: tree, s: segments }));
  const dataStart = align8(8 + header.length);
  const out = new Uint8Array(dataStart + offset);
  out.set(magic, 0);
  new DataView(out.buffer).setUint32(4, header.length, true);
  out.set(header, 8);
  views.forEach((view, i) => {
    const seg = segments[i];
    if (seg) out.set(new Uint8Array(view.buffer, view.byteOffset, view.byteLength), dataStart + seg[1]);
  });
  return out;
}

function assertNoMarker(value: object, path: string): void {
  if (ArrayBuffer.isView(value)) return;
  for (const [key, item] of Object.entries(value)) {
    if (key === marker) throw new FedError('malformed', `state: ${path || 'value'} uses the reserved key "\\u0000typed"`);
    if (item !== null && typeof item === 'object') assertNoMarker(item as object, `${path}.${key}`);
  }
}

export function decodeState(bytes: Uint8Array): unknown {
  const bad = (why: string): FedError => new FedError('malformed', `state record is corrupt: ${why}`);
  if (bytes.length < 8 || magic.some((b, i) => bytes[i] !== b)) throw bad('bad magic');
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(4, true);
  if (8 + headerLength > bytes.length) throw bad('header overruns record');
  const header = decodeJson(bytes.subarray(8, 8 + headerLength), 'state header') as { v?: unknown; s?: unknown };
  if (!Array.isArray(header.s)) throw bad('no segment table');
  const dataStart = align8(8 + headerLength);
  const arrays = header.s.map((seg: unknown) => {
    if (!Array.isArray(seg) || seg.length !== 3) throw bad('bad segment');
    const [kind, off, len] = seg as [unknown, unknown, unknown];
    if (typeof kind !== 'string' || !(kind in kinds) || typeof off !== 'number' || typeof len !== 'number') throw bad('bad segment');
    const ctor = kinds[kind as Kind];
    const start = dataStart + off;
    if (start + len > bytes.length || len % ctor.BYTES_PER_ELEMENT !== 0) throw bad('segment overruns record');
    // Copy into a fresh buffer: the caller owns the result and the source may be unaligned.
    const copy = new Uint8Array(bytes.subarray(start, start + len));
    return new ctor(copy.buffer, 0, len / ctor.BYTES_PER_ELEMENT);
  });
  const revive = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(revive);
    if (v !== null && typeof v === 'object') {
      const obj = v as Record<string, unknown>;
      if (marker in obj) {
        const i = obj[marker];
        const arr = typeof i === 'number' ? arrays[i] : undefined;
        if (!arr) throw bad('dangling typed array reference');
        return arr;
      }
      const out: Record<string, unknown> = {};
      for (const [k, item] of Object.entries(obj)) out[k] = revive(item);
      return out;
    }
    return v;
  };
  return revive(header.v);
}
