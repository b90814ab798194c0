// Client role assembly: the client statechart provided with real IO. The client's private data never
// leaves it; it only dials out (to the reducer for discovery, then to its combiner), pulls the global
// model by hash, runs the user's task code, and serves its update for the combiner to pull.
import { fromCallback, fromPromise, type ActorRefFrom } from 'xstate';
import { clientMachine } from '../../machines/client.ts';
import { FedError, errorMessage } from '../errors.ts';
import { decodeModel, encodeModel } from '../model/codec.ts';
import type { Params } from '../model/params.ts';
import type { Envelope, RoundConfig } from '../protocol/generated.ts';
import { hostMachine, type HostOptions } from './host.ts';
import type { Node } from './node.ts';

/** The user's code: what a client does with a model. The framework never looks inside the model. */
export interface TaskCode {
  /** Examples this client holds; its weight in FedAvg. */
  readonly numExamples: number;
  train(model: Params, opts: { config: RoundConfig; round: number; signal: AbortSignal }): Promise<{ params: Params; numExamples: number; metrics: Record<string, number> }>;
  validate(model: Params, opts: { round: number; signal: AbortSignal }): Promise<{ numExamples: number; metrics: Record<string, number> }>;
}

export interface ClientOptions {
  node: Node;
  name: string;
  code: TaskCode;
  reducerEndpoint: string;
  reducer?: string;
  preferredCombiner?: string;
  /** Skip discovery and attach to this combiner directly. */
  combiner?: { address: string; endpoint: string };
  backoff?: { initialMs: number; maxMs: number };
  seed?: number;
  discoveryTimeoutMs?: number;
  inspect?: HostOptions['inspect'];
  /** Close the node when the client stops (false when several clients share one node). */
  ownsNode?: boolean;
}

export interface ClientHandle {
  address: string;
  node: Node;
  actor: ActorRefFrom<typeof clientMachine>;
  stop(): Promise<void>;
}

export async function startClient(opts: ClientOptions): Promise<ClientHandle> {
  const { node, code } = opts;
  const address = `client/${opts.name}`;
  const reducer = opts.reducer ?? 'reducer/main';
  let pendingAssign: ((env: Envelope) => void) | undefined;
  let lastUpdate: string | undefined;

  const logic = clientMachine.provide({
    actors: {
      discover: fromPromise(async ({ input, signal }) => {
        const reused = node.canReach(reducer);
        const link = reused ? undefined : await node.dial(opts.reducerEndpoint);
        try {
          const reply = new Promise<Envelope>((resolve, reject) => {
            const timer = setTimeout(() => reject(new FedError('timeout', 'no answer from discovery')), opts.discoveryTimeoutMs ?? 10_000);
            signal.addEventListener('abort', () => reject(new FedError('cancelled', 'discovery cancelled')));
            pendingAssign = (env) => {
              clearTimeout(timer);
              resolve(env);
            };
          });
          if (!node.send(input.self, input.reducer, { type: 'AssignRequest', client: input.self, preferredCombiner: input.preferred })) {
            throw new FedError('no-route', 'reducer unreachable');
          }
          const env = await reply;
          if (env.body.type !== 'AssignResponse') throw new FedError('malformed', 'unexpected discovery reply');
          if (env.body.status !== 'assigned') throw new FedError('not-found', `discovery: ${env.body.reason || 'retry later'}`);
          return { combiner: env.body.combiner, endpoint: env.body.endpoint };
        } finally {
          pendingAssign = undefined;
          // Discovery is the only reason a client talks to the reducer; after it, only the combiner link stays.
          link?.close('discovery done');
        }
      }),
      connect: fromPromise(async ({ input }) => {
        if (node.canReach(input.combiner)) return;
        await node.dial(input.endpoint);
        if (!node.canReach(input.combiner)) throw new FedError('not-found', `${input.endpoint} does not host ${input.combiner}`);
      }),
      heartbeat: fromCallback<{ type: 'noop' }, { intervalMs: number }>(({ input, sendBack }) => {
        const timer = setInterval(() => sendBack({ type: 'HEARTBEAT_DUE' }), input.intervalMs);
        return () => clearInterval(timer);
      }),
      train: fromPromise(async ({ input, signal }) => {
        const started = performance.now();
        const model = decodeModel(await node.fetchBlob(input.combiner, input.modelId));
        if (!input.config) throw new FedError('malformed', 'train task without config');
        const out = await code.train(model, { config: input.config, round: input.round, signal });
        if (signal.aborted) throw new FedError('cancelled', 'task cancelled');
        // Only the latest update needs serving: the combiner pulls it for the task just answered.
        if (lastUpdate) await node.blobs.delete(lastUpdate);
        const updateId = await node.blobs.put(encodeModel(out.params));
        lastUpdate = updateId;
        return { updateId, numExamples: out.numExamples, metrics: out.metrics, trainMs: performance.now() - started };
      }),
      validate: fromPromise(async ({ input, signal }) => {
        const model = decodeModel(await node.fetchBlob(input.combiner, input.modelId));
        return code.validate(model, { round: input.round, signal });
      }),
    },
    actions: {
      disconnect: (_, p) => {
        if (p.combiner) node.linkTo(p.combiner)?.close('client disconnecting');
      },
    },
  });

  const hosted = hostMachine(
    node,
    address,
    logic,
    {
      self: address,
      reducer,
      preferredCombiner: opts.preferredCombiner,
      combiner: opts.combiner,
      backoff: opts.backoff,
      seed: opts.seed,
      numExamples: code.numExamples,
    },
    {
      inspect: opts.inspect,
      intercept: (env) => {
        if (env.body.type !== 'AssignResponse') return false;
        pendingAssign?.(env);
        return true;
      },
    },
  );

  const onLinkDown = (unreachable: string[], error?: Error): void => {
    const combiner = hosted.actor.getSnapshot().context.combiner;
    if (combiner && unreachable.includes(combiner)) {
      hosted.actor.send({ type: 'COMBINER_LOST', reason: error ? errorMessage(error) : 'link closed' });
    }
  };
  node.on('unreachable', onLinkDown);

  return {
    address,
    node,
    actor: hosted.actor,
    stop: async () => {
      node.off('unreachable', onLinkDown);
      hosted.actor.send({ type: 'STOP' });
      hosted.stop();
      if (opts.ownsNode ?? true) await node.close();
    },
  };
}
