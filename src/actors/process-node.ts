// Running one node as an OS process: a readiness record on stdout once it serves, then it runs until
// SIGINT or SIGTERM (or, for supervised children, until the supervisor's stdin pipe closes) and
// closes cleanly — links said goodbye to, listeners shut, store flushed — before the process ends.
import { FedError } from '../errors.ts';
import { errorFields, type Logger } from '../log.ts';

export interface ServeOptions {
  log: Logger;
  /** One JSON line on stdout once serving (endpoints with their real ports), for scripts and supervisors. */
  ready: Record<string, unknown>;
  close: () => Promise<void>;
  /**
   * End when stdin ends: a supervisor holding a pipe to our stdin takes us down with it, even if it
   * dies by SIGKILL and never gets to signal us.
   */
  exitWithParent?: boolean;
  /** How long a clean close may take before the process ends anyway. */
  closeTimeoutMs?: number;
}

/** Resolves with the exit code after a signal (or the end of stdin) and a clean close. */
export async function serveUntilSignal(opts: ServeOptions): Promise<number> {
  const { log } = opts;
  // A node that crashes says why in its own log stream, not only as a stack trace on stderr.
  const crash = (e: unknown): void => {
    log.fatal({ error: errorFields(e) }, 'crashed');
    process.exit(1);
  };
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);
  const reason = await new Promise<string>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
    if (opts.exitWithParent) {
      process.stdin.on('data', () => undefined);
      process.stdin.once('end', () => resolve('stdin closed'));
      process.stdin.once('error', () => resolve('stdin closed'));
      process.stdin.resume();
    }
    process.stdout.write(`${JSON.stringify(opts.ready)}\n`);
    log.info(opts.ready, 'ready');
  });
  // A second signal while closing means "now".
  const force = (): void => {
    log.warn('second signal: exiting without a clean close');
    process.exit(130);
  };
  process.once('SIGINT', force);
  process.once('SIGTERM', force);
  log.info({ reason }, 'shutting down');
  const limit = opts.closeTimeoutMs ?? 15_000;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      opts.close(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new FedError('timeout', `close took longer than ${limit} ms`)), limit);
      }),
    ]);
    log.info('closed');
    return 0;
  } catch (e) {
    log.error({ error: errorFields(e) }, 'close failed');
    return 1;
  } finally {
    clearTimeout(timer);
    if (opts.exitWithParent) process.stdin.pause();
    // Sockets a transport keeps for reuse must not hold a closed node's process open.
    setTimeout(() => process.exit(process.exitCode ?? 0), 2_000).unref();
  }
}
