// gRPC transport on @grpc/grpc-js: one service with one bidirectional streaming RPC,
//
//   service Transport { rpc Link(stream bytes) returns (stream bytes); }
//
// whose messages are already-encoded protobuf `Frame`s (identity serializers, no proto-loader), so
// gRPC carries exactly the bytes every other transport carries and the Link does the rest. (A blob
// chunk frame with a large payload is two messages, its head and then the payload: chunk-frame.ts.)
// One dial = one HTTP/2 connection (local subchannel pool): a dead connection takes down exactly one
// link, and one link's blob transfer never shares a flow-control window with another's.
//
// Keepalive (defaults; both sides ping): an HTTP/2 PING every 10 s, and a connection whose PING is
// not answered within 20 s is dropped, so a peer that vanished without a FIN/RST (power loss, network
// partition, frozen process) is detected within ~30 s, and the stream ends with a 'closed' (or
// 'timeout') FedError. Pings are sent even without active calls so an idle link is watched too.
// The answer to a PING needs the peer's event loop, so the timeout is also how long a node may block
// its loop (a long synchronous training step) before its links are declared dead; 20 s leaves room.
// grpc-js servers do not police ping rates (no ping strikes), so clients may ping this often.
// FEDn uses 5 s/30 s on clients and 60 s/30 s on servers; we ping as often on both sides because a
// combiner waiting for a dead client's update should learn early.
//
// Listening goes through the front door of tls.ts: a net.Server that limits new connections per
// remote IP, runs TLS when configured (mutual TLS: a verified client certificate becomes the
// channel's identity; a refused one ends the stream with UNAUTHENTICATED), and hands each connection
// to grpc-js through a connection injector. Dialing with TLS uses grpc-js's own TLS credentials; when
// a dial fails, a bare TLS handshake tells why (untrusted or expired server certificate, a listener
// that does or does not speak TLS) as an 'unauthenticated' FedError.
import * as grpc from '@grpc/grpc-js';
import { isIP } from 'node:net';
import { checkServerIdentity } from 'node:tls';
import { FedError } from '../errors.ts';
import { DEFAULT_MAX_FRAME_BYTES, WireChannel } from './chunk-frame.ts';
import { bareHost, formatEndpoint, parseEndpoint } from './endpoint.ts';
import { AcceptedChannels, openListenerDoor, shutdownWithin, type ListenerDoorOptions } from './socket-listener.ts';
import { explainDialFailure, identityOfCertificate, refusalInReason, type FrontDoor } from './tls.ts';
import type { FrameChannel, Listener, PeerIdentity, Transport } from './types.ts';

export interface GrpcTransportOptions extends ListenerDoorOptions {
  /** Largest encoded frame either way (gRPC's own receive cut-off sits at twice this). */
  maxFrameBytes?: number;
  keepaliveMs?: number;
  keepaliveTimeoutMs?: number;
  /** How long dial() waits for the connection before failing with 'timeout'. */
  dialTimeoutMs?: number;
  /**
   * HTTP/2 receive window the dialing side advertises. The default 64 KiB window would make a
   * 1 MiB chunk wait for 16 window updates; a few MiB keeps a blob stream flowing without
   * letting a stalled reader buffer more than that.
   */
  flowControlWindow?: number;
  /** How long a graceful close waits for the peer's end of stream before cancelling. */
  closeTimeoutMs?: number;
}

export const LINK_METHOD = '/fedstate.v1.Transport/Link';
/** The TLS server name a dial to an IP address sends (listeners serve one certificate whatever the name). */
const IP_DIAL_SERVER_NAME = 'fedstate-node';
const CLOSE_REASON_KEY = 'fedstate-close-reason';

const identity = (b: Buffer): Buffer => b;

/** The service definition: raw Buffers in and out, each one encoded Frame. */
export const linkServiceDefinition: grpc.ServiceDefinition = {
  link: {
    path: LINK_METHOD,
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
    originalName: 'Link',
  },
};

interface Settings {
  maxFrameBytes: number;
  keepaliveMs: number;
  keepaliveTimeoutMs: number;
  dialTimeoutMs: number;
  flowControlWindow: number;
  closeTimeoutMs: number;
}

function settingsOf(opts: GrpcTransportOptions): Settings {
  return {
    maxFrameBytes: opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
    keepaliveMs: opts.keepaliveMs ?? 10_000,
    keepaliveTimeoutMs: opts.keepaliveTimeoutMs ?? 20_000,
    dialTimeoutMs: opts.dialTimeoutMs ?? 10_000,
    flowControlWindow: opts.flowControlWindow ?? 4 * 1024 * 1024,
    closeTimeoutMs: opts.closeTimeoutMs ?? 5_000,
  };
}

/** Channel options shared by both ends (exported so the benchmark's raw baseline uses the same). */
export function grpcChannelOptions(opts: GrpcTransportOptions = {}): grpc.ChannelOptions {
  const s = settingsOf(opts);
  return {
    'grpc.max_send_message_length': s.maxFrameBytes,
    // Twice the frame limit: a frame just over it reaches our own check, which names the problem
    // ('oversized') to both ends; grpc-js's cut-off only bounds the memory of absurd messages, and
    // on the server it surfaces as a bare cancellation.
    'grpc.max_receive_message_length': 2 * s.maxFrameBytes,
    'grpc.keepalive_time_ms': s.keepaliveMs,
    'grpc.keepalive_timeout_ms': s.keepaliveTimeoutMs,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.use_local_subchannel_pool': 1,
    'grpc-node.flow_control_window': s.flowControlWindow,
    // A link is long-lived by design; the library must not retire the connection under it.
    'grpc.client_idle_timeout_ms': 2 ** 31 - 1,
    'grpc.enable_retries': 0,
  };
}

const statusName = (code: number): string => grpc.status[code] ?? String(code);

function errorFromStatus(peer: string, s: grpc.StatusObject): FedError {
  const what = `grpc stream with ${peer} ended: ${statusName(s.code)} ${s.details}`;
  const detail = { grpcCode: s.code };
  switch (s.code) {
    case grpc.status.RESOURCE_EXHAUSTED:
      return new FedError(/^rate-limited: /.test(s.details) ? 'rate-limited' : 'oversized', what, detail);
    case grpc.status.INVALID_ARGUMENT:
      return new FedError('malformed', what, detail);
    case grpc.status.DEADLINE_EXCEEDED:
      return new FedError('timeout', what, detail);
    case grpc.status.UNAUTHENTICATED:
      return new FedError('unauthenticated', what, detail);
    case grpc.status.PERMISSION_DENIED:
      return new FedError('forbidden', what, detail);
    case grpc.status.UNAVAILABLE:
    case grpc.status.CANCELLED:
      return new FedError(/keepalive/i.test(s.details) ? 'timeout' : 'closed', what, detail);
    default:
      return new FedError('internal', what, detail);
  }
}

function statusFromError(e: FedError): grpc.status {
  switch (e.code) {
    case 'malformed':
    case 'unknown-message':
      return grpc.status.INVALID_ARGUMENT;
    case 'oversized':
    case 'rate-limited':
      return grpc.status.RESOURCE_EXHAUSTED;
    case 'unauthenticated':
      return grpc.status.UNAUTHENTICATED;
    case 'forbidden':
      return grpc.status.PERMISSION_DENIED;
    default:
      return grpc.status.INTERNAL;
  }
}

// Metadata values must be printable ASCII.
const encodeReason = (reason: string): string => encodeURIComponent(reason.slice(0, 200));
function decodeReason(md: grpc.Metadata | undefined): string | undefined {
  const v = md?.get(CLOSE_REASON_KEY)[0];
  if (typeof v !== 'string') return undefined;
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

abstract class GrpcChannel extends WireChannel {
  constructor(
    protected readonly call: grpc.ClientDuplexStream<Buffer, Buffer> | grpc.ServerDuplexStream<Buffer, Buffer>,
    readonly peer: string,
    maxFrameBytes: number,
  ) {
    super(maxFrameBytes);
    call.on('data', (b: Buffer) => this.receive(b));
    call.on('drain', () => this.releaseWaiters());
    // Failures arrive as 'status' (client) or 'cancelled' (server); an 'error' event without a
    // listener would be thrown by the EventEmitter and crash the process.
    call.on('error', () => undefined);
  }

  protected write(bytes: Buffer, tail?: Buffer): Promise<void> {
    // write() returning false means the stream's buffer is at its high-water mark: the frame is
    // queued, and the sender waits for 'drain' before offering the next one.
    let room = this.call.write(bytes);
    if (tail) room = this.call.write(tail);
    return room ? Promise.resolve() : this.waitForDrain();
  }
}

class GrpcClientChannel extends GrpcChannel {
  private closeTimer: NodeJS.Timeout | undefined;
  private serverIdentity: PeerIdentity | undefined;

  constructor(
    private readonly client: grpc.Client,
    private readonly clientCall: grpc.ClientDuplexStream<Buffer, Buffer>,
    peer: string,
    private readonly settings: Settings,
    private readonly secure: boolean,
  ) {
    super(clientCall, peer, settings.maxFrameBytes);
    clientCall.on('status', (s: grpc.StatusObject) => this.onStatus(s));
  }

  /** With TLS: the fedstate identity the server's (verified) certificate names, once the stream is up. */
  get identity(): PeerIdentity | undefined {
    if (!this.secure) return undefined;
    this.serverIdentity ??= identityOfCertificate(this.clientCall.getAuthContext()?.sslPeerCertificate);
    return this.serverIdentity;
  }

  private onStatus(s: grpc.StatusObject): void {
    if (this.closed) return this.dispose();
    if (s.code !== grpc.status.OK) {
      this.finish(errorFromStatus(this.peer, s));
      return this.dispose();
    }
    // The peer ended cleanly: frames it sent before its trailers may still sit in the readable
    // buffer, so report the end only after they were delivered.
    const reason = decodeReason(s.metadata) ?? 'stream ended';
    const done = (): void => {
      this.finish(new FedError(refusalInReason(reason) ?? 'closed', `peer ${this.peer} closed: ${reason}`, { clean: true }));
      this.dispose();
    };
    if (this.clientCall.readableEnded) done();
    else this.clientCall.once('end', done);
  }

  protected endGracefully(): void {
    // Half-close: frames already written go out first, then the server ends its side and the
    // status arrives; if it never does, the call is cancelled.
    this.clientCall.end();
    this.closeTimer = setTimeout(() => this.dispose(), this.settings.closeTimeoutMs);
    this.closeTimer.unref();
  }

  protected abort(): void {
    this.dispose();
  }

  private dispose(): void {
    clearTimeout(this.closeTimer);
    this.clientCall.cancel();
    this.client.close();
  }
}

class GrpcServerChannel extends GrpcChannel {
  constructor(
    private readonly serverCall: grpc.ServerDuplexStream<Buffer, Buffer>,
    private readonly onGone: (ch: GrpcServerChannel) => void,
    maxFrameBytes: number,
    readonly identity?: PeerIdentity,
  ) {
    super(serverCall, `grpc://${serverCall.getPeer()}`, maxFrameBytes);
    serverCall.on('end', () => {
      // Usually the client half-closed: everything it sent has been delivered. But a connection
      // torn down under the stream (keepalive timeout, reset) also ends the readable side, with
      // 'cancelled' following within the same turn of I/O; wait for it before calling it clean.
      setImmediate(() => {
        if (this.closed) return;
        this.serverCall.end();
        this.finish(new FedError('closed', `peer ${this.peer} closed the stream`, { clean: true }));
      });
    });
    serverCall.on('cancelled', () =>
      this.finish(new FedError('closed', `connection to ${this.peer} lost (stream cancelled)`, { clean: false })),
    );
  }

  protected endGracefully(reason: string): void {
    const md = new grpc.Metadata();
    md.set(CLOSE_REASON_KEY, encodeReason(reason));
    this.serverCall.end(md);
  }

  protected abort(error: FedError): void {
    // The documented way for a streaming handler to end with a non-OK status.
    this.serverCall.emit('error', { code: statusFromError(error), details: error.message.slice(0, 500) });
  }

  protected override released(): void {
    this.onGone(this);
  }
}

function waitForReady(client: grpc.Client, endpoint: string, timeoutMs: number): Promise<void> {
  const channel = client.getChannel();
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const check = (): void => {
      const state = channel.getConnectivityState(true);
      if (state === grpc.connectivityState.READY) return resolve();
      // Refused connections show up as TRANSIENT_FAILURE; grpc would keep retrying with backoff,
      // but a dialer (which has its own reconnect policy) wants to know now.
      if (state === grpc.connectivityState.TRANSIENT_FAILURE || state === grpc.connectivityState.SHUTDOWN) {
        return reject(new FedError('closed', `cannot connect to ${endpoint}`));
      }
      channel.watchConnectivityState(state, deadline, (err) => {
        if (err) reject(new FedError('timeout', `no connection to ${endpoint} within ${timeoutMs} ms`));
        else check();
      });
    };
    check();
  });
}

export class GrpcTransport implements Transport {
  readonly kind = 'grpc' as const;
  private readonly settings: Settings;

  constructor(private readonly options: GrpcTransportOptions = {}) {
    this.settings = settingsOf(options);
  }

  async listen(endpoint: string, accept: (channel: FrameChannel) => void): Promise<Listener> {
    const ep = parseEndpoint(endpoint, 'grpc');
    const server = new grpc.Server(grpcChannelOptions(this.options));
    const channels = new AcceptedChannels<GrpcServerChannel>(accept, (ch, reason) => ch.close(reason));
    const secure = !!this.options.tls;
    let door: FrontDoor | undefined;
    server.addService(linkServiceDefinition, {
      link: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        const verdict = secure ? door?.verdictByPeer(call.getPeer()) : undefined;
        const ch = new GrpcServerChannel(call, (c) => channels.forget(c), this.settings.maxFrameBytes, verdict?.identity);
        channels.admit(ch, secure && !verdict ? new FedError('unauthenticated', `no TLS session known for ${call.getPeer()}`) : verdict?.error);
      },
    });
    // Connections reach grpc-js through an injector: the front door (tls.ts) owns the socket, limits
    // the connection rate and runs TLS; grpc-js speaks HTTP/2 on whatever it is given.
    const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    try {
      door = await openListenerDoor(ep, endpoint, this.options, ['h2'], (socket) => injector.injectConnection(socket));
    } catch (e) {
      server.forceShutdown();
      throw e;
    }
    return channels.listener(ep, door, () =>
      shutdownWithin(
        this.settings.closeTimeoutMs,
        (done) => server.tryShutdown(done),
        (done) => {
          server.forceShutdown();
          done();
        },
      ),
    );
  }

  async dial(endpoint: string): Promise<FrameChannel> {
    const ep = parseEndpoint(endpoint, 'grpc');
    const t = this.options.tls;
    const buf = (v: string | Buffer | undefined): Buffer | null => (v === undefined ? null : Buffer.from(v));
    const host = bareHost(ep.host);
    // grpc-js would name an IP address in the TLS server name extension, which RFC 6066 forbids (Node
    // warns, DEP0123): there it sends a placeholder name instead, and the certificate is still
    // checked against the IP address dialled.
    const byIp = !!t && isIP(host) !== 0;
    const credentials = t
      ? grpc.credentials.createSsl(buf(t.ca), buf(t.key), buf(t.cert), byIp ? { checkServerIdentity: (_name, cert) => checkServerIdentity(host, cert) } : {})
      : grpc.credentials.createInsecure();
    const options = { ...grpcChannelOptions(this.options), ...(byIp ? { 'grpc.ssl_target_name_override': IP_DIAL_SERVER_NAME } : {}) };
    const client = new grpc.Client(`${ep.host}:${ep.port}`, credentials, options);
    try {
      await waitForReady(client, endpoint, this.settings.dialTimeoutMs);
    } catch (e) {
      client.close();
      // grpc-js only says the connection failed; when TLS is why, a bare handshake names the problem.
      if (e instanceof FedError && e.code === 'closed') throw (await explainDialFailure({ host, port: ep.port, endpoint, alpn: ['h2'] }, t)) ?? e;
      throw e;
    }
    const call = client.makeBidiStreamRequest<Buffer, Buffer>(LINK_METHOD, identity, identity);
    return new GrpcClientChannel(client, call, formatEndpoint(ep), this.settings, !!t);
  }
}
