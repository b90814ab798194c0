// Strategies and server optimizers by name, with typed and validated options, for the session plan and
// the CLI (`--strategy trimmedmean:beta=0.1`). Every option is declared once below (type, range,
// default, meaning); parsing, validation, defaults and the help text all come from that table, so an
// unknown name or a misspelled option key fails loudly with the valid choices instead of being ignored.
import { FedError } from '../errors.ts';
import { createDpFedAvg } from './dp.ts';
import { createFedAvg } from './fedavg.ts';
import { createKrum, createMultiKrum } from './krum.ts';
import { createMedian } from './median.ts';
import { createFedAvgM, createFedAvgServer, createFedOpt, fedAvgMDefaults, fedOptDefaults, type ServerOptimizerState } from './server-optimizers.ts';
import { createTrimmedMean } from './trimmed-mean.ts';
import type { AggregationStrategy, ServerOptimizer } from './types.ts';

interface NumberSpec {
  type: 'number';
  doc: string;
  default?: number;
  /** No default and not optional: the user must give it. */
  required?: boolean;
  integer?: boolean;
  min?: number;
  max?: number;
  /** min/max themselves are excluded. */
  exclusiveMin?: boolean;
  exclusiveMax?: boolean;
}
interface ChoiceSpec {
  type: 'choice';
  doc: string;
  choices: readonly string[];
  default?: string;
}
type OptionSpec = NumberSpec | ChoiceSpec;

const kernelOption: ChoiceSpec = { type: 'choice', doc: 'weighted-sum kernel: wasm (SIMD) or js (fallback); auto = wasm when available', choices: ['auto', 'wasm', 'js'], default: 'auto' };
const lr = (def: number, doc = 'server learning rate'): NumberSpec => ({ type: 'number', doc, default: def, min: 0, exclusiveMin: true });
const unit = (def: number, doc: string): NumberSpec => ({ type: 'number', doc, default: def, min: 0, max: 1, exclusiveMax: true });

/** Aggregation strategies: fold updates at a combiner (and, for fedavg, combiner models at the reducer). */
export const strategyCatalog = {
  fedavg: { doc: 'weighted FedAvg (weights = num_examples), streaming, O(parameters) memory', options: { kernel: kernelOption } },
  fedprox: {
    doc: 'FedAvg aggregation; clients add the proximal term mu/2 ||w - w_global||^2 to their loss (Li et al. 2020)',
    options: {
      mu: { type: 'number', doc: 'proximal term weight, passed to clients as proximalMu; 0.01 when neither is given', min: 0 },
      proximalMu: { type: 'number', doc: 'same as mu (the name clients see)', min: 0 },
      kernel: kernelOption,
    },
  },
  median: { doc: 'coordinate-wise median (unweighted), holds all updates', options: {} },
  trimmedmean: {
    doc: 'coordinate-wise trimmed mean (unweighted), holds all updates',
    options: { beta: { type: 'number', doc: 'fraction trimmed at each end, floor(beta*n) values', default: 0.1, min: 0, max: 0.5, exclusiveMax: true } },
  },
  krum: {
    doc: 'Krum (Blanchard et al. 2017): the update closest to its n-f-2 neighbours; needs n > 2f+2',
    options: { f: { type: 'number', doc: 'Byzantine updates tolerated', default: 1, integer: true, min: 0 } },
  },
  multikrum: {
    doc: 'Multi-Krum: unweighted mean of the m best Krum scores; needs n > 2f+2',
    options: {
      f: { type: 'number', doc: 'Byzantine updates tolerated', default: 1, integer: true, min: 0 },
      m: { type: 'number', doc: 'updates averaged (default n - f)', integer: true, min: 1 },
    },
  },
  dpfedavg: {
    doc: 'DP-FedAvg (McMahan et al. 2018): clip each delta to L2 norm C, mean, Gaussian noise sigma = z*C/n',
    options: {
      clip: { type: 'number', doc: 'L2 clipping bound C of each update delta', required: true, min: 0, exclusiveMin: true },
      z: { type: 'number', doc: 'noise multiplier z (0 = clipping only)', default: 1, min: 0 },
      seed: { type: 'number', doc: 'noise seed, for tests only (default: crypto RNG)', integer: true },
    },
  },
} as const satisfies Record<string, { doc: string; options: Record<string, OptionSpec> }>;

/** Server optimizers: turn (previous global, reduced aggregate) into the new global at the reducer. */
export const serverOptimizerCatalog = {
  fedavg: { doc: 'take the aggregate (plain FedAvg)', options: {} },
  fedavgm: {
    doc: 'server momentum (Hsu et al. 2019)',
    options: { lr: lr(fedAvgMDefaults.lr), momentum: unit(fedAvgMDefaults.momentum, 'server momentum') },
  },
  fedadam: {
    doc: 'FedAdam (Reddi et al. 2021); defaults from FEDn',
    options: {
      lr: lr(fedOptDefaults.lr),
      beta1: unit(fedOptDefaults.beta1, 'first-moment decay'),
      beta2: unit(fedOptDefaults.beta2, 'second-moment decay'),
      tau: { type: 'number', doc: 'adaptivity (denominator offset; v starts at tau^2)', default: fedOptDefaults.tau, min: 0, exclusiveMin: true },
    },
  },
  fedyogi: {
    doc: 'FedYogi (Reddi et al. 2021); defaults from FEDn',
    options: {
      lr: lr(fedOptDefaults.lr),
      beta1: unit(fedOptDefaults.beta1, 'first-moment decay'),
      beta2: unit(fedOptDefaults.beta2, 'second-moment decay'),
      tau: { type: 'number', doc: 'adaptivity (denominator offset; v starts at tau^2)', default: fedOptDefaults.tau, min: 0, exclusiveMin: true },
    },
  },
  fedadagrad: {
    doc: 'FedAdagrad (Reddi et al. 2021); defaults from FEDn',
    options: {
      lr: lr(fedOptDefaults.lr),
      beta1: unit(fedOptDefaults.beta1, 'first-moment decay'),
      tau: { type: 'number', doc: 'adaptivity (denominator offset; v starts at tau^2)', default: fedOptDefaults.tau, min: 0, exclusiveMin: true },
    },
  },
} as const satisfies Record<string, { doc: string; options: Record<string, OptionSpec> }>;

export type StrategyName = keyof typeof strategyCatalog;
export type ServerOptimizerName = keyof typeof serverOptimizerCatalog;
/** Every name `--strategy` accepts: an aggregation strategy, or a server optimizer (over FedAvg). */
export type SpecName = StrategyName | ServerOptimizerName;

export const strategyNames = Object.keys(strategyCatalog) as StrategyName[];
export const serverOptimizerNames = Object.keys(serverOptimizerCatalog) as ServerOptimizerName[];
export const specNames = [...new Set<SpecName>([...strategyNames, ...serverOptimizerNames])];

type ValueOf<S> = S extends { type: 'choice'; choices: readonly (infer C)[] } ? C : number;
type OptionsOf<O> = { [K in keyof O]?: ValueOf<O[K]> };
export type StrategyOptions<N extends StrategyName> = OptionsOf<(typeof strategyCatalog)[N]['options']>;
export type ServerOptimizerOptions<N extends ServerOptimizerName> = OptionsOf<(typeof serverOptimizerCatalog)[N]['options']>;
type Resolved = Record<string, number | string | undefined>;

function formatRange(s: NumberSpec): string {
  const lo = s.min === undefined ? '' : `${s.exclusiveMin ? '>' : '>='} ${s.min}`;
  const hi = s.max === undefined ? '' : `${s.exclusiveMax ? '<' : '<='} ${s.max}`;
  return [lo, hi].filter(Boolean).join(' and ');
}

function resolveOptions(where: string, specs: Record<string, OptionSpec>, given: Record<string, unknown>): Resolved {
  const valid = Object.keys(specs);
  for (const key of Object.keys(given)) {
    if (!(key in specs)) {
      throw new FedError('config', `${where}: unknown option '${key}'; valid options: ${valid.length ? valid.join(', ') : '(none)'}`, { option: key, valid });
    }
  }
  const out: Resolved = {};
  for (const [key, spec] of Object.entries(specs)) {
    const value = given[key] ?? spec.default;
    if (value === undefined) {
      if (spec.type === 'number' && spec.required) throw new FedError('config', `${where}: option '${key}' is required (${spec.doc})`, { option: key });
      out[key] = undefined;
      continue;
    }
    if (spec.type === 'choice') {
      if (typeof value !== 'string' || !spec.choices.includes(value)) {
        throw new FedError('config', `${where}: option '${key}' must be one of ${spec.choices.join(', ')}, got ${String(value)}`, { option: key });
      }
      out[key] = value;
      continue;
    }
    const ok =
      typeof value === 'number' &&
      Number.isFinite(value) &&
      (!spec.integer || Number.isSafeInteger(value)) &&
      (spec.min === undefined || (spec.exclusiveMin ? value > spec.min : value >= spec.min)) &&
      (spec.max === undefined || (spec.exclusiveMax ? value < spec.max : value <= spec.max));
    if (!ok) {
      const want = [spec.integer ? 'an integer' : 'a finite number', formatRange(spec)].filter(Boolean).join(' ');
      throw new FedError('config', `${where}: option '${key}' must be ${want}, got ${String(value)}`, { option: key, value });
    }
    out[key] = value;
  }
  return out;
}

function unknownName(kind: string, name: string, valid: readonly string[]): FedError {
  return new FedError('config', `unknown ${kind} '${name}'; valid: ${valid.join(', ')}`, { name, valid: [...valid] });
}

const isStrategyName = (n: string): n is StrategyName => Object.hasOwn(strategyCatalog, n);
const isServerOptimizerName = (n: string): n is ServerOptimizerName => Object.hasOwn(serverOptimizerCatalog, n);
const kernelOf = (v: unknown): 'wasm' | 'js' | undefined => (v === 'wasm' || v === 'js' ? v : undefined);
const num = (v: number | string | undefined): number => v as number;

// Li et al. 2020 sweep mu in {0.001, 0.01, 0.1, 1}; 0.01 is a common middle ground.
const FEDPROX_DEFAULT_MU = 0.01;

/** FedProx aggregates like FedAvg; the proximal term is the clients' business, read it from here. */
export interface FedProxStrategy extends AggregationStrategy {
  readonly proximalMu: number;
}

/** Resolved options of a strategy (defaults filled in), for display and for canonical specs. */
export function strategyOptions<N extends StrategyName>(name: N, options: StrategyOptions<N> = {}): Resolved {
  if (!isStrategyName(name)) throw unknownName('strategy', name, strategyNames);
  return resolveOptions(name, strategyCatalog[name].options, options as Record<string, unknown>);
}

export function createStrategy(name: 'fedprox', options?: StrategyOptions<'fedprox'>): FedProxStrategy;
export function createStrategy<N extends StrategyName>(name: N, options?: StrategyOptions<N>): AggregationStrategy;
export function createStrategy(name: StrategyName, options: Record<string, unknown> = {}): AggregationStrategy {
  const o = strategyOptions(name, options as never);
  switch (name) {
    case 'fedavg':
      return createFedAvg({ kernel: kernelOf(o.kernel) });
    case 'fedprox': {
      if (o.mu !== undefined && o.proximalMu !== undefined) throw new FedError('config', "fedprox: give either 'mu' or 'proximalMu', not both");
      const inner = createFedAvg({ kernel: kernelOf(o.kernel) });
      const proximalMu = num(o.proximalMu ?? o.mu ?? FEDPROX_DEFAULT_MU);
      const fedprox: FedProxStrategy = { name: 'fedprox', streaming: true, proximalMu, begin: (ctx) => inner.begin(ctx) };
      return fedprox;
    }
    case 'median':
      return createMedian();
    case 'trimmedmean':
      return createTrimmedMean({ beta: num(o.beta) });
    case 'krum':
      return createKrum({ f: num(o.f) });
    case 'multikrum':
      return createMultiKrum(o.m === undefined ? { f: num(o.f) } : { f: num(o.f), m: num(o.m) });
    case 'dpfedavg':
      return createDpFedAvg(o.seed === undefined ? { clip: num(o.clip), noiseMultiplier: num(o.z) } : { clip: num(o.clip), noiseMultiplier: num(o.z), seed: num(o.seed) });
  }
}

export function serverOptimizerOptions<N extends ServerOptimizerName>(name: N, options: ServerOptimizerOptions<N> = {}): Resolved {
  if (!isServerOptimizerName(name)) throw unknownName('server optimizer', name, serverOptimizerNames);
  return resolveOptions(name, serverOptimizerCatalog[name].options, options as Record<string, unknown>);
}

export function createServerOptimizer<N extends ServerOptimizerName>(name: N, options?: ServerOptimizerOptions<N>): ServerOptimizer<ServerOptimizerState>;
export function createServerOptimizer(name: ServerOptimizerName, options: Record<string, unknown> = {}): ServerOptimizer<ServerOptimizerState> {
  const o = serverOptimizerOptions(name, options as never);
  // each optimizer checks that a state it is handed is its own kind, so the wider state type is safe
  const widen = <S extends ServerOptimizerState>(opt: ServerOptimizer<S>): ServerOptimizer<ServerOptimizerState> => opt as unknown as ServerOptimizer<ServerOptimizerState>;
  switch (name) {
    case 'fedavg':
      return widen(createFedAvgServer());
    case 'fedavgm':
      return widen(createFedAvgM({ lr: num(o.lr), momentum: num(o.momentum) }));
    case 'fedadam':
    case 'fedyogi':
      return widen(createFedOpt(name, { lr: num(o.lr), beta1: num(o.beta1), beta2: num(o.beta2), tau: num(o.tau) }));
    case 'fedadagrad':
      return widen(createFedOpt(name, { lr: num(o.lr), beta1: num(o.beta1), tau: num(o.tau) }));
  }
}

/** A parsed `--strategy` value. 'fedavg' parses as the aggregation strategy (its server step is the identity). */
export type StrategySpec =
  | { level: 'aggregation'; name: StrategyName; options: Resolved }
  | { level: 'server'; name: ServerOptimizerName; options: Resolved };

function parseValue(where: string, key: string, raw: string, spec: OptionSpec | undefined): unknown {
  if (spec?.type === 'choice') return raw;
  const trimmed = raw.trim();
  const n = trimmed === '' ? NaN : Number(trimmed);
  if (!Number.isFinite(n)) throw new FedError('config', `${where}: option '${key}' needs a number, got '${raw}'`, { option: key });
  return n;
}

/**
 * Parses `name[:key=value[,key=value...]]`, e.g. `trimmedmean:beta=0.1`, `fedadam:lr=0.01,tau=0.001`,
 * `fedprox:mu=0.01`. Options are validated and defaults filled in.
 */
export function parseStrategySpec(text: string): StrategySpec {
  const colon = text.indexOf(':');
  const name = (colon < 0 ? text : text.slice(0, colon)).trim().toLowerCase();
  const body = colon < 0 ? '' : text.slice(colon + 1).trim();
  const level = isStrategyName(name) ? 'aggregation' : isServerOptimizerName(name) ? 'server' : undefined;
  if (!level) throw unknownName('strategy', name, specNames);
  const specs: Record<string, OptionSpec> = level === 'aggregation' ? strategyCatalog[name as StrategyName].options : serverOptimizerCatalog[name as ServerOptimizerName].options;
  const given: Record<string, unknown> = {};
  if (body !== '') {
    for (const part of body.split(',')) {
      const eq = part.indexOf('=');
      if (eq <= 0) throw new FedError('config', `${name}: expected key=value, got '${part}' in '${text}'`);
      const key = part.slice(0, eq).trim();
      if (key in given) throw new FedError('config', `${name}: option '${key}' given twice`);
      given[key] = parseValue(name, key, part.slice(eq + 1), specs[key]);
    }
  }
  return level === 'aggregation'
    ? { level, name: name as StrategyName, options: strategyOptions(name as StrategyName, given as never) }
    : { level, name: name as ServerOptimizerName, options: serverOptimizerOptions(name as ServerOptimizerName, given as never) };
}

/** The canonical text of a spec (every option spelled out, defaults included), e.g. for logs and the session record. */
export function formatStrategySpec(spec: StrategySpec): string {
  const opts = Object.entries(spec.options)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${v}`);
  return opts.length ? `${spec.name}:${opts.join(',')}` : spec.name;
}

/** Everything the combiner, the reducer and the clients need for one `--strategy` value. */
export interface AggregationPlan {
  /** Canonical spec, e.g. 'fedadam:lr=0.001,beta1=0.9,beta2=0.99,tau=0.0001'. */
  readonly spec: string;
  /** Folds client updates at each combiner (weights = num_examples). */
  readonly combiner: AggregationStrategy;
  /** Folds combiner models at the reducer (weights = each combiner's totalWeight): always weighted FedAvg. */
  readonly reducer: AggregationStrategy;
  /** Turns (previous global, reduced model) into the new global model; state persisted between rounds. */
  readonly server: ServerOptimizer<ServerOptimizerState>;
  /** Sent to clients with their training task (FedProx's proximal term). */
  readonly clientSettings: { proximalMu?: number };
}

/**
 * Builds the plan for a `--strategy` value. A server optimizer name means FedAvg at both levels plus that
 * optimizer; an aggregation strategy name means that strategy at the combiners, FedAvg at the reducer
 * (combiners are the operator's own nodes, so the robust/DP step belongs where client updates arrive),
 * and the identity server step. Both can be combined with '+': `trimmedmean:beta=0.1+fedadam:lr=0.01`,
 * or by passing the server optimizer as the second argument.
 */
export function createPlan(strategy: string | StrategySpec, server?: string | StrategySpec): AggregationPlan {
  if (typeof strategy === 'string' && strategy.includes('+')) {
    const parts = strategy.split('+');
    if (parts.length !== 2 || server !== undefined) throw new FedError('config', `expected 'strategy+serveroptimizer', got '${strategy}'`);
    return createPlan(parts[0]!, parts[1]!);
  }
  const s = typeof strategy === 'string' ? parseStrategySpec(strategy) : strategy;
  const srv = typeof server === 'string' ? parseStrategySpec(server) : server;
  // 'fedavg' parses as the aggregation strategy; as a server step it is the identity
  const srvIsIdentity = srv === undefined || srv.name === 'fedavg';
  if (srv && !srvIsIdentity && srv.level !== 'server') {
    throw new FedError('config', `'${srv.name}' is not a server optimizer; valid: ${serverOptimizerNames.join(', ')}`);
  }
  if (s.level === 'server' && !srvIsIdentity) throw new FedError('config', `two server optimizers given: ${s.name} and ${srv?.name}`);
  type ServerSpec = Extract<StrategySpec, { level: 'server' }>;
  const serverSpec: ServerSpec =
    s.level === 'server' ? s : srv && !srvIsIdentity ? (srv as ServerSpec) : { level: 'server', name: 'fedavg', options: {} };
  const combinerSpec: StrategySpec = s.level === 'aggregation' ? s : { level: 'aggregation', name: 'fedavg', options: strategyOptions('fedavg') };
  const combiner = createStrategy(combinerSpec.name, combinerSpec.options as never);
  const kernel = kernelOf(combinerSpec.options.kernel);
  const reducer = createStrategy('fedavg', kernel ? { kernel } : {});
  const clientSettings = combiner.name === 'fedprox' ? { proximalMu: (combiner as FedProxStrategy).proximalMu } : {};
  const text = serverSpec.name === 'fedavg' || s.level === 'server' ? formatStrategySpec(s) : `${formatStrategySpec(s)}+${formatStrategySpec(serverSpec)}`;
  return { spec: text, combiner, reducer, server: createServerOptimizer(serverSpec.name, serverSpec.options as never), clientSettings };
}

/** One line per name and option, for `fedstate --help`. */
export function describeStrategies(): string {
  const lines: string[] = [];
  const section = (title: string, catalog: Record<string, { doc: string; options: Record<string, OptionSpec> }>): void => {
    lines.push(title);
    for (const [name, entry] of Object.entries(catalog)) {
      lines.push(`  ${name.padEnd(12)} ${entry.doc}`);
      for (const [key, spec] of Object.entries(entry.options)) {
        const def = spec.type === 'number' && spec.required ? 'required' : spec.default === undefined ? 'optional' : `default ${spec.default}`;
        const range = spec.type === 'choice' ? spec.choices.join('|') : formatRange(spec);
        const value = spec.type === 'choice' ? range : `${spec.integer ? 'integer' : 'number'}${range ? ` ${range}` : ''}`;
        lines.push(`      ${key}=<${value}>  ${spec.doc} (${def})`);
      }
    }
  };
  section('aggregation strategies (name[:key=value,...]):', strategyCatalog);
  section('server optimizers (run at the reducer; alone or after "+"):', serverOptimizerCatalog);
  return lines.join('\n');
}
