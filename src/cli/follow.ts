// Following a session through the REST API: polls GET /api/status and reports each new round once,
// until the reducer reaches done, failed or stopped. Used by `fedstate start --wait` and by the
// multi-process sandbox.
import { FedError } from '../errors.ts';
import { callApi, isTerminal, type ApiStatus } from './common.ts';

export type RoundRecord = ApiStatus['history'][number];

export interface FollowOptions {
  sessionId: string;
  intervalMs?: number;
  /** Called once per new round record, in order, with the time it was first seen. */
  onRound?: (round: RoundRecord, seenAt: number) => void;
  onStatus?: (status: ApiStatus) => void;
  signal?: AbortSignal;
  /** Give up when the API cannot be reached for this long. */
  unreachableMs?: number;
}

export async function followSession(api: string, o: FollowOptions): Promise<ApiStatus> {
  let seen = 0;
  let lastOk = Date.now();
  for (;;) {
    if (o.signal?.aborted) throw new FedError('cancelled', 'stopped following the session');
    let status: ApiStatus | undefined;
    try {
      status = await callApi<ApiStatus>(api, 'api/status', { timeoutMs: 10_000 });
      lastOk = Date.now();
    } catch (e) {
      if (Date.now() - lastOk > (o.unreachableMs ?? 30_000)) throw e;
    }
    if (status) {
      // A status without our session means the reducer forgot it (restarted on a memory store).
      if (status.session && status.session.id !== o.sessionId) throw new FedError('conflict', `the reducer now runs session ${status.session.id}, not ${o.sessionId}`);
      o.onStatus?.(status);
      const now = Date.now();
      // (`o.onRound?.(history[seen++])` would skip the increment too when there is no listener, and spin.)
      for (; seen < status.history.length; seen++) o.onRound?.(status.history[seen]!, now);
      if (status.session && isTerminal(status.state)) return status;
    }
    await new Promise((r) => setTimeout(r, o.intervalMs ?? 250));
  }
}
