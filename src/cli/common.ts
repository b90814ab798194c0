// What the node and admin commands share: settings resolution with --help, the logger, endpoint and
// address checks, and a small client for the reducer's REST API.
import { defineSettings, resolveSettings, settingsHelp, type Schema, type Settings } from '../config.ts';
import { FedError, errorCodes, errorMessage, type ErrorCode } from '../errors.ts';
import { createLogger, type Logger } from '../log.ts';
import { parseEndpoint } from '../transport/endpoint.ts';
import type { TransportKind } from '../transport/types.ts';

export interface Parsed<S extends Schema> {
  settings: Settings<S>;
  log: Logger;
}

/**
 * Resolves a command's settings from flags, env and --config; returns undefined after printing help.
 * Extra positional arguments are an error: every setting is a flag.
 */
export function parseCommand<S extends Schema>(
  command: string,
  usage: string,
  schema: S & ReturnType<typeof defineSettings>,
  argv: string[],
  bindings: Record<string, unknown> = {},
): Parsed<S & ReturnType<typeof defineSettings>> | undefined {
  const { values, rest } = resolveSettings(schema, { argv, command });
  const v = values as Settings<S & ReturnType<typeof defineSettings>> & { help: boolean; logLevel: string };
  if (v.help) {
    console.log(`usage: fedstate ${usage}\n\nsettings (flag > FEDSTATE_ variable > --config file > default):\n${settingsHelp(schema)}`);
    return undefined;
  }
  if (rest.length) throw new FedError('config', `${command} takes no positional arguments, got "${rest.join(' ')}"`);
  return { settings: v, log: createLogger({ level: v.logLevel, bindings: { role: command, ...bindings } }) };
}

/** A `check` for endpoint settings; `kinds` limits which transports make sense (never inproc across processes). */
export const endpointCheck =
  (kinds: readonly TransportKind[] = ['grpc', 'ws']) =>
  (value: string): void => {
    const ep = parseEndpoint(value);
    if (!kinds.includes(ep.kind)) throw new FedError('config', `"${value}" uses ${ep.kind}; a node process talks ${kinds.join(' or ')}`);
  };

export const nameCheck = (value: string): void => {
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(value)) throw new FedError('config', `"${value}" is not a valid name (letters, digits, ".", "_", "-"; at most 64)`);
};

/** `host:port`, `:port`, `port` or `http://host:port` for the API listener. */
export function parseListenAddress(value: string): { host: string; port: number } {
  const text = value.replace(/^https?:\/\//, '').replace(/\/$/, '');
  const m = /^(?:(\[[0-9a-fA-F:]+\]|[^:\s/]+)?:)?(\d{1,5})$/.exec(text);
  if (!m) throw new FedError('config', `bad listen address "${value}": expected host:port (port 0 lets the OS choose)`);
  const port = Number(m[2]);
  if (port > 65535) throw new FedError('config', `port ${port} out of range in "${value}"`);
  const host = m[1] ?? '127.0.0.1';
  return { host: host.startsWith('[') ? host.slice(1, -1) : host, port };
}

export const listenAddressCheck = (value: string): void => void parseListenAddress(value);

export const apiUrlCheck = (value: string): void => {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new FedError('config', `"${value}" is not a URL (e.g. http://127.0.0.1:8092)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new FedError('config', `"${value}" must be an http:// or https:// URL`);
};

/** Settings of the admin commands that talk to the reducer's REST API. */
export const apiSettings = {
  api: { type: 'string', default: 'http://127.0.0.1:8092', help: "the reducer's REST API", check: apiUrlCheck },
  adminToken: { type: 'string', flag: 'token', help: 'admin token (sent as Authorization: Bearer)' },
} as const satisfies Schema;

export interface ApiCall {
  method?: 'GET' | 'POST';
  token?: string;
  json?: unknown;
  body?: Uint8Array;
  timeoutMs?: number;
}

/** Calls the reducer API; a refusal becomes a FedError with the API's code and message. */
export async function callApi<T>(api: string, path: string, call: ApiCall = {}): Promise<T> {
  const headers: Record<string, string> = {};
  if (call.token) headers.authorization = `Bearer ${call.token}`;
  let body: BodyInit | undefined;
  if (call.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(call.json);
  } else if (call.body) {
    headers['content-type'] = 'application/octet-stream';
    body = call.body as unknown as BodyInit; // a Uint8Array is a valid fetch body; DOM typings lag behind
  }
  const url = new URL(path, api.endsWith('/') ? api : `${api}/`).toString();
  let res: Response;
  try {
    res = await fetch(url, { method: call.method ?? (body ? 'POST' : 'GET'), headers, body, signal: AbortSignal.timeout(call.timeoutMs ?? 30_000) });
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw new FedError(e instanceof Error && e.name === 'TimeoutError' ? 'timeout' : 'closed', `cannot reach the reducer API at ${api}: ${cause?.code ?? cause?.message ?? errorMessage(e)}`);
  }
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    throw new FedError('malformed', `${url} answered ${res.status} with non-JSON: ${text.slice(0, 200)}`);
  }
  if (!res.ok) {
    const err = parsed as { error?: string; message?: string } | undefined;
    const code = (errorCodes as readonly string[]).includes(err?.error ?? '') ? (err!.error as ErrorCode) : 'internal';
    // The server's message already starts with its code.
    throw new FedError(code, `${res.status} from ${path}: ${(err?.message ?? text).replace(new RegExp(`^${code}: `), '')}`);
  }
  return parsed as T;
}

/** What GET /api/status returns (the fields the CLI and the sandbox read). */
export interface ApiStatus {
  state: string;
  session: { id: string; rounds: number; committed: number; round: number } | null;
  failure: string;
  globalModelId: string;
  combiners: Array<{ name: string; connected: boolean; clients: string[]; state: string; endpoint: string; lastSeen: number }>;
  history: Array<{
    round: number;
    status: string;
    reason: string;
    updates: number;
    participants: string[];
    rejected: Record<string, number>;
    trainMetrics: Record<string, number>;
    evalMetrics: Record<string, number>;
    startedAt: number;
    endedAt: number;
  }>;
}

export const isTerminal = (state: string): boolean => state === 'done' || state === 'failed' || state === 'stopped';

/** Clients the reducer currently counts (on connected combiners). */
export const connectedClients = (s: ApiStatus): number => s.combiners.reduce((n, c) => n + (c.connected ? c.clients.length : 0), 0);

export function checkTransportsMatch(a: string, b: string, what: string): void {
  const ka = parseEndpoint(a).kind;
  const kb = parseEndpoint(b).kind;
  if (ka !== kb) throw new FedError('config', `${what}: ${a} is ${ka} but ${b} is ${kb}; a node speaks one transport`);
}
