// Transport layering:
//   FrameChannel  one bidirectional, ordered channel of Frames between two nodes (inproc, gRPC, ws each
//                 provide one; this is the only transport-specific part)
//   Link          (link.ts) runs on any FrameChannel: hello/route exchange, envelope delivery, and blob
//                 streams with credit-based flow control and hash verification
//   Node          (src/actors/node.ts) hosts actors and routes each send to a local actor or a Link
// Transports know nothing of federated learning beyond the Frame.
import type { Frame } from '../protocol/generated.ts';

export interface FrameChannel {
  /**
   * Queues a frame. Resolves once the channel accepted it for sending; a channel under backpressure
   * (socket buffer full) resolves later, which is how a Link paces blob chunks. Rejects once closed.
   * A blob chunk's `data` is lent, as a Buffer given to a Node socket's write() is: the channel may
   * read it until the frame is on the wire, so it must not change (the Link only sends blobs, which
   * are immutable and content-addressed; a changed byte would fail the receiver's hash check).
   */
  send(frame: Frame): Promise<void>;
  /** Set by the Link before any frame arrives. */
  onFrame: (frame: Frame) => void;
  /** Called once when the channel ends, with the reason if it failed. */
  onClose: (error?: Error) => void;
  close(reason?: string): void;
  /** Human-readable peer description for logs (address:port, inproc name). */
  readonly peer: string;
  /** Authenticated identity bound to this channel by the transport (TLS client cert, token), if any. */
  readonly identity?: PeerIdentity;
}

export interface PeerIdentity {
  /** Node or actor name the credentials were issued to. */
  subject: string;
  role: 'client' | 'combiner' | 'reducer' | 'admin';
}

export interface Listener {
  /** The endpoint peers dial, with the real port when 0 was asked for. */
  readonly endpoint: string;
  close(): Promise<void>;
}

export interface Transport {
  readonly kind: TransportKind;
  /** Accept channels at `endpoint` (e.g. grpc://0.0.0.0:0, ws://127.0.0.1:7001, inproc://reducer). */
  listen(endpoint: string, accept: (channel: FrameChannel) => void): Promise<Listener>;
  /** Open a channel to a listening endpoint. Clients only ever dial. */
  dial(endpoint: string): Promise<FrameChannel>;
}

export type TransportKind = 'inproc' | 'grpc' | 'ws';

export const CHUNK_BYTES = 1024 * 1024;

/** Where a node keeps content-addressed blobs (models); the Link serves peers from it. */
export interface BlobSource {
  get(hash: string): Uint8Array | undefined | Promise<Uint8Array | undefined>;
}
