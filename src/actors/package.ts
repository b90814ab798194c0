// Compute packages (FEDn's "compute package"): a client normally runs train/validate code from its own
// configuration. Optionally it runs a package the reducer distributes, but only the exact package whose
// sha256 the client pinned in its own configuration: the pin is the content address the client asks
// for, and the link verifies the bytes against it before anything is written or run. The package runs
// in a worker thread, so a package that throws or spins cannot take the client's event loop with it.
//
// A package is one ES module exporting
//   numExamples(settings): number
//   train({ layout, data }, { config, round, settings }): { params: { layout, data }, numExamples, metrics }
//   validate({ layout, data }, { round, settings }): { numExamples, metrics }
// (sync or async). `settings` is the client's own JSON (e.g. where its private data lives).
import { mkdirSync, writeFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { FedError, errorMessage } from '../errors.ts';
import { verifyHash } from '../model/hash.ts';
import type { Params } from '../model/params.ts';
import type { TaskCode } from './client.ts';
import type { Node } from './node.ts';

/** Fetches the pinned package from the reducer over a short-lived link; the bytes are hash-verified. */
export async function fetchPackage(node: Node, reducerEndpoint: string, sha256: string, reducer = 'reducer/main'): Promise<Uint8Array> {
  if (!/^[0-9a-f]{64}$/.test(sha256)) throw new FedError('config', 'the pinned package hash must be 64 lowercase hex digits (sha256)');
  const reused = node.canReach(reducer);
  const link = reused ? undefined : await node.dial(reducerEndpoint);
  try {
    return await node.fetchBlob(reducer, sha256);
  } finally {
    link?.close('package fetched');
  }
}

// The worker's side, as source: import the package once, then answer train/validate requests.
const workerSource = `
const { parentPort, workerData } = require('node:worker_threads');
const ready = import(workerData.url);
parentPort.on('message', async (msg) => {
  try {
    const pkg = await ready;
    if (msg.op === 'numExamples') return parentPort.postMessage({ id: msg.id, ok: true, value: await pkg.numExamples(workerData.settings) });
    const model = { layout: msg.layout, data: new Float32Array(msg.data) };
    const value = msg.op === 'train'
      ? await pkg.train(model, { config: msg.config, round: msg.round, settings: workerData.settings })
      : await pkg.validate(model, { round: msg.round, settings: workerData.settings });
    const transfer = value.params ? [value.params.data.buffer] : [];
    parentPort.postMessage({ id: msg.id, ok: true, value }, transfer);
  } catch (e) {
    parentPort.postMessage({ id: msg.id, ok: false, error: String(e && e.message || e) });
  }
});
`;

export interface PackageTaskOptions {
  bytes: Uint8Array;
  /** The pin from the client's own configuration; the bytes must hash to it. */
  sha256: string;
  /** The client's own settings handed to the package (e.g. its data location). */
  settings: unknown;
  /** Where verified packages are written to be imported (bare imports resolve from here upwards). */
  cacheDir?: string;
}

/** Runs a verified package in a worker thread as this client's task code. */
export async function packageTask(opts: PackageTaskOptions): Promise<TaskCode & { close(): Promise<void> }> {
  verifyHash(opts.bytes, opts.sha256);
  const dir = resolve(opts.cacheDir ?? join(process.cwd(), '.fedstate', 'packages'));
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${opts.sha256}.mjs`);
  if (!existsSync(file)) writeFileSync(file, opts.bytes);
  const worker = new Worker(workerSource, { eval: true, workerData: { url: pathToFileURL(file).href, settings: opts.settings } });
  worker.unref();
  let nextId = 1;
  const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  const failAll = (e: Error): void => {
    for (const w of waiting.values()) w.reject(e);
    waiting.clear();
  };
  // The worker keeps the process alive only while a call is waiting on it.
  const settle = (id: number): void => {
    waiting.delete(id);
    if (waiting.size === 0) worker.unref();
  };
  worker.on('message', (m: { id: number; ok: boolean; value?: unknown; error?: string }) => {
    const w = waiting.get(m.id);
    if (!w) return;
    settle(m.id);
    if (m.ok) w.resolve(m.value);
    else w.reject(new FedError('internal', `package: ${m.error}`));
  });
  worker.on('error', (e) => failAll(new FedError('internal', `package worker failed: ${errorMessage(e)}`)));
  worker.on('exit', (code) => failAll(new FedError('closed', `package worker exited with code ${code}`)));
  const call = <T>(msg: Record<string, unknown>, signal?: AbortSignal, transfer: ArrayBuffer[] = []): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = nextId++;
      waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      worker.ref();
      signal?.addEventListener('abort', () => {
        // a cancelled task stops waiting; the worker's answer, when it comes, is dropped
        settle(id);
        reject(new FedError('cancelled', 'task cancelled'));
      });
      worker.postMessage({ ...msg, id }, transfer);
    });
  const toWorker = (p: Params) => {
    const data = p.data.slice().buffer;
    return { msg: { layout: p.layout, data }, transfer: [data] };
  };
  const numExamples = await call<number>({ op: 'numExamples' });
  if (!Number.isFinite(numExamples) || numExamples < 0) throw new FedError('malformed', `package reported ${numExamples} examples`);
  return {
    numExamples,
    train: async (model, { config, round, signal }) => {
      const { msg, transfer } = toWorker(model);
      const out = await call<{ params: Params; numExamples: number; metrics: Record<string, number> }>({ op: 'train', ...msg, config, round }, signal, transfer);
      return { params: { layout: out.params.layout, data: new Float32Array(out.params.data) }, numExamples: out.numExamples, metrics: out.metrics ?? {} };
    },
    validate: async (model, { round, signal }) => {
      const { msg, transfer } = toWorker(model);
      return call({ op: 'validate', ...msg, round }, signal, transfer);
    },
    close: async () => {
      await worker.terminate();
    },
  };
}
