// Model transfer throughput over fedstate's grpc and ws transports, as a ratio to the raw library
// measured in the same run.
//
//   npx tsx bench/transport.ts [--mb 128] [--rounds 5] [--window N] [--only grpc|ws|'ws link'...] [--cpu-prof] [--json]
//
// The measure ("link" rows, grpcRatio/wsRatio): a blob of --mb MiB pulled through a Link (link.ts:
// BlobRequest, 1 MiB BlobChunk frames under credit-based flow control, reassembly, and the sha256
// check before fetchBlob resolves) from a holder in a second process, as a model download from a
// combiner is. The reference ("raw" rows): the same second process pushing the same bytes in 1 MiB
// messages with the bare library, a @grpc/grpc-js bidi stream (identity serializers, write()/'drain'
// pacing, the same channel options) and a ws socket (send callbacks and a bufferedAmount high-water
// mark, the same socket options); they neither frame nor hash anything.
// Three more rows per library say where the difference goes: "channel" sends the same chunk frames
// over the bare FrameChannel (no Link, no hash: what the transport itself costs); "raw+sha256" is the
// bare stream hashing each message on the receiving thread; "raw verified" is the bare stream doing the
// least any transfer verified on arrival must do, the way the Link does it: copy each message into one
// reused buffer and hash it (on the hash worker, as the Link does for a large blob). Its ratio is the
// ceiling for "link reused" on this machine: framing and protocol can only add to it. The fresh-buffer
// "link" row also pays for mapping 128 MiB of new pages per pull.
// "link reused" is the Link fetch into one buffer reused across pulls (fetchBlob's `into`, as a consumer
// that recycles its receive memory would), which skips mapping in 128 MiB of fresh pages per pull.
// "cores busy" is the CPU time of both processes (all threads) over the wall time of a pull.
// Each round runs every path once, interleaved; the table shows the median and best round, and a
// ratio is the median over rounds of the two paths' rates within the round (steadier than a ratio
// of medians when the machine is shared).
import * as grpc from '@grpc/grpc-js';
import { fork } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import WebSocket, { WebSocketServer } from 'ws';
import { scriptFlags } from '../src/util/args.ts';
import { emitJson } from './lib/json.ts';
import { chunked, sendPaced } from './lib/raw.ts';
import { markdownTable } from './lib/table.ts';
import { GrpcTransport, grpcChannelOptions } from '../src/transport/grpc.ts';
import { Link } from '../src/transport/link.ts';
import { OFF_THREAD_MIN_BYTES, hashWorker } from '../src/transport/off-thread-hash.ts';
import { copyInto } from '../src/util/shared-copy.ts';
import { CHUNK_BYTES, type FrameChannel, type Transport } from '../src/transport/types.ts';
import { WsTransport, maskingEngine, wsSocketOptions } from '../src/transport/ws.ts';

const MiB = 1024 * 1024;
const RAW_METHOD = '/bench.Raw/Pull';
const WS_HIGH_WATER = 2 * MiB; // the ws transport's default high-water mark
const identity = (b: Buffer): Buffer => b;

const rawService: grpc.ServiceDefinition = {
  pull: {
    path: RAW_METHOD,
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

interface Endpoints {
  rawGrpc: string;
  rawWs: string;
  grpc: string;
  ws: string;
  grpcChannel: string;
  wsChannel: string;
}

interface Hello {
  hash: string;
  bytes: number;
  endpoints: Endpoints;
}

// ------------------------------------------------------------------------------------------------
// Holder process: serves the same blob over the four paths.
// ------------------------------------------------------------------------------------------------

async function serveRawGrpc(chunks: Buffer[]): Promise<string> {
  const server = new grpc.Server(grpcChannelOptions());
  server.addService(rawService, {
    pull: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on('error', () => undefined);
      call.on('data', async () => {
        for (const c of chunks) if (!call.write(c)) await new Promise((r) => call.once('drain', r));
      });
      call.on('end', () => call.end());
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  return `127.0.0.1:${port}`;
}

async function serveRawWs(chunks: Buffer[]): Promise<string> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, ...wsSocketOptions() });
  await new Promise((r) => wss.once('listening', r));
  wss.on('connection', (ws) => {
    ws.on('message', () => sendPaced(ws, chunks, WS_HIGH_WATER));
  });
  const a = wss.address();
  return `ws://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}/`;
}

async function serveLinks(transport: Transport, blob: Uint8Array, hash: string): Promise<string> {
  const l = await transport.listen(`${transport.kind}://127.0.0.1:0`, (ch) => {
    void new Link(ch, {
      node: 'holder',
      actors: () => ['combiner/holder'],
      blobs: { get: (h) => (h === hash ? blob : undefined) },
      onEnvelope: () => undefined,
    })
      .start()
      .catch(() => undefined);
  });
  return l.endpoint;
}

/** Pushes the blob as chunk frames straight over a FrameChannel on any request: no Link, no hash. */
async function serveChannel(transport: Transport, blob: Uint8Array): Promise<string> {
  const l = await transport.listen(`${transport.kind}://127.0.0.1:0`, (ch) => {
    ch.onClose = () => undefined;
    ch.onFrame = async () => {
      for (let o = 0; o < blob.byteLength; o += CHUNK_BYTES) {
        const end = Math.min(blob.byteLength, o + CHUNK_BYTES);
        const data = blob.subarray(o, end);
        await ch.send({ kind: 'blobChunk', blobChunk: { streamId: 1, offset: o, total: blob.byteLength, data, last: end === blob.byteLength, error: '' } });
      }
    };
  });
  return l.endpoint;
}

async function runHolder(mb: number): Promise<void> {
  const blob = Buffer.allocUnsafe(mb * MiB);
  for (let o = 0; o < blob.byteLength; o += 64 * MiB) randomFillSync(blob, o, Math.min(64 * MiB, blob.byteLength - o));
  const hash = createHash('sha256').update(blob).digest('hex');
  const chunks = chunked(blob);
  const endpoints: Endpoints = {
    rawGrpc: await serveRawGrpc(chunks),
    rawWs: await serveRawWs(chunks),
    grpc: await serveLinks(new GrpcTransport(), blob, hash),
    ws: await serveLinks(new WsTransport(), blob, hash),
    grpcChannel: await serveChannel(new GrpcTransport(), blob),
    wsChannel: await serveChannel(new WsTransport(), blob),
  };
  process.send?.({ hash, bytes: blob.byteLength, endpoints } satisfies Hello);
  // CPU time the holder spent so far (all its threads), asked for between timed pulls
  process.on('message', (m) => {
    if (m === 'cpu') {
      const u = process.cpuUsage();
      process.send?.({ cpuMs: (u.user + u.system) / 1000 });
    }
  });
  process.on('disconnect', () => process.exit(0));
}

// ------------------------------------------------------------------------------------------------
// Fetching process: times each path.
// ------------------------------------------------------------------------------------------------

type Pull = () => Promise<void>;

/**
 * What a bare-library pull does with each message besides counting it:
 *   none     drops it (the reference);
 *   inline   hashes it on the receiving thread (what verifying there alone costs);
 *   worker   copies it into one reused shared buffer and hashes it as the Link does (on the link's hash
 *            worker for a blob of OFF_THREAD_MIN_BYTES or more when there is one, on the receiving thread
 *            otherwise), with no framing, flow control or protocol: the least a transfer verified on
 *            arrival into reused memory costs over that library on this machine, the ceiling for
 *            "link reused" (a fresh buffer per pull also pays for mapping its pages).
 */
type Verify = 'none' | 'inline' | 'worker';

interface Checker {
  update: (b: Buffer) => void;
  /** After the last byte: resolves when the digest matched, rejects otherwise. */
  check: () => Promise<void>;
}

function checker(mode: Verify, hash: string, bytes: number): Checker {
  if (mode === 'none') return { update: () => undefined, check: async () => undefined };
  const expect = (d: string): void => {
    if (d !== hash) throw new Error(`raw pull: hash mismatch (${d.slice(0, 12)})`);
  };
  const worker = mode === 'worker' && bytes >= OFF_THREAD_MIN_BYTES ? hashWorker() : null;
  if (!worker) {
    const into = mode === 'worker' ? new Uint8Array(bytes) : undefined;
    let h = createHash('sha256');
    let at = 0;
    return {
      update: (b) => {
        if (into) copyInto(into, b, at);
        at += b.byteLength;
        h.update(b);
      },
      check: async () => {
        const d = h.digest('hex');
        h = createHash('sha256');
        at = 0;
        expect(d);
      },
    };
  }
  const into = new Uint8Array(new SharedArrayBuffer(bytes));
  let job: number | undefined;
  let at = 0;
  return {
    update: (b) => {
      job ??= worker.begin(into.buffer as SharedArrayBuffer);
      copyInto(into, b, at);
      worker.update(job, at, b.byteLength);
      at += b.byteLength;
    },
    check: async () => {
      const d = await worker.digest(job!);
      job = undefined;
      at = 0;
      expect(d);
    },
  };
}

async function rawGrpcPuller(target: string, bytes: number, hash: string, mode: Verify): Promise<{ pull: Pull; close: () => void }> {
  const client = new grpc.Client(target, grpc.credentials.createInsecure(), grpcChannelOptions());
  await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 10_000, (e) => (e ? reject(e) : resolve())));
  const h = checker(mode, hash, bytes);
  const pull: Pull = () =>
    new Promise((resolve, reject) => {
      const call = client.makeBidiStreamRequest<Buffer, Buffer>(RAW_METHOD, identity, identity);
      let got = 0;
      call.on('data', (b: Buffer) => {
        got += b.byteLength;
        h.update(b);
        if (got === bytes) {
          call.end();
          h.check().then(resolve, reject);
        }
      });
      call.on('error', reject);
      call.write(Buffer.from('pull'));
    });
  return { pull, close: () => client.close() };
}

async function rawWsPuller(url: string, bytes: number, hash: string, mode: Verify): Promise<{ pull: Pull; close: () => void }> {
  const ws = new WebSocket(url, wsSocketOptions());
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const h = checker(mode, hash, bytes);
  let got = 0;
  let settle: { resolve: () => void; reject: (e: Error) => void } | undefined;
  ws.on('message', (b: Buffer) => {
    got += b.byteLength;
    h.update(b);
    if (got === bytes && settle) h.check().then(settle.resolve, settle.reject);
  });
  const pull: Pull = () =>
    new Promise((resolve, reject) => {
      got = 0;
      settle = { resolve, reject };
      ws.send('pull');
    });
  return { pull, close: () => ws.close() };
}

/** One shared receive buffer, reused by every pull of a "link reused" path (fetchBlob's `into`). */
const reusable = (bytes: number): ((total: number) => Uint8Array) => {
  const buffer = new Uint8Array(new SharedArrayBuffer(bytes));
  return (total) => (total === bytes ? buffer : new Uint8Array(total));
};

async function linkPuller(
  transport: Transport,
  endpoint: string,
  hash: string,
  bytes: number,
  window?: number,
  into?: (total: number) => Uint8Array,
): Promise<{ pull: Pull; close: () => void }> {
  const channel: FrameChannel = await transport.dial(endpoint);
  const link = await new Link(channel, {
    node: 'fetcher',
    actors: () => ['client/fetcher'],
    blobs: { get: () => undefined },
    onEnvelope: () => undefined,
    ...(window ? { window } : {}),
  }).start();
  const pull: Pull = async () => {
    const got = await link.fetchBlob(hash, { into }); // resolves only after the sha256 matched
    if (got.byteLength !== bytes) throw new Error(`fetched ${got.byteLength} of ${bytes} bytes`);
  };
  return { pull, close: () => link.close() };
}

async function channelPuller(transport: Transport, endpoint: string, bytes: number): Promise<{ pull: Pull; close: () => void }> {
  const ch = await transport.dial(endpoint);
  let got = 0;
  let done: (() => void) | undefined;
  ch.onFrame = (f) => {
    if (f.kind !== 'blobChunk') return;
    got += f.blobChunk.data.byteLength;
    if (got === bytes) done?.();
  };
  const pull: Pull = () =>
    new Promise((resolve, reject) => {
      got = 0;
      done = resolve;
      ch.send({ kind: 'blobCredit', blobCredit: { streamId: 1, chunks: 0 } }).catch(reject);
    });
  return { pull, close: () => ch.close() };
}

const median = (xs: number[]): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

async function main(): Promise<void> {
  const flags = scriptFlags('npx tsx bench/transport.ts [flags]', {
    mb: { type: 'number', default: 128, min: 1, max: 1024, integer: true, help: 'blob size in MiB' },
    rounds: { type: 'number', default: 5, min: 1, max: 50, integer: true, help: 'timed rounds per path' },
    json: { type: 'boolean', default: false, help: 'end with one JSON line' },
    only: { type: 'string', default: 'all', help: "run only the paths whose name starts with this (e.g. ws, or 'ws link'; for profiling)" },
    window: { type: 'number', default: 0, min: 0, max: 1024, integer: true, help: 'Link credit window in chunks (0: the Link default)' },
    'cpu-prof': { type: 'boolean', default: false, help: 'write V8 CPU profiles of both processes to ./prof' },
  });
  const holder = fork(fileURLToPath(import.meta.url), [], {
    execArgv: ['--import', 'tsx', ...(flags.cpuProf ? ['--cpu-prof', '--cpu-prof-dir=prof'] : [])],
    env: { ...process.env, FEDSTATE_BENCH_HOLDER_MB: String(flags.mb) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  try {
    const hello = await new Promise<Hello>((resolve, reject) => {
      holder.once('message', (m) => resolve(m as Hello));
      holder.once('exit', (code) => reject(new Error(`holder exited with ${code}`)));
    });
    const { hash, bytes, endpoints } = hello;
    const paths = {
      'grpc raw': await rawGrpcPuller(endpoints.rawGrpc, bytes, hash, 'none'),
      'grpc raw+sha256': await rawGrpcPuller(endpoints.rawGrpc, bytes, hash, 'inline'),
      'grpc raw verified': await rawGrpcPuller(endpoints.rawGrpc, bytes, hash, 'worker'),
      'grpc link': await linkPuller(new GrpcTransport(), endpoints.grpc, hash, bytes, flags.window),
      'grpc link reused': await linkPuller(new GrpcTransport(), endpoints.grpc, hash, bytes, flags.window, reusable(bytes)),
      'grpc channel': await channelPuller(new GrpcTransport(), endpoints.grpcChannel, bytes),
      'ws raw': await rawWsPuller(endpoints.rawWs, bytes, hash, 'none'),
      'ws raw+sha256': await rawWsPuller(endpoints.rawWs, bytes, hash, 'inline'),
      'ws raw verified': await rawWsPuller(endpoints.rawWs, bytes, hash, 'worker'),
      'ws link': await linkPuller(new WsTransport(), endpoints.ws, hash, bytes, flags.window),
      'ws link reused': await linkPuller(new WsTransport(), endpoints.ws, hash, bytes, flags.window, reusable(bytes)),
      'ws channel': await channelPuller(new WsTransport(), endpoints.wsChannel, bytes),
    };
    type Name = keyof typeof paths;
    const names = (Object.keys(paths) as Name[]).filter((n) => flags.only === 'all' || n.startsWith(flags.only));
    const rates = Object.fromEntries(names.map((n) => [n, [] as number[]])) as Record<Name, number[]>;
    // cores busy during a pull: CPU time of both processes (every thread, the hash worker included)
    // over wall time; near 2 on this 2-core machine means the path is CPU-bound, not waiting.
    const cores = Object.fromEntries(names.map((n) => [n, [] as number[]])) as Record<Name, number[]>;
    const holderCpuMs = (): Promise<number> =>
      new Promise((resolve) => {
        holder.once('message', (m) => resolve((m as { cpuMs: number }).cpuMs));
        holder.send('cpu');
      });
    const ownCpuMs = (): number => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1000;
    };
    for (const name of names) await paths[name].pull(); // warm-up: connections, JIT, buffers
    for (let r = 0; r < flags.rounds; r++) {
      for (const name of names) {
        const h0 = await holderCpuMs();
        const c0 = ownCpuMs();
        const t0 = performance.now();
        await paths[name].pull();
        const ms = performance.now() - t0;
        const c1 = ownCpuMs();
        const h1 = await holderCpuMs();
        rates[name].push(bytes / MiB / (ms / 1000));
        cores[name].push((c1 - c0 + h1 - h0) / ms);
      }
    }
    for (const p of Object.values(paths)) p.close();
    if (flags.cpuProf) {
      // Let the holder write its profile: it does so on a clean exit, not on SIGKILL.
      holder.disconnect();
      await new Promise((r) => holder.once('exit', r));
    }

    const med = (n: Name): number => median(rates[n] ?? []);
    const best = (n: Name): number => Math.max(...(rates[n] ?? []));
    // The machine may be shared: a ratio of two adjacent runs in the same round is steadier than a
    // ratio of medians taken minutes apart, so the reported ratio is the median of per-round ratios.
    const ratio = (n: Name, raw: Name): number => median((rates[n] ?? []).map((x, i) => x / (rates[raw]?.[i] ?? NaN)));
    const result = {
      grpcRatio: ratio('grpc link', 'grpc raw'),
      wsRatio: ratio('ws link', 'ws raw'),
      grpcMiBs: med('grpc link'),
      grpcRawMiBs: med('grpc raw'),
      wsMiBs: med('ws link'),
      wsRawMiBs: med('ws raw'),
      grpcChannelRatio: ratio('grpc channel', 'grpc raw'),
      wsChannelRatio: ratio('ws channel', 'ws raw'),
      grpcVerifyFloorRatio: ratio('grpc raw+sha256', 'grpc raw'),
      wsVerifyFloorRatio: ratio('ws raw+sha256', 'ws raw'),
      grpcVerifiedCeilingRatio: ratio('grpc raw verified', 'grpc raw'),
      wsVerifiedCeilingRatio: ratio('ws raw verified', 'ws raw'),
      grpcLinkVsCeiling: ratio('grpc link', 'grpc raw verified'),
      wsLinkVsCeiling: ratio('ws link', 'ws raw verified'),
      grpcReusedVsCeiling: ratio('grpc link reused', 'grpc raw verified'),
      wsReusedVsCeiling: ratio('ws link reused', 'ws raw verified'),
      grpcReusedRatio: ratio('grpc link reused', 'grpc raw'),
      wsReusedRatio: ratio('ws link reused', 'ws raw'),
      coresBusy: Object.fromEntries(names.map((n) => [n, Math.round(median(cores[n] ?? []) * 100) / 100])),
      blobMiB: flags.mb,
      rounds: flags.rounds,
      measure: 'Link.fetchBlob incl. sha256 verify, holder in a second process, vs bare library stream of the same 1 MiB chunks',
      wsMasking: maskingEngine(),
    };
    const rawOf = (n: Name): Name => (n.startsWith('grpc') ? 'grpc raw' : 'ws raw');
    console.log(`\nModel transfer: ${flags.mb} MiB blob, ${flags.rounds} rounds, holder in a second process (ws masking: ${result.wsMasking})\n`);
    console.log(
      markdownTable(
        ['path', 'MiB/s (median)', 'MiB/s (best)', 'ratio to raw library (median of per-round ratios)', 'cores busy (median)'],
        names.map((n) => [
          n,
          Math.round(med(n)),
          Math.round(best(n)),
          n === rawOf(n) ? '1.00 (reference)' : ratio(n, rawOf(n)).toFixed(2),
          median(cores[n] ?? []).toFixed(2),
        ]),
      ),
    );
    console.log('\nlink = Link.fetchBlob with sha256 verification (the measure); channel = the same chunk frames over the');
    console.log('bare FrameChannel, no Link and no hash (what the transport itself costs); raw+sha256 = the bare library');
    console.log('stream hashing each message as it arrives (what verifying on the receiving thread alone costs);');
    console.log('raw verified = the bare stream copying each message into one reused buffer and hashing it as the link does');
    console.log('(the least a transfer verified into reused memory costs over that library here: the ceiling for link reused);');
    console.log('link reused = the same Link fetch into one reused buffer (fetchBlob `into`: no fresh pages to fault in).');
    console.log('cores busy = CPU time of both processes, all threads, over wall time (this machine has 2 cores).');
    console.log(`\ntarget: ratio >= 0.8 for both -> grpc ${result.grpcRatio >= 0.8 ? 'met' : 'MISSED'}, ws ${result.wsRatio >= 0.8 ? 'met' : 'MISSED'}`);
    const pct = (x: number): string => `${Math.round(x * 100)}%`;
    console.log(
      `ceiling for a transfer verified on arrival (raw verified / raw): grpc ${result.grpcVerifiedCeilingRatio.toFixed(2)}, ws ${result.wsVerifiedCeilingRatio.toFixed(2)};` +
        ` link reused reaches ${pct(result.grpcReusedVsCeiling)} (grpc) and ${pct(result.wsReusedVsCeiling)} (ws) of it, link (fresh buffer)` +
        ` ${pct(result.grpcLinkVsCeiling)} and ${pct(result.wsLinkVsCeiling)}`,
    );
    emitJson(result);
  } finally {
    holder.kill();
  }
}

const holderMb = process.env.FEDSTATE_BENCH_HOLDER_MB;
if (holderMb) await runHolder(Number(holderMb));
else await main();
