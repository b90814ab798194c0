// Copying to and from a SharedArrayBuffer at full speed.
//
// V8 copies shared memory with relaxed atomic loads and stores, and byte by byte when source and
// destination are not equally aligned to 8 bytes: measured 35 ms per 128 MiB against 5.5 for the same
// copy into ordinary memory (a blob chunk's data sits 19 bytes into its frame), and 4.5 against 0.7-1.7
// ms per 16 MiB for a Float32Array 4 bytes off. Reading out of shared memory has the same slow path
// (an aggregate copied from the FedAvg kernel into an encoded model's data section, 4 bytes off: 40 MB
// in ~80 ms). Such a copy goes through a scratch block in ordinary memory placed at the shared side's
// alignment: two fast copies (9 ms per 128 MiB). The block is at most 1 MiB, and stays in cache
// between its two copies.

const BLOCK = 1024 * 1024;
let scratch = new Uint8Array(0);

/** dst.set(src, at), for any dst and src, without the slow path above. */
export function copyInto(dst: Uint8Array, src: Uint8Array, at: number): void {
  const dstShared = dst.buffer instanceof SharedArrayBuffer;
  const srcShared = src.buffer instanceof SharedArrayBuffer;
  // plain to plain is always fast; shared to shared is rare here and left to V8
  if (dstShared === srcShared || (src.byteOffset - dst.byteOffset - at) % 8 === 0 || src.byteLength < 4096) {
    dst.set(src, at);
    return;
  }
  // blocks advance by a multiple of 8, so this alignment holds for every block
  const k = (dstShared ? dst.byteOffset + at : src.byteOffset) % 8;
  const need = Math.min(BLOCK, src.byteLength) + 8;
  if (scratch.byteLength < need) scratch = new Uint8Array(need);
  for (let o = 0; o < src.byteLength; o += BLOCK) {
    const part = src.subarray(o, Math.min(src.byteLength, o + BLOCK));
    const staged = scratch.subarray(k, k + part.byteLength);
    staged.set(part);
    dst.set(staged, at + o);
  }
}

/** The bytes of a typed array (a view, no copy). */
export const bytesOf = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
