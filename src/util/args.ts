// Strict command-line flags: every flag must be declared, values are typed and validated, and a typo
// is an error naming the valid flags rather than something silently ignored.
import { FedError } from '../errors.ts';

export type FlagSpec =
  | { type: 'number'; default?: number; min?: number; max?: number; integer?: boolean; help: string }
  | { type: 'string'; default?: string; choices?: readonly string[]; help: string }
  | { type: 'boolean'; default?: boolean; help: string };

type Camel<S extends string> = S extends `${infer Head}-${infer Tail}` ? `${Head}${Capitalize<Camel<Tail>>}` : S;

type FlagValue<F extends FlagSpec> = F extends { type: 'number' } ? number : F extends { type: 'boolean' } ? boolean : string;

/** A flag declared without a default is undefined when not given. */
export type FlagValues<S extends Record<string, FlagSpec>> = {
  [K in keyof S as Camel<K & string>]: S[K] extends { default: number | string | boolean } ? FlagValue<S[K]> : FlagValue<S[K]> | undefined;
} & { _: string[] };

const camel = (flag: string): string => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

export function parseFlags<S extends Record<string, FlagSpec>>(argv: string[], spec: S): FlagValues<S> {
  const out: Record<string, unknown> = { _: [] };
  for (const [name, s] of Object.entries(spec)) if (s.default !== undefined) out[camel(name)] = s.default;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) {
      (out._ as string[]).push(arg);
      continue;
    }
    const [rawName, inline] = arg.slice(2).split('=', 2) as [string, string | undefined];
    const s = spec[rawName];
    if (!s) throw new FedError('config', `unknown flag --${rawName}; valid flags: ${Object.keys(spec).map((k) => `--${k}`).join(', ')}`);
    const key = camel(rawName);
    if (s.type === 'boolean') {
      if (inline !== undefined && inline !== 'true' && inline !== 'false') throw new FedError('config', `--${rawName} takes no value or true/false`);
      out[key] = inline !== 'false';
      continue;
    }
    const value = inline ?? argv[++i];
    if (value === undefined || (inline === undefined && value.startsWith('--'))) throw new FedError('config', `--${rawName} needs a value`);
    out[key] = checkValue(rawName, s, value);
  }
  return out as FlagValues<S>;
}

export function checkValue(name: string, s: FlagSpec, value: string): number | string | boolean {
  if (s.type === 'number') {
    const n = Number(value);
    if (!Number.isFinite(n) || value.trim() === '') throw new FedError('config', `--${name} must be a number, got "${value}"`);
    if (s.integer && !Number.isInteger(n)) throw new FedError('config', `--${name} must be an integer, got ${value}`);
    if (s.min !== undefined && n < s.min) throw new FedError('config', `--${name} must be >= ${s.min}, got ${value}`);
    if (s.max !== undefined && n > s.max) throw new FedError('config', `--${name} must be <= ${s.max}, got ${value}`);
    return n;
  }
  if (s.type === 'string' && s.choices && !s.choices.includes(value)) {
    throw new FedError('config', `--${name} must be one of ${s.choices.join(', ')}, got "${value}"`);
  }
  if (s.type === 'boolean') return value === 'true';
  return value;
}

export function flagHelp(spec: Record<string, FlagSpec>): string {
  return Object.entries(spec)
    .map(([name, s]) => `  --${name}${s.type === 'boolean' ? '' : ` <${s.type}>`}`.padEnd(30) + s.help + (s.default !== undefined ? ` (default ${String(s.default)})` : ''))
    .join('\n');
}

/**
 * parseFlags for a script run by hand (a benchmark, a tool): `--help` prints the usage line and every
 * flag and exits 0; a bad flag prints what is wrong and the flags and exits 2, not a stack trace.
 */
export function scriptFlags<S extends Record<string, FlagSpec>>(usage: string, spec: S, argv: string[] = process.argv.slice(2)): FlagValues<S> {
  const help = `usage: ${usage}\n\n${flagHelp(spec)}`;
  if (argv.includes('--help')) {
    console.log(help);
    process.exit(0);
  }
  try {
    return parseFlags(argv, spec);
  } catch (e) {
    if (!(e instanceof FedError) || e.code !== 'config') throw e;
    console.error(`${e.message}\n\n${help}`);
    process.exit(2);
  }
}
