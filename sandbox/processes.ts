// The sandbox federation as separate OS processes: every reducer, combiner and client is its own
// `fedstate` process talking over gRPC or WebSocket on loopback, and this process drives the
// session only through the reducer's REST API (seed, start, poll status), as an operator would.
//
// Children are supervised: each gets a stdin pipe and runs with --exit-with-parent, so it ends even
// if this process is SIGKILLed; on a normal end, an error or SIGINT they get SIGTERM (a clean close),
// then SIGKILL after a grace period. Their JSON logs go to <out>/logs/<name>.log.
//
// Faults on purpose (sandbox/run.ts --kill, --stop-at, --dropout, --stragglers):
//  - `--kill reducer@N`: SIGKILL the reducer once round N is under way (its status shows round N and
//    a client logged a task for it), restart it at the same endpoint and API port on the same store,
//    and measure how long until the next round commits;
//  - `--kill combiner:K@N`: SIGKILL combiner cK during round N; it stays dead and its clients
//    rediscover the others (the time until they show up there is measured);
//  - `--stop-at N`: stop the session while round N's clients train (the request `fedstate stop` sends,
//    made from here the moment a client logs its task, or `--stop-with cli`: the real `fedstate stop`
//    process, which takes a second or more to start), then measure from the combiners' and clients'
//    debug logs how long until each of them was idle again;
//  - dropout and stragglers are passed to every client (`fedstate client --dropout --stragglers`).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, type WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { callApi, connectedClients, isTerminal, type ApiStatus } from '../src/cli/common.ts';
import { followSession, type RoundRecord } from '../src/cli/follow.ts';
import { initialParams } from '../src/cli/tf-setup.ts';
import { FedError } from '../src/errors.ts';
import { encodeModel } from '../src/model/codec.ts';
import { openStore, verifyTrail } from '../src/store/index.ts';
import { writeFederationPki } from '../src/security/dev-federation.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const cli = join(root, 'src', 'cli.ts');
const bin = join(root, 'bin', 'fedstate.js');

/** One JSON log line of a child, with its time in ms since the epoch. */
export interface LogLine {
  child: string;
  time: number;
  msg: string;
  rec: Record<string, unknown>;
}

export interface ChildInfo {
  name: string;
  proc: ChildProcess;
  /** The readiness record the child printed on stdout. */
  ready: Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
  alive: boolean;
  /** Killed on purpose: its exit is not a failure of the run. */
  expectedExit: boolean;
  /** Last stderr lines, for error messages. */
  tail: string[];
}

export interface StartOptions {
  readyTimeoutMs?: number;
  /** Command words in front of node, e.g. ['ip', 'netns', 'exec', NS] to run the node in a network namespace. */
  prefix?: string[];
  /** Run `node bin/fedstate.js` (as an installed command would) instead of `node --import tsx src/cli.ts`. */
  viaBin?: boolean;
  /** Append to the child's log file (a restarted node keeps one log). */
  appendLog?: boolean;
}

/** Starts, watches and stops `fedstate` child processes. */
export class Supervisor {
  readonly children: ChildInfo[] = [];
  private stopping = false;
  private readonly logs: WriteStream[] = [];
  private readonly onUnexpected = new Set<(c: ChildInfo, code: number | null) => void>();
  private readonly lineListeners = new Set<(line: LogLine) => void>();
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

  /** Called when a child exits while the run still needs it (not for children killed on purpose). */
  onChildDied(listener: (c: ChildInfo, code: number | null) => void): () => void {
    this.onUnexpected.add(listener);
    return () => this.onUnexpected.delete(listener);
  }

  /** Every JSON line a child logs on stderr. */
  onLogLine(listener: (line: LogLine) => void): () => void {
    this.lineListeners.add(listener);
    return () => this.lineListeners.delete(listener);
  }

  /** The most recently started child of that name. */
  latest(name: string): ChildInfo | undefined {
    return this.children.findLast((c) => c.name === name);
  }

  start(name: string, args: string[], options: StartOptions | number = {}): ChildInfo {
    const o: StartOptions = typeof options === 'number' ? { readyTimeoutMs: options } : options;
    const readyTimeoutMs = o.readyTimeoutMs ?? 90_000;
    const node = o.viaBin ? [process.execPath, bin] : [process.execPath, '--import', 'tsx', cli];
    const [command, ...rest] = [...(o.prefix ?? []), ...node, ...args, '--exit-with-parent'];
    const proc = spawn(command!, rest, { cwd: root, env: this.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const log = createWriteStream(join(this.logDir, `${name}.log`), { flags: o.appendLog ? 'a' : 'w' });
    this.logs.push(log);
    const info: ChildInfo = { name, proc, alive: true, expectedExit: false, tail: [], ready: undefined as never, exited: undefined as never };
    info.exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        info.alive = false;
        resolve(code ?? (signal ? 128 : null));
        if (!this.stopping && !info.expectedExit) for (const l of this.onUnexpected) l(info, code);
      });
    });
    proc.once('error', () => undefined); // a failed spawn also ends in 'exit', which reports it
    proc.stdin!.on('error', () => undefined); // the pipe breaks when the child dies first
    createInterface({ input: proc.stderr! }).on('line', (line) => {
      log.write(`${line}\n`);
      info.tail.push(line);
      if (info.tail.length > 20) info.tail.shift();
      if (this.lineListeners.size === 0 || !line.startsWith('{')) return;
      try {
        const rec = JSON.parse(line) as Record<string, unknown>;
        const time = typeof rec.time === 'string' ? Date.parse(rec.time) : typeof rec.time === 'number' ? rec.time : Date.now();
        const entry: LogLine = { child: name, time, msg: String(rec.msg ?? ''), rec };
        for (const l of this.lineListeners) l(entry);
      } catch {
        // not a log record
      }
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

  /** Sends `signal` (SIGKILL by default) to a child on purpose and resolves once it is gone. */
  async kill(c: ChildInfo, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    c.expectedExit = true;
    if (c.alive) c.proc.kill(signal);
    await c.exited;
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

// --- fault specifications ------------------------------------------------------------------------

export interface KillSpec {
  /** 'reducer', or a combiner's name ('c1'). */
  target: 'reducer' | `c${number}`;
  /** Kill once this round is under way. */
  round: number;
  /** Extra wait after the round is under way (ms). */
  delayMs: number;
  /** As written on the command line. */
  spec: string;
}

/** `reducer@2`, `combiner:1@2`, `combiner:c2@3`, with an optional `+MS` delay (`reducer@2+500`). */
export function parseKillSpec(text: string, combiners?: number): KillSpec {
  const m = /^(reducer|combiner:(?:c)?(\d+))@(\d+)(?:\+(\d+))?$/.exec(text.trim());
  if (!m) throw new FedError('config', `bad --kill "${text}": expected reducer@ROUND or combiner:K@ROUND (K from 1), optionally +MS (e.g. combiner:1@2+500)`);
  const round = Number(m[3]);
  if (round < 1) throw new FedError('config', `--kill ${text}: rounds count from 1`);
  const k = m[2] === undefined ? undefined : Number(m[2]);
  if (k !== undefined && (k < 1 || (combiners !== undefined && k > combiners))) throw new FedError('config', `--kill ${text}: there is no combiner ${k}${combiners !== undefined ? ` (combiners are 1..${combiners})` : ''}`);
  return { target: k === undefined ? 'reducer' : `c${k}`, round, delayMs: Number(m[4] ?? 0), spec: text.trim() };
}

export interface KillReport {
  spec: string;
  target: string;
  /** The round the session was in when the kill happened. */
  round: number;
  signal: 'SIGKILL';
  /** Since the session started. */
  atMs: number;
  committedBefore: number;
  /** Reducer: restarted on its store at the same endpoint. */
  restarted: boolean;
  /** Reducer: kill -> restarted process ready. */
  restartMs?: number;
  /** Reducer: rounds the restarted reducer said were committed when it came back. */
  committedAfterRestart?: number;
  /** Committed rounds the kill cost (committedBefore - committedAfterRestart); 0 means none. */
  roundsLost?: number;
  /** Kill -> the next round committed (reducer log time). */
  recoveryMs?: number;
  /** Combiner: the clients it held. */
  clients?: string[];
  /** Combiner: kill -> all its clients registered with other combiners. */
  reassignedMs?: number;
  /** Not performed: the session ended before that round. */
  skipped?: boolean;
}

export interface StopReport {
  round: number;
  via: 'api' | 'cli';
  /** The stop request (api) or the `fedstate stop` command (cli: includes starting Node): issued -> done. */
  commandMs: number;
  /** Reducer's "session stopped" log time -> the last busy combiner or client idle. */
  idleMs: number;
  /** Every combiner and client that was busy when the reducer stopped, and when it became idle. */
  nodes: Array<{ name: string; busyAtStop: boolean; idleMs: number | null }>;
  /** Combiners' states as the reducer's /api/status showed them right after the session stopped. */
  apiCombinerStates: Record<string, string>;
}

export interface ProcessRunOptions {
  transport: 'grpc' | 'ws';
  combiners: number;
  clients: number;
  seed: number;
  partition: string;
  session: { sessionId: string; rounds: number; roundTimeoutMs: number; localEpochs: number; batchSize: number; learningRate: number; fraction: number; seed: number; strategy?: string; bufferSize?: number; minClients?: number };
  /** Reducer store directory; a temporary one (removed afterwards) when absent. */
  store?: string;
  out: string;
  logLevel?: string;
  /** Mutual TLS on every link: a development PKI in OUT/pki, each node its own certificate. */
  tls?: boolean;
  /** Processes to SIGKILL mid-session (see the file comment). */
  kills?: KillSpec[];
  /** Stop the session during this round. */
  stopAt?: number;
  /** 'api': POST /api/sessions/ID/stop from here (what `fedstate stop` sends), at once; 'cli': run `fedstate stop`. */
  stopWith?: 'api' | 'cli';
  /** Passed to every client: fault injection (src/actors/dropout.ts). */
  dropout?: number;
  stragglers?: number;
  dropoutMode?: string;
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
  kills: KillReport[];
  stop?: StopReport;
}

/** Children get our environment minus node settings, so a stray FEDSTATE_TOKEN cannot skew a run. */
function childEnv(): NodeJS.ProcessEnv {
  const keep = new Set(['FEDSTATE_TF_BACKEND', 'FEDSTATE_KERNEL']);
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FEDSTATE_') || keep.has(k)));
}

const levels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];
const atLeastDebug = (level: string): string => (levels.indexOf(level) > 1 ? 'debug' : level);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Watches the children's logs: state changes per node, and waits for lines to appear. */
class LogWatch {
  readonly lines: LogLine[] = [];
  private readonly waiters = new Set<{ match: (l: LogLine) => boolean; resolve: (l: LogLine | undefined) => void }>();

  add(line: LogLine): void {
    if (!['state', 'task', 'task done', 'round', 'round failed', 'session stopped', 'session started', 'fault injected', 'combiner joined', 'combiner left', 'ready'].includes(line.msg)) return;
    this.lines.push(line);
    for (const w of this.waiters) {
      if (w.match(line)) {
        this.waiters.delete(w);
        w.resolve(line);
      }
    }
  }

  /** The first line (already seen or still to come) matching, or undefined after `timeoutMs`. */
  wait(match: (l: LogLine) => boolean, timeoutMs: number, signal?: AbortSignal): Promise<LogLine | undefined> {
    const seen = this.lines.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => {
      const w = {
        match,
        resolve: (l: LogLine | undefined) => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          resolve(l);
        },
      };
      const onAbort = (): void => {
        this.waiters.delete(w);
        w.resolve(undefined);
      };
      const timer = setTimeout(onAbort, timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.add(w);
    });
  }

  /** A node's state at time t (from its debug "state" lines); undefined before its first change. */
  stateAt(child: string, t: number): string | undefined {
    let state: string | undefined;
    for (const l of this.lines) if (l.child === child && l.msg === 'state' && l.time <= t) state = String(l.rec.to);
    return state;
  }

  firstState(child: string, after: number, match: (state: string) => boolean): LogLine | undefined {
    return this.lines.find((l) => l.child === child && l.msg === 'state' && l.time >= after && match(String(l.rec.to)));
  }
}

const isBusy = (role: 'combiner' | 'client', state: string | undefined): boolean =>
  state !== undefined && (role === 'combiner' ? state !== 'idle' : state === 'connected.training' || state === 'connected.validating');

export async function runProcesses(o: ProcessRunOptions): Promise<ProcessRunResult> {
  const logDir = join(o.out, 'logs');
  const sup = new Supervisor(logDir, childEnv());
  const tmpStore = o.store ? undefined : mkdtempSync(join(tmpdir(), 'fedstate-sandbox-store-'));
  const storeDir = o.store ?? tmpStore!;
  const token = randomBytes(12).toString('hex');
  const adminToken = randomBytes(12).toString('hex');
  const logLevel = o.logLevel ?? 'info';
  // Measuring stop-to-idle needs every combiner's and client's state changes (debug lines).
  const nodeLevel = o.stopAt !== undefined ? atLeastDebug(logLevel) : logLevel;
  const local = `${o.transport}://127.0.0.1:0`;
  const watch = new LogWatch();
  const offLines = sup.onLogLine((l) => watch.add(l));
  const kills: KillReport[] = [];
  let stop: StopReport | undefined;

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
    let onAbort: () => void = () => undefined;
    try {
      return await Promise.race([
        p,
        new Promise<never>((_, reject) => {
          onAbort = () => reject(abortReason);
          abort.signal.addEventListener('abort', onAbort, { once: true });
        }),
      ]);
    } finally {
      abort.signal.removeEventListener('abort', onAbort);
    }
  };

  // With --tls: a CA and one certificate per node; listeners require client certificates (mutual TLS),
  // so every link is authenticated by certificate as well as by token.
  const pki = o.tls ? await writeFederationPki(join(o.out, 'pki'), o) : undefined;
  const tlsArgs = (address: string, listens: boolean): string[] => {
    const n = pki?.nodes.find((x) => `${x.role}/${x.name}` === address);
    if (!pki || !n) return [];
    return ['--tls-ca', pki.ca, '--tls-cert', n.cert, '--tls-key', n.key, ...(listens ? ['--tls-require-client-cert'] : [])];
  };
  const reducerArgs = (listen: string, api: string): string[] => [
    'reducer', '--listen', listen, '--api', api, '--store', storeDir, '--evaluate', 'mnist', '--seed', String(o.seed), '--token', token, '--admin-token', adminToken, '--log-level', logLevel,
    ...tlsArgs('reducer/main', true),
  ];

  let finished: { status: string; failure: string } | undefined;
  try {
    const reducer = sup.start('reducer', reducerArgs(local, '127.0.0.1:0'));
    // The seed model is built here while the children start.
    const seedBytes = initialParams('mlp', o.seed).then(encodeModel);
    seedBytes.catch(() => undefined); // awaited below; a failure must not end the process before the children are stopped
    const r = await guard(reducer.ready);
    const endpoint = String(r.endpoint);
    const api = String(r.api);
    for (let i = 0; i < o.combiners; i++) {
      sup.start(`combiner-c${i + 1}`, ['combiner', '--name', `c${i + 1}`, '--listen', local, '--reducer', endpoint, '--token', token, '--log-level', nodeLevel, ...tlsArgs(`combiner/c${i + 1}`, true)]);
    }
    const faultArgs = (o.dropout ?? 0) > 0 || (o.stragglers ?? 0) > 0 ? ['--dropout', String(o.dropout ?? 0), '--stragglers', String(o.stragglers ?? 0), '--dropout-mode', o.dropoutMode ?? 'fail'] : [];
    for (let i = 0; i < o.clients; i++) {
      sup.start(`client-k${i + 1}`, [
        'client', '--name', `k${i + 1}`, '--reducer', endpoint, '--token', token, '--log-level', nodeLevel,
        '--data', 'mnist', '--partition', o.partition, '--clients-total', String(o.clients), '--index', String(i), '--seed', String(o.seed), ...faultArgs,
        ...tlsArgs(`client/k${i + 1}`, false),
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
      await guard(sleep(100));
    }
    await guard(callApi(api, 'api/models/seed', { body: await seedBytes, token: adminToken }));
    let last = Date.now();
    const { sessionId } = await guard(callApi<{ sessionId: string }>(api, 'api/sessions', { json: o.session, token: adminToken }));
    const sessionStarted = Date.now();
    o.onStart?.();

    // The latest status seen, for the fault schedule.
    let latest: ApiStatus | undefined;
    const statusWaiters = new Set<() => void>();
    const sessionOver = new AbortController();
    const untilStatus = async (check: (s: ApiStatus) => boolean): Promise<ApiStatus | undefined> => {
      for (;;) {
        if (latest && check(latest)) return latest;
        if (sessionOver.signal.aborted || abort.signal.aborted) return undefined;
        await new Promise<void>((resolve) => {
          const done = (): void => {
            statusWaiters.delete(done);
            resolve();
          };
          statusWaiters.add(done);
          setTimeout(done, 500);
        });
      }
    };
    /** Round `n` is under way: the reducer shows it and its clients logged their training tasks. */
    const roundUnderWay = async (n: number): Promise<ApiStatus | undefined> => {
      const s = await untilStatus((x) => isTerminal(x.state) || (x.session?.round ?? 0) >= n);
      if (!s || isTerminal(s.state)) return undefined;
      const isTask = (l: LogLine): boolean => l.msg === 'task' && l.child.startsWith('client-') && Number(l.rec.round) === n && l.time >= sessionStarted;
      // The first task within 5 s, then the others within a second (fewer may be selected).
      if (await watch.wait(isTask, 5_000, sessionOver.signal)) {
        const training = new Set<string>();
        await watch.wait((l) => (isTask(l) && training.add(l.child), training.size >= o.clients), 1_000, sessionOver.signal);
      }
      return latest;
    };

    const apiAddress = new URL(api).host;
    const roundsCommitted = (s: ApiStatus | undefined): number => s?.session?.committed ?? 0;

    const runFaults = async (): Promise<void> => {
      for (const k of [...(o.kills ?? [])].sort((a, b) => a.round - b.round)) {
        const s = await roundUnderWay(k.round);
        if (k.delayMs > 0 && s) await sleep(k.delayMs);
        const now = latest;
        if (!s || !now || isTerminal(now.state)) {
          kills.push({ spec: k.spec, target: k.target, round: k.round, signal: 'SIGKILL', atMs: Date.now() - sessionStarted, committedBefore: roundsCommitted(now), restarted: false, skipped: true });
          o.say(`kill ${k.spec}: skipped, the session ended before round ${k.round}`);
          continue;
        }
        const round = now.session?.round ?? k.round;
        const committedBefore = roundsCommitted(now);
        if (k.target === 'reducer') {
          const victim = sup.latest('reducer')!;
          const killedAt = Date.now();
          await sup.kill(victim);
          o.say(`kill ${k.spec}: SIGKILL reducer (pid ${victim.proc.pid}) at ${((killedAt - sessionStarted) / 1000).toFixed(1)} s, in round ${round} with ${committedBefore} round(s) committed; restarting it on its store at ${endpoint}`);
          latest = undefined;
          const again = sup.start('reducer', reducerArgs(endpoint, apiAddress), { appendLog: true });
          await again.ready;
          const restartMs = Date.now() - killedAt;
          const resumed = await callApi<ApiStatus>(api, 'api/status');
          const report: KillReport = {
            spec: k.spec, target: 'reducer', round, signal: 'SIGKILL', atMs: killedAt - sessionStarted, committedBefore, restarted: true, restartMs,
            committedAfterRestart: roundsCommitted(resumed), roundsLost: committedBefore - roundsCommitted(resumed),
          };
          kills.push(report);
          o.say(`  reducer restarted in ${(restartMs / 1000).toFixed(1)} s: state ${resumed.state}, ${roundsCommitted(resumed)} round(s) committed (${report.roundsLost} lost)`);
          // Recovered when the next round commits (the reducer logs it the moment its record is made).
          const next = await watch.wait((l) => l.child === 'reducer' && l.msg === 'round' && l.time >= killedAt && l.rec.status === 'ok', 10 * 60_000, sessionOver.signal);
          const committed = next ?? (await untilStatus((x) => roundsCommitted(x) > committedBefore).then((x) => (x ? { time: Date.now(), rec: { round: x.session?.round } } : undefined)));
          if (committed) {
            report.recoveryMs = committed.time - killedAt;
            o.say(`  recovered: round ${String(committed.rec.round)} committed ${(report.recoveryMs / 1000).toFixed(1)} s after the kill`);
          }
        } else {
          const victim = sup.latest(`combiner-${k.target}`)!;
          const address = `combiner/${k.target}`;
          const clients = now.combiners.find((c) => c.name === address)?.clients ?? [];
          const killedAt = Date.now();
          await sup.kill(victim);
          o.say(`kill ${k.spec}: SIGKILL combiner ${k.target} (pid ${victim.proc.pid}) at ${((killedAt - sessionStarted) / 1000).toFixed(1)} s, in round ${round}; its clients ${clients.join(', ') || '(none)'} must find another combiner`);
          const report: KillReport = { spec: k.spec, target: k.target, round, signal: 'SIGKILL', atMs: killedAt - sessionStarted, committedBefore, restarted: false, clients };
          kills.push(report);
          const moved = await untilStatus((x) => isTerminal(x.state) || clients.every((cl) => x.combiners.some((c) => c.name !== address && c.connected && c.clients.includes(cl))));
          if (moved && !isTerminal(moved.state)) {
            report.reassignedMs = Date.now() - killedAt;
            o.say(`  ${clients.length} client(s) reassigned to the remaining combiner(s) ${(report.reassignedMs / 1000).toFixed(1)} s after the kill`);
          }
        }
      }
      if (o.stopAt !== undefined) {
        const s = await roundUnderWay(o.stopAt);
        if (!s) {
          o.say(`stop at round ${o.stopAt}: skipped, the session ended before`);
          return;
        }
        const via = o.stopWith ?? 'api';
        const launched = Date.now();
        if (via === 'cli') {
          const code = await runCli(['stop', '--api', api, '--token', adminToken, '--session', sessionId]);
          if (code !== 0) throw new FedError('internal', `fedstate stop exited with ${code}`);
        } else {
          await callApi(api, `api/sessions/${encodeURIComponent(sessionId)}/stop`, { method: 'POST', token: adminToken });
        }
        const commandMs = Date.now() - launched;
        o.say(`stop: ${via === 'cli' ? '`fedstate stop`' : 'POST /api/sessions/ID/stop'} during round ${latest?.session?.round ?? o.stopAt} (took ${commandMs} ms)`);
        stop = { round: latest?.session?.round ?? o.stopAt, via, commandMs, idleMs: NaN, nodes: [], apiCombinerStates: {} };
      }
    };

    const faults = runFaults().catch((e: unknown) => stopWith(e instanceof Error ? e : new Error(String(e))));
    const seenRounds = new Set<number>();
    const final = await guard(
      followSession(api, {
        sessionId,
        signal: abort.signal,
        // A reducer killed on purpose is unreachable until its restart is ready.
        unreachableMs: 120_000,
        onStatus: (s) => {
          latest = s;
          for (const w of [...statusWaiters]) w();
        },
        onRound: (round) => {
          // A restarted reducer reloads its round records: each round is reported once.
          if (seenRounds.has(round.round)) return;
          seenRounds.add(round.round);
          // Round time as the reducer measured it: from the previous round's end (or the start) to this one's.
          const end = round.endedAt || Date.now();
          o.onRound(round, Math.max(1, end - last));
          last = end;
        },
      }),
    );
    sessionOver.abort();
    await guard(faults);
    finished = { status: final.state, failure: final.failure };

    if (stop) {
      const stoppedLine = await watch.wait((l) => l.child === 'reducer' && l.msg === 'session stopped', 5_000);
      const stoppedAt = stoppedLine?.time ?? Date.now();
      const nodes = sup.children.filter((c) => c.alive && (c.name.startsWith('combiner-') || c.name.startsWith('client-')));
      const roleOf = (name: string): 'combiner' | 'client' => (name.startsWith('combiner-') ? 'combiner' : 'client');
      // Wait (at most 15 s) until every node's last known state is idle.
      const settleBy = Date.now() + 15_000;
      while (Date.now() < settleBy && nodes.some((c) => isBusy(roleOf(c.name), watch.stateAt(c.name, Number.MAX_SAFE_INTEGER)))) await sleep(50);
      const apiNow = await callApi<ApiStatus>(api, 'api/status').catch(() => undefined);
      stop.apiCombinerStates = Object.fromEntries((apiNow?.combiners ?? []).map((c) => [c.name, c.state]));
      stop.nodes = nodes.map((c) => {
        const role = roleOf(c.name);
        const busyAtStop = isBusy(role, watch.stateAt(c.name, stoppedAt));
        if (!busyAtStop) return { name: c.name, busyAtStop, idleMs: 0 };
        const idle = watch.firstState(c.name, stoppedAt, (st) => !isBusy(role, st));
        return { name: c.name, busyAtStop, idleMs: idle ? idle.time - stoppedAt : null };
      });
      const times = stop.nodes.map((n) => n.idleMs);
      stop.idleMs = times.some((t) => t === null) ? NaN : Math.max(0, ...(times as number[]));
      const busy = stop.nodes.filter((n) => n.busyAtStop);
      o.say(
        `  ${busy.length} node(s) were busy when the reducer stopped the session; ${Number.isFinite(stop.idleMs) ? `all idle ${stop.idleMs} ms later` : 'NOT all went idle within 15 s'}` +
          (busy.length ? ` (${busy.map((n) => `${n.name} ${n.idleMs ?? 'never'}${n.idleMs === null ? '' : ' ms'}`).join(', ')})` : ''),
      );
    }
  } finally {
    offDied();
    offLines();
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
  return { ...finished, trail, logDir, kills, stop };
}

/** Runs an admin command (`fedstate stop …`) as its own process; resolves with its exit code. */
function runCli(args: string[]): Promise<number | null> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, ['--import', 'tsx', cli, ...args], { cwd: root, env: childEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
    // It ends by itself in a moment; if this process ends first, it goes too.
    const kill = (): void => void proc.kill('SIGKILL');
    process.on('exit', kill);
    let err = '';
    proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    proc.once('error', () => undefined);
    proc.once('exit', (code) => {
      process.off('exit', kill);
      if (code !== 0) process.stderr.write(`fedstate ${args[0]} failed: ${err.slice(-500)}\n`);
      resolve(code);
    });
  });
}
