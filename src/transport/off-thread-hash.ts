// sha256 of large incoming blobs on a worker thread, while the link goes on receiving.
//
// Verifying a model on arrival is the one per-byte cost a link adds over the bare library: sha256 runs
// at ~1.5 GB/s on this hardware (SHA-NI), about as fast as a loopback socket delivers, so hashing on the
// receiving thread nearly halves a ws transfer. Here the link reassembles the blob into a
// SharedArrayBuffer (the copy it makes anyway) and tells a worker which range just arrived; the worker
// hashes straight from the shared memory, so no byte is copied twice and hashing overlaps receipt.
// The digest is asked for after the last chunk; by then the worker has usually caught up.
//
// One worker per process, started on first use and unref'd while it has nothing to do, so it never
// keeps a process alive. If it cannot start or dies, callers fall back to hashing inline.
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { FedError } from '../errors.ts';

// CommonJS source run with eval: true, so the worker needs no TypeScript loader.
const workerSource = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const jobs = new Map();
// A job's buffer is shared memory that this thread's reference keeps alive until this isolate collects
// it, and an idle worker allocates too little to ever collect: 200 MB model buffers piled up (measured
// at 50M parameters: RSS 7 GB, rounds 2-5.5 s instead of 2-2.9 s). So the worker collects after each job
// (its heap is tiny: ~1 ms). gc is exposed to a new context here because a worker cannot be started
// with --expose-gc; without it, buffers are only freed later.
let collect = () => {};
try {
  require('node:v8').setFlagsFromString('--expose-gc');
  collect = require('node:vm').runInNewContext('gc');
} catch {}
parentPort.on('message', (m) => {
  if (m.op === 'begin') {
    jobs.set(m.id, { hash: createHash('sha256'), buffer: m.buffer });
    if (m.prefault) {
      // one word per page, compare-and-swap 0 with 0: maps the page in, cannot clobber what arrived
      const words = new Int32Array(m.buffer, 0, m.buffer.byteLength >> 2);
      for (let i = 0; i < words.length; i += 1024) Atomics.compareExchange(words, i, 0, 0);
    }
  } else if (m.op === 'update') {
    const job = jobs.get(m.id);
    if (job) job.hash.update(new Uint8Array(job.buffer, m.offset, m.length));
  } else if (m.op === 'digest') {
    const job = jobs.get(m.id);
    jobs.delete(m.id);
    parentPort.postMessage({ id: m.id, hex: job.hash.digest('hex') });
    collect();
  } else if (m.op === 'drop') {
    jobs.delete(m.id);
    collect();
  }
});
`;

/** Blobs at least this large are hashed off-thread; smaller ones cost less inline than the messages. */
export const OFF_THREAD_MIN_BYTES = 4 * 1024 * 1024;

interface Pending {
  resolve: (hex: string) => void;
  reject: (error: Error) => void;
}

class HashWorker {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  /** Jobs begun and neither digested nor dropped: while there are any, the worker keeps the process alive. */
  private readonly live = new Set<number>();
  private nextId = 1;
  failed = false;

  constructor() {
    this.worker = new Worker(workerSource, { eval: true });
    this.worker.unref();
    this.worker.on('message', (m: { id: number; hex: string }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      this.end(m.id);
      p.resolve(m.hex);
    });
    const die = (error: Error): void => {
      this.failed = true;
      for (const p of this.pending.values()) p.reject(new FedError('internal', `hash worker failed: ${error.message}`));
      this.pending.clear();
    };
    this.worker.on('error', die);
    this.worker.on('exit', (code) => die(new Error(`exited with code ${code}`)));
  }

  /**
   * A job hashes ranges of one shared buffer, in the order they are given. The buffer goes over once,
   * with the job, and the worker holds it only until the job's digest or drop.
   *
   * `prefault`, for a buffer just allocated: the worker first maps its pages in (one atomic write per
   * page that cannot clobber a byte the link already wrote). A new 128 MiB buffer is 32,768 page
   * faults, ~55 ms of kernel time that would otherwise land on the receiving thread between its copies;
   * the worker runs ahead of a socket's delivery. (A second thread just for this was measured no
   * faster on two cores.)
   */
  begin(buffer: SharedArrayBuffer, opts: { prefault?: boolean } = {}): number {
    // a job in progress keeps the process alive until its digest arrives (or the job is dropped)
    if (this.live.size === 0) this.worker.ref();
    const id = this.nextId++;
    this.live.add(id);
    this.worker.postMessage({ op: 'begin', id, buffer, prefault: opts.prefault === true });
    return id;
  }

  update(id: number, offset: number, length: number): void {
    if (!this.live.has(id)) return;
    this.worker.postMessage({ op: 'update', id, offset, length });
  }

  digest(id: number): Promise<string> {
    return new Promise((resolve, reject) => {
      if (this.failed) return reject(new FedError('internal', 'hash worker failed'));
      if (!this.live.has(id) || this.pending.has(id)) return reject(new FedError('internal', `hash job ${id} is not running`));
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ op: 'digest', id });
    });
  }

  /** Ends a job without its digest; dropping a job twice, or one already digested, does nothing. */
  drop(id: number): void {
    if (!this.live.has(id) || this.pending.has(id)) return;
    this.worker.postMessage({ op: 'drop', id });
    this.end(id);
  }

  /** Jobs running now (begun, not yet digested or dropped). */
  get openJobs(): number {
    return this.live.size;
  }

  private end(id: number): void {
    if (this.live.delete(id) && this.live.size === 0) this.worker.unref();
  }
}

let shared: HashWorker | null | undefined;
// A worker that died is replaced, a few times: after that, something is wrong with workers here and
// hashing stays on the receiving thread.
let starts = 0;
const MAX_STARTS = 4;

/**
 * The process's hash worker, or null where hashing off-thread cannot help (one CPU), workers keep
 * failing, or FEDSTATE_HASH_WORKER=0 turns it off (the bench compares both).
 */
export function hashWorker(): HashWorker | null {
  if (shared?.failed) shared = undefined;
  if (shared !== undefined) return shared;
  if (process.env.FEDSTATE_HASH_WORKER === '0' || availableParallelism() < 2 || starts >= MAX_STARTS) return (shared = null);
  starts++;
  try {
    shared = new HashWorker();
  } catch {
    shared = null;
  }
  return shared;
}

export type { HashWorker };
