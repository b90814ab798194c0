// Typed errors: every refusal in fedstate carries a stable machine-readable code, so callers,
// metrics and tests can tell one kind of failure from another without parsing messages.

export const errorCodes = [
  'malformed', // bytes or objects that do not decode to a valid message
  'unknown-message',
  'oversized',
  'hash-mismatch',
  'wrong-shape',
  'not-finite',
  'stale-round',
  'wrong-session',
  'unselected',
  'duplicate',
  'base-mismatch',
  'bad-weight',
  'late',
  'fetch-failed',
  'unauthenticated',
  'forbidden',
  'impersonation',
  'not-found',
  'no-route',
  'closed',
  'timeout',
  'cancelled',
  'config',
  'rate-limited',
  'conflict',
  'internal',
] as const;

export type ErrorCode = (typeof errorCodes)[number];

export class FedError extends Error {
  override readonly name = 'FedError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly detail?: Record<string, unknown>,
  ) {
    super(`${code}: ${message}`);
  }
}

export const isFedError = (e: unknown, code?: ErrorCode): e is FedError =>
  e instanceof FedError && (code === undefined || e.code === code);

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
