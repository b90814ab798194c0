// Server optimizers: run at the reducer on the reduced model, so they see one aggregate per round
// however many combiners there are (FEDn's fedopt aggregator runs in the combiner and documents "only
// supports one combiner"; here the combiners and the reducer only average, and the optimizer runs once).
//
// Pseudo-gradient (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2):
//   delta = aggregate - global            (the direction FedAvg would move)
//   fedavg:     x' = aggregate            (identity)
//   fedavgm:    v' = momentum * v + delta;  x' = x + lr * v'          (Hsu et al. 2019, server momentum)
//   FedOpt:     m' = beta1 * m + (1 - beta1) * delta
//               fedadagrad  v' = v + delta^2
//               fedyogi     v' = v - (1 - beta2) * delta^2 * sign(v - delta^2)
//               fedadam     v' = beta2 * v + (1 - beta2) * delta^2
//               x' = x + lr * m' / (sqrt(v') + tau)
//   with m = 0 and v = tau^2 before the first round, no bias correction (as in the paper and FEDn).
//
// Defaults and where they come from:
//   fedadam/fedyogi/fedadagrad: lr 1e-3, beta1 0.9, beta2 0.99, tau 1e-4 — FEDn's fedopt aggregator
//     defaults (fedn/network/combiner/aggregators/fedopt.py). Reddi et al. tune lr and tau per task
//     (their grids: server lr 10^-3..10^1, tau 10^-5..10^-1); FEDn's small lr moves the model slowly, so
//     expect to raise lr for real runs.
//   fedavgm: lr 1, momentum 0.9 — Hsu et al. 2019 (server lr 1, beta swept; 0.9 is their common choice).
//
// Limits in which they reduce to FedAvg (tested in test/strategies-server.test.ts):
//   fedavgm with momentum 0 and lr 1: x' = x + delta = aggregate, exactly.
//   FedOpt with beta1 = 0, lr = 2 * tau and tau >> |delta|: v stays ~tau^2, so
//     x' = x + 2 tau delta / (tau + tau) (1 + O(delta^2 / tau^2)) -> aggregate.
//
// State is plain data (numbers and Float32Arrays) so it can be stored with the model trail and resumed
// after a reducer restart; structuredClone / v8.serialize round-trip it.
import { FedError } from '../errors.ts';
import type { ServerOptimizer } from './types.ts';
import { checkFinite } from './validate.ts';

export interface FedAvgServerState {
  kind: 'fedavg';
  round: number;
}
export interface FedAvgMState {
  kind: 'fedavgm';
  round: number;
  velocity: Float32Array;
}
export interface FedOptState {
  kind: 'fedadam' | 'fedyogi' | 'fedadagrad';
  round: number;
  m: Float32Array;
  v: Float32Array;
}
export type ServerOptimizerState = FedAvgServerState | FedAvgMState | FedOptState;

export interface FedAvgMOptions {
  lr: number;
  momentum: number;
}
export interface FedOptOptions {
  lr: number;
  beta1: number;
  /** Unused by fedadagrad. */
  beta2: number;
  tau: number;
}

export const fedAvgMDefaults: Readonly<FedAvgMOptions> = { lr: 1, momentum: 0.9 };
export const fedOptDefaults: Readonly<FedOptOptions> = { lr: 1e-3, beta1: 0.9, beta2: 0.99, tau: 1e-4 };

function checkShapes(name: string, global: Float32Array, aggregate: Float32Array): void {
  if (!(global instanceof Float32Array) || !(aggregate instanceof Float32Array) || global.length !== aggregate.length) {
    throw new FedError('wrong-shape', `${name}: global has ${global?.length} parameters, aggregate ${aggregate?.length}`);
  }
}

function checkInputs(name: string, global: Float32Array, aggregate: Float32Array): void {
  checkShapes(name, global, aggregate);
  checkFinite(global, 'global model');
  checkFinite(aggregate, 'aggregate');
}

function checkState(name: string, state: { kind: string; round: number }, arrays: Float32Array[], size: number): void {
  if (state.kind !== name) throw new FedError('config', `${name}: got state of ${state.kind}`);
  if (!Number.isSafeInteger(state.round) || state.round < 0) throw new FedError('config', `${name}: bad round in state: ${state.round}`);
  for (const a of arrays) {
    if (!(a instanceof Float32Array) || a.length !== size) throw new FedError('wrong-shape', `${name}: state does not match the model (${size} parameters)`);
  }
}

function checkResult(name: string, params: Float32Array): void {
  try {
    checkFinite(params, `${name} result`);
  } catch (e) {
    throw new FedError('not-finite', `${name}: the step diverged (${(e as Error).message}); lower lr`);
  }
}

export function createFedAvgServer(): ServerOptimizer<FedAvgServerState> {
  return {
    name: 'fedavg',
    step(global, aggregate, state) {
      // the global model's values play no part in the identity step: only its shape is checked
      checkShapes('fedavg', global, aggregate);
      checkFinite(aggregate, 'aggregate');
      if (state) checkState('fedavg', state, [], global.length);
      return { params: aggregate, state: { kind: 'fedavg', round: (state?.round ?? 0) + 1 } };
    },
  };
}

export function createFedAvgM(options: Partial<FedAvgMOptions> = {}): ServerOptimizer<FedAvgMState> & { options: FedAvgMOptions } {
  const o = { ...fedAvgMDefaults, ...options };
  if (!(o.lr > 0 && o.lr < Infinity)) throw new FedError('config', `fedavgm: lr must be finite and > 0, got ${o.lr}`);
  if (!(o.momentum >= 0 && o.momentum < 1)) throw new FedError('config', `fedavgm: momentum must be in [0, 1), got ${o.momentum}`);
  return {
    name: 'fedavgm',
    options: o,
    step(global, aggregate, state) {
      checkInputs('fedavgm', global, aggregate);
      const size = global.length;
      if (state) checkState('fedavgm', state, [state.velocity], size);
      const prev = state?.velocity;
      const velocity = new Float32Array(size);
      const params = new Float32Array(size);
      for (let i = 0; i < size; i++) {
        const v = o.momentum * (prev ? prev[i]! : 0) + (aggregate[i]! - global[i]!);
        velocity[i] = v;
        params[i] = global[i]! + o.lr * v;
      }
      checkResult('fedavgm', params);
      return { params, state: { kind: 'fedavgm', round: (state?.round ?? 0) + 1, velocity } };
    },
  };
}

export type FedOptName = FedOptState['kind'];

export function checkFedOptOptions(name: string, o: FedOptOptions): void {
  if (!(o.lr > 0 && o.lr < Infinity)) throw new FedError('config', `${name}: lr must be finite and > 0, got ${o.lr}`);
  if (!(o.beta1 >= 0 && o.beta1 < 1)) throw new FedError('config', `${name}: beta1 must be in [0, 1), got ${o.beta1}`);
  if (!(o.beta2 >= 0 && o.beta2 < 1)) throw new FedError('config', `${name}: beta2 must be in [0, 1), got ${o.beta2}`);
  if (!(o.tau > 0 && o.tau < Infinity)) throw new FedError('config', `${name}: tau must be finite and > 0, got ${o.tau}`);
}

export function createFedOpt(name: FedOptName, options: Partial<FedOptOptions> = {}): ServerOptimizer<FedOptState> & { options: FedOptOptions } {
  const o = { ...fedOptDefaults, ...options };
  checkFedOptOptions(name, o);
  const { lr, beta1, beta2, tau } = o;
  const tau2 = tau * tau;
  return {
    name,
    options: o,
    step(global, aggregate, state) {
      checkInputs(name, global, aggregate);
      const size = global.length;
      if (state) checkState(name, state, [state.m, state.v], size);
      const m = state ? state.m.slice() : new Float32Array(size);
      const v = state ? state.v.slice() : new Float32Array(size).fill(tau2);
      const params = new Float32Array(size);
      for (let i = 0; i < size; i++) {
        const g = aggregate[i]! - global[i]!;
        const g2 = g * g;
        const mi = beta1 * m[i]! + (1 - beta1) * g;
        let vi = v[i]!;
        if (name === 'fedadam') vi = beta2 * vi + (1 - beta2) * g2;
        else if (name === 'fedyogi') vi = vi - (1 - beta2) * g2 * Math.sign(vi - g2);
        else vi = vi + g2;
        m[i] = mi;
        v[i] = vi;
        params[i] = global[i]! + (lr * mi) / (Math.sqrt(vi) + tau);
      }
      checkResult(name, params);
      return { params, state: { kind: name, round: (state?.round ?? 0) + 1, m, v } };
    },
  };
}
