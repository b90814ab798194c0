// Serves the dashboard: the page, its TypeScript (transpiled by esbuild on first request, so the
// browser code is type-checked with the rest of the repo and nothing is built ahead of time), and
// uPlot and ELK straight from node_modules: no CDN, the reducer serves every byte the page loads.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { transform } from 'esbuild';
import type { AnyActorRef } from 'xstate';
import type { ReducerHandle } from '../actors/reducer.ts';
import { FedError } from '../errors.ts';
import { Inspector } from './inspect.ts';
import { mountReducerApi, type ReducerApi } from './reducer-api.ts';
import { ApiServer } from './server.ts';

const here = dirname(fileURLToPath(import.meta.url));
const assetDir = join(here, 'dashboard');

function nodeModule(rel: string): string {
  for (let dir = here; ; dir = dirname(dir)) {
    const p = join(dir, 'node_modules', rel);
    if (existsSync(p)) return p;
    if (dirname(dir) === dir) throw new FedError('not-found', `node_modules/${rel} not found`);
  }
}

interface Asset {
  path: () => string;
  type: string;
  transpile?: boolean;
}

const js = 'text/javascript; charset=utf-8';
const assets: Record<string, Record<string, Asset>> = {
  dashboard: {
    'app.ts': { path: () => join(assetDir, 'app.ts'), type: js, transpile: true },
    'statechart.ts': { path: () => join(assetDir, 'statechart.ts'), type: js, transpile: true },
    'style.css': { path: () => join(assetDir, 'style.css'), type: 'text/css; charset=utf-8' },
  },
  vendor: {
    'uPlot.iife.min.js': { path: () => nodeModule('uplot/dist/uPlot.iife.min.js'), type: js },
    'uPlot.min.css': { path: () => nodeModule('uplot/dist/uPlot.min.css'), type: 'text/css; charset=utf-8' },
    'elk.bundled.js': { path: () => nodeModule('elkjs/lib/elk.bundled.js'), type: js },
  },
};

const cache = new Map<string, Buffer | string>();
async function load(asset: Asset): Promise<Buffer | string> {
  const file = asset.path();
  let out = cache.get(file);
  if (out === undefined) {
    const raw = readFileSync(file);
    out = asset.transpile ? (await transform(raw.toString('utf8'), { loader: 'ts', format: 'esm', target: 'es2022', sourcefile: file })).code : raw;
    cache.set(file, out);
  }
  return out;
}

export function mountDashboard(api: ApiServer): void {
  api.route('GET', '/', () => ({ body: readFileSync(join(assetDir, 'index.html')), type: 'text/html; charset=utf-8', headers: { 'cache-control': 'no-store' } }), {
    summary: 'The dashboard page',
    tags: ['dashboard'],
    responses: { 200: { description: 'HTML', contentType: 'text/html', schema: { type: 'string' } } },
  });
  for (const [dir, files] of Object.entries(assets)) {
    api.route('GET', `/${dir}/:file`, async (req) => {
      const asset = files[req.params.file!];
      if (!asset || !Object.hasOwn(files, req.params.file!)) throw new FedError('not-found', `no ${dir} asset ${req.params.file}`);
      return { body: await load(asset), type: asset.type, headers: { 'cache-control': 'no-cache' } };
    }, {
      summary: dir === 'vendor' ? 'Third-party browser libraries served from node_modules (uPlot, ELK)' : 'Dashboard scripts and styles',
      tags: ['dashboard'],
      params: { file: Object.keys(files).join(' | ') },
      responses: { 200: { description: 'the asset', contentType: 'text/plain', schema: { type: 'string' } }, 404: { description: 'no such asset' } },
    });
  }
}

export interface DashboardOptions {
  reducer: ReducerHandle;
  combiners?: Array<{ address: string; actor: AnyActorRef }>;
  clients?: Array<{ address: string; actor: AnyActorRef }>;
  /** How many of `clients` to inspect (the first ones); default 3. All of them are listed either way. */
  inspectClients?: number;
  port?: number;
  host?: string;
  adminToken?: string;
}

export interface Dashboard {
  url: string;
  api: ApiServer;
  reducerApi: ReducerApi;
  inspector: Inspector;
  close(): Promise<void>;
}

/**
 * The reducer's HTTP surface for an in-process federation (sandbox, tests): REST API, metrics,
 * inspection stream and dashboard, following the reducer, every combiner and the chosen clients.
 */
export async function startDashboard(opts: DashboardOptions): Promise<Dashboard> {
  const inspector = new Inspector();
  inspector.attach(opts.reducer.address, opts.reducer.actor);
  for (const c of opts.combiners ?? []) inspector.attach(c.address, c.actor);
  for (const c of (opts.clients ?? []).slice(0, opts.inspectClients ?? 3)) inspector.attach(c.address, c.actor);
  const api = new ApiServer({ adminToken: opts.adminToken });
  const reducerApi = mountReducerApi(api, opts.reducer, { inspector });
  const url = await api.listen(opts.port ?? 0, opts.host ?? '127.0.0.1');
  return {
    url,
    api,
    reducerApi,
    inspector,
    close: async () => {
      inspector.close();
      reducerApi.close();
      await api.close();
    },
  };
}

export interface SandboxDashboard {
  url: string;
  /**
   * Leaves the dashboard (and, through `close`, the federation) up after the run until SIGINT or
   * SIGTERM, then closes both and exits with the run's exit code.
   */
  keepServing(close: () => Promise<void>): void;
}

/** The dashboard for a pseudo-distributed run (sandbox/run.ts --dashboard). Port 0 picks a free one. */
export async function sandboxDashboard(
  fed: { reducer: ReducerHandle; combiners: Array<{ address: string; actor: AnyActorRef }>; clients: Array<{ address: string; actor: AnyActorRef }> },
  opts: { port: number; json?: boolean },
): Promise<SandboxDashboard> {
  // With --json, stdout's last line is the summary: anything else goes to stderr.
  const say = (line: string): void => void (opts.json ? process.stderr : process.stdout).write(`${line}\n`);
  let dash: Dashboard;
  try {
    dash = await startDashboard({ reducer: fed.reducer, combiners: fed.combiners, clients: fed.clients, port: opts.port });
  } catch (e) {
    const code = (e as { code?: string }).code;
    throw new FedError(code === 'EADDRINUSE' ? 'conflict' : 'config', `cannot serve the dashboard on port ${opts.port}: ${code ?? String(e)} (choose another with --dashboard-port, 0 for any free port)`);
  }
  say(`dashboard: ${dash.url}/  (REST API under ${dash.url}/api, metrics at ${dash.url}/metrics)`);
  return {
    url: dash.url,
    keepServing: (close) => {
      say(`session over; the dashboard keeps serving at ${dash.url}/ until Ctrl-C`);
      const stop = (): void => {
        void (async () => {
          await dash.close();
          await close();
          process.exit(process.exitCode ?? 0);
        })();
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    },
  };
}
