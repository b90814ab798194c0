// WebSocket transport on `ws`: one binary message = one encoded protobuf `Frame` (a blob chunk frame
// with a large payload is two: its head, then the payload; see chunk-frame.ts).
//
// Masking of client-to-server frames (and unmasking on the server) is the per-byte cost of
// WebSocket; on Node < 22 ws does it with the native `bufferutil` addon when that loads (it ships
// prebuilt binaries, so no install script is needed) and with a JS loop otherwise. maskingEngine()
// reports which one this process really uses, and the tests and benchmark check it is native.
//
// Keepalive: each side sends a WebSocket ping every keepaliveMs (default 10 s); a peer from which
// nothing (no pong, no message) arrived for keepaliveMs + keepaliveTimeoutMs (default 10 s + 20 s) is
// declared dead, its socket destroyed, and the channel ends with a 'timeout' FedError. TCP alone
// cannot tell: a frozen or partitioned peer's kernel keeps ACKing or nothing comes back at all. As
// with gRPC, a pong needs the peer's event loop, so the budget also bounds how long a node may block.
//
// Listening goes through the front door of tls.ts (per-IP connection rate, TLS), then a node:http
// server whose upgrades become WebSockets. With TLS the dialer uses wss://; a listener that refuses a
// peer's certificate answers the upgrade with HTTP 401 and the reason, a dialer's TLS failure is
// named by its certificate error, both as 'unauthenticated' FedErrors. Closes carry fedstate codes in
// the private range: 4401 unauthenticated, 4429 rate-limited.
import http from 'node:http';
import { createRequire } from 'node:module';
import type net from 'node:net';
import type { TLSSocket } from 'node:tls';
import WebSocket, { WebSocketServer } from 'ws';
import { FedError } from '../errors.ts';
import { DEFAULT_MAX_FRAME_BYTES, WireChannel } from './chunk-frame.ts';
import { bareHost, formatEndpoint, parseEndpoint } from './endpoint.ts';
import { AcceptedChannels, openListenerDoor, shutdownWithin, type ListenerDoorOptions } from './socket-listener.ts';
import { classifyTlsError, clientTlsOptions, explainDialFailure, identityOfCertificate, refusalInReason, type FrontDoor } from './tls.ts';
import type { FrameChannel, Listener, PeerIdentity, Transport } from './types.ts';

export interface WsTransportOptions extends ListenerDoorOptions {
  /** Largest encoded frame either way; also ws's maxPayload. */
  maxFrameBytes?: number;
  /**
   * send() resolves only while the socket holds at most this many unsent bytes, so a sender
   * facing a slow reader stops at roughly this much user-space buffer (plus the kernel's).
   */
  highWaterMark?: number;
  keepaliveMs?: number;
  keepaliveTimeoutMs?: number;
  dialTimeoutMs?: number;
  /** How long a graceful close waits for the peer's close frame before destroying the socket. */
  closeTimeoutMs?: number;
}

interface Settings {
  maxFrameBytes: number;
  highWaterMark: number;
  keepaliveMs: number;
  keepaliveTimeoutMs: number;
  dialTimeoutMs: number;
  closeTimeoutMs: number;
}

function settingsOf(o: WsTransportOptions): Settings {
  return {
    maxFrameBytes: o.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
    highWaterMark: o.highWaterMark ?? 2 * 1024 * 1024,
    keepaliveMs: o.keepaliveMs ?? 10_000,
    keepaliveTimeoutMs: o.keepaliveTimeoutMs ?? 20_000,
    dialTimeoutMs: o.dialTimeoutMs ?? 10_000,
    closeTimeoutMs: o.closeTimeoutMs ?? 5_000,
  };
}

/** Options for ws sockets on both ends (exported so the benchmark's raw baseline uses the same). */
export function wsSocketOptions(o: WsTransportOptions = {}): { maxPayload: number; perMessageDeflate: false } {
  // Compression is off: model chunks are float noise that does not deflate, and deflating 1 MiB
  // frames would cost far more CPU than the bytes it saves on any LAN.
  return { maxPayload: settingsOf(o).maxFrameBytes, perMessageDeflate: false };
}

const requireHere = createRequire(import.meta.url);

/** Which masking implementation ws uses in this process: Node's own, native bufferutil, or plain JS. */
export function maskingEngine(): 'node' | 'bufferutil' | 'js' {
  if ((http as unknown as { websocketMask?: unknown }).websocketMask) return 'node';
  if (process.env.WS_NO_BUFFER_UTIL) return 'js';
  try {
    // bufferutil falls back to its JS implementation silently when the native addon fails to load;
    // the native build is the one whose mask() differs from the fallback's.
    const bu = requireHere('bufferutil') as { mask: unknown };
    const fallback = requireHere('bufferutil/fallback') as { mask: unknown };
    return bu.mask !== fallback.mask ? 'bufferutil' : 'js';
  } catch {
    return 'js';
  }
}

const CLOSE_NORMAL = 1000;
const CLOSE_GOING_AWAY = 1001;
const CLOSE_UNSUPPORTED = 1003;
const CLOSE_ABNORMAL = 1006;
const CLOSE_INVALID = 1007;
const CLOSE_POLICY = 1008;
const CLOSE_TOO_BIG = 1009;
const CLOSE_INTERNAL = 1011;
const CLOSE_UNAUTHENTICATED = 4401;
const CLOSE_RATE_LIMITED = 4429;

function closeCodeFor(e: FedError): number {
  switch (e.code) {
    case 'oversized':
      return CLOSE_TOO_BIG;
    case 'malformed':
    case 'unknown-message':
      return CLOSE_INVALID;
    case 'unauthenticated':
      return CLOSE_UNAUTHENTICATED;
    case 'rate-limited':
      return CLOSE_RATE_LIMITED;
    case 'forbidden':
      return CLOSE_POLICY;
    default:
      return CLOSE_INTERNAL;
  }
}

function errorFromClose(peer: string, code: number, reason: string): FedError {
  const what = `peer ${peer} closed (${code}${reason ? ` ${reason}` : ''})`;
  switch (code) {
    case CLOSE_NORMAL:
    case CLOSE_GOING_AWAY:
      return new FedError(refusalInReason(reason) ?? 'closed', what, { wsCode: code, clean: true });
    case CLOSE_ABNORMAL:
      return new FedError('closed', `connection to ${peer} lost`, { wsCode: code, clean: false });
    case CLOSE_TOO_BIG:
      return new FedError('oversized', what, { wsCode: code });
    case CLOSE_UNSUPPORTED:
    case CLOSE_INVALID:
      return new FedError('malformed', what, { wsCode: code });
    case CLOSE_POLICY:
      return new FedError('forbidden', what, { wsCode: code });
    case CLOSE_UNAUTHENTICATED:
      return new FedError('unauthenticated', what, { wsCode: code });
    case CLOSE_RATE_LIMITED:
      return new FedError('rate-limited', what, { wsCode: code });
    default:
      return new FedError(code === CLOSE_INTERNAL ? 'internal' : 'closed', what, { wsCode: code });
  }
}

// Close reasons must fit a control frame (125 bytes, 2 of them the code).
function shortReason(reason: string): string {
  let r = reason;
  while (Buffer.byteLength(r) > 120) r = r.slice(0, -1);
  return r;
}

class WsChannel extends WireChannel {
  private lastSeen = Date.now();
  private readonly keepalive: NodeJS.Timeout;
  private closeTimer: NodeJS.Timeout | undefined;
  private socketError: Error | undefined;

  constructor(
    private readonly ws: WebSocket,
    readonly peer: string,
    private readonly settings: Settings,
    readonly identity?: PeerIdentity,
  ) {
    super(settings.maxFrameBytes);
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      this.lastSeen = Date.now();
      if (!isBinary) return this.fail(new FedError('malformed', `text message from ${peer}; frames are binary`));
      this.receive(data);
    });
    ws.on('pong', () => (this.lastSeen = Date.now()));
    ws.on('error', (err: Error & { code?: string }) => {
      // ws emits 'error' then 'close'; remember why, so the close can be reported as what it was.
      this.socketError = err;
      if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
        this.finish(new FedError('oversized', `message from ${peer} exceeds the limit of ${this.maxFrameBytes} bytes`));
      }
    });
    ws.on('close', (code: number, reason: Buffer) => {
      clearTimeout(this.closeTimer);
      if (this.closed) return;
      const error = errorFromClose(peer, code, reason.toString());
      if (code === CLOSE_ABNORMAL && this.socketError) {
        this.finish(new FedError('closed', `connection to ${peer} lost: ${this.socketError.message}`, { clean: false }));
      } else {
        this.finish(error);
      }
    });
    this.keepalive = setInterval(() => this.checkAlive(), settings.keepaliveMs);
    this.keepalive.unref();
  }

  private checkAlive(): void {
    if (this.closed) return;
    const limit = this.settings.keepaliveMs + this.settings.keepaliveTimeoutMs;
    if (Date.now() - this.lastSeen <= limit) {
      this.ws.ping();
      return;
    }
    // A timer can fire after the event loop was busy for a while, before the socket reads that
    // were waiting (a pong among them) have run; judge only after they had their turn.
    setImmediate(() => {
      if (this.closed || Date.now() - this.lastSeen <= limit) return;
      this.ws.terminate();
      this.finish(new FedError('timeout', `no sign of life from ${this.peer} for ${Date.now() - this.lastSeen} ms`));
    });
  }

  protected write(bytes: Buffer, tail?: Buffer): Promise<void> {
    // The callback runs once the last message was written to the socket (or failed). Failed writes
    // surface as the socket's 'error'/'close'; only successful flushes free room.
    const flushed = (err?: Error): void => {
      if (!err && this.ws.bufferedAmount <= this.settings.highWaterMark) this.releaseWaiters();
    };
    if (tail) {
      this.ws.send(bytes, { binary: true });
      this.ws.send(tail, { binary: true }, flushed);
    } else {
      this.ws.send(bytes, { binary: true }, flushed);
    }
    return this.ws.bufferedAmount <= this.settings.highWaterMark ? Promise.resolve() : this.waitForDrain();
  }

  protected endGracefully(reason: string): void {
    this.closeSocket(CLOSE_NORMAL, reason);
  }

  protected abort(error: FedError): void {
    this.closeSocket(closeCodeFor(error), error.message);
  }

  /** Graceful close with "going away", for a listener shutting down. */
  goAway(reason: string): void {
    if (this.closed) return;
    this.closeSocket(CLOSE_GOING_AWAY, reason);
    this.finish(undefined, reason);
  }

  // A peer that never answers the close handshake must not keep the socket open.
  private closeSocket(code: number, reason: string): void {
    this.ws.close(code, shortReason(reason));
    this.closeTimer = setTimeout(() => this.ws.terminate(), this.settings.closeTimeoutMs);
    this.closeTimer.unref();
  }

  protected override released(): void {
    clearInterval(this.keepalive);
  }
}

export class WsTransport implements Transport {
  readonly kind = 'ws' as const;
  private readonly settings: Settings;

  constructor(private readonly options: WsTransportOptions = {}) {
    this.settings = settingsOf(options);
  }

  async listen(endpoint: string, accept: (channel: FrameChannel) => void): Promise<Listener> {
    const ep = parseEndpoint(endpoint, 'ws');
    const secure = !!this.options.tls;
    const wss = new WebSocketServer({ noServer: true, ...wsSocketOptions(this.options) });
    const channels = new AcceptedChannels<WsChannel>(accept, (ch, reason) => ch.goAway(reason));
    let door: FrontDoor | undefined;
    // Plain requests get what ws's own server answers: this endpoint only speaks WebSocket.
    const server = http.createServer((_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain', upgrade: 'websocket' });
      res.end('this endpoint speaks WebSocket only\n');
    });
    server.on('clientError', (_err, socket: net.Socket) => socket.destroy());
    server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      socket.on('error', () => undefined);
      if (channels.closing) return void socket.destroy();
      const verdict = secure ? door?.verdictOf(req.socket) : undefined;
      const refusal = verdict?.error ?? (secure && !verdict ? new FedError('unauthenticated', 'no TLS session for this connection') : undefined);
      if (refusal) {
        const body = refusal.message;
        socket.end(`HTTP/1.1 401 Unauthorized\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => {
        const ch = new WsChannel(ws, `ws://${req.socket.remoteAddress}:${req.socket.remotePort}`, this.settings, verdict?.identity);
        ws.once('close', () => channels.forget(ch));
        channels.admit(ch);
      });
    });
    door = await openListenerDoor(ep, endpoint, this.options, ['http/1.1'], (socket) => server.emit('connection', socket));
    return channels.listener(ep, door, () =>
      shutdownWithin(
        this.settings.closeTimeoutMs,
        (done) => wss.close(() => done()),
        () => {
          for (const ws of wss.clients) ws.terminate();
        },
      ),
    );
  }

  dial(endpoint: string): Promise<FrameChannel> {
    const ep = parseEndpoint(endpoint, 'ws');
    const t = this.options.tls;
    const host = bareHost(ep.host);
    const url = `${t ? 'wss' : 'ws'}://${ep.host}:${ep.port}/`;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { ...wsSocketOptions(this.options), handshakeTimeout: this.settings.dialTimeoutMs, ...(t ? clientTlsOptions(t, host) : {}) });
      let serverIdentity: PeerIdentity | undefined;
      let settled = false;
      const fail = (error: FedError): void => {
        if (settled) return;
        settled = true;
        ws.removeListener('open', onOpen);
        ws.on('error', () => undefined);
        reject(error);
      };
      const onError = (err: Error & { code?: string }): void => {
        const tlsError = t ? classifyTlsError(err, endpoint) : undefined;
        if (tlsError) return fail(tlsError);
        const timedOut = /timed out/i.test(err.message);
        const plain = new FedError(timedOut ? 'timeout' : 'closed', `cannot connect to ${endpoint}: ${err.message}`);
        if (timedOut || err.code === 'ECONNREFUSED') return fail(plain);
        // A reset during the handshake: perhaps a TLS listener that a plaintext dialer cannot talk to.
        void explainDialFailure({ host, port: ep.port, endpoint, alpn: ['http/1.1'] }, t).then((why) => fail(why ?? plain));
      };
      const onOpen = (): void => {
        ws.removeListener('error', onError);
        if (settled) return;
        settled = true;
        resolve(new WsChannel(ws, formatEndpoint(ep), this.settings, serverIdentity));
      };
      ws.once('upgrade', (res: http.IncomingMessage) => {
        if (t) serverIdentity = identityOfCertificate((res.socket as TLSSocket).getPeerCertificate());
      });
      // A refused upgrade says why in its status and body (401 from a listener that refused our certificate).
      ws.once('unexpected-response', (req: http.ClientRequest, res: http.IncomingMessage) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += body.length < 1000 ? d : ''));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const code = status === 401 ? 'unauthenticated' : status === 429 ? 'rate-limited' : status === 403 ? 'forbidden' : 'closed';
          fail(new FedError(code, `${endpoint} refused the WebSocket upgrade (${status}): ${body.trim().replace(/^[a-z-]+: /, '') || res.statusMessage}`, { httpStatus: status }));
          req.destroy();
        });
        res.on('error', () => undefined);
      });
      ws.once('error', onError);
      ws.once('open', onOpen);
    });
  }
}
