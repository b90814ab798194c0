// One way to obtain a transport by name, so configuration (CLI flags, sandbox settings, endpoint
// strings handed out by discovery) picks the wire without the caller importing each implementation.
import { FedError } from '../errors.ts';
import { parseEndpoint } from './endpoint.ts';
import { GrpcTransport, type GrpcTransportOptions } from './grpc.ts';
import { InprocNetwork, InprocTransport, type InprocOptions } from './inproc.ts';
import type { Transport, TransportKind } from './types.ts';
import { WsTransport, type WsTransportOptions } from './ws.ts';

export interface InprocTransportOptions extends InprocOptions {
  /** Nodes only reach each other on the same network; defaults to one shared by the process. */
  network?: InprocNetwork;
}

export interface TransportOptions {
  inproc?: InprocTransportOptions;
  grpc?: GrpcTransportOptions;
  ws?: WsTransportOptions;
}

/** The in-process network used when none is given: every inproc transport of the process shares it. */
export const defaultInprocNetwork = new InprocNetwork();

export const transportKinds: readonly TransportKind[] = ['inproc', 'grpc', 'ws'];

export function createTransport(kind: 'inproc', opts?: InprocTransportOptions): InprocTransport;
export function createTransport(kind: 'grpc', opts?: GrpcTransportOptions): GrpcTransport;
export function createTransport(kind: 'ws', opts?: WsTransportOptions): WsTransport;
export function createTransport(kind: TransportKind | string, opts?: TransportOptions): Transport;
export function createTransport(
  kind: TransportKind | string,
  opts: InprocTransportOptions | GrpcTransportOptions | WsTransportOptions | TransportOptions = {},
): Transport {
  // The last overload takes options for every kind at once; the kind-specific ones take them bare.
  const pick = <T>(k: TransportKind): T => ((opts as TransportOptions)[k] ?? opts) as T;
  switch (kind) {
    case 'inproc': {
      const o = pick<InprocTransportOptions>('inproc');
      return new InprocTransport(o.network ?? defaultInprocNetwork, { strict: o.strict ?? false });
    }
    case 'grpc':
      return new GrpcTransport(pick<GrpcTransportOptions>('grpc'));
    case 'ws':
      return new WsTransport(pick<WsTransportOptions>('ws'));
    default:
      throw new FedError('config', `unknown transport "${kind}" (use ${transportKinds.join(', ')})`);
  }
}

/** The transport an endpoint string calls for (inproc://, grpc://, ws://). */
export function transportFor(endpoint: string, opts: TransportOptions = {}): Transport {
  return createTransport(parseEndpoint(endpoint).kind, opts);
}
