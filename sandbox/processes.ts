// The sandbox federation as separate OS processes: every reducer, combiner and client is its own
// `fedstate` process talking over gRPC or WebSocket on loopback, and this process drives the
// session only through the reducer's REST API (seed, start, poll status), as an operator would.
//
// Children are supervised: each gets a stdin pipe and runs with --exit-with-parent, so it ends even
// if this process is SIGKILLed; on a normal end, an error or SIGINT they get SIGTERM (a clean close),
// then SIGKILL after a grace period. Their JSON logs go to <out>/logs/<name>.log.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, type WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { callApi, connectedClients, type ApiStatus } from '../src/cli/common.ts';
import { followSession, type RoundRecord } from '../src/cli/follow.ts';
import { initialParams } from '../src/cli/tf-setup.ts';
import { FedError, errorMessage } from '../src/errors.ts';
import { encodeModel } from '../src/model/codec.ts';
import { openStore, verifyTrail } from '../src/store/index.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const cli = join(root, 'src', 'cli.ts');

export interface ChildInfo {
  name: string;
  proc: ChildProcess;
  /** The readiness record the child printed on stdout. */
  ready: Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
  alive: boolean;
  /** Last stderr lines, for error messages. */
  tail: string[];
}

/** Starts, watches and stops `fedstate` child processes. */
export class Supervisor {
  readonly children: ChildInfo[] = [];
  private stopping = false;
  private readonly logs: WriteStream[] = [];
  private readonly onUnexpected = new Set<(c: ChildInfo, code: number | null) => void>();
  private readonly killOnExit = (): void => {
    for (const c of this.children) if (c.alive) c.proc.kill('SIGKILL');
  };

  constructor(
    private readonly logDir: string,
    private readonly env: NodeJS.ProcessEnv,
  ) {
    mkdirSync(logDir, { recursive: true });
    // Last resort: whatever way this process ends, no child outlives it.
    process.on('exit', this.killOnExit);
  }

  /** Called when a child exits while the run still needs it. */
  onChildDied(listener: (c: ChildInfo, code: number | null) => void): () => void {
    this.onUnexpected.add(listener);
    return () => this.onUnexpected.delete(listener);
  }

  start(name: string, args: string[], readyTimeoutMs = 90_000): ChildInfo {
    const proc = spawn(process.execPath, ['--import', 'tsx', cli, ...args, '--exit-with-parent'], { cwd: root, env: this.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const log = createWriteStream(join(this.logDir, `${name}.log`));
    this.logs.push(log);
    const info: ChildInfo = { name, proc, alive: true, tail: [], ready: undefined as never, exited: undefined as never };
    info.exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        info.alive = false;
        resolve(code ?? (signal ? 128 : null));
        if (!this.stopping) for (const l of this.onUnexpected) l(info, code);
      });
    });
    proc.once('error', () => undefined); // a failed spawn also ends in 'exit', which reports it
    createInterface({ input: proc.stderr! }).on('line', (line) => {
      log.write(`${line}\n`);
      info.tail.push(line);
      if (info.tail.length > 20) info.tail.shift();
    });
    info.ready = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(this.failure(info, `not ready after ${readyTimeoutMs} ms`)), readyTimeoutMs);
      createInterface({ input: proc.stdout! }).on('line', (line) => {
        let rec: unknown;
        try {
          rec = JSON.parse(line);
        } catch {
          return;
        }
        if (rec && typeof rec === 'object' && 'ready' in rec) {
          clearTimeout(timer);
          resolve(rec as Record<string, unknown>);
        }
      });
      void info.exited.then((code) => {
        clearTimeout(timer);
        reject(this.failure(info, `exited with code ${code} before it was ready`));
      });
    });
    info.ready.catch(() => undefined);
    this.children.push(info);
    return info;
  }

  failure(c: ChildInfo, what: string): FedError {
    const tail = c.tail.slice(-5).map((l) => `    ${l}`).join('\n');
    return new FedError('internal', `${c.name} ${what}${tail ? `; last log lines:\n${tail}` : ''}`);
  }

  /** SIGTERM every child (clean close), SIGKILL those still alive after `graceMs`. */
  async stopAll(graceMs = 10_000): Promise<void> {
    this.stopping = true;
    const alive = this.children.filter((c) => c.alive);
    for (const c of alive) c.proc.kill('SIGTERM');
    const timer = setTimeout(() => {
      for (const c of alive) if (c.alive) c.proc.kill('SIGKILL');
    }, graceMs);
    await Promise.all(alive.map((c) => c.exited));
    clearTimeout(timer);
    await Promise.all(this.logs.map((l) => new Promise<void>((resolve) => l.end(resolve))));
    process.off('exit', this.killOnExit);
  }
}

export interface ProcessRunOptions {
  transport: 'grpc' | 'ws';
  combiners: number;
  clients: number;
  seed: number;
  partition: string;
  session: { sessionId: string; rounds: number; roundTimeoutMs: number; localEpochs: number; batchSize: number; learningRate: number; fraction: number; seed: number };
  /** Reducer store directory; a temporary one (removed afterwards) when absent. */
  store?: string;
  out: string;
  logLevel?: string;
  /** The session was started (rounds follow). */
  onStart?: () => void;
  onRound: (r: RoundRecord, ms: number) => void;
  say: (line: string) => void;
  /** Aborts the run (SIGINT): children are stopped and the run rejects with 'cancelled'. */
  signal?: AbortSignal;
}

export interface ProcessRunResult {
  status: string;
  failure: string;
  trail: { ok: boolean; entries: number; reason?: string };
  logDir: string;
}

/** Children get our environment minus node settings, so a stray FEDSTATE_TOKEN cannot skew a run. */
function childEnv(): NodeJS.ProcessEnv {
  const keep = new Set(['FEDSTATE_TF_BACKEND', 'FEDSTATE_KERNEL']);
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FEDSTATE_') || keep.has(k)));
}

export async function runProcesses(o: ProcessRunOptions): Promise<ProcessRunResult> {
  const logDir = join(o.out, 'logs');
  const sup = new Supervisor(logDir, childEnv());
  const tmpStore = o.store ? undefined : mkdtempSync(join(tmpdir(), 'fedstate-sandbox-store-'));
  const storeDir = o.store ?? tmpStore!;
  const token = randomBytes(12).toString('hex');
  const adminToken = randomBytes(12).toString('hex');
  const logLevel = o.logLevel ?? 'info';
  const local = `${o.transport}://127.0.0.1:0`;

  // Any child dying mid-run, or SIGINT, ends the run at once instead of waiting for a timeout.
  const abort = new AbortController();
  let abortReason: Error | undefined;
  const stopWith = (e: Error): void => {
    abortReason ??= e;
    abort.abort();
  };
  const offDied = sup.onChildDied((c, code) => stopWith(sup.failure(c, `exited unexpectedly with code ${code}`)));
  const onAbort = (): void => stopWith(new FedError('cancelled', 'interrupted'));
  o.signal?.addEventListener('abort', onAbort);
  const guard = async <T>(p: Promise<T>): Promise<T> => {
    if (abort.signal.aborted) throw abortReason;
    return Promise.race([p, new Promise<never>((_, reject) => abort.signal.addEventListener('abort', () => reject(abortReason), { once: true }))]);
  };

  let finished: { status: string; failure: string } | undefined;
  try {
    const reducer = sup.start('reducer', ['reducer', '--listen', local, '--api', '127.0.0.1:0', '--store', storeDir, '--evaluate', 'mnist', '--seed', String(o.seed), '--token', token, '--admin-token', adminToken, '--log-level', logLevel]);
    // The seed model is built here while the children start.
    const seedBytes = initialParams('mlp', o.seed).then(encodeModel);
    seedBytes.catch(() => undefined); // awaited below; a failure must not end the process before the children are stopped
    const r = await guard(reducer.ready);
    const endpoint = String(r.endpoint);
    const api = String(r.api);
    for (let i = 0; i < o.combiners; i++) {
      sup.start(`combiner-c${i + 1}`, ['combiner', '--name', `c${i + 1}`, '--listen', local, '--reducer', endpoint, '--token', token, '--log-level', logLevel]);
    }
    for (let i = 0; i < o.clients; i++) {
      sup.start(`client-k${i + 1}`, [
        'client', '--name', `k${i + 1}`, '--reducer', endpoint, '--token', token, '--log-level', logLevel,
        '--data', 'mnist', '--partition', o.partition, '--clients-total', String(o.clients), '--index', String(i), '--seed', String(o.seed),
      ]);
    }
    await guard(Promise.all(sup.children.map((c) => c.ready)));
    o.say(`${sup.children.length} processes up (reducer at ${endpoint}, API ${api}); logs in ${logDir}`);

    // Every client registered with a combiner the reducer knows, as the in-process run waits for.
    const deadline = Date.now() + 90_000;
    for (;;) {
      const s = await guard(callApi<ApiStatus>(api, 'api/status'));
      if (connectedClients(s) >= o.clients) break;
      if (Date.now() > deadline) throw new FedError('timeout', `only ${connectedClients(s)}/${o.clients} clients registered after 90 s`);
      await guard(new Promise((resolve) => setTimeout(resolve, 100)));
    }
    await guard(callApi(api, 'api/models/seed', { body: await seedBytes, token: adminToken }));
    let last = Date.now();
    const { sessionId } = await guard(callApi<{ sessionId: string }>(api, 'api/sessions', { json: o.session, token: adminToken }));
    o.onStart?.();
    const final = await guard(
      followSession(api, {
        sessionId,
        signal: abort.signal,
        onRound: (round) => {
          // Round time as the reducer measured it: from the previous round's end (or the start) to this one's.
          const end = round.endedAt || Date.now();
          o.onRound(round, Math.max(1, end - last));
          last = end;
        },
      }),
    );
    finished = { status: final.state, failure: final.failure };
  } finally {
    offDied();
    o.signal?.removeEventListener('abort', onAbort);
    await sup.stopAll();
  }
  // The store is only ours to open once the reducer process has closed it.
  const store = await openStore({ dir: storeDir });
  let trail: ProcessRunResult['trail'];
  try {
    const t = await verifyTrail(store);
    trail = { ok: t.ok, entries: t.entries, reason: t.ok ? undefined : t.reason };
  } finally {
    await store.close();
    if (tmpStore) rmSync(tmpStore, { recursive: true, force: true });
  }
  return { ...finished, trail, logDir };
}
