// `fedstate status`: what the reducer is doing — state, session progress, combiners with their
// clients, and accuracy per round.
import { defineSettings } from '../config.ts';
import { apiSettings, callApi, connectedClients, parseCommand, type ApiStatus } from './common.ts';
import type { Command } from './types.ts';

export const statusSettings = defineSettings({
  ...apiSettings,
  json: { type: 'boolean', default: false, env: false, help: 'print the raw status JSON' },
});

const fmt = (x: number | undefined, digits = 4): string => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(digits));

export function formatStatus(s: ApiStatus): string {
  const lines: string[] = [];
  lines.push(`state     ${s.state}${s.failure ? ` (${s.failure})` : ''}`);
  if (s.session) lines.push(`session   ${s.session.id}: ${s.session.committed}/${s.session.rounds} rounds committed, round ${s.session.round}`);
  else lines.push('session   none');
  lines.push(`model     ${s.globalModelId ? s.globalModelId.slice(0, 16) : '(not seeded)'}`);
  lines.push(`combiners ${s.combiners.length} (${s.combiners.filter((c) => c.connected).length} connected), ${connectedClients(s)} client(s)`);
  for (const c of s.combiners) {
    lines.push(`  ${c.name.padEnd(16)} ${(c.connected ? c.state || 'connected' : 'gone').padEnd(12)} ${c.endpoint.padEnd(28)} ${c.clients.length} client(s)${c.clients.length ? `: ${c.clients.join(', ')}` : ''}`);
  }
  if (s.history.length) {
    lines.push('', 'round  status     accuracy  loss     updates  rejected');
    for (const r of s.history) {
      const rejected = Object.values(r.rejected ?? {}).reduce((n, x) => n + x, 0);
      lines.push(`${String(r.round).padStart(5)}  ${r.status.padEnd(9)}  ${fmt(r.evalMetrics.accuracy).padStart(8)}  ${fmt(r.evalMetrics.loss).padStart(7)}  ${String(r.updates).padStart(7)}  ${String(rejected).padStart(8)}${r.status === 'ok' ? '' : `  ${r.reason}`}`);
    }
  }
  return lines.join('\n');
}

export const statusCommand: Command = {
  name: 'status',
  help: 'status --api URL [--json]     state, session progress, combiners and clients, accuracy per round',
  run: async (argv) => {
    const parsed = parseCommand('status', 'status [--json] [settings]', statusSettings, argv);
    if (!parsed) return 0;
    const { settings: s } = parsed;
    const status = await callApi<ApiStatus>(s.api, 'api/status');
    console.log(s.json ? JSON.stringify(status) : formatStatus(status));
    return 0;
  },
};
