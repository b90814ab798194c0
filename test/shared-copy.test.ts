// copyInto must be exactly dst.set(src, at), whatever the alignment, size or kind of memory.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { copyInto } from '../src/util/shared-copy.ts';

test('copyInto equals dst.set(src, at): shared and plain memory on either side, any alignment, blocks of 1 MiB and their edges', () => {
  const MiB = 1024 * 1024;
  fc.assert(
    fc.property(
      fc.boolean(),
      fc.boolean(),
      fc.constantFrom(0, 100, 4095, 4096, 70_000, MiB - 3, MiB, 2 * MiB + 17),
      fc.nat(15),
      fc.nat(15),
      fc.nat(31),
      (shared, srcShared, len, srcOff, dstOff, at) => {
        const srcAll = new Uint8Array(srcShared ? new SharedArrayBuffer(len + srcOff) : new ArrayBuffer(len + srcOff));
        srcAll.forEach((_, i) => (srcAll[i] = (i * 31 + 7) & 0xff));
        const src = srcAll.subarray(srcOff);
        const size = dstOff + at + len + 5;
        const dst = new Uint8Array(shared ? new SharedArrayBuffer(size) : new ArrayBuffer(size), dstOff);
        const want = new Uint8Array(dst.byteLength).fill(9);
        dst.fill(9);
        want.set(src, at);
        copyInto(dst, src, at);
        assert.ok(Buffer.from(dst).equals(Buffer.from(want)), `len ${len} src+${srcOff}${srcShared ? ' shared' : ''} dst+${dstOff}${shared ? ' shared' : ''} at ${at}`);
      },
    ),
    { numRuns: 150 },
  );
});

test.run();
