// Child processes for benchmarks: re-running the current script with --expose-gc (heap figures need
// global.gc), and forking TypeScript workers that talk over IPC.
import { fork, type ChildProcess } from 'node:child_process';

/** True when V8 lets us collect garbage on demand. */
export const canGc = (): boolean => typeof globalThis.gc === 'function';

/**
 * Ensures global.gc: when it is missing, re-runs this very script (same loader, same arguments) with
 * --expose-gc, forwards its output and exit code, and never returns. Call before doing any work.
 */
export async function ensureGc(): Promise<void> {
  if (canGc()) return;
  if (process.env.FEDSTATE_BENCH_REEXEC) throw new Error('--expose-gc did not take effect');
  const script = process.argv[1]!;
  const child = fork(script, process.argv.slice(2), {
    execArgv: [...process.execArgv, '--expose-gc'],
    env: { ...process.env, FEDSTATE_BENCH_REEXEC: '1' },
    stdio: 'inherit',
  });
  const code = await new Promise<number>((resolve) => child.on('exit', (c, s) => resolve(c ?? (s ? 1 : 0))));
  process.exit(code);
}

export interface Worker<In, Out> {
  child: ChildProcess;
  send(message: In): void;
  /** Resolves with the next message that satisfies `match` (rejects if the child exits first). */
  next<T extends Out>(match: (m: Out) => m is T, timeoutMs?: number): Promise<T>;
  /** Resolves with the next message of this `type`. */
  expect<K extends string>(type: K, timeoutMs?: number): Promise<Extract<Out, { type: K }>>;
  stop(): Promise<void>;
}

/** Forks a TypeScript module (run through tsx) as a worker with an IPC channel. */
export function forkWorker<In, Out extends { type: string }>(
  module: string,
  args: string[] = [],
  opts: { execArgv?: string[]; env?: NodeJS.ProcessEnv; silent?: boolean } = {},
): Worker<In, Out> {
  const child = fork(module, args, {
    execArgv: ['--import', 'tsx', ...(opts.execArgv ?? [])],
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', opts.silent ? 'ignore' : 'inherit', 'inherit', 'ipc'],
  });
  const inbox: Out[] = [];
  const waiters: Array<() => void> = [];
  let exited = false;
  child.on('message', (m) => {
    inbox.push(m as Out);
    for (const w of waiters.splice(0)) w();
  });
  child.on('exit', () => {
    exited = true;
    for (const w of waiters.splice(0)) w();
  });
  const next = <T extends Out>(match: (m: Out) => m is T, timeoutMs = 300_000): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${module}: no answer within ${timeoutMs} ms`)), timeoutMs);
      const look = (): void => {
        const i = inbox.findIndex(match);
        if (i >= 0) {
          clearTimeout(timer);
          resolve(inbox.splice(i, 1)[0] as T);
          return;
        }
        const failed = inbox.find((m) => m.type === 'error') as { message?: string } | undefined;
        if (failed) {
          clearTimeout(timer);
          reject(new Error(`${module}: ${failed.message ?? 'failed'}`));
          return;
        }
        if (exited) {
          clearTimeout(timer);
          reject(new Error(`${module} exited (code ${child.exitCode})`));
          return;
        }
        waiters.push(look);
      };
      look();
    });
  return {
    child,
    send: (m) => {
      if (child.connected) child.send(m as never);
    },
    next,
    expect: <K extends string>(type: K, timeoutMs?: number) => next((m): m is Extract<Out, { type: K }> => m.type === type, timeoutMs),
    stop: async () => {
      if (exited) return;
      const gone = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await gone;
      clearTimeout(t);
    },
  };
}

/** In a worker: sends a message to the parent. */
export function toParent(message: { type: string } & Record<string, unknown>): void {
  process.send?.(message);
}

/**
 * In a worker: runs `handle` on each message from the parent and posts what it returns (or an
 * `error` message). The worker ends when the parent goes away, so a crashed benchmark leaves no
 * orphan federations running.
 */
export function serveParent<In, Out extends { type: string }>(handle: (message: In) => Promise<Out | undefined>): void {
  process.on('disconnect', () => process.exit(0));
  process.on('message', (m: In) => {
    handle(m).then(
      (out) => {
        if (out) process.send?.(out);
      },
      (e: unknown) => process.send?.({ type: 'error', message: e instanceof Error ? (e.stack ?? e.message) : String(e) }),
    );
  });
}
