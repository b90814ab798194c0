// Runs an XState machine as an actor on a Node: inbound envelopes for its address become machine
// events (the message, its sender and arrival time) and the machine's `outbound` emissions become
// sends. This is the only place machines meet the actor runtime.
import { createActor, type AnyActorLogic, type AnyActorRef, type InspectionEvent } from 'xstate';
import type { Outbound } from '../../machines/common.ts';
import type { Envelope } from '../protocol/generated.ts';
import type { Node } from './node.ts';

export interface Hosted<A extends AnyActorRef> {
  address: string;
  actor: A;
  stop(): void;
}

export interface HostOptions {
  inspect?: (event: InspectionEvent) => void;
  snapshot?: unknown;
  /** Sees every inbound envelope first; returning true consumes it (request/response plumbing). */
  intercept?: (envelope: Envelope) => boolean;
}

export function hostMachine<L extends AnyActorLogic>(
  node: Node,
  address: string,
  logic: L,
  input: unknown,
  options: HostOptions = {},
): Hosted<ReturnType<typeof createActor<L>>> {
  const actor = createActor(logic, {
    input,
    inspect: options.inspect,
    ...(options.snapshot ? { snapshot: options.snapshot as never } : {}),
  } as never) as ReturnType<typeof createActor<L>>;
  const offOutbound = (actor as AnyActorRef).on('outbound', (e: Outbound) => {
    node.send(address, e.to, e.body);
  });
  const unhost = node.host(address, (envelope) => {
    if (options.intercept?.(envelope)) return;
    actor.send({ ...envelope.body, from: envelope.from, at: Date.now() } as never);
  });
  actor.start();
  return new HostedMachine(address, actor, unhost, offOutbound);
}

/** The handle of a hosted machine: a class, so hosting an actor costs no closures beyond its own. */
class HostedMachine<A extends AnyActorRef> implements Hosted<A> {
  private stopped = false;

  constructor(
    readonly address: string,
    readonly actor: A,
    private readonly unhost: () => void,
    private readonly offOutbound: { unsubscribe(): void },
  ) {
    // callers may pass `stop` around detached from its handle
    this.stop = this.stop.bind(this);
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.unhost();
    this.offOutbound.unsubscribe();
    this.actor.stop();
  }
}
