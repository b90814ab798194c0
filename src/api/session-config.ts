// Validates a session configuration from an operator (REST body, CLI flags, config file): every key
// must be known and every value of the right type and range; a typo is an error, never ignored.
import { defaultSessionConfig, type SessionConfig } from '../../machines/reducer.ts';
import { FedError } from '../errors.ts';
import { createPlan } from '../strategies/registry.ts';

// Settings that travel in a RoundConfig must fit its protobuf field (uint32 / int32).
const UINT32 = 0xffff_ffff;

type Rule = { kind: 'int' | 'number' | 'bool' | 'string'; min?: number; max?: number };

const rules: Record<keyof SessionConfig, Rule> = {
  sessionId: { kind: 'string' },
  rounds: { kind: 'int', min: 1, max: 1_000_000 },
  roundTimeoutMs: { kind: 'int', min: 10, max: 7 * 24 * 3_600_000 },
  minCombiners: { kind: 'int', min: 1 },
  minClients: { kind: 'int', min: 1 },
  minUpdates: { kind: 'int', min: 1, max: UINT32 },
  bufferSize: { kind: 'int', min: -1, max: 2 ** 31 - 1 },
  maxClients: { kind: 'int', min: 0, max: UINT32 },
  fraction: { kind: 'number', min: 0, max: 1 },
  localEpochs: { kind: 'int', min: 1, max: 10_000 },
  batchSize: { kind: 'int', min: 1, max: UINT32 },
  learningRate: { kind: 'number', min: 0 },
  proximalMu: { kind: 'number', min: 0 },
  seed: { kind: 'int', min: 0, max: 2 ** 32 - 1 },
  strategy: { kind: 'string' },
  validate: { kind: 'bool' },
  quorumTimeoutMs: { kind: 'int', min: 0 },
  maxConsecutiveFailures: { kind: 'int', min: 1 },
};

export const sessionConfigKeys = Object.keys(rules) as Array<keyof SessionConfig>;

export function checkSessionField(key: string, value: unknown): SessionConfig[keyof SessionConfig] {
  const rule = rules[key as keyof SessionConfig];
  if (!rule) throw new FedError('config', `unknown session setting "${key}"; known: ${sessionConfigKeys.join(', ')}`);
  if (rule.kind === 'bool') {
    if (typeof value !== 'boolean') throw new FedError('config', `${key} must be true or false`);
    return value;
  }
  if (rule.kind === 'string') {
    if (typeof value !== 'string' || value.length > 200) throw new FedError('config', `${key} must be a string (at most 200 characters)`);
    if (key === 'sessionId' && value !== '' && !/^[A-Za-z0-9._-]+$/.test(value)) throw new FedError('config', 'sessionId may hold letters, digits, ".", "_" and "-" only');
    if (key === 'strategy') createPlan(value); // throws FedError('config') naming the valid strategies
    return value;
  }
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new FedError('config', `${key} must be a finite number`);
  if (rule.kind === 'int' && !Number.isInteger(value)) throw new FedError('config', `${key} must be an integer`);
  if (rule.min !== undefined && value < rule.min) throw new FedError('config', `${key} must be >= ${rule.min}`);
  if (rule.max !== undefined && value > rule.max) throw new FedError('config', `${key} must be <= ${rule.max}`);
  return value;
}

/** A partial session configuration, checked key by key. */
export function parseSessionConfig(input: unknown): Partial<SessionConfig> {
  if (!input || typeof input !== 'object' || Array.isArray(input)) throw new FedError('config', 'session configuration must be a JSON object');
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(input)) out[k] = checkSessionField(k, v);
  return out as Partial<SessionConfig>;
}

export const fullSessionConfig = (partial: Partial<SessionConfig>, sessionId: string): SessionConfig => ({ ...defaultSessionConfig(sessionId), ...partial, sessionId });
