// CPU profiles of a chosen stretch of a benchmark (say, only its rounds) through the inspector,
// written as .cpuprofile files that Chrome DevTools or `node --cpu-prof` tooling read.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';

export interface Profiling {
  stop(): Promise<string>;
}

export async function startProfile(path: string, intervalUs = 200): Promise<Profiling> {
  const session = new Session();
  session.connect();
  const post = (method: string, params?: object): Promise<unknown> =>
    new Promise((resolve, reject) => session.post(method, params ?? {}, (err, res) => (err ? reject(err) : resolve(res))));
  await post('Profiler.enable');
  await post('Profiler.setSamplingInterval', { interval: intervalUs });
  await post('Profiler.start');
  return {
    stop: async () => {
      const { profile } = (await post('Profiler.stop')) as { profile: unknown };
      writeFileSync(path, JSON.stringify(profile));
      session.disconnect();
      return path;
    },
  };
}

/**
 * Allocation sampling (V8's sampling heap profiler) including objects already collected again, so
 * short-lived garbage shows up where it is allocated. Writes a .heapprofile.
 */
export async function startAllocationProfile(path: string, intervalBytes = 16_384): Promise<Profiling> {
  const session = new Session();
  session.connect();
  const post = (method: string, params?: object): Promise<unknown> =>
    new Promise((resolve, reject) => session.post(method, params ?? {}, (err, res) => (err ? reject(err) : resolve(res))));
  await post('HeapProfiler.enable');
  await post('HeapProfiler.startSampling', { samplingInterval: intervalBytes, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
  return {
    stop: async () => {
      const { profile } = (await post('HeapProfiler.stopSampling')) as { profile: unknown };
      writeFileSync(path, JSON.stringify(profile));
      session.disconnect();
      return path;
    },
  };
}
