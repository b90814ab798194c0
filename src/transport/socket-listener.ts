// What the socket transports' listeners (grpc, ws) share: the front door they open, the channels
// they accepted, and a close that ends those channels before the server under them goes away.
import type net from 'node:net';
import { errorMessage, type FedError } from '../errors.ts';
import type { WireChannel } from './chunk-frame.ts';
import { bareHost, formatEndpoint, type Endpoint } from './endpoint.ts';
import type { RateSpec } from '../security/rate-limit.ts';
import { openFrontDoor, type FrontDoor, type TlsOptions } from './tls.ts';
import type { FrameChannel, Listener } from './types.ts';

/** The TLS and admission options both socket transports (grpc, ws) take, passed to their front door as they are. */
export interface ListenerDoorOptions {
  /** TLS on every link of this transport (server certificate to listen, CA to verify peers; see tls.ts). */
  tls?: TlsOptions;
  /** New connections a listener accepts per remote IP; the excess is dropped before any TLS work. */
  connectionRate?: RateSpec;
  /** Told about each connection a listener refused (rate-limited, failed TLS handshake, refused certificate). */
  onRefused?: (error: FedError, peer: string) => void;
}

export function openListenerDoor(
  ep: Endpoint,
  endpoint: string,
  options: ListenerDoorOptions,
  alpn: string[],
  deliver: (socket: net.Socket) => void,
): Promise<FrontDoor> {
  return openFrontDoor({
    host: bareHost(ep.host),
    port: ep.port,
    endpoint,
    tls: options.tls,
    alpn,
    connectionRate: options.connectionRate,
    onRefused: options.onRefused,
    deliver,
  });
}

/** The channels one listener has handed to its owner and not yet seen end. */
export class AcceptedChannels<C extends WireChannel> {
  private readonly open = new Set<C>();
  private closingNow = false;

  constructor(
    private readonly accept: (channel: FrameChannel) => void,
    /** Ends a channel because the listener is closing (gRPC closes it, ws says "going away"). */
    private readonly dismiss: (channel: C, reason: string) => void,
  ) {}

  get closing(): boolean {
    return this.closingNow;
  }

  /** Hands a new channel to the owner, unless the listener is closing or `refusal` turns it away. */
  admit(channel: C, refusal?: FedError): void {
    if (this.closingNow) return this.dismiss(channel, 'listener closing');
    if (refusal) return channel.abortWith(refusal);
    this.open.add(channel);
    try {
      this.accept(channel);
    } catch (e) {
      channel.close(`refused: ${errorMessage(e)}`);
    }
  }

  forget(channel: C): void {
    this.open.delete(channel);
  }

  /**
   * The Listener behind `door`. Its close ends every channel first so that each peer is told why,
   * and destroys the connections only after `shutdown` (the transport's server) has finished,
   * since that is what lets pending frames and close handshakes go out.
   */
  listener(ep: Endpoint, door: FrontDoor, shutdown: () => Promise<void>): Listener {
    return {
      endpoint: formatEndpoint({ ...ep, port: door.port }),
      close: async () => {
        if (this.closingNow) return;
        this.closingNow = true;
        door.stopAccepting();
        for (const ch of [...this.open]) this.dismiss(ch, 'listener closed');
        await shutdown();
        door.destroyAll();
      },
    };
  }
}

/**
 * Resolves when `shutdown` calls its `done`; a server that has not finished after `ms` gets
 * `force`, which must lead to `done` too (directly, or by making `shutdown` finish).
 */
export function shutdownWithin(ms: number, shutdown: (done: () => void) => void, force: (done: () => void) => void): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => force(resolve), ms);
    timer.unref();
    shutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
