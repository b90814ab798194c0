// Seeded randomness for everything that must be reproducible: data splits, partitions, shuffles.
// Math.random cannot be seeded, and a run that cannot be repeated cannot be debugged or compared.
//
// Generator: xoshiro128** (32-bit state words, fast with Math.imul, passes BigCrush), its state
// filled from the seed by splitmix32 so that small or similar seeds (0, 1, 2) still give unrelated
// streams and the all-zero state, from which xoshiro never leaves, cannot occur.

function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/**
 * Folds a seed and any number of extra parts (client index, round, purpose) into one 32-bit seed,
 * so callers can give every consumer its own stream without the streams overlapping by accident.
 */
export function deriveSeed(seed: number, ...parts: Array<number | string>): number {
  let h = splitmix32(Math.trunc(seed) ^ Math.trunc(seed / 2 ** 32))();
  for (const part of parts) {
    const text = String(part);
    for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
    h = splitmix32(h ^ 0x5bd1e995)();
  }
  return h;
}

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  // Box-Muller yields normals in pairs; the second is kept for the next call.
  private spareNormal: number | undefined;

  constructor(seed: number) {
    const init = splitmix32(deriveSeed(seed));
    this.a = init();
    this.b = init();
    this.c = init();
    this.d = init();
  }

  /** Next raw 32-bit unsigned integer. */
  uint32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** Uniform in [0, 1) with 32 bits of resolution. */
  next(): number {
    return this.uint32() / 2 ** 32;
  }

  /** Uniform integer in [0, n), without modulo bias (rejection sampling). */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0 || n > 2 ** 32) throw new RangeError(`int(n) needs an integer 1..2^32, got ${n}`);
    const limit = 2 ** 32 - (2 ** 32 % n);
    let x = this.uint32();
    while (x >= limit) x = this.uint32();
    return x % n;
  }

  /** Fisher-Yates in place; returns the same array for chaining. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = items[i]!;
      items[i] = items[j]!;
      items[j] = tmp;
    }
    return items;
  }

  /** A random permutation of 0..n-1. */
  permutation(n: number): number[] {
    return this.shuffle(Array.from({ length: n }, (_, i) => i));
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    if (this.spareNormal !== undefined) {
      const z = this.spareNormal;
      this.spareNormal = undefined;
      return z;
    }
    // 1 - next() lies in (0, 1], so the logarithm is finite.
    const r = Math.sqrt(-2 * Math.log(1 - this.next()));
    const theta = 2 * Math.PI * this.next();
    this.spareNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /**
   * Natural logarithm of a Gamma(shape, 1) sample. Working in log space matters for Dirichlet with
   * small concentrations: Gamma(0.05) samples underflow to exactly 0 in doubles, log-samples do not.
   */
  logGamma(shape: number): number {
    if (!(shape > 0) || !Number.isFinite(shape)) throw new RangeError(`gamma shape must be positive, got ${shape}`);
    if (shape < 1) {
      // Gamma(a) = Gamma(a + 1) * U^(1/a)  (Marsaglia & Tsang's boost for a < 1)
      return this.logGamma(shape + 1) + Math.log(1 - this.next()) / shape;
    }
    // Marsaglia & Tsang (2000), "A simple method for generating gamma variables".
    const d = shape - 1 / 3;
    const c = 1 / Math.sqrt(9 * d);
    for (;;) {
      let x: number;
      let v: number;
      do {
        x = this.normal();
        v = 1 + c * x;
      } while (v <= 0);
      v = v * v * v;
      const u = 1 - this.next();
      if (Math.log(u) < 0.5 * x * x + d - d * v + d * Math.log(v)) return Math.log(d * v);
    }
  }

  /** Gamma(shape, 1) sample. */
  gamma(shape: number): number {
    return Math.exp(this.logGamma(shape));
  }

  /** A probability vector from the symmetric Dirichlet(alpha, ..., alpha) over k categories. */
  dirichlet(alpha: number, k: number): number[] {
    const logs = Array.from({ length: k }, () => this.logGamma(alpha));
    // Normalising with log-sum-exp keeps the largest component exact even when the rest underflow.
    const max = Math.max(...logs);
    const weights = logs.map((l) => Math.exp(l - max));
    const sum = weights.reduce((s, w) => s + w, 0);
    return weights.map((w) => w / sum);
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
