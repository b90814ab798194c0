// In-process transport: nodes of one process connected by channel pairs, for pseudo-distributed
// runs. In strict mode every frame is encoded to protobuf bytes and decoded again on the way, so an
// in-process run exercises exactly the encoding the network path uses.
import { FedError } from '../errors.ts';
import { decodeFrame, encodeFrame } from '../protocol/codec.ts';
import type { Frame } from '../protocol/generated.ts';
import { parseEndpoint } from './endpoint.ts';
import { SENT } from './link.ts';
import type { FrameChannel, Listener, Transport } from './types.ts';

/** The "network" in-process nodes share: listeners by name. */
export class InprocNetwork {
  readonly listeners = new Map<string, (channel: FrameChannel) => void>();
}

const ignore = (): void => undefined;

class InprocChannel implements FrameChannel {
  private handler: ((frame: Frame) => void) | undefined;
  onClose: (error?: Error) => void = ignore;
  other!: InprocChannel;
  closed = false;
  private readonly inbox: Frame[] = [];
  private scheduled = false;

  constructor(
    readonly peer: string,
    private readonly strict: boolean,
  ) {}

  // Frames that arrive before the receiving Link attached its handler wait in the inbox, as they
  // would in a socket buffer.
  get onFrame(): (frame: Frame) => void {
    return this.handler ?? ignore;
  }

  set onFrame(handler: (frame: Frame) => void) {
    this.handler = handler;
    this.schedule();
  }

  send(frame: Frame): Promise<void> {
    if (this.closed) return Promise.reject(new FedError('closed', `inproc channel to ${this.peer} closed`));
    // Strict mode pays the real encode on the sender and the real decode (with its validation) on
    // the receiver; a frame that cannot be encoded fails the sender just as a socket would.
    const delivered = this.strict ? decodeFrame(encodeFrame(frame)) : frame;
    this.other.deliver(delivered);
    // taken at once: the Link goes on with its next frame without waiting a microtask
    return SENT;
  }

  /** Delivery is asynchronous, like a socket, so a send never re-enters the receiver's handler. */
  private deliver(frame: Frame): void {
    if (this.closed) return;
    this.inbox.push(frame);
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || !this.handler || this.inbox.length === 0) return;
    this.scheduled = true;
    queueMicrotask(() => this.drain());
  }

  private drain(): void {
    this.scheduled = false;
    for (let frame = this.inbox.shift(); frame && !this.closed; frame = this.inbox.shift()) this.handler!(frame);
  }

  close(reason = 'closed'): void {
    if (this.closed) return;
    this.closed = true;
    this.inbox.length = 0;
    this.onClose();
    const other = this.other;
    queueMicrotask(() => {
      if (other.closed) return;
      other.closed = true;
      other.inbox.length = 0;
      other.onClose(new FedError('closed', `peer closed: ${reason}`));
    });
  }
}

export interface InprocOptions {
  /** Round-trip every frame through the wire codec. */
  strict?: boolean;
}

export class InprocTransport implements Transport {
  readonly kind = 'inproc' as const;

  constructor(
    readonly network: InprocNetwork,
    private readonly options: InprocOptions = {},
  ) {}

  listen(endpoint: string, accept: (channel: FrameChannel) => void): Promise<Listener> {
    const { host } = parseEndpoint(endpoint, 'inproc');
    if (this.network.listeners.has(host)) {
      return Promise.reject(new FedError('conflict', `inproc endpoint ${host} is already listening`));
    }
    this.network.listeners.set(host, accept);
    return Promise.resolve({
      endpoint: `inproc://${host}`,
      close: async () => {
        if (this.network.listeners.get(host) === accept) this.network.listeners.delete(host);
      },
    });
  }

  dial(endpoint: string): Promise<FrameChannel> {
    const { host } = parseEndpoint(endpoint, 'inproc');
    const accept = this.network.listeners.get(host);
    if (!accept) return Promise.reject(new FedError('closed', `nothing listens at inproc://${host}`));
    const strict = this.options.strict ?? false;
    const dialer = new InprocChannel(`inproc://${host}`, strict);
    const acceptor = new InprocChannel('inproc-dialer', strict);
    dialer.other = acceptor;
    acceptor.other = dialer;
    accept(acceptor);
    return Promise.resolve(dialer);
  }
}
