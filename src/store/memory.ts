// In-memory backend: the default for tests and in-process runs. Values are copied in and out, so a
// caller mutating a Float32Array or blob after put (or after get) never changes what is stored, the
// same isolation a disk backend gives for free.
import { KvStore, type Kv, type KvOp } from './kv.ts';
import type { Store } from './types.ts';

export class MemoryKv implements Kv {
  private readonly map = new Map<string, Uint8Array>();
  /** Kept sorted so range() is a binary search plus a slice instead of sorting every call. */
  private readonly sorted: string[] = [];

  private lowerBound(key: string): number {
    let lo = 0;
    let hi = this.sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.sorted[mid] ?? '') < key) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const value = this.map.get(key);
    return value && new Uint8Array(value);
  }

  async has(key: string): Promise<boolean> {
    return this.map.has(key);
  }

  async batch(ops: KvOp[]): Promise<void> {
    // Applied synchronously in one turn, so no reader can observe half a batch.
    for (const op of ops) {
      const exists = this.map.has(op.key);
      if (op.type === 'put') {
        if (!exists) this.sorted.splice(this.lowerBound(op.key), 0, op.key);
        // new Uint8Array(x) copies; Buffer#slice would alias the caller's memory.
        this.map.set(op.key, new Uint8Array(op.value));
      } else if (exists) {
        this.sorted.splice(this.lowerBound(op.key), 1);
        this.map.delete(op.key);
      }
    }
  }

  async range(options: { gte: string; lt: string; limit?: number }): Promise<Array<[string, Uint8Array]>> {
    const out: Array<[string, Uint8Array]> = [];
    const limit = options.limit ?? Infinity;
    for (let i = this.lowerBound(options.gte); i < this.sorted.length && out.length < limit; i++) {
      const key = this.sorted[i];
      if (key === undefined || key >= options.lt) break;
      const value = this.map.get(key);
      if (value) out.push([key, new Uint8Array(value)]);
    }
    return out;
  }

  async close(): Promise<void> {
    // The data stays in this object; a later store can be reopened over the same MemoryKv.
  }
}

/** A memory store; pass the same MemoryKv to reopen over the same data. */
export function createMemoryStore(kv: MemoryKv = new MemoryKv()): Store {
  return new KvStore('memory', kv);
}
