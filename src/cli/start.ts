// `fedstate start`: starts a training session through the reducer API. Every session setting is a
// flag (--rounds, --local-epochs, --learning-rate, …) or a key of a --config file; the reducer API
// validates them again, with the same rules (src/api/session-config.ts).
import { defaultSessionConfig } from '../../machines/reducer.ts';
import { checkSessionField, sessionConfigKeys } from '../api/session-config.ts';
import { defineSettings, type Schema, type Setting } from '../config.ts';
import { FedError } from '../errors.ts';
import { apiSettings, callApi, parseCommand } from './common.ts';
import { followSession } from './follow.ts';
import type { Command } from './types.ts';

// Session settings are read from flags and files only: a FEDSTATE_ROUNDS left in a host's environment
// should not silently shape every session started from it.
const defaults = defaultSessionConfig('');
const sessionSchema: Schema = Object.fromEntries(
  sessionConfigKeys.map((key): [string, Setting] => {
    const d = defaults[key];
    const check = (v: unknown): void => void checkSessionField(key, v);
    const help = `session ${key} (reducer default ${key === 'sessionId' ? 'generated' : String(d)})`;
    if (typeof d === 'number') return [key, { type: 'number', env: false, help, check }];
    if (typeof d === 'boolean') return [key, { type: 'boolean', env: false, help, check }];
    return [key, { type: 'string', env: false, help, check }];
  }),
);

export const startSettings = defineSettings({
  ...apiSettings,
  ...sessionSchema,
  wait: { type: 'boolean', default: false, env: false, help: 'follow the session and exit when it ends (0 when done)' },
  json: { type: 'boolean', default: false, env: false, help: 'print JSON (with --wait: the final status)' },
});

export const startCommand: Command = {
  name: 'start',
  help: 'start --api URL [--rounds N --local-epochs E …any session setting] [--wait] [--token A]     start a session',
  run: async (argv) => {
    const parsed = parseCommand('start', 'start [session settings] [settings]', startSettings, argv);
    if (!parsed) return 0;
    const s = parsed.settings as Record<string, unknown> & { api: string; adminToken?: string; wait: boolean; json: boolean };
    const session: Record<string, unknown> = {};
    for (const key of sessionConfigKeys) if (s[key] !== undefined) session[key] = s[key];
    const { sessionId } = await callApi<{ sessionId: string }>(s.api, 'api/sessions', { json: session, token: s.adminToken });
    if (!s.wait) {
      console.log(s.json ? JSON.stringify({ sessionId }) : `started session ${sessionId}`);
      return 0;
    }
    if (!s.json) console.log(`started session ${sessionId}\nround  status  accuracy  loss     updates`);
    const final = await followSession(s.api, {
      sessionId,
      onRound: (r) => {
        if (s.json) return;
        const acc = r.evalMetrics.accuracy;
        const loss = r.evalMetrics.loss;
        console.log(`${String(r.round).padStart(5)}  ${r.status.padEnd(6)}  ${acc === undefined ? '       -' : acc.toFixed(4).padStart(8)}  ${loss === undefined ? '      -' : loss.toFixed(4).padStart(7)}  ${String(r.updates).padStart(7)}${r.status === 'ok' ? '' : `  ${r.reason}`}`);
      },
    });
    if (s.json) console.log(JSON.stringify(final));
    else console.log(`session ${sessionId} ${final.state}${final.failure ? `: ${final.failure}` : ''}`);
    if (final.state !== 'done') {
      if (final.state === 'failed') throw new FedError('internal', `session ${sessionId} failed: ${final.failure}`);
      return 1;
    }
    return 0;
  },
};
