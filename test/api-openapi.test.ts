// /api/openapi.json lists exactly the registered routes (and each is documented), every $ref
// resolves, and the schemas mean what they say (the checker the API tests rely on refuses bad values).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startReducer, type ReducerHandle } from '../src/actors/reducer.ts';
import { checkSchema, schemas } from '../src/api/openapi.ts';
import { mountReducerApi, type ReducerApi } from '../src/api/reducer-api.ts';
import { ApiServer } from '../src/api/server.ts';
import { InprocNetwork, InprocTransport } from '../src/transport/inproc.ts';

let reducer: ReducerHandle;
let api: ApiServer;
let mounted: ReducerApi;
let base = '';
let doc: any;

test.before(async () => {
  reducer = await startReducer({ transport: new InprocTransport(new InprocNetwork()), listen: 'inproc://reducer' });
  api = new ApiServer({ adminToken: 't' });
  mounted = mountReducerApi(api, reducer);
  base = await api.listen(0);
  doc = await (await fetch(`${base}/api/openapi.json`)).json();
});

test.after(async () => {
  mounted.close();
  await api.close();
  await reducer.close();
});

const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

test('every registered route is in the document, and every documented operation is a registered route', () => {
  const registered = api.routeList.map((r) => `${r.method} ${r.path.replace(/:([a-zA-Z]+)/g, '{$1}')}`).sort();
  const documented = Object.entries(doc.paths as Record<string, Record<string, unknown>>)
    .flatMap(([path, ops]) => Object.keys(ops).filter((m) => METHODS.includes(m)).map((m) => `${m.toUpperCase()} ${path}`))
    .sort();
  assert.equal(documented, registered);
  assert.ok(registered.length >= 30, `${registered.length} routes`);
  for (const must of ['GET /api/health', 'POST /api/sessions', 'GET /api/models/{id}/ancestors', 'GET /metrics', 'GET /api/inspect', 'GET /api/machines/{role}', 'GET /']) assert.ok(registered.includes(must), must);
});

test('every operation is really documented: summary, path parameters, responses, security on writes', () => {
  const ids = new Set<string>();
  for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, any>>)) {
    const names = [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
    for (const [method, op] of Object.entries(ops)) {
      const where = `${method} ${path}`;
      assert.ok(op.summary && op.summary !== '(undocumented)', `${where} has a summary`);
      assert.ok(!ids.has(op.operationId), `${where} has a unique operationId`);
      ids.add(op.operationId);
      const pathParams = op.parameters.filter((p: any) => p.in === 'path').map((p: any) => p.name);
      assert.equal(pathParams, names, `${where} documents its path parameters`);
      assert.ok(Object.keys(op.responses).some((c) => Number(c) < 400), `${where} documents a success answer`);
      assert.ok(op.responses['400'], `${where} documents 400`);
      if (method !== 'get') {
        assert.equal(op.security, [{ adminToken: [] }], `${where} needs the admin token`);
        assert.ok(op.responses['401'], `${where} documents 401`);
      } else assert.is(op.security, undefined, `${where} is open for reading`);
    }
  }
  assert.equal(doc.components.securitySchemes.adminToken, { type: 'http', scheme: 'bearer' });
});

test('every $ref in the document resolves', () => {
  const refs: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (k === '$ref') refs.push(String(x));
        else walk(x);
      }
    }
  };
  walk(doc);
  assert.ok(refs.length > 20);
  for (const r of refs) {
    assert.match(r, /^#\/components\/schemas\//);
    assert.ok(doc.components.schemas[r.split('/').pop()!], `${r} resolves`);
  }
});

test('the documented query parameters are the ones the server accepts', async () => {
  for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, any>>)) {
    const op = ops.get;
    if (!op || path.includes('{') || path === '/api/inspect') continue;
    const bogus = await fetch(`${base}${path}?definitely_not_a_parameter=1`);
    assert.is(bogus.status, 400, `${path} refuses an undocumented query parameter`);
    for (const p of op.parameters.filter((x: any) => x.in === 'query')) {
      const value = p.schema.enum?.[0] ?? (p.schema.type === 'integer' ? String(Math.max(1, p.schema.minimum ?? 1)) : 'x');
      const res = await fetch(`${base}${path}?${p.name}=${encodeURIComponent(value)}`);
      assert.is(res.status, 200, `${path}?${p.name}=${value} is accepted`);
    }
  }
});

test('the schema checker refuses what the schemas exclude', () => {
  assert.equal(checkSchema({ error: 'x', message: 'y' }, schemas.Error!), []);
  assert.ok(checkSchema({ error: 'x' }, schemas.Error!).length > 0, 'missing required field');
  assert.ok(checkSchema({ rounds: 1.5 }, schemas.SessionConfig!).length > 0, 'integer');
  assert.ok(checkSchema({ roundz: 1 }, schemas.SessionConfig!).length > 0, 'no unknown setting');
  assert.ok(checkSchema({ name: 'k', status: 'sleepy', combiner: null, lastSeen: 0 }, schemas.Client!).length > 0, 'enum');
  assert.equal(checkSchema({ name: 'k', status: 'gone', combiner: null, lastSeen: 0 }, schemas.Client!), []);
  assert.ok(checkSchema({ items: 'no' }, { type: 'object', properties: { items: { type: 'array' } } }).length > 0, 'array');
});

test.run();
