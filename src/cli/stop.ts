// `fedstate stop`: stops the running session (or the one named) through the reducer API.
import { defineSettings } from '../config.ts';
import { FedError } from '../errors.ts';
import { apiSettings, callApi, parseCommand, type ApiStatus } from './common.ts';
import type { Command } from './types.ts';

export const stopSettings = defineSettings({
  ...apiSettings,
  session: { type: 'string', env: false, help: 'session id (default: the current session)' },
});

export const stopCommand: Command = {
  name: 'stop',
  help: 'stop --api URL [--session ID] [--token A]     stop the running session',
  run: async (argv) => {
    const parsed = parseCommand('stop', 'stop [--session ID] [settings]', stopSettings, argv);
    if (!parsed) return 0;
    const { settings: s } = parsed;
    let id = s.session;
    if (!id) {
      const status = await callApi<ApiStatus>(s.api, 'api/status');
      if (!status.session) throw new FedError('not-found', 'the reducer has no session to stop');
      id = status.session.id;
    }
    await callApi(s.api, `api/sessions/${encodeURIComponent(id)}/stop`, { method: 'POST', token: s.adminToken });
    console.log(`stopping session ${id}`);
    return 0;
  },
};
