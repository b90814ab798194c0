// Byzantine clients for robustness experiments: wrap honest task code so that its update is scaled
// (a boosted or sign-flipped model-replacement attack) or replaced by noise. Deterministic per seed.
import { FedError } from '../errors.ts';
import { Rng, deriveSeed } from '../data/random.ts';
import type { TaskCode } from './client.ts';

export type AttackMode = 'scale' | 'random';

export interface AttackOptions {
  mode: AttackMode;
  /** scale: the update becomes base + factor * (honest - base); e.g. -10 flips and boosts it. */
  factor?: number;
  /** random: standard deviation of the Gaussian noise that replaces the update. */
  sigma?: number;
  seed?: number;
}

export function parseAttack(spec: string): AttackOptions {
  const [mode, value] = spec.split(':');
  if (mode === 'scale') return { mode, factor: value === undefined ? -10 : Number(value) };
  if (mode === 'random') return { mode, sigma: value === undefined ? 1 : Number(value) };
  throw new FedError('config', `unknown attack "${spec}" (use scale[:FACTOR] or random[:SIGMA])`);
}

export function adversarialTask(honest: TaskCode, attack: AttackOptions): TaskCode {
  const factor = attack.factor ?? -10;
  const sigma = attack.sigma ?? 1;
  if (!Number.isFinite(factor) || !Number.isFinite(sigma) || sigma < 0) throw new FedError('config', 'attack factor and sigma must be finite (sigma >= 0)');
  return {
    numExamples: honest.numExamples,
    validate: (model, opts) => honest.validate(model, opts),
    async train(model, opts) {
      const out = await honest.train(model, opts);
      const base = model.data;
      const data = new Float32Array(out.params.data.length);
      if (attack.mode === 'scale') {
        for (let i = 0; i < data.length; i++) data[i] = base[i]! + factor * (out.params.data[i]! - base[i]!);
      } else {
        const rng = new Rng(deriveSeed(attack.seed ?? 0, opts.round));
        for (let i = 0; i < data.length; i++) data[i] = rng.normal() * sigma;
      }
      return { ...out, params: { layout: out.params.layout, data } };
    },
  };
}
