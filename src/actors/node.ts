// A Node is one actor system: it hosts actors under addresses (role/name) and routes every send to
// a local actor or to the Link that reaches the address, so the sender never knows which it was.
// Nodes learn routes from their links' hellos and route updates; when a link dies, every address
// behind it becomes unreachable at once and the node says which (so clients can rediscover and
// combiners can drop clients).
import { EventEmitter } from 'node:events';
import { FedError, errorMessage } from '../errors.ts';
import type { Envelope, Message } from '../protocol/generated.ts';
import { Link, partialOf, type FetchBlobOptions, type LinkOptions, type PartialBlob } from '../transport/link.ts';
import type { FrameChannel, Listener, PeerIdentity, Transport } from '../transport/types.ts';
import { MemoryBlobs, type BlobStore } from './blobs.ts';
import { linkAuthenticator } from '../security/authenticate.ts';
import { mayHost } from '../security/token.ts';

export type Deliver = (envelope: Envelope) => void;

/** Whether an authenticated peer may host (and so speak as) `address`. */
function identityMayHost(identity: PeerIdentity, address: string): boolean {
  return mayHost({ sub: identity.subject, role: identity.role }, address);
}

export interface NodeOptions {
  name: string;
  transport: Transport;
  blobs?: BlobStore;
  /** Presented in this node's hellos. */
  token?: string;
  /** Verifies the tokens peers present (security/authenticate.ts): a node with a secret refuses unauthenticated peers, and a token that names another identity than the peer's TLS certificate. */
  secret?: string;
  authenticate?: LinkOptions['authenticate'];
  link?: Pick<LinkOptions, 'chunkBytes' | 'window' | 'maxBlobBytes' | 'helloTimeoutMs'>;
  /**
   * How long a blob transfer whose link dropped waits for its peer to be reachable again (it redials,
   * or is redialled), to go on from the bytes it already has (default 5 s; 0: fail at once).
   */
  resumeWithinMs?: number;
}

export interface NodeFetchOptions extends Omit<FetchBlobOptions, 'resumable' | 'resume'> {
  /** The bytes must come from that peer (an update is the peer's own work, even if this node holds the same bytes). */
  remoteOnly?: boolean;
}

/** A transfer is resumed at most this many times (each needs the peer back within resumeWithinMs). */
const MAX_RESUMES = 3;

export interface NodeEvents {
  linkUp: [link: Link];
  linkDown: [link: Link, unreachable: string[], error?: Error];
  /** Addresses that can no longer be reached: their link closed, or their node announced they stopped. */
  unreachable: [addresses: string[], error?: Error];
  undeliverable: [envelope: Envelope, error: FedError];
  rejected: [error: FedError, link?: Link];
}

export class Node extends EventEmitter<NodeEvents> {
  readonly name: string;
  readonly blobs: BlobStore;
  readonly transport: Transport;
  private readonly actors = new Map<string, Deliver>();
  private readonly routes = new Map<string, Link>();
  private readonly links = new Set<Link>();
  private readonly listening: Listener[] = [];
  /** Transfers waiting for a route to an address to come back, woken by linkRoutes (or by close()). */
  private readonly routeWaiters = new Map<string, Set<(back: boolean) => void>>();
  private closed = false;
  /**
   * The callbacks every Link of this node gets, made once per node (bound methods, not closures per
   * link): with 10,000 clients in one process, fresh closures per link cost several KB per client.
   */
  private readonly linkHooks: Pick<LinkOptions, 'actors' | 'authenticate' | 'mayHost' | 'onEnvelope' | 'onRoutes' | 'onReject' | 'onClose'>;

  constructor(private readonly opts: NodeOptions) {
    super();
    this.name = opts.name;
    this.transport = opts.transport;
    this.blobs = opts.blobs ?? new MemoryBlobs();
    this.linkHooks = {
      actors: this.listActors.bind(this),
      authenticate: opts.authenticate ?? (opts.secret ? linkAuthenticator({ secret: opts.secret }) : undefined),
      mayHost: identityMayHost,
      onEnvelope: this.deliverInbound.bind(this),
      onRoutes: this.linkRoutes.bind(this),
      onReject: this.linkRejected.bind(this),
      onClose: this.linkClosed.bind(this),
    };
  }

  private listActors(): string[] {
    return [...this.actors.keys()];
  }

  get actorAddresses(): string[] {
    return this.listActors();
  }

  get openLinks(): Link[] {
    return [...this.links];
  }

  /** Registers a local actor; peers learn the new route at once. */
  host(address: string, deliver: Deliver): () => void {
    if (this.actors.has(address)) throw new FedError('conflict', `${address} is already hosted on ${this.name}`);
    this.actors.set(address, deliver);
    for (const link of this.links) link.announce([address], []);
    return () => {
      if (this.actors.get(address) !== deliver) return;
      this.actors.delete(address);
      for (const link of this.links) link.announce([], [address]);
    };
  }

  /** Sends from a local actor. Returns false (and emits `undeliverable`) when nobody hosts `to`. */
  send(from: string, to: string, body: Message): boolean {
    const envelope: Envelope = { from, to, body };
    const local = this.actors.get(to);
    if (local) {
      // Local delivery is asynchronous too, so an actor never re-enters another mid-transition and
      // ordering matches what a link gives.
      queueMicrotask(() => local(envelope));
      return true;
    }
    const link = this.routes.get(to);
    if (!link || !link.isOpen) {
      this.emit('undeliverable', envelope, new FedError('no-route', `${this.name} has no route to ${to}`));
      return false;
    }
    try {
      link.send(envelope);
      return true;
    } catch (e) {
      this.emit('undeliverable', envelope, e instanceof FedError ? e : new FedError('closed', errorMessage(e)));
      return false;
    }
  }

  canReach(address: string): boolean {
    return this.actors.has(address) || !!this.routes.get(address)?.isOpen;
  }

  linkTo(address: string): Link | undefined {
    return this.routes.get(address);
  }

  /**
   * Pulls a blob from the node hosting `peer` (or returns the local copy); bytes are hash-verified.
   * If the link drops mid-transfer and `peer` is reachable again within resumeWithinMs, the
   * transfer goes on from where it stopped (only the rest is sent; the hash covers all of it).
   */
  async fetchBlob(peer: string, hash: string, opts: NodeFetchOptions = {}): Promise<Uint8Array> {
    const found = opts.remoteOnly ? undefined : this.blobs.get(hash);
    const local = found instanceof Promise ? await found : found;
    if (local) return local;
    const { remoteOnly: _, signal, ...fetchOpts } = opts;
    const waitMs = this.opts.resumeWithinMs ?? 5_000;
    let partial: PartialBlob | undefined;
    for (let attempt = 0; ; attempt++) {
      const link = this.routes.get(peer);
      if (!link) {
        partial?.discard();
        throw new FedError('no-route', `${this.name} has no route to ${peer} to fetch ${hash.slice(0, 12)}`);
      }
      try {
        // the partial blob, if any, belongs to this attempt now; a link that drops again hands back a new one
        return await link.fetchBlob(hash, { ...fetchOpts, signal, resumable: waitMs > 0, resume: partial });
      } catch (e) {
        partial = partialOf(e);
        const dropped = e instanceof FedError && e.code === 'closed' && !this.closed;
        if (!dropped || waitMs <= 0 || attempt >= MAX_RESUMES || signal?.aborted || !(await this.routeBack(peer, waitMs, signal))) {
          partial?.discard();
          throw e;
        }
      }
    }
  }

  /** Resolves true once `address` has a route again, false after `ms`, on `signal` or when this node closes. */
  private routeBack(address: string, ms: number, signal?: AbortSignal): Promise<boolean> {
    if (this.routes.get(address)?.isOpen) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiters = this.routeWaiters.get(address) ?? new Set();
      this.routeWaiters.set(address, waiters);
      const wake = (back: boolean): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', abandon);
        waiters.delete(wake);
        if (waiters.size === 0 && this.routeWaiters.get(address) === waiters) this.routeWaiters.delete(address);
        resolve(back);
      };
      const abandon = (): void => wake(false);
      const timer = setTimeout(abandon, ms);
      signal?.addEventListener('abort', abandon);
      waiters.add(wake);
    });
  }

  async listen(endpoint: string): Promise<Listener> {
    const listener = await this.transport.listen(endpoint, (channel) => {
      if (this.closed) {
        // a peer that dials while this node shuts down must not get a link to a dead node
        channel.close(`node ${this.name} is closing`);
        return;
      }
      this.attach(channel, true)
        .start()
        .catch(() => undefined); // refused or timed-out hellos are reported through `rejected`/`linkDown`
    });
    this.listening.push(listener);
    return listener;
  }

  /** Dials a node and resolves once both hellos went through. */
  async dial(endpoint: string): Promise<Link> {
    if (this.closed) throw new FedError('closed', `node ${this.name} is closed`);
    const channel = await this.transport.dial(endpoint);
    return this.attach(channel).start();
  }

  private attach(channel: FrameChannel, answerHello = false): Link {
    return new Link(channel, { ...this.linkHooks, answerHello, node: this.name, blobs: this.blobs, token: this.opts.token, ...this.opts.link });
  }

  private linkRoutes(l: Link, added: string[], removed: string[]): void {
    for (const a of added) this.routes.set(a, l);
    for (const a of added) for (const wake of [...(this.routeWaiters.get(a) ?? [])]) wake(true);
    const lost = removed.filter((a) => this.routes.get(a) === l);
    for (const a of lost) this.routes.delete(a);
    if (lost.length) this.emit('unreachable', lost);
    if (!this.links.has(l)) {
      this.links.add(l);
      this.emit('linkUp', l);
    }
  }

  private linkRejected(l: Link, error: FedError): void {
    this.emit('rejected', error, l);
  }

  private linkClosed(l: Link, error?: Error): void {
    const wasUp = this.links.delete(l);
    const unreachable: string[] = [];
    for (const [address, via] of this.routes) {
      if (via === l) {
        this.routes.delete(address);
        unreachable.push(address);
      }
    }
    if (wasUp) this.emit('linkDown', l, unreachable, error);
    if (unreachable.length) this.emit('unreachable', unreachable, error);
  }

  private deliverInbound(envelope: Envelope): void {
    const local = this.actors.get(envelope.to);
    if (!local) {
      this.emit('undeliverable', envelope, new FedError('no-route', `${envelope.to} is not hosted on ${this.name}`));
      return;
    }
    local(envelope);
  }

  identityOf(address: string): PeerIdentity | undefined {
    return this.routes.get(address)?.identity;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const waiters of [...this.routeWaiters.values()]) for (const wake of [...waiters]) wake(false);
    // Stop accepting first, so peers that re-dial on the link closing below find nobody listening.
    await Promise.all(this.listening.map((l) => l.close()));
    for (const link of [...this.links]) link.close(`node ${this.name} closing`);
  }
}
