// Binary model format, "FSM1". Models are stored and moved as bytes and named by the hash of those
// bytes, so the encoding is canonical: one Params value has exactly one encoding.
//
//   offset 0   4 bytes   magic "FSM1"
//   offset 4   u32 LE    header length h in bytes
//   offset 8   h bytes   UTF-8 JSON {"layout":[{"name":string,"shape":number[]},...]}
//              0-3 bytes zero padding, so the data starts at a multiple of 4 from the start
//              4*k bytes k float32 values, little-endian, k = number of parameters in the layout
//
// Refusals: anything structurally wrong (short input, magic, header size or JSON, layout entries,
// a header not byte-identical to what encodeModel writes, non-zero padding) is 'malformed'; a well-formed header whose layout does not account for exactly
// the data that follows is 'wrong-shape'. Nothing else escapes decodeModel.
//
// Float bits are copied as bytes, never read and rewritten as numbers, so NaN payloads survive.
import { FedError } from '../errors.ts';
import { layoutSize, type Layout, type Params } from './params.ts';

const MAGIC = [0x46, 0x53, 0x4d, 0x31] as const; // "FSM1"
const PREFIX_BYTES = 8;

/** Headers above this size are refused before parsing; ~1 MiB describes well over 10,000 tensors. */
export const MAX_HEADER_BYTES = 1 << 20;

const hostIsLittleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

const align4 = (n: number): number => (n + 3) & ~3;

function checkLayout(layout: unknown): Layout {
  if (!Array.isArray(layout)) throw new FedError('malformed', 'model layout must be an array');
  return layout.map((entry: unknown, i) => {
    const t = entry as { name?: unknown; shape?: unknown } | null;
    if (typeof t !== 'object' || t === null || typeof t.name !== 'string' || !Array.isArray(t.shape)) {
      throw new FedError('malformed', `layout entry ${i} must be {name: string, shape: number[]}`);
    }
    const shape = t.shape as unknown[];
    for (const d of shape) {
      if (typeof d !== 'number' || !Number.isInteger(d) || d < 0 || d > 2 ** 31) {
        throw new FedError('malformed', `layout entry ${i} (${t.name}) has an invalid dimension ${String(d)}`);
      }
    }
    return { name: t.name, shape: shape as number[] };
  });
}

function headerJson(layout: Layout): string {
  return JSON.stringify({ layout: layout.map((t) => ({ name: t.name, shape: t.shape })) });
}

/** Reverses each 4-byte group in place: float32 byte order on a big-endian host. */
function swap32(bytes: Uint8Array): void {
  for (let i = 0; i + 3 < bytes.length; i += 4) {
    const a = bytes[i]!;
    const b = bytes[i + 1]!;
    bytes[i] = bytes[i + 3]!;
    bytes[i + 1] = bytes[i + 2]!;
    bytes[i + 2] = b;
    bytes[i + 3] = a;
  }
}

export function encodeModel(p: Params): Uint8Array {
  const size = layoutSize(checkLayout(p.layout));
  if (!(p.data instanceof Float32Array)) throw new FedError('malformed', 'model data must be a Float32Array');
  if (p.data.length !== size) {
    throw new FedError('wrong-shape', `layout holds ${size} parameters, data has ${p.data.length}`, { expected: size, actual: p.data.length });
  }
  return encodeModelFrom(p.layout, (data) => data.set(p.data));
}

/**
 * Encodes a model whose parameters `write` puts straight into the encoded bytes' data section (a
 * Float32Array of the layout's size, zeroed): an aggregate is written once, where it will be stored,
 * instead of into an array of its own that is then copied.
 */
export function encodeModelFrom(layoutIn: Layout, write: (data: Float32Array) => void): Uint8Array {
  // Rebuilding the layout drops any extra properties, which would otherwise change the hash.
  const layout = checkLayout(layoutIn);
  const size = layoutSize(layout);
  const header = new TextEncoder().encode(headerJson(layout));
  if (header.length > MAX_HEADER_BYTES) throw new FedError('oversized', `model header of ${header.length} bytes exceeds ${MAX_HEADER_BYTES}`);
  const dataOffset = align4(PREFIX_BYTES + header.length);
  const out = new Uint8Array(dataOffset + size * 4);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(4, header.length, true);
  out.set(header, PREFIX_BYTES);
  write(new Float32Array(out.buffer, dataOffset, size));
  if (!hostIsLittleEndian) swap32(out.subarray(dataOffset));
  return out;
}

export interface DecodeOptions {
  /**
   * false (default): when the data section is 4-byte aligned in memory, the returned Float32Array is
   * a view on `bytes` (no copy; a 1.6M-parameter model is 6.4 MB). The params then share memory with
   * `bytes`: whoever decodes this way must not reuse or overwrite `bytes` afterwards, and writing to
   * the params changes `bytes` (and so their content hash). Unaligned input is always copied.
   * true: the data is always copied into memory of its own.
   */
  copy?: boolean;
}

/** Decodes an FSM1 blob. See DecodeOptions for when the result shares memory with `bytes`. */
export function decodeModel(bytes: Uint8Array, options: DecodeOptions = {}): Params {
  if (!(bytes instanceof Uint8Array)) throw new FedError('malformed', 'model bytes must be a Uint8Array');
  if (bytes.length < PREFIX_BYTES) throw new FedError('malformed', `model blob of ${bytes.length} bytes is shorter than its ${PREFIX_BYTES}-byte prefix`);
  if (MAGIC.some((b, i) => bytes[i] !== b)) throw new FedError('malformed', 'not a model blob (bad magic, expected "FSM1")');
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(4, true);
  if (headerLength > MAX_HEADER_BYTES) throw new FedError('malformed', `model header length ${headerLength} exceeds ${MAX_HEADER_BYTES}`);
  const dataOffset = align4(PREFIX_BYTES + headerLength);
  if (bytes.length < dataOffset) {
    throw new FedError('malformed', `model blob of ${bytes.length} bytes is truncated inside its ${headerLength}-byte header`);
  }
  for (let i = PREFIX_BYTES + headerLength; i < dataOffset; i++) {
    if (bytes[i] !== 0) throw new FedError('malformed', 'model header padding must be zero');
  }
  let headerText: string;
  let header: unknown;
  try {
    headerText = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + headerLength));
    header = JSON.parse(headerText);
  } catch {
    throw new FedError('malformed', 'model header is not valid UTF-8 JSON');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new FedError('malformed', 'model header must be a JSON object');
  const layout = checkLayout((header as { layout?: unknown }).layout);
  // Only the canonical header is accepted, so decoding and re-encoding reproduces the blob (and its hash).
  if (headerText !== headerJson(layout)) throw new FedError('malformed', 'model header is not in canonical form');
  const expected = layoutSize(layout);
  const dataBytes = bytes.length - dataOffset;
  if (dataBytes !== expected * 4) {
    throw new FedError('wrong-shape', `layout holds ${expected} float32 values (${expected * 4} bytes), blob carries ${dataBytes} data bytes`, {
      expected: expected * 4,
      actual: dataBytes,
    });
  }
  const section = bytes.subarray(dataOffset);
  if (!hostIsLittleEndian) {
    const copy = section.slice();
    swap32(copy);
    return { layout, data: new Float32Array(copy.buffer) };
  }
  const aligned = (bytes.byteOffset + dataOffset) % 4 === 0;
  if (aligned && !options.copy) return { layout, data: new Float32Array(bytes.buffer, bytes.byteOffset + dataOffset, expected) };
  // slice() copies into a fresh, hence aligned, ArrayBuffer
  return { layout, data: new Float32Array(section.slice().buffer, 0, expected) };
}
