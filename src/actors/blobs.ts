// The blobs a node holds and serves to its peers, named by content hash. The in-memory store is
// what clients and combiners use; the reducer backs its store with persistence (src/store).
import { contentHash, verifyHash } from '../model/hash.ts';
import type { BlobSource } from '../transport/types.ts';

export interface BlobStore extends BlobSource {
  put(bytes: Uint8Array): string | Promise<string>;
  /**
   * Stores bytes the caller got through Link.fetchBlob(hash) (which resolves only once their sha256
   * matched), without hashing them a second time (a 200 MB model: ~100 ms). Optional: a store without it
   * is given put().
   */
  adopt?(hash: string, bytes: Uint8Array): void;
  delete(hash: string): void | Promise<void>;
}

export class MemoryBlobs implements BlobStore {
  private readonly map = new Map<string, Uint8Array>();

  get(hash: string): Uint8Array | undefined {
    return this.map.get(hash);
  }

  put(bytes: Uint8Array): string {
    const hash = contentHash(bytes);
    this.map.set(hash, bytes);
    return hash;
  }

  adopt(hash: string, bytes: Uint8Array): void {
    this.map.set(hash, bytes);
  }

  /** Stores bytes under a hash the caller already knows, refusing bytes that do not match it. */
  putVerified(hash: string, bytes: Uint8Array): void {
    verifyHash(bytes, hash);
    this.map.set(hash, bytes);
  }

  delete(hash: string): void {
    this.map.delete(hash);
  }

  get size(): number {
    return this.map.size;
  }

  get bytes(): number {
    let n = 0;
    for (const b of this.map.values()) n += b.byteLength;
    return n;
  }
}
