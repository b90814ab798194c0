// Node settings: flags > FEDSTATE_ env > --config file > defaults, each validated with a message that
// says where the bad value came from, and typos (unknown file keys, near-miss variables) refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closest, defineSettings, editDistance, envName, resolveSettings, settingsHelp } from '../src/config.ts';
import { FedError } from '../src/errors.ts';
import { combinerSettings, advertisedEndpoint } from '../src/cli/combiner.ts';
import { clientSettings } from '../src/cli/client.ts';
import { reducerSettings } from '../src/cli/reducer.ts';

const dir = mkdtempSync(join(tmpdir(), 'fedstate-config-'));
let n = 0;
const file = (content: unknown): string => {
  const path = join(dir, `c${n++}.json`);
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
};

const schema = defineSettings({
  listen: { type: 'string', default: 'grpc://127.0.0.1:7000', help: 'endpoint' },
  reducerEndpoint: { type: 'string', flag: 'reducer', help: 'reducer' },
  maxClients: { type: 'number', default: 0, min: 0, integer: true, help: 'max clients' },
  verbose: { type: 'boolean', default: false, help: 'verbose' },
  mode: { type: 'string', choices: ['a', 'b'], help: 'mode' },
  name: { type: 'string', required: true, help: 'name' },
});

const resolve = (argv: string[], env: NodeJS.ProcessEnv = {}) => resolveSettings(schema, { argv, env, command: 'thing' });

function throwsConfig(fn: () => unknown, pattern: RegExp): void {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof FedError, `FedError expected, got ${String(e)}`);
    assert.is((e as FedError).code, 'config');
    assert.match((e as FedError).message, pattern);
    return;
  }
  assert.unreachable(`expected an error matching ${pattern}`);
}

test('names: file key camelCase, env upper snake, flag kebab unless named', () => {
  assert.is(envName('reducerEndpoint'), 'FEDSTATE_REDUCER_ENDPOINT');
  assert.is(envName('token'), 'FEDSTATE_TOKEN');
  const help = settingsHelp(schema);
  assert.match(help, /--reducer <string>\s+reducer \(FEDSTATE_REDUCER_ENDPOINT; file key "reducerEndpoint"\)/);
  assert.match(help, /--max-clients <number>/);
});

test('precedence: flags > env > file > defaults, per setting', () => {
  const cfg = file({ listen: 'grpc://10.0.0.1:1', maxClients: 3, name: 'from-file', mode: 'a' });
  const onlyDefaults = resolve(['--name', 'x']);
  assert.is(onlyDefaults.values.listen, 'grpc://127.0.0.1:7000');
  assert.is(onlyDefaults.sources.listen, 'default');
  assert.is(onlyDefaults.values.reducerEndpoint, undefined);

  const fromFile = resolve(['--config', cfg]);
  assert.equal([fromFile.values.listen, fromFile.values.maxClients, fromFile.values.name, fromFile.values.mode], ['grpc://10.0.0.1:1', 3, 'from-file', 'a']);
  assert.is(fromFile.sources.maxClients, 'file');

  const envOverFile = resolve(['--config', cfg], { FEDSTATE_MAX_CLIENTS: '7', FEDSTATE_NAME: 'from-env', FEDSTATE_VERBOSE: '1' });
  assert.equal([envOverFile.values.maxClients, envOverFile.values.name, envOverFile.values.verbose, envOverFile.values.listen], [7, 'from-env', true, 'grpc://10.0.0.1:1']);
  assert.is(envOverFile.sources.maxClients, 'env');

  const flagOverAll = resolve(['--config', cfg, '--max-clients', '9', '--name=flag', '--reducer', 'ws://h:1'], { FEDSTATE_MAX_CLIENTS: '7', FEDSTATE_NAME: 'from-env', FEDSTATE_REDUCER_ENDPOINT: 'grpc://e:2' });
  assert.equal([flagOverAll.values.maxClients, flagOverAll.values.name, flagOverAll.values.reducerEndpoint], [9, 'flag', 'ws://h:1']);
  assert.equal(flagOverAll.sources, { listen: 'file', reducerEndpoint: 'flag', maxClients: 'flag', verbose: 'default', mode: 'file', name: 'flag', config: 'flag', logLevel: 'default', help: 'default' });
});

test('the config file path itself may come from FEDSTATE_CONFIG', () => {
  const r = resolve([], { FEDSTATE_CONFIG: file({ name: 'n1' }) });
  assert.is(r.values.name, 'n1');
});

test('typos: unknown flag, unknown file key (with suggestion and valid keys), flag spelling in a file', () => {
  throwsConfig(() => resolve(['--name', 'x', '--max-client', '2']), /unknown flag --max-client; valid flags: .*--max-clients/);
  throwsConfig(() => resolve(['--config', file({ name: 'x', maxClient: 2 })]), /unknown key "maxClient" in config file .*\(did you mean "maxClients"\?\); thing settings: listen, reducerEndpoint, maxClients, verbose, mode, name, logLevel/);
  throwsConfig(() => resolve(['--config', file({ name: 'x', reducer: 'grpc://h:1' })]), /unknown key "reducer" .*did you mean "reducerEndpoint"/);
  throwsConfig(() => resolve(['--config', file({ name: 'x', 'max-clients': 1 })]), /did you mean "maxClients"/);
  throwsConfig(() => resolve(['--config', file({ name: 'x', somethingElse: 1 })]), /unknown key "somethingElse" in config file [^(]*; thing settings:/);
});

test('typos in FEDSTATE_ variables are errors naming the valid ones; other FEDSTATE_ variables are left alone', () => {
  throwsConfig(() => resolve(['--name', 'x'], { FEDSTATE_REDUCER_ENDPONT: 'grpc://h:1' }), /unknown environment variable FEDSTATE_REDUCER_ENDPONT \(did you mean FEDSTATE_REDUCER_ENDPOINT\?\); thing reads: .*FEDSTATE_LISTEN/);
  throwsConfig(() => resolve(['--name', 'x'], { FEDSTATE_MAXCLIENTS: '1' }), /did you mean FEDSTATE_MAX_CLIENTS/);
  throwsConfig(() => resolve(['--name', 'x'], { FEDSTATE_ENDPOINT_REDUCER: 'grpc://h:1' }), /did you mean FEDSTATE_REDUCER_ENDPOINT/);
  throwsConfig(() => resolve(['--name', 'x'], { FEDSTATE_TOKN: 't' }), /did you mean FEDSTATE_TOKEN/); // a variable of another command's schema
  // Variables of other commands, other parts of fedstate, or nothing like ours pass.
  const r = resolve(['--name', 'x'], { FEDSTATE_ADMIN_TOKEN: 'a', FEDSTATE_TF_BACKEND: 'cpu', FEDSTATE_TEST_CONCURRENCY: '2', FEDSTATE_BENCH_HOLDER_MB: '1', FEDSTATE_ZZZ_UNRELATED_THING: '1', PATH: '/bin' });
  assert.is(r.values.name, 'x');
});

test('values are validated with the source named', () => {
  throwsConfig(() => resolve(['--name', 'x', '--max-clients', '-1']), /--max-clients must be >= 0/);
  throwsConfig(() => resolve(['--name', 'x'], { FEDSTATE_MAX_CLIENTS: 'lots' }), /FEDSTATE_MAX_CLIENTS must be a number, got "lots"/);
  throwsConfig(() => resolve(['--name', 'x'], { FEDSTATE_MAX_CLIENTS: '1.5' }), /FEDSTATE_MAX_CLIENTS must be an integer/);
  throwsConfig(() => resolve(['--name', 'x'], { FEDSTATE_VERBOSE: 'maybe' }), /FEDSTATE_VERBOSE must be true or false/);
  throwsConfig(() => resolve(['--name', 'x'], { FEDSTATE_MODE: 'c' }), /FEDSTATE_MODE must be one of a, b/);
  throwsConfig(() => resolve(['--config', file({ name: 'x', maxClients: '3' })]), /"maxClients" in config file .* must be a number, got "3"/);
  throwsConfig(() => resolve(['--config', file({ name: 'x', verbose: 'yes' })]), /"verbose" in config file .* must be true or false/);
  throwsConfig(() => resolve(['--config', file('{ not json')]), /is not valid JSON/);
  throwsConfig(() => resolve(['--config', file([1, 2])]), /must hold one JSON object/);
  throwsConfig(() => resolve(['--config', join(dir, 'missing.json')]), /cannot read config file/);
  throwsConfig(() => resolve(['--config', file({ config: 'other.json', name: 'x' })]), /unknown key "config"/);
});

test('required settings name every way to give them; --help works without them', () => {
  throwsConfig(() => resolve([]), /thing needs --name or FEDSTATE_NAME or "name" in a --config file/);
  assert.is(resolve(['--help']).values.help, true);
});

test('checks of the real node schemas: endpoints, names, transports', () => {
  const combiner = (argv: string[], env: NodeJS.ProcessEnv = {}) => resolveSettings(combinerSettings, { argv, env, command: 'combiner' });
  throwsConfig(() => combiner(['--name', 'c1', '--reducer', 'http://h:1']), /--reducer: unknown transport "http"/);
  throwsConfig(() => combiner(['--name', 'c1', '--reducer', 'inproc://reducer']), /a node process talks grpc or ws/);
  throwsConfig(() => combiner(['--name', 'c 1', '--reducer', 'grpc://h:1']), /--name: "c 1" is not a valid name/);
  throwsConfig(() => combiner(['--name', 'c1'], { FEDSTATE_REDUCER_ENDPOINT: 'grpc://h' }), /FEDSTATE_REDUCER_ENDPOINT: .*needs a port/);
  assert.is(combiner(['--name', 'c1'], { FEDSTATE_REDUCER_ENDPOINT: 'ws://h:7000', FEDSTATE_MAX_CLIENTS: '4' }).values.maxClients, 4);
  throwsConfig(() => resolveSettings(clientSettings, { argv: ['--name', 'k1', '--reducer', 'grpc://h:1', '--partition', 'dirichlet'], env: {}, command: 'client' }), /--partition: partition "dirichlet" needs an argument/);
  throwsConfig(() => resolveSettings(reducerSettings, { argv: ['--api', 'localhost'], env: {}, command: 'reducer' }), /--api: bad listen address "localhost"/);
  assert.is(resolveSettings(reducerSettings, { argv: ['--api', ':0'], env: {}, command: 'reducer' }).values.apiListen, ':0');
  // every node command takes the resume window of cut transfers
  for (const [schema, argv] of [
    [combinerSettings, ['--name', 'c1', '--reducer', 'grpc://h:1']],
    [clientSettings, ['--name', 'k1', '--reducer', 'grpc://h:1']],
    [reducerSettings, []],
  ] as const) {
    assert.is(resolveSettings(schema, { argv: [...argv], env: {}, command: 'node' }).values.resumeWithinMs, 5_000);
    assert.is(resolveSettings(schema, { argv: [...argv], env: { FEDSTATE_RESUME_WITHIN_MS: '0' }, command: 'node' }).values.resumeWithinMs, 0);
    throwsConfig(() => resolveSettings(schema, { argv: [...argv, '--resume-within-ms', '-1'], env: {}, command: 'node' }), /--resume-within-ms/);
  }
});

test('advertised endpoint: wildcard listens need --advertise; host-only advertise keeps the real port', () => {
  assert.is(advertisedEndpoint('grpc://127.0.0.1:7100', undefined), 'grpc://127.0.0.1:7100');
  throwsConfig(() => advertisedEndpoint('grpc://0.0.0.0:7100', undefined), /give --advertise HOST/);
  assert.is(advertisedEndpoint('grpc://0.0.0.0:40123', 'c1.example.org'), 'grpc://c1.example.org:40123');
  assert.is(advertisedEndpoint('ws://0.0.0.0:40123', '10.1.2.3:9000'), 'ws://10.1.2.3:9000');
  assert.is(advertisedEndpoint('grpc://[::]:40123', 'grpc://public.example'), 'grpc://public.example:40123');
  throwsConfig(() => advertisedEndpoint('grpc://0.0.0.0:1', 'ws://h:2'), /is ws but the combiner listens on grpc/);
  throwsConfig(() => advertisedEndpoint('grpc://0.0.0.0:1', '0.0.0.0'), /not an address clients can dial/);
});

test('typo helpers', () => {
  assert.is(editDistance('listen', 'lsiten'), 1); // transposition
  assert.is(editDistance('kitten', 'sitting'), 3);
  assert.is(closest('maxClient', ['maxClients', 'name']), 'maxClients');
  assert.is(closest('zzz', ['maxClients', 'name']), undefined);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));

test.run();
