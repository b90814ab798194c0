// Heap figures after a full collection, so "memory per client" counts what is really retained.
import { canGc } from './proc.ts';

export interface HeapFigures {
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  rss: number;
}

/**
 * Collects garbage (several full passes, with short pauses in between so finalizers, weak references
 * and pending callbacks settle; one pass per setImmediate left figures noisy by several MB) and reads
 * memory.
 */
export async function settledHeap(passes = 4): Promise<HeapFigures> {
  if (!canGc()) throw new Error('run with --expose-gc');
  for (let i = 0; i < passes; i++) {
    globalThis.gc!();
    await new Promise((r) => setTimeout(r, 20));
  }
  const m = process.memoryUsage();
  return { heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, rss: m.rss };
}

/** Bytes retained: JS heap plus off-heap buffers (typed arrays, sockets' buffers). */
export const retained = (h: HeapFigures): number => h.heapUsed + h.external;

export const KB = 1024;
export const MB = 1024 * 1024;
