// `fedstate certs`: a development PKI in a directory — a CA (ca.crt, ca.key) and, per node, a
// certificate and key naming its fedstate identity (SAN URI fedstate:role/name, CN role/name) with
// server names for localhost, 127.0.0.1, ::1 and the --hosts given. Pure JS (src/security/certs.ts).
// With --ca-cert/--ca-key, more node certificates are issued by an existing CA.
import { existsSync, readFileSync } from 'node:fs';
import { defineSettings } from '../config.ts';
import { FedError, errorMessage } from '../errors.ts';
import { parseCommand } from './common.ts';
import type { Command } from './types.ts';

export const certsSettings = defineSettings({
  out: { type: 'string', required: true, env: false, help: 'directory for the CA and the node certificates (created if missing)' },
  nodes: { type: 'string', default: 'reducer,c1,c2,k1,k2,k3,k4,k5', env: false, help: 'comma-separated nodes: reducer, combiner/NAME, client/NAME (c1 and k1 are short for combiner/c1 and client/k1)' },
  hosts: { type: 'string', default: '', env: false, help: 'extra comma-separated DNS names or IP addresses every node certificate is valid for (the hosts nodes listen and are dialled at)' },
  days: { type: 'number', default: 365, min: 1, max: 3650, integer: true, env: false, help: 'validity of the node certificates' },
  caCert: { type: 'string', env: false, help: 'issue with this existing CA certificate (with --ca-key) instead of making a new CA' },
  caKey: { type: 'string', env: false, help: 'private key of --ca-cert' },
  force: { type: 'boolean', default: false, env: false, help: 'overwrite existing files in --out' },
  json: { type: 'boolean', default: false, env: false, help: 'print the written paths as JSON' },
});

const list = (v: string): string[] =>
  v
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

export const certsCommand: Command = {
  name: 'certs',
  help: 'certs --out DIR [--nodes reducer,c1,c2,k1,...] [--hosts h1,h2] [--days 365]     development CA and node certificates',
  run: async (argv) => {
    const parsed = parseCommand('certs', 'certs --out DIR [settings]', certsSettings, argv);
    if (!parsed) return 0;
    const { settings: s } = parsed;
    const { createCa, fileStem, loadCa, parseNodeSpec, writeDevPki } = await import('../security/certs.ts');
    const nodes = list(s.nodes).map(parseNodeSpec);
    if (!nodes.length) throw new FedError('config', '--nodes names no node');
    if (!!s.caCert !== !!s.caKey) throw new FedError('config', '--ca-cert and --ca-key go together');
    const stems = [...(s.caCert ? [] : ['ca']), ...nodes.map(fileStem)];
    const taken = stems.flatMap((stem) => [`${stem}.crt`, `${stem}.key`]).filter((f) => existsSync(`${s.out}/${f}`));
    if (taken.length && !s.force) throw new FedError('conflict', `${s.out} already holds ${taken.join(', ')}; pass --force to overwrite`);
    let ca;
    if (s.caCert && s.caKey) {
      try {
        ca = await loadCa(readFileSync(s.caCert, 'utf8'), readFileSync(s.caKey, 'utf8'));
      } catch (e) {
        throw new FedError('config', `cannot load the CA from ${s.caCert} and ${s.caKey}: ${errorMessage(e)}`);
      }
    } else {
      ca = await createCa();
    }
    const pki = await writeDevPki(s.out, nodes, { ca, hosts: list(s.hosts), days: s.days, writeCa: !s.caCert });
    if (s.json) {
      console.log(JSON.stringify({ ca: pki.ca, nodes: pki.nodes.map((n) => ({ address: `${n.role}/${n.name}`, cert: n.cert, key: n.key })) }));
    } else {
      console.log(`CA      ${pki.ca}${s.caCert ? ` (copy of ${s.caCert})` : ` (key: ${s.out}/ca.key — keep it off the nodes)`}`);
      for (const n of pki.nodes) console.log(`${`${n.role}/${n.name}`.padEnd(20)} ${n.cert}  ${n.key}`);
      console.log(`\nnodes: --tls-ca ${pki.ca} --tls-cert <node>.crt --tls-key <node>.key (reducer and combiners: add --tls-require-client-cert for mutual TLS)`);
    }
    return 0;
  },
};
