// DP-FedAvg with fixed clipping and Gaussian noise, after McMahan et al. 2018 ("Learning Differentially
// Private Recurrent Language Models", DP-FedAvg with per-user weight 1 and the known-count estimator):
//
//   delta_k   = update_k - base                            (base = the round's global model, ctx.base)
//   clipped_k = delta_k * min(1, C / ||delta_k||_2)        (every clipped update has norm <= C)
//   result    = base + (1/n) sum_k clipped_k + N(0, sigma^2 I)
//   sigma     = z * C / n                                  (z = noise multiplier, n = updates folded)
//
// The sensitivity of the mean of n updates each of norm <= C to one client is C/n, so sigma = z * C / n
// is the Gaussian mechanism with noise multiplier z on that mean; the privacy accounting (epsilon,
// delta over rounds, with the client sampling rate) is left to the caller, who can read `noiseStd`.
// Each update counts once whatever its num_examples: weighting by a client's claimed example count
// would break the C/n bound. For the same reason totalWeight is the number of updates, so a reducer that
// weights combiner models by totalWeight computes the flat mean over all clients' clipped deltas.
//
// Streaming: O(parameters) memory (the FedAvg Float64 sum plus one scratch update).
// Noise comes from crypto.getRandomValues unless a seed is given; a seed is for tests and reproducible
// experiments only, never for a deployment that claims privacy. (Floating-point Gaussian sampling has
// known theoretical leaks, Mironov 2012; this is the textbook mechanism, not a hardened one.)
import { FedError } from '../errors.ts';
import { FedAvgAccumulator } from './fedavg.ts';
import type { KernelKind } from './kernels/weighted-sum.ts';
import type { Accumulator, AggregationContext, AggregationStrategy } from './types.ts';
import { checkFinite, checkShape, checkWeight, nothingAdded } from './validate.ts';

export interface DpFedAvgOptions {
  /** L2 clipping bound C for each update's delta, > 0. */
  clip: number;
  /** Noise multiplier z >= 0 (0 = clipping only, no privacy). */
  noiseMultiplier: number;
  /** Seed for reproducible noise (tests only). */
  seed?: number;
  kernel?: KernelKind;
}

export function checkDpOptions(o: DpFedAvgOptions): void {
  if (!(o.clip > 0 && o.clip < Infinity)) throw new FedError('config', `dpfedavg: clip must be finite and > 0, got ${o.clip}`);
  if (!(o.noiseMultiplier >= 0 && o.noiseMultiplier < Infinity)) {
    throw new FedError('config', `dpfedavg: noiseMultiplier must be finite and >= 0, got ${o.noiseMultiplier}`);
  }
  if (o.seed !== undefined && !Number.isSafeInteger(o.seed)) throw new FedError('config', `dpfedavg: seed must be an integer, got ${o.seed}`);
}

/** L2 norm in Float64. */
export function l2Norm(x: Float32Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]! * x[i]!;
  return Math.sqrt(s);
}

/**
 * Scales x in place to norm <= clip; returns the factor applied (1 when already inside). The factor is
 * shrunk by a few ulps because Float32 rounding of the scaled values could otherwise land a hair above C.
 */
export function clipToNorm(x: Float32Array, clip: number): number {
  const norm = l2Norm(x);
  if (norm <= clip) return 1;
  const factor = (clip / norm) * (1 - 4 * 2 ** -24);
  for (let i = 0; i < x.length; i++) x[i] = x[i]! * factor;
  return factor;
}

/** 32 random bits at a time: mulberry32 when seeded, else the platform CSPRNG in batches. */
function bitSource(seed: number | undefined): () => number {
  if (seed !== undefined) {
    let s = seed >>> 0;
    return () => {
      s = (s + 0x6d2b79f5) >>> 0;
      let t = s;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return (t ^ (t >>> 14)) >>> 0;
    };
  }
  const buf = new Uint32Array(4096);
  let at = buf.length;
  return () => {
    if (at === buf.length) {
      globalThis.crypto.getRandomValues(buf);
      at = 0;
    }
    return buf[at++]!;
  };
}

/** Standard normal samples (Box-Muller on 53-bit uniforms in (0, 1)). */
export function gaussianSource(seed?: number): () => number {
  const bits = bitSource(seed);
  const uniform = (): number => ((bits() >>> 5) * 67108864 + (bits() >>> 6) + 0.5) / 9007199254740992;
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const s = spare;
      spare = undefined;
      return s;
    }
    const r = Math.sqrt(-2 * Math.log(uniform()));
    const t = 2 * Math.PI * uniform();
    spare = r * Math.sin(t);
    return r * Math.cos(t);
  };
}

export class DpFedAvgAccumulator implements Accumulator {
  private readonly sum: FedAvgAccumulator;
  private readonly scratch: Float32Array;
  private readonly base: Float32Array;
  private readonly gaussian: () => number;
  private clippedN = 0;
  private finishedStd: number | undefined;

  constructor(
    ctx: AggregationContext,
    readonly options: DpFedAvgOptions,
  ) {
    checkDpOptions(options);
    if (!ctx.base) throw new FedError('config', 'dpfedavg needs ctx.base (the global model the round started from)');
    checkShape(ctx.base, ctx.size);
    checkFinite(ctx.base, 'base model');
    this.base = ctx.base.slice();
    this.sum = new FedAvgAccumulator(ctx.size, options.kernel, 'dpfedavg');
    this.scratch = new Float32Array(ctx.size);
    this.gaussian = gaussianSource(options.seed);
  }

  get count(): number {
    return this.sum.count;
  }

  /** The number of updates: each counts once (see the header). */
  get totalWeight(): number {
    return this.sum.count;
  }

  /** How many updates had to be scaled down to the clipping bound. */
  get clippedCount(): number {
    return this.clippedN;
  }

  /** sigma = z * C / n for the updates folded so far (0 before any). */
  get noiseStd(): number {
    const n = this.sum.count;
    return n === 0 ? 0 : (this.options.noiseMultiplier * this.options.clip) / n;
  }

  /** The sigma actually used by the last finish(), for reporting. */
  get lastNoiseStd(): number | undefined {
    return this.finishedStd;
  }

  add(update: Float32Array, weight: number): void {
    checkWeight(weight);
    checkShape(update, this.base.length);
    checkFinite(update);
    const { scratch, base } = this;
    for (let i = 0; i < scratch.length; i++) scratch[i] = update[i]! - base[i]!;
    // finite Float32 minus finite Float32 can still overflow to Infinity
    checkFinite(scratch, 'update - base');
    const factor = clipToNorm(scratch, this.options.clip);
    this.sum.add(scratch, 1);
    if (factor < 1) this.clippedN++;
  }

  finish(): Float32Array {
    if (this.sum.count === 0) throw nothingAdded('dpfedavg');
    const mean = this.sum.finish();
    const std = this.noiseStd;
    const { base, gaussian } = this;
    const out = new Float32Array(base.length);
    for (let i = 0; i < out.length; i++) out[i] = base[i]! + mean[i]! + (std > 0 ? std * gaussian() : 0);
    this.finishedStd = std;
    return out;
  }
}

export interface DpFedAvgStrategy extends AggregationStrategy {
  readonly options: Readonly<DpFedAvgOptions>;
  /** sigma used for a round of n updates: z * C / n. */
  noiseStdFor(n: number): number;
  begin(ctx: AggregationContext): DpFedAvgAccumulator;
}

export function createDpFedAvg(options: DpFedAvgOptions): DpFedAvgStrategy {
  checkDpOptions(options);
  const o = { ...options };
  let rounds = 0;
  return {
    name: 'dpfedavg',
    streaming: true,
    options: o,
    noiseStdFor: (n: number) => (n > 0 ? (o.noiseMultiplier * o.clip) / n : 0),
    // a fixed seed would repeat the same noise every round; derive one per begin()
    begin: (ctx) => new DpFedAvgAccumulator(ctx, o.seed === undefined ? o : { ...o, seed: (o.seed + Math.imul(0x9e3779b9, rounds++)) | 0 }),
  };
}
