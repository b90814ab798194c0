// `fedstate reducer`: the reducer node and its REST API in one process.
// The runtime is imported when the command runs, so `fedstate status` does not load gRPC, level and
// the API server just to print a table.
import { defineSettings, listenLimitSettings, secretSetting, tlsListenSettings } from '../config.ts';
import { FedError, errorMessage } from '../errors.ts';
import { errorFields, logNode, logReducer } from '../log.ts';
import type { Params } from '../model/params.ts';
import { endpointCheck, listenAddressCheck, parseCommand, parseListenAddress } from './common.ts';
import { MNIST_TEST, mnistEvaluator, modelKinds, type ModelKind } from './tf-setup.ts';
import type { Command } from './types.ts';

export const reducerSettings = defineSettings({
  listen: { type: 'string', default: 'grpc://127.0.0.1:7000', help: 'endpoint for combiners (grpc://host:port or ws://host:port)', check: endpointCheck() },
  apiListen: { type: 'string', flag: 'api', default: '127.0.0.1:8092', help: 'host:port of the REST API', check: listenAddressCheck },
  store: { type: 'string', help: 'directory of the level store (models, trail, sessions); in memory when absent' },
  token: { type: 'string', help: 'token this node presents; without --secret also the shared token every combiner and client must present' },
  ...secretSetting,
  ...tlsListenSettings,
  ...listenLimitSettings,
  apiRate: { type: 'number', default: 50, min: 0, help: 'REST API requests per second per client IP, bursts of twice that; the excess is answered 429 (0: no limit)' },
  adminToken: { type: 'string', flag: 'admin-token', help: 'token the REST API requires on writes' },
  evaluate: { type: 'string', default: 'none', choices: ['none', 'mnist'], help: 'server-side evaluation of each global model' },
  model: { type: 'string', default: 'mlp', choices: modelKinds, help: 'model architecture (for --evaluate)' },
  seed: { type: 'number', default: 1, min: 0, integer: true, help: 'seed of the MNIST split whose held-out digits --evaluate uses' },
  testSize: { type: 'number', default: MNIST_TEST, min: 1, max: 10_000, integer: true, help: 'held-out digits for --evaluate' },
  exitWithParent: { type: 'boolean', default: false, env: false, help: 'also stop when stdin closes (for supervisors)' },
});

export const reducerCommand: Command = {
  name: 'reducer',
  help: 'reducer --listen grpc://0.0.0.0:7000 --api 127.0.0.1:8092 [--store DIR] [--secret S | --token T] [--tls-cert F --tls-key F --tls-ca F] [--admin-token A] [--evaluate mnist]',
  run: async (argv) => {
    const parsed = parseCommand('reducer', 'reducer [settings]', reducerSettings, argv);
    if (!parsed) return 0;
    const { settings: s, log } = parsed;
    const [{ startReducer }, { serveUntilSignal }, { ApiServer }, { mountReducerApi }, { openStore }, { nodeSecurity }] = await Promise.all([
      import('../actors/reducer.ts'),
      import('../actors/process-node.ts'),
      import('../api/server.ts'),
      import('../api/reducer-api.ts'),
      import('../store/index.ts'),
      import('../security/node-security.ts'),
    ]);
    // TLS files, tokens and limits are checked before anything loads or binds.
    const security = nodeSecurity(s.listen, s, { role: 'reducer', name: 'main' }, log);
    const apiAt = parseListenAddress(s.apiListen);
    if (!s.adminToken && !['127.0.0.1', 'localhost', '::1'].includes(apiAt.host)) log.warn({ api: s.apiListen }, 'the REST API is reachable beyond this host and has no --admin-token: anyone can start and stop sessions');
    // TF.js and the held-out digits load while the reducer already serves: nothing is evaluated
    // before the first round ends, and combiners and clients can connect meanwhile.
    let evaluate: ((p: Params) => Promise<Record<string, number>>) | undefined;
    if (s.evaluate === 'mnist') {
      const loading = mnistEvaluator(s.model as ModelKind, s.seed, s.testSize);
      loading.then(
        () => log.info({ evaluate: s.evaluate, testSize: s.testSize }, 'evaluation set loaded'),
        (e: unknown) => log.error({ error: errorFields(e) }, 'cannot load the evaluation set'),
      );
      evaluate = async (p) => (await loading)(p);
    }
    const store = await openStore({ dir: s.store });
    const reducer = await startReducer({
      transport: security.transport,
      listen: s.listen,
      store,
      evaluate,
      token: security.token,
      authenticate: security.authenticate,
      link: security.link,
      resumeWithinMs: security.resumeWithinMs,
    }).catch(async (e: unknown) => {
      await store.close();
      throw e;
    });
    const stopNodeLogs = logNode(reducer.node, log);
    const stopRoundLogs = logReducer(reducer.actor, log);
    // A seed model upload above the model-size limit is refused (413 oversized).
    const api = new ApiServer({ adminToken: s.adminToken, maxBodyBytes: s.maxModelBytes, rateLimit: { perSecond: s.apiRate, burst: Math.max(1, 2 * s.apiRate) } });
    mountReducerApi(api, reducer);
    let url: string;
    try {
      url = await api.listen(apiAt.port, apiAt.host);
    } catch (e) {
      await reducer.close();
      throw new FedError((e as { code?: string }).code === 'EADDRINUSE' ? 'conflict' : 'config', `cannot serve the API on ${s.apiListen}: ${errorMessage(e)}`);
    }
    return serveUntilSignal({
      log,
      ready: { ready: 'reducer', endpoint: reducer.endpoint, api: url, store: s.store ?? null, evaluate: s.evaluate, ...security.summary },
      exitWithParent: s.exitWithParent,
      close: async () => {
        await api.close();
        stopRoundLogs();
        stopNodeLogs();
        await reducer.close();
      },
    });
  },
};
