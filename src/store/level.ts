// `level` backend (classic-level / LevelDB on Node). One database, namespaces as key prefixes (see
// the layout in kv.ts), keys utf8 and values raw bytes ('view'), so blobs and typed-array state are
// stored without base64 or JSON overhead.
//
// Durability: LevelDB appends every write to its log before resolving, so anything that resolved
// survives the process being killed (SIGKILL) even without sync; the OS holds the data. Trail appends
// additionally use sync: true (fsync) so they also survive an OS crash or power loss, because the trail
// is the commit record a restarted reducer resumes from. Other writes are unsynced for speed; a synced
// trail append flushes the whole log up to it, so a model blob written before its trail entry is
// durable once that entry is.
import { Level } from 'level';
import { FedError } from '../errors.ts';
import { KvStore, type Kv, type KvOp } from './kv.ts';
import type { Store } from './types.ts';

class LevelKv implements Kv {
  constructor(private readonly db: Level<string, Uint8Array>) {}

  async get(key: string): Promise<Uint8Array | undefined> {
    const value = await this.db.get(key);
    if (value === undefined) return undefined;
    // Small values may be slices of a shared pool; hand out memory the caller alone owns.
    if (value.byteOffset !== 0 || value.byteLength !== value.buffer.byteLength) return new Uint8Array(value);
    return new Uint8Array(value.buffer, 0, value.byteLength);
  }

  has(key: string): Promise<boolean> {
    return this.db.has(key);
  }

  batch(ops: KvOp[], options: { sync?: boolean } = {}): Promise<void> {
    return this.db.batch(
      ops.map((op) => (op.type === 'put' ? { type: 'put' as const, key: op.key, value: op.value } : { type: 'del' as const, key: op.key })),
      { sync: options.sync ?? false },
    );
  }

  async range(options: { gte: string; lt: string; limit?: number }): Promise<Array<[string, Uint8Array]>> {
    const rows = await this.db.iterator({ gte: options.gte, lt: options.lt, limit: options.limit ?? -1 }).all();
    return rows.map(([k, v]) => [k, new Uint8Array(v.buffer, v.byteOffset, v.byteLength)]);
  }

  close(): Promise<void> {
    return this.db.close();
  }
}

export interface LevelStoreOptions {
  /** Default true. With false, a missing directory is FedError('not-found') instead of a new store. */
  createIfMissing?: boolean;
}

export async function openLevelStore(dir: string, options: LevelStoreOptions = {}): Promise<Store> {
  const db = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' });
  try {
    await db.open({ createIfMissing: options.createIfMissing ?? true });
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    if (cause?.code === 'LEVEL_LOCKED') {
      throw new FedError('conflict', `store ${dir} is open in another process (LevelDB lock)`, { dir });
    }
    if (/does not exist/.test(cause?.message ?? '')) throw new FedError('not-found', `no store at ${dir}`, { dir });
    throw new FedError('internal', `cannot open store ${dir}: ${cause?.message ?? String(e)}`, { dir });
  }
  return new KvStore('level', new LevelKv(db));
}
