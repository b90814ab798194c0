// The OpenAPI 3 document, generated from the router's route table and the schemas below, so the
// document lists exactly the routes that exist. `checkSchema` validates a value against these schemas
// (the subset of JSON Schema used here); the API tests run every response through it.
import type { ApiServer, JsonSchema, RouteDoc } from './server.ts';

const ref = (name: string): JsonSchema => ({ $ref: `#/components/schemas/${name}` });
const numberMap: JsonSchema = { type: 'object', additionalProperties: { type: 'number' } };
const str: JsonSchema = { type: 'string' };
const int: JsonSchema = { type: 'integer' };
const strings: JsonSchema = { type: 'array', items: str };

export const page = (item: JsonSchema, extra: Record<string, JsonSchema> = {}): JsonSchema => ({
  type: 'object',
  required: ['items', 'total', 'limit', 'offset', ...Object.keys(extra)],
  properties: { items: { type: 'array', items: item }, total: int, limit: int, offset: int, ...extra },
});

export const schemas: Record<string, JsonSchema> = {
  Error: { type: 'object', required: ['error', 'message'], properties: { error: { type: 'string', description: 'stable error code (FedError code)' }, message: str } },
  SessionConfig: {
    type: 'object',
    description: 'Every field is optional on create; unknown fields are refused.',
    additionalProperties: false,
    properties: {
      sessionId: { type: 'string', pattern: '^[A-Za-z0-9._-]*$' },
      rounds: { type: 'integer', minimum: 1 },
      roundTimeoutMs: { type: 'integer', minimum: 10 },
      minCombiners: { type: 'integer', minimum: 1 },
      minClients: { type: 'integer', minimum: 1 },
      minUpdates: { type: 'integer', minimum: 1 },
      bufferSize: { type: 'integer', minimum: -1 },
      maxClients: { type: 'integer', minimum: 0 },
      fraction: { type: 'number', minimum: 0, maximum: 1 },
      localEpochs: { type: 'integer', minimum: 1 },
      batchSize: { type: 'integer', minimum: 1 },
      learningRate: { type: 'number', minimum: 0 },
      proximalMu: { type: 'number', minimum: 0 },
      seed: { type: 'integer', minimum: 0 },
      strategy: str,
      validate: { type: 'boolean' },
      quorumTimeoutMs: { type: 'integer', minimum: 0 },
      maxConsecutiveFailures: { type: 'integer', minimum: 1 },
    },
  },
  RoundResult: {
    type: 'object',
    required: ['round', 'status', 'reason', 'modelId', 'participants', 'updates', 'totalWeight', 'rejected', 'trainMetrics', 'evalMetrics', 'validation', 'startedAt', 'endedAt'],
    properties: {
      round: int,
      status: { type: 'string', enum: ['ok', 'failed', 'cancelled'] },
      reason: str,
      modelId: str,
      participants: strings,
      updates: int,
      totalWeight: { type: 'number' },
      rejected: numberMap,
      trainMetrics: numberMap,
      evalMetrics: numberMap,
      validation: numberMap,
      startedAt: { type: 'number' },
      endedAt: { type: 'number' },
    },
  },
  Session: {
    type: 'object',
    required: ['id', 'status'],
    properties: { id: str, status: str, config: ref('SessionConfig'), committed: int, roundNo: int, seedModelId: str },
  },
  SessionDetail: {
    type: 'object',
    required: ['id', 'status', 'state', 'rounds'],
    properties: { id: str, status: str, state: { type: 'string', description: 'live reducer state while current, else the stored status' }, config: ref('SessionConfig'), committed: int, roundNo: int, seedModelId: str, rounds: { type: 'array', items: ref('RoundResult') } },
  },
  RoundMetrics: {
    type: 'object',
    required: ['round', 'status', 'updates', 'rejected', 'trainMetrics', 'evalMetrics', 'validation', 'durationMs'],
    properties: { round: int, status: str, updates: int, rejected: numberMap, trainMetrics: numberMap, evalMetrics: numberMap, validation: numberMap, durationMs: { type: 'number' } },
  },
  Validation: {
    type: 'object',
    required: ['round', 'modelId', 'validation', 'evalMetrics'],
    properties: { round: int, modelId: str, validation: { ...numberMap, description: 'client-side validation metrics, weighted by examples' }, evalMetrics: { ...numberMap, description: 'server-side evaluation metrics' } },
  },
  TrailEntry: {
    type: 'object',
    required: ['index', 'modelId', 'parentModelId', 'parentEntryHash', 'sessionId', 'round', 'strategy', 'metrics', 'committedAt', 'entryHash'],
    properties: {
      index: int,
      modelId: str,
      parentModelId: { type: 'string', nullable: true },
      parentEntryHash: { type: 'string', nullable: true },
      sessionId: str,
      round: int,
      strategy: str,
      metrics: numberMap,
      committedAt: { type: 'number' },
      entryHash: str,
    },
  },
  Model: {
    type: 'object',
    required: ['modelId', 'bytes', 'parameters', 'layout', 'trail', 'isGlobal'],
    properties: {
      modelId: str,
      bytes: int,
      parameters: int,
      layout: { type: 'array', items: { type: 'object', required: ['name', 'shape'], properties: { name: str, shape: { type: 'array', items: int } } } },
      trail: { ...ref('TrailEntry'), nullable: true },
      isGlobal: { type: 'boolean' },
    },
  },
  Combiner: {
    type: 'object',
    required: ['name', 'endpoint', 'connected', 'state', 'lastSeen', 'maxClients', 'clients', 'assigned'],
    properties: { name: str, endpoint: str, connected: { type: 'boolean' }, state: str, lastSeen: { type: 'number' }, maxClients: int, clients: strings, assigned: strings },
  },
  Client: {
    type: 'object',
    required: ['name', 'status', 'combiner', 'lastSeen'],
    properties: {
      name: str,
      status: { type: 'string', enum: ['connected', 'assigned', 'gone'] },
      combiner: { type: 'string', nullable: true },
      lastSeen: { type: 'number', description: 'ms since epoch of the last combiner status report that listed the client' },
      state: { type: 'string', nullable: true, description: 'the client statechart state, when the client is inspected in this process' },
    },
  },
  Status: {
    type: 'object',
    required: ['state', 'session', 'failure', 'globalModelId', 'combiners', 'history'],
    properties: {
      state: str,
      session: { type: 'object', nullable: true, properties: { id: str, rounds: int, committed: int, round: int } },
      failure: str,
      globalModelId: str,
      combiners: { type: 'array', items: { type: 'object', properties: { name: str, connected: { type: 'boolean' }, clients: strings, state: str, endpoint: str, lastSeen: { type: 'number' } } } },
      history: { type: 'array', items: ref('RoundResult') },
    },
  },
  EventSummary: {
    type: 'object',
    required: ['seq', 'at', 'actor', 'type', 'from', 'fields'],
    properties: { seq: int, at: { type: 'number' }, actor: str, type: str, from: { type: 'string', nullable: true }, fields: { type: 'object', additionalProperties: { oneOf: [str, { type: 'number' }, { type: 'boolean' }] } } },
  },
  ActorView: {
    type: 'object',
    required: ['address', 'role', 'machine', 'state', 'active', 'taken', 'status', 'changedAt', 'events', 'counts'],
    properties: {
      address: str,
      role: { type: 'string', nullable: true },
      machine: { type: 'string', nullable: true },
      value: { description: 'XState state value (string or nested object)' },
      state: str,
      active: strings,
      taken: strings,
      status: str,
      changedAt: { type: 'number' },
      events: { type: 'array', items: ref('EventSummary') },
      counts: numberMap,
    },
  },
  MachineGraph: {
    type: 'object',
    required: ['id', 'root', 'nodes', 'edges'],
    properties: {
      id: str,
      root: str,
      nodes: {
        type: 'array',
        items: {
          type: 'object',
          required: ['id', 'key', 'parent', 'type', 'initial', 'children', 'invokes', 'internal'],
          properties: {
            id: str,
            key: str,
            parent: { type: 'string', nullable: true },
            type: { type: 'string', enum: ['atomic', 'compound', 'parallel', 'final', 'history'] },
            initial: { type: 'string', nullable: true },
            children: strings,
            invokes: strings,
            internal: { type: 'array', items: { type: 'object', required: ['event', 'guard'], properties: { event: str, guard: { type: 'string', nullable: true } } } },
          },
        },
      },
      edges: {
        type: 'array',
        items: {
          type: 'object',
          required: ['id', 'source', 'target', 'event', 'kind', 'label', 'guard', 'reenter'],
          properties: { id: str, source: str, target: str, event: str, kind: { type: 'string', enum: ['event', 'always', 'after', 'done', 'error', 'state-done'] }, label: str, guard: { type: 'string', nullable: true }, reenter: { type: 'boolean' } },
        },
      },
    },
  },
};

export const refs = { ref };

const oaPath = (path: string): string => path.replace(/:([a-zA-Z]+)/g, '{$1}');

function operation(method: string, path: string, write: boolean, doc: RouteDoc | undefined): Record<string, unknown> {
  const keys = [...path.matchAll(/:([a-zA-Z]+)/g)].map((m) => m[1]!);
  const d: RouteDoc = doc ?? { summary: '(undocumented)', responses: { 200: { description: 'OK' } } };
  const parameters: unknown[] = keys.map((k) => ({ name: k, in: 'path', required: true, description: d.params?.[k] ?? k, schema: { type: 'string' } }));
  for (const [name, q] of Object.entries(d.query ?? {})) parameters.push({ name, in: 'query', required: !!q.required, description: q.description, schema: q.schema });
  const responses: Record<string, unknown> = {};
  const codes = { ...d.responses } as RouteDoc['responses'];
  if (write) codes[401] ??= { description: 'missing or wrong admin token' };
  // Every documented route refuses unknown query parameters, so 400 is always possible.
  codes[400] ??= { description: 'bad input: unknown query parameter, malformed body or parameter' };
  for (const [code, r] of Object.entries(codes)) {
    const status = Number(code);
    const schema = r.schema ?? (status >= 400 ? ref('Error') : undefined);
    responses[code] = schema || r.contentType ? { description: r.description, content: { [r.contentType ?? 'application/json']: { schema: schema ?? {} } } } : { description: r.description };
  }
  const op: Record<string, unknown> = {
    operationId: `${method.toLowerCase()}${path.replace(/[:/{}.-]+(\w)?/g, (_, c: string | undefined) => (c ? c.toUpperCase() : ''))}`,
    summary: d.summary,
    tags: d.tags ?? [],
    parameters,
    responses,
  };
  if (d.description) op.description = d.description;
  if (d.body) op.requestBody = { required: true, description: d.body.description, content: { [d.body.contentType]: { schema: d.body.schema } } };
  if (write) op.security = [{ adminToken: [] }];
  return op;
}

export function openApiDocument(api: ApiServer, info: { title?: string; version?: string } = {}): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of api.routeList) {
    const p = (paths[oaPath(r.path)] ??= {});
    p[r.method.toLowerCase()] = operation(r.method, r.path, r.write, r.doc);
  }
  return {
    openapi: '3.0.3',
    info: {
      title: info.title ?? 'fedstate reducer API',
      version: info.version ?? '0.1.0',
      description: 'REST API of the fedstate reducer: sessions, models and the model trail, rounds, combiners and clients, metrics, live inspection and the dashboard. Every write needs the admin token (Authorization: Bearer). Lists are paginated with ?limit=&offset= and answer {items, total, limit, offset}.',
    },
    paths,
    components: { schemas, securitySchemes: { adminToken: { type: 'http', scheme: 'bearer' } } },
  };
}

/** Problems of `value` against `schema` (empty when it conforms). */
export function checkSchema(value: unknown, schema: JsonSchema, at = '$', all: Record<string, JsonSchema> = schemas): string[] {
  if (schema.$ref) {
    const target = all[schema.$ref.replace('#/components/schemas/', '')];
    if (!target) return [`${at}: unresolved ${schema.$ref}`];
    return checkSchema(value, { ...target, ...(schema.nullable ? { nullable: true } : {}) }, at, all);
  }
  if (value === null) return schema.nullable || schema.type === undefined ? [] : [`${at}: null where ${schema.type} expected`];
  if (schema.oneOf) {
    const ok = schema.oneOf.filter((s) => checkSchema(value, s, at, all).length === 0).length;
    return ok === 1 ? [] : [`${at}: matches ${ok} of oneOf`];
  }
  const problems: string[] = [];
  const t = schema.type;
  if (t === 'object') {
    if (typeof value !== 'object' || Array.isArray(value)) return [`${at}: expected object`];
    const o = value as Record<string, unknown>;
    for (const k of schema.required ?? []) if (!(k in o)) problems.push(`${at}.${k}: required`);
    for (const [k, v] of Object.entries(o)) {
      const ps = schema.properties?.[k];
      if (ps) problems.push(...checkSchema(v, ps, `${at}.${k}`, all));
      else if (schema.additionalProperties === false) problems.push(`${at}.${k}: not allowed`);
      else if (typeof schema.additionalProperties === 'object') problems.push(...checkSchema(v, schema.additionalProperties, `${at}.${k}`, all));
    }
  } else if (t === 'array') {
    if (!Array.isArray(value)) return [`${at}: expected array`];
    if (schema.items) value.forEach((v, i) => problems.push(...checkSchema(v, schema.items!, `${at}[${i}]`, all)));
  } else if (t === 'string') {
    if (typeof value !== 'string') return [`${at}: expected string`];
    if (schema.pattern && !new RegExp(schema.pattern).test(value)) problems.push(`${at}: does not match ${schema.pattern}`);
  } else if (t === 'integer' || t === 'number') {
    if (typeof value !== 'number' || (t === 'integer' && !Number.isInteger(value))) return [`${at}: expected ${t}`];
    if (schema.minimum !== undefined && value < schema.minimum) problems.push(`${at}: below ${schema.minimum}`);
    if (schema.maximum !== undefined && value > schema.maximum) problems.push(`${at}: above ${schema.maximum}`);
  } else if (t === 'boolean') {
    if (typeof value !== 'boolean') return [`${at}: expected boolean`];
  }
  if (schema.enum && !schema.enum.includes(value as string | number)) problems.push(`${at}: ${String(value)} not in ${schema.enum.join('|')}`);
  return problems;
}

/**
 * The schema the document gives for an answer of `status` from `method path` (a concrete path), or
 * undefined when the route or status is not documented. Error statuses fall back to Error.
 */
export function responseSchema(api: ApiServer, method: string, path: string, status: number): { route: boolean; documented: boolean; schema: JsonSchema | undefined } {
  const route = api.routeList.find((r) => r.method === method && new RegExp(`^${r.path.replace(/:[a-zA-Z]+/g, '[^/]+')}/?$`).test(path));
  const doc = route?.doc?.responses[status];
  // The router adds these for every route: 401 on writes, 400 for bad query/body, 405 and 404 for unknown routes.
  const implicit = status === 405 || status === 404 || status === 400 || (status === 401 && !!route?.write);
  return { route: !!route, documented: !!doc || (status >= 400 && implicit), schema: doc?.schema ?? (status >= 400 ? schemas.Error : undefined) };
}
