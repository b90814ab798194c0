// Node settings from three places, one schema: command-line flags, FEDSTATE_* environment variables
// and an optional JSON config file (--config FILE). Precedence is flags > env > file > defaults, so a
// deployment can keep a shared file, override per host with env, and per run with a flag.
//
// A setting has one canonical name (camelCase): that is its key in the config file; its variable is
// FEDSTATE_ plus the name in upper snake case (reducerEndpoint -> FEDSTATE_REDUCER_ENDPOINT); its
// flag is the kebab-case name unless the schema names another (reducerEndpoint is --reducer).
// Mistakes are errors, never ignored: an unknown flag or file key, a value of the wrong type or
// range, and a FEDSTATE_ variable close to one of ours (a typo) each name what is valid.
import { readFileSync } from 'node:fs';
import { FedError, errorMessage } from './errors.ts';
import { parseFlags, type FlagSpec } from './util/args.ts';

interface Common {
  help: string;
  /** Flag name without dashes; defaults to the kebab-case setting name. */
  flag?: string;
  /** Read from the environment too (default true). Session settings opt out, see src/cli/start.ts. */
  env?: boolean;
  required?: boolean;
  /** Extra validation of a merged value; throw a FedError('config', …) with a message. */
  check?: (value: never) => void;
}

export type Setting = Common &
  (
    | { type: 'string'; default?: string; choices?: readonly string[] }
    | { type: 'number'; default?: number; min?: number; max?: number; integer?: boolean }
    | { type: 'boolean'; default?: boolean }
  );

export type Schema = Record<string, Setting>;

type ValueOf<S extends Setting> = S extends { type: 'number' } ? number : S extends { type: 'boolean' } ? boolean : string;

/** Settings with a default or marked required are always present; the others may be undefined. */
export type Settings<S extends Schema> = {
  [K in keyof S]: S[K] extends { default: unknown } | { required: true } ? ValueOf<S[K]> : ValueOf<S[K]> | undefined;
};

export type Source = 'flag' | 'env' | 'file' | 'default';

export interface Resolved<S extends Schema> {
  values: Settings<S>;
  /** Where each present value came from (for logs and `--help`). */
  sources: Partial<Record<keyof S, Source>>;
  /** Positional arguments left on the command line. */
  rest: string[];
}

export interface ResolveInput {
  argv: string[];
  env?: NodeJS.ProcessEnv;
  /** Command name for messages ("combiner needs --name"). */
  command: string;
}

const ENV_PREFIX = 'FEDSTATE_';

/** Settings every node command accepts besides its own. */
export const commonSettings = {
  config: { type: 'string', help: 'JSON config file with settings (keys as listed in --help)', env: true },
  logLevel: { type: 'string', default: 'info', choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], help: 'log level (JSON lines on stderr)' },
  help: { type: 'boolean', default: false, help: 'show this help', env: false },
} as const satisfies Schema;

/**
 * FEDSTATE_ variables that are not node settings but belong to other parts of fedstate (TF backend,
 * kernels, test runner, benchmarks); they are never reported as typos.
 */
const foreignEnv = [/^FEDSTATE_TF_BACKEND$/, /^FEDSTATE_KERNEL$/, /^FEDSTATE_TEST_/, /^FEDSTATE_BENCH_/, /^FEDSTATE_CONTRACT_/];

export const kebab = (name: string): string => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
export const envName = (name: string): string => ENV_PREFIX + kebab(name).replace(/-/g, '_').toUpperCase();
export const flagOf = (name: string, s: Setting): string => s.flag ?? kebab(name);

// Every schema a command defined, so a variable meant for another command (FEDSTATE_LISTEN on a host
// that runs a client too) is recognised as ours and left alone rather than called a typo.
const registered = new Set<string>();

/** Declares a command's schema (with the common settings added) and remembers its variables. */
export function defineSettings<S extends Schema>(schema: S): S & typeof commonSettings {
  const full = { ...schema, ...commonSettings };
  for (const [name, s] of Object.entries(full) as Array<[string, Setting]>) if (s.env !== false) registered.add(envName(name));
  return full;
}

export function resolveSettings<S extends Schema>(schema: S, input: ResolveInput): Resolved<S> {
  const env = input.env ?? process.env;
  const settings = Object.entries(schema);
  const byFlag = new Map(settings.map(([name, s]) => [flagOf(name, s), name]));

  // 1. flags: parsed strictly, without defaults, so "given" and "defaulted" stay apart.
  const flagSpec: Record<string, FlagSpec> = {};
  for (const [name, s] of settings) flagSpec[flagOf(name, s)] = withoutDefault(s);
  const parsed = parseFlags(input.argv, flagSpec) as Record<string, unknown> & { _: string[] };
  const fromFlags = new Map<string, unknown>();
  for (const [flag, name] of byFlag) {
    const v = parsed[camel(flag)];
    if (v !== undefined) fromFlags.set(name, v);
  }

  // 2. environment
  const fromEnv = new Map<string, unknown>();
  const ours = new Map(settings.filter(([, s]) => s.env !== false).map(([name]) => [envName(name), name]));
  for (const [variable, raw] of Object.entries(env)) {
    if (!variable.startsWith(ENV_PREFIX) || raw === undefined) continue;
    const name = ours.get(variable);
    if (name) {
      fromEnv.set(name, coerceText(variable, schema[name]!, raw));
      continue;
    }
    if (registered.has(variable) || foreignEnv.some((re) => re.test(variable))) continue;
    const candidates = [...new Set([...ours.keys(), ...registered])];
    const near = closest(variable, candidates);
    if (near) {
      throw new FedError('config', `unknown environment variable ${variable} (did you mean ${near}?); ${input.command} reads: ${[...ours.keys()].join(', ')}`);
    }
  }

  // 3. config file (its path itself may come from a flag or the environment)
  const configPath = (fromFlags.get('config') ?? fromEnv.get('config')) as string | undefined;
  const fromFile = configPath === undefined ? new Map<string, unknown>() : readConfigFile(configPath, schema, input.command);

  const values: Record<string, unknown> = {};
  const sources: Partial<Record<string, Source>> = {};
  for (const [name, s] of settings) {
    const layers: Array<[Source, Map<string, unknown>]> = [
      ['flag', fromFlags],
      ['env', fromEnv],
      ['file', fromFile],
    ];
    const hit = layers.find(([, m]) => m.has(name));
    if (hit) {
      values[name] = hit[1].get(name);
      sources[name] = hit[0];
    } else if (s.default !== undefined) {
      values[name] = s.default;
      sources[name] = 'default';
    }
  }
  // --help must work even when required settings are missing.
  if (!values.help) {
    for (const [name, s] of settings) {
      if (s.required && values[name] === undefined) {
        const where = [`--${flagOf(name, s)}`, ...(s.env !== false ? [envName(name)] : []), `"${name}" in a --config file`];
        throw new FedError('config', `${input.command} needs ${where.join(' or ')} (${s.help})`);
      }
      if (values[name] !== undefined && s.check) {
        try {
          (s.check as (v: unknown) => void)(values[name]);
        } catch (e) {
          throw new FedError('config', `${labelOf(name, s, sources[name])}: ${errorMessage(e).replace(/^config: /, '')}`);
        }
      }
    }
  }
  return { values: values as Settings<S>, sources: sources as Resolved<S>['sources'], rest: parsed._ };
}

function withoutDefault(s: Setting): FlagSpec {
  switch (s.type) {
    case 'number':
      return { type: 'number', min: s.min, max: s.max, integer: s.integer, help: s.help };
    case 'string':
      return { type: 'string', choices: s.choices, help: s.help };
    case 'boolean':
      return { type: 'boolean', help: s.help };
  }
}

const camel = (flag: string): string => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

function labelOf(name: string, s: Setting, source: Source | undefined): string {
  if (source === 'env') return envName(name);
  if (source === 'file') return `"${name}" in the config file`;
  return `--${flagOf(name, s)}`;
}

/** An environment value: text that must parse as the setting's type. */
function coerceText(label: string, s: Setting, raw: string): unknown {
  if (s.type === 'boolean') {
    const v = raw.trim().toLowerCase();
    if (['true', '1', 'yes', 'on'].includes(v)) return true;
    if (['false', '0', 'no', 'off', ''].includes(v)) return false;
    throw new FedError('config', `${label} must be true or false, got "${raw}"`);
  }
  if (s.type === 'number') {
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n)) throw new FedError('config', `${label} must be a number, got "${raw}"`);
    return checkRange(label, s, n);
  }
  return checkChoice(label, s, raw);
}

/** A config-file value: JSON that must already have the setting's type. */
function coerceJson(label: string, s: Setting, v: unknown): unknown {
  if (s.type === 'boolean') {
    if (typeof v !== 'boolean') throw new FedError('config', `${label} must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }
  if (s.type === 'number') {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new FedError('config', `${label} must be a number, got ${JSON.stringify(v)}`);
    return checkRange(label, s, v);
  }
  if (typeof v !== 'string') throw new FedError('config', `${label} must be a string, got ${JSON.stringify(v)}`);
  return checkChoice(label, s, v);
}

function checkRange(label: string, s: Extract<Setting, { type: 'number' }>, n: number): number {
  if (s.integer && !Number.isInteger(n)) throw new FedError('config', `${label} must be an integer, got ${n}`);
  if (s.min !== undefined && n < s.min) throw new FedError('config', `${label} must be >= ${s.min}, got ${n}`);
  if (s.max !== undefined && n > s.max) throw new FedError('config', `${label} must be <= ${s.max}, got ${n}`);
  return n;
}

function checkChoice(label: string, s: Extract<Setting, { type: 'string' }>, v: string): string {
  if (s.choices && !s.choices.includes(v)) throw new FedError('config', `${label} must be one of ${s.choices.join(', ')}, got "${v}"`);
  return v;
}

function readConfigFile(path: string, schema: Schema, command: string): Map<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new FedError('config', `cannot read config file ${path}: ${errorMessage(e)}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new FedError('config', `config file ${path} is not valid JSON: ${errorMessage(e)}`);
  }
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new FedError('config', `config file ${path} must hold one JSON object of settings`);
  const allowed = Object.entries(schema).filter(([name]) => name !== 'config' && name !== 'help');
  const keys = allowed.map(([name]) => name);
  const out = new Map<string, unknown>();
  for (const [key, value] of Object.entries(json)) {
    const s = schema[key];
    if (!s || key === 'config' || key === 'help') {
      // Someone who wrote the flag's or the variable's spelling gets told the file's.
      const viaFlag = allowed.find(([name, x]) => flagOf(name, x) === key || envName(name) === key);
      const near = viaFlag?.[0] ?? closest(key, keys);
      throw new FedError('config', `unknown key "${key}" in config file ${path}${near ? ` (did you mean "${near}"?)` : ''}; ${command} settings: ${keys.join(', ')}`);
    }
    out.set(key, coerceJson(`"${key}" in config file ${path}`, s, value));
  }
  return out;
}

/** The candidate a typo most likely meant: small edit distance relative to length, or the same words. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  const norm = (w: string): string => w.toLowerCase().replace(/[-_]/g, '');
  let best: { c: string; d: number } | undefined;
  for (const c of candidates) {
    const d = editDistance(norm(word), norm(c));
    const limit = Math.max(1, Math.min(3, Math.floor(Math.max(norm(word).length, norm(c).length) / 5)));
    if (d <= limit && (!best || d < best.d)) best = { c, d };
  }
  if (best) return best.c;
  const words = (w: string): string => w.toLowerCase().split(/[-_]|(?=[A-Z])/).map((x) => x.toLowerCase()).sort().join(' ');
  return candidates.find((c) => words(c) === words(word));
}

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/** `--help` text: every setting with its flag, variable, file key and default. */
export function settingsHelp(schema: Schema): string {
  return Object.entries(schema)
    .map(([name, s]) => {
      const flag = `  --${flagOf(name, s)}${s.type === 'boolean' ? '' : ` <${s.type === 'string' && s.choices ? s.choices.join('|') : s.type}>`}`;
      const extras = [s.required ? 'required' : '', s.default !== undefined && s.type !== 'boolean' ? `default ${String(s.default)}` : '', s.env !== false ? envName(name) : '', name !== 'config' && name !== 'help' ? `file key "${name}"` : '']
        .filter(Boolean)
        .join('; ');
      return `${flag.length < 34 ? flag.padEnd(34) : `${flag}\n${' '.repeat(34)}`}${s.help}${extras ? ` (${extras})` : ''}`;
    })
    .join('\n');
}

// Security and limit settings the node commands share (src/security/node-security.ts applies them).

/** TLS files of any node: a CA to verify peers, and this node's certificate and key. */
export const tlsSettings = {
  tlsCa: { type: 'string', help: 'PEM CA certificate that peers\' certificates must chain to; with it this node dials with TLS' },
  tlsCert: { type: 'string', help: 'PEM certificate of this node: needed to listen with TLS, presented when dialing (mutual TLS)' },
  tlsKey: { type: 'string', help: 'PEM private key of --tls-cert' },
} as const satisfies Schema;

/** TLS settings of listening nodes (reducer, combiners). */
export const tlsListenSettings = {
  ...tlsSettings,
  tlsRequireClientCert: { type: 'boolean', default: false, help: 'mutual TLS: refuse peers without a client certificate signed by --tls-ca (its fedstate:role/name becomes the peer identity)' },
} as const satisfies Schema;

const MiB = 1024 * 1024;

/** Size and rate limits of any node. */
export const limitSettings = {
  maxFrameBytes: { type: 'number', default: MiB + 64 * 1024, min: 128 * 1024, max: 256 * MiB, integer: true, help: 'largest frame this node accepts or sends; give every node the same value (model chunks shrink to fit it)' },
  maxModelBytes: { type: 'number', default: 1024 * MiB, min: 1024, max: 16 * 1024 * MiB, integer: true, help: 'largest model (blob) this node fetches or accepts as an upload' },
  requestRate: { type: 'number', default: 500, min: 0, help: 'requests (envelopes, blob pulls) per second one peer link may send, bursts of twice that; excess is refused rate-limited and an abusive link closed (0: no limit)' },
  maxWindow: { type: 'number', default: 64, min: 1, max: 4096, integer: true, help: 'chunks a peer pulling a model may have in flight; larger credit windows are clamped' },
  resumeWithinMs: { type: 'number', default: 5_000, min: 0, max: 600_000, integer: true, help: 'how long a model transfer cut by a dropped link waits for its peer to be back, then goes on from the bytes it has (0: fail at once)' },
} as const satisfies Schema;

/** Limits of listening nodes. */
export const listenLimitSettings = {
  ...limitSettings,
  connectionRate: { type: 'number', default: 50, min: 0, help: 'new connections per second per remote IP, bursts of twice that; the excess is dropped before TLS (0: no limit)' },
} as const satisfies Schema;

/** The HMAC secret of server-side nodes (reducer, combiners). */
export const secretSetting = {
  secret: {
    type: 'string',
    help: 'HMAC secret: verify the role-bound tokens peers present (mint them with `fedstate token`); this node mints its own token with it unless --token is given',
    check: (v: string) => {
      if (v.length < 16) throw new FedError('config', 'the secret must be at least 16 characters');
    },
  },
} as const satisfies Schema;
