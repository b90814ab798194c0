// Combiner role assembly: the combiner statechart provided with real IO. It listens for its
// clients, dials the reducer (and re-dials with backoff when that link drops), stages each round's
// global model so its clients can pull it, pulls and decodes client updates, and folds accepted ones
// into a streaming accumulator whose memory does not grow with the number of clients.
import { fromCallback, fromPromise, type ActorRefFrom } from 'xstate';
import { backoffMs } from '../../machines/common.ts';
import { combinerMachine, type AggregationBegin, type FetchRequest, type FetchedUpdate } from '../../machines/combiner.ts';
import { FedError } from '../errors.ts';
import { decodeModel, encodeModel } from '../model/codec.ts';
import type { Layout } from '../model/params.ts';
import type { Accumulator } from '../strategies/types.ts';
import { planFor } from './strategy.ts';
import { hostMachine, type Hosted, type HostOptions } from './host.ts';
import type { Node } from './node.ts';

export interface CombinerOptions {
  node: Node;
  name: string;
  /** Where this combiner listens for clients (the endpoint the reducer hands out in discovery). */
  listen: string;
  /**
   * The endpoint announced to the reducer for its clients, when it differs from the listening one
   * (listening on 0.0.0.0, behind NAT). Defaults to the listener's endpoint (with the real port).
   */
  advertise?: string | ((listening: string) => string);
  /** The reducer node's endpoint, dialled by this combiner. */
  reducerEndpoint: string;
  reducer?: string;
  maxClients?: number;
  clientTimeoutMs?: number;
  heartbeatMs?: number;
  tickMs?: number;
  inspect?: HostOptions['inspect'];
}

export interface CombinerHandle {
  node: Node;
  address: string;
  endpoint: string;
  actor: ActorRefFrom<typeof combinerMachine>;
  stop(): Promise<void>;
}

export const layoutKey = (layout: Layout): string => JSON.stringify(layout);

export async function startCombiner(opts: CombinerOptions): Promise<CombinerHandle> {
  const { node } = opts;
  const address = `combiner/${opts.name}`;
  const reducer = opts.reducer ?? 'reducer/main';
  const accumulators = new Map<string, { acc: Accumulator }>();
  // The round's global model: its layout shapes the combiner model, its values are the base that
  // delta-based strategies (DP-FedAvg) measure updates against.
  let staged: { modelId: string; layout: Layout; data: Float32Array; bytes: number } | undefined;
  const keyOf = (p: { sessionId: string; round: number }): string => `${p.sessionId}#${p.round}`;
  let lastOutput: string | undefined;

  const logic = combinerMachine.provide({
    actors: {
      stageModel: fromPromise(async ({ input }) => {
        const bytes = await node.fetchBlob(input.from, input.modelId);
        const params = decodeModel(bytes, { copy: true });
        if (staged && staged.modelId !== input.modelId) await node.blobs.delete(staged.modelId);
        await node.blobs.put(bytes);
        staged = { modelId: input.modelId, layout: params.layout, data: params.data, bytes: bytes.byteLength };
        return { size: params.data.length, layoutKey: layoutKey(params.layout) };
      }),
      aggregate: fromPromise(async ({ input }) => {
        const started = performance.now();
        const entry = accumulators.get(keyOf(input));
        if (!entry) throw new FedError('internal', `no accumulator for round ${input.round}`);
        if (!staged) throw new FedError('internal', 'no staged model layout');
        const bytes = encodeModel({ layout: staged.layout, data: entry.acc.finish() });
        if (lastOutput) node.blobs.delete(lastOutput);
        const modelId = await node.blobs.put(bytes);
        lastOutput = modelId;
        return { modelId, ms: performance.now() - started };
      }),
      fetcher: fromCallback<FetchRequest>(({ receive, sendBack }) => {
        let alive = true;
        receive((req) => {
          const reply = (r: { ok: true; data: Float32Array; layoutKey: string } | { ok: false; reason: 'hash-mismatch' | 'fetch-failed' | 'wrong-shape' }): void => {
            if (alive) sendBack({ type: 'update.fetched', sessionId: req.sessionId, round: req.round, client: req.client, ...r } as FetchedUpdate);
          };
          // An update of the round's layout encodes to exactly the global model's size; a client that
          // announces more is refused before anything is allocated.
          node.fetchBlob(req.client, req.updateId, { maxBytes: staged?.bytes, remoteOnly: true }).then(
            (bytes) => {
              try {
                const p = decodeModel(bytes);
                reply({ ok: true, data: p.data, layoutKey: layoutKey(p.layout) });
              } catch {
                reply({ ok: false, reason: 'wrong-shape' });
              }
            },
            (e) => reply({ ok: false, reason: e instanceof FedError && e.code === 'hash-mismatch' ? 'hash-mismatch' : e instanceof FedError && e.code === 'oversized' ? 'wrong-shape' : 'fetch-failed' }),
          );
        });
        return () => {
          alive = false;
        };
      }),
    },
    actions: {
      beginAggregation: (_, p: AggregationBegin) => {
        accumulators.set(keyOf(p), { acc: planFor(p.strategy).combiner.begin({ size: p.size, base: staged?.data, expected: p.expected }) });
      },
      foldUpdate: (_, p) => {
        // The machine admitted the update after its own checks; a strategy that still refuses it must
        // not take the combiner down with it (XState rethrows action errors), so the refusal is reported.
        try {
          accumulators.get(keyOf(p))?.acc.add(p.data, p.weight);
        } catch (e) {
          node.emit('rejected', e instanceof FedError ? e : new FedError('internal', String(e)));
        }
      },
      discardAggregation: (_, p) => {
        accumulators.delete(keyOf(p));
      },
    },
  });

  const actor: Hosted<ActorRefFrom<typeof combinerMachine>> = hostMachine(
    node,
    address,
    logic,
    { self: address, reducer, maxClients: opts.maxClients, clientTimeoutMs: opts.clientTimeoutMs, heartbeatMs: opts.heartbeatMs },
    { inspect: opts.inspect },
  );

  // Hosted before listening, so a client's first hello exchange already names this combiner.
  const listener = await node.listen(opts.listen);
  const advertised = typeof opts.advertise === 'function' ? opts.advertise(listener.endpoint) : (opts.advertise ?? listener.endpoint);

  const onLinkDown = (unreachable: string[]): void => {
    for (const a of unreachable) {
      if (a.startsWith('client/')) actor.actor.send({ type: 'CLIENT_GONE', client: a, reason: 'link closed' });
    }
    if (unreachable.includes(reducer)) void connectReducer();
  };
  node.on('unreachable', onLinkDown);

  let stopping = false;
  let reconnecting: Promise<void> | undefined;
  // One dialler at a time: losing the route and losing the link both ask for a reconnect.
  const connectReducer = (): Promise<void> =>
    (reconnecting ??= (async () => {
      for (let attempt = 0; !stopping && !node.canReach(reducer); attempt++) {
        try {
          if (attempt > 0) await new Promise((r) => setTimeout(r, backoffMs(attempt, 200, 5_000, attempt)));
          await node.dial(opts.reducerEndpoint);
          actor.actor.send({ type: 'REDUCER_CONNECTED', endpoint: advertised });
        } catch {
          // the reducer is down or restarting: try again after the backoff
        }
      }
    })().finally(() => {
      reconnecting = undefined;
    }));
  await connectReducer();

  const tick = setInterval(() => actor.actor.send({ type: 'TICK', now: Date.now() }), opts.tickMs ?? 1_000);
  tick.unref();

  return {
    node,
    address,
    endpoint: advertised,
    actor: actor.actor,
    stop: async () => {
      stopping = true;
      clearInterval(tick);
      node.off('unreachable', onLinkDown);
      actor.stop();
      await node.close();
    },
  };
}
