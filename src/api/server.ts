// The reducer's HTTP surface: a small router on node:http serving the REST API (JSON under /api),
// for the CLI, scripts and the dashboard. Every write needs the admin token. Requests (and WebSocket
// upgrades) are rate-limited per client IP with a token bucket: the excess is answered 429
// {error: 'rate-limited'} with a Retry-After header.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { timingSafeEqual } from 'node:crypto';
import { FedError, errorMessage, isFedError, type ErrorCode } from '../errors.ts';
import { KeyedLimiter, type RateSpec } from '../security/rate-limit.ts';

export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface Request {
  method: Method;
  path: string;
  params: Record<string, string>;
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  body(): Promise<Buffer>;
  json<T = unknown>(): Promise<T>;
}

export type Reply =
  | { status?: number; json: unknown; headers?: Record<string, string> }
  | { status?: number; body: string | Uint8Array; type: string; headers?: Record<string, string> };

export type Handler = (req: Request) => Promise<Reply> | Reply;

/** A JSON Schema (the OpenAPI 3.0 dialect) for documenting bodies and parameters. */
export interface JsonSchema {
  type?: 'object' | 'array' | 'string' | 'number' | 'integer' | 'boolean';
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: boolean | JsonSchema;
  items?: JsonSchema;
  enum?: Array<string | number>;
  $ref?: string;
  nullable?: boolean;
  oneOf?: JsonSchema[];
  format?: string;
  minimum?: number;
  maximum?: number;
  pattern?: string;
  description?: string;
  default?: unknown;
}

export interface QueryDoc {
  description: string;
  schema: JsonSchema;
  required?: boolean;
}

/** What the OpenAPI document says about a route; query keys not listed here are refused. */
export interface RouteDoc {
  summary: string;
  description?: string;
  tags?: string[];
  params?: Record<string, string>;
  query?: Record<string, QueryDoc>;
  body?: { contentType: string; schema: JsonSchema; description?: string };
  /** Status code -> response. Error statuses without a schema get the shared Error schema. */
  responses: Record<number, { description: string; contentType?: string; schema?: JsonSchema }>;
}

interface Route {
  method: Method;
  path: string;
  pattern: RegExp;
  keys: string[];
  handler: Handler;
  write: boolean;
  doc?: RouteDoc;
}

export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

export const statusOf: Partial<Record<ErrorCode, number>> = {
  malformed: 400,
  config: 400,
  'wrong-shape': 400,
  'not-finite': 400,
  'hash-mismatch': 400,
  'unknown-message': 400,
  unauthenticated: 401,
  forbidden: 403,
  'not-found': 404,
  conflict: 409,
  oversized: 413,
  'rate-limited': 429,
};

export interface ApiOptions {
  /** Admin token required (as `Authorization: Bearer <token>`) on every write. */
  adminToken?: string;
  maxBodyBytes?: number;
  /** Requests per second per client IP (default 50/s, bursts of 100); perSecond 0 switches it off. */
  rateLimit?: RateSpec;
}

export const defaultApiRate: RateSpec = { perSecond: 50, burst: 100 };

export class ApiServer {
  private readonly routes: Route[] = [];
  private readonly upgrades = new Map<string, UpgradeHandler>();
  private server: Server | undefined;
  private readonly limiter: KeyedLimiter;

  constructor(private readonly opts: ApiOptions = {}) {
    this.limiter = new KeyedLimiter(opts.rateLimit ?? defaultApiRate);
  }

  /** Requests refused for their rate so far. */
  get rateLimited(): number {
    return this.limiter.refused;
  }

  /** Takes a token for the client at `ip`; the refusal says when to come back. */
  private admit(ip: string): FedError | undefined {
    if (this.limiter.take(ip)) return undefined;
    const wait = Math.max(1, Math.ceil(this.limiter.waitSeconds(ip)));
    return new FedError('rate-limited', `too many requests from ${ip} (limit ${this.limiter.spec.perSecond}/s); retry in ${wait} s`, { retryAfter: wait });
  }

  /** Registers a route; `:name` segments become params. Non-GET routes require the admin token. */
  route(method: Method, path: string, handler: Handler, doc?: RouteDoc): this {
    const keys: string[] = [];
    const pattern = new RegExp(
      `^${path.replace(/:([a-zA-Z]+)/g, (_, k: string) => {
        keys.push(k);
        return '([^/]+)';
      })}/?$`,
    );
    this.routes.push({ method, path, pattern, keys, handler, write: method !== 'GET', doc });
    return this;
  }

  /** Routes in registration order: method, path template (":name" params), whether it writes, its doc. */
  get routeList(): Array<{ method: Method; path: string; write: boolean; doc?: RouteDoc }> {
    return this.routes.map((r) => ({ method: r.method, path: r.path, write: r.write, doc: r.doc }));
  }

  /** Takes HTTP upgrades (WebSocket) on an exact path. */
  upgrade(path: string, handler: UpgradeHandler): this {
    this.upgrades.set(path, handler);
    return this;
  }

  async listen(port: number, host = '127.0.0.1'): Promise<string> {
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      const limited = this.admit(req.socket.remoteAddress ?? '?');
      if (limited) {
        socket.end(`HTTP/1.1 429 Too Many Requests\r\nretry-after: ${String(limited.detail?.retryAfter ?? 1)}\r\nconnection: close\r\n\r\n`);
        return;
      }
      const handler = this.upgrades.get(new URL(req.url ?? '/', 'http://localhost').pathname);
      if (!handler) {
        socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\n\r\n');
        return;
      }
      handler(req, socket, head);
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(port, host, () => resolve());
    });
    const addr = this.server.address() as AddressInfo;
    return `http://${host}:${addr.port}`;
  }

  /** The underlying node:http server (to attach WebSocket upgrades). */
  get http(): Server | undefined {
    return this.server;
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    s.closeAllConnections?.();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  private authorized(req: IncomingMessage): boolean {
    const token = this.opts.adminToken;
    if (!token) return true;
    const header = req.headers.authorization ?? '';
    const given = Buffer.from(header.startsWith('Bearer ') ? header.slice(7) : '');
    const want = Buffer.from(token);
    return given.length === want.length && timingSafeEqual(given, want);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const method = (req.method ?? 'GET').toUpperCase() as Method;
    try {
      const limited = this.admit(req.socket.remoteAddress ?? '?');
      if (limited) throw limited;
      let allowed: string[] = [];
      for (const route of this.routes) {
        const m = route.pattern.exec(url.pathname);
        if (!m) continue;
        if (route.method !== method) {
          allowed.push(route.method);
          continue;
        }
        if (route.write && !this.authorized(req)) throw new FedError('unauthenticated', 'admin token required (Authorization: Bearer <token>)');
        const params = Object.fromEntries(route.keys.map((k, i) => [k, decodeParam(m[i + 1]!)]));
        if (route.doc) {
          const known = route.doc.query ?? {};
          for (const key of url.searchParams.keys()) {
            if (!Object.hasOwn(known, key)) {
              const names = Object.keys(known);
              throw new FedError('config', `unknown query parameter "${key}"${names.length ? `; known: ${names.join(', ')}` : ''}`);
            }
          }
        }
        let cached: Buffer | undefined;
        const body = async (): Promise<Buffer> => (cached ??= await readBody(req, this.opts.maxBodyBytes ?? 512 * 1024 * 1024));
        const reply = await route.handler({
          method,
          path: url.pathname,
          params,
          query: url.searchParams,
          headers: req.headers,
          body,
          json: async <T>() => {
            const raw = await body();
            try {
              return JSON.parse(raw.length ? raw.toString('utf8') : '{}') as T;
            } catch {
              throw new FedError('malformed', 'request body is not valid JSON');
            }
          },
        });
        return send(res, reply);
      }
      allowed = [...new Set(allowed)];
      if (allowed.length) return send(res, { status: 405, json: { error: 'method-not-allowed', message: `${method} not allowed; use ${allowed.join(', ')}` }, headers: { allow: allowed.join(', ') } });
      return send(res, { status: 404, json: { error: 'not-found', message: `no route ${method} ${url.pathname}` } });
    } catch (e) {
      const code = isFedError(e) ? e.code : 'internal';
      const status = statusOf[code] ?? 500;
      const headers: Record<string, string> = status === 401 ? { 'www-authenticate': 'Bearer' } : {};
      if (status === 429) headers['retry-after'] = String(isFedError(e) ? (e.detail?.retryAfter ?? 1) : 1);
      return send(res, { status, json: { error: code, message: isFedError(e) ? e.message : errorMessage(e) }, headers });
    }
  }
}

function decodeParam(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new FedError('malformed', `bad percent-encoding in "${raw}"`);
  }
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        reject(new FedError('oversized', `request body exceeds ${limit} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function send(res: ServerResponse, reply: Reply): void {
  if (res.headersSent) return;
  const status = reply.status ?? 200;
  if ('json' in reply) {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...reply.headers });
    res.end(JSON.stringify(reply.json));
  } else {
    res.writeHead(status, { 'content-type': reply.type, ...reply.headers });
    res.end(reply.body);
  }
}
