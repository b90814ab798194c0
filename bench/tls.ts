// What TLS costs on model transfer: a blob of --mb MiB pulled through a Link (1 MiB chunks, credit
// flow control, sha256 check) from a holder in a second process, over grpc and ws, each plain and
// with mutual TLS (ECDSA P-256 certificates from src/security/certs.ts, TLS 1.3, AES-GCM), as a ratio
// to the plain path measured in the same run; and what a TLS dial costs over a plain one (handshake,
// certificate checks both ways, the Link's hello).
//
//   npx tsx bench/tls.ts [--mb 64] [--rounds 5] [--dials 20] [--json]
//
// Each round pulls once over every path, interleaved; the table shows the median and best round, and
// a ratio is the median over rounds of the two paths' rates within the round.
import { fork } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { devTls } from '../src/security/certs.ts';
import { GrpcTransport } from '../src/transport/grpc.ts';
import { Link } from '../src/transport/link.ts';
import type { TlsOptions } from '../src/transport/tls.ts';
import type { Transport } from '../src/transport/types.ts';
import { WsTransport } from '../src/transport/ws.ts';
import { scriptFlags } from '../src/util/args.ts';
import { emitJson } from './lib/json.ts';
import { markdownTable } from './lib/table.ts';

const MiB = 1024 * 1024;
const paths = ['grpc', 'grpc+tls', 'ws', 'ws+tls'] as const;
type Path = (typeof paths)[number];

interface Hello {
  hash: string;
  bytes: number;
  endpoints: Record<Path, string>;
  /** The holder made the PKI; the fetcher gets its own certificate and the CA. */
  fetcherTls: TlsOptions;
}

function transportFor(path: Path, tls: TlsOptions | undefined): Transport {
  const t = path.endsWith('+tls') ? tls : undefined;
  return path.startsWith('grpc') ? new GrpcTransport({ tls: t }) : new WsTransport({ tls: t });
}

async function runHolder(mb: number): Promise<void> {
  const blob = Buffer.allocUnsafe(mb * MiB);
  for (let o = 0; o < blob.byteLength; o += 64 * MiB) randomFillSync(blob, o, Math.min(64 * MiB, blob.byteLength - o));
  const hash = createHash('sha256').update(blob).digest('hex');
  const pki = await devTls(['combiner/holder', 'client/fetcher'], { requireClientCert: true });
  const endpoints = {} as Record<Path, string>;
  for (const path of paths) {
    const transport = transportFor(path, pki.forAddress('combiner/holder'));
    const l = await transport.listen(`${transport.kind}://127.0.0.1:0`, (ch) => {
      void new Link(ch, { node: 'holder', actors: () => ['combiner/holder'], blobs: { get: (h) => (h === hash ? blob : undefined) }, onEnvelope: () => undefined, answerHello: true })
        .start()
        .catch(() => undefined);
    });
    endpoints[path] = l.endpoint;
  }
  process.send?.({ hash, bytes: blob.byteLength, endpoints, fetcherTls: pki.forAddress('client/fetcher') } satisfies Hello);
  process.on('disconnect', () => process.exit(0));
}

async function connect(path: Path, hello: Hello): Promise<Link> {
  const channel = await transportFor(path, hello.fetcherTls).dial(hello.endpoints[path]);
  return new Link(channel, { node: 'fetcher', actors: () => ['client/fetcher'], blobs: { get: () => undefined }, onEnvelope: () => undefined }).start();
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function main(): Promise<void> {
  const flags = scriptFlags('npx tsx bench/tls.ts [flags]', {
    mb: { type: 'number', default: 64, min: 1, integer: true, help: 'blob size in MiB' },
    rounds: { type: 'number', default: 5, min: 1, integer: true, help: 'pulls per path' },
    dials: { type: 'number', default: 20, min: 1, integer: true, help: 'dials per path for the connection cost' },
    json: { type: 'boolean', default: false, help: 'last stdout line: JSON results' },
    holder: { type: 'boolean', default: false, help: '(internal) run as the holder process' },
  });
  if (flags.holder) return runHolder(flags.mb);
  const child = fork(fileURLToPath(import.meta.url), ['--holder', '--mb', String(flags.mb)], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const hello = await new Promise<Hello>((resolve, reject) => {
    child.once('message', (m) => resolve(m as Hello));
    child.once('exit', (code) => reject(new Error(`holder exited ${code}`)));
  });
  try {
    const links = Object.fromEntries(await Promise.all(paths.map(async (p) => [p, await connect(p, hello)] as const))) as Record<Path, Link>;
    for (const p of paths) await links[p].fetchBlob(hello.hash); // warm-up
    const rates: Record<Path, number[]> = { grpc: [], 'grpc+tls': [], ws: [], 'ws+tls': [] };
    for (let r = 0; r < flags.rounds; r++) {
      for (const p of paths) {
        const t0 = performance.now();
        const got = await links[p].fetchBlob(hello.hash);
        if (got.byteLength !== hello.bytes) throw new Error(`${p}: ${got.byteLength} of ${hello.bytes} bytes`);
        rates[p].push(hello.bytes / MiB / ((performance.now() - t0) / 1000));
      }
    }
    for (const p of paths) links[p].close();
    const dialMs: Record<Path, number[]> = { grpc: [], 'grpc+tls': [], ws: [], 'ws+tls': [] };
    for (let d = 0; d < flags.dials; d++) {
      for (const p of paths) {
        const t0 = performance.now();
        const link = await connect(p, hello);
        dialMs[p].push(performance.now() - t0);
        link.close();
      }
    }
    const ratio = (tls: Path, plain: Path): number => median(rates[tls].map((x, i) => x / rates[plain][i]!));
    const rows = paths.map((p) => [p, median(rates[p]), Math.max(...rates[p]), median(dialMs[p])]);
    console.log(`TLS cost on model transfer: ${flags.mb} MiB through a Link (sha256-verified), ${flags.rounds} rounds; dial = connect + handshake + hellos, median of ${flags.dials}\n`);
    console.log(markdownTable(['path', 'MiB/s (median)', 'MiB/s (best)', 'dial ms (median)'], rows));
    const grpcRatio = ratio('grpc+tls', 'grpc');
    const wsRatio = ratio('ws+tls', 'ws');
    console.log(`\nTLS / plain throughput: grpc ${grpcRatio.toFixed(3)}, ws ${wsRatio.toFixed(3)}`);
    emitJson({
      mb: flags.mb,
      rounds: flags.rounds,
      rates: Object.fromEntries(paths.map((p) => [p, median(rates[p])])),
      dialMs: Object.fromEntries(paths.map((p) => [p, median(dialMs[p])])),
      grpcRatio,
      wsRatio,
    });
  } finally {
    child.kill();
  }
}

await main();
