// `fedstate token`: mints a node token (HMAC-SHA256, src/security/token.ts) for a role and a name,
// to hand to a client (--token) or to a node that should not hold the secret. The secret comes from
// --secret or FEDSTATE_SECRET (better: it stays out of the shell history and the process list).
import { defineSettings, secretSetting } from '../config.ts';
import { FedError } from '../errors.ts';
import { mintToken, roles, type Role } from '../security/token.ts';
import { parseCommand } from './common.ts';
import type { Command } from './types.ts';

export const tokenSettings = defineSettings({
  ...secretSetting,
  role: { type: 'string', required: true, env: false, choices: roles, help: 'role the token is for' },
  sub: { type: 'string', env: false, help: 'name the token is issued to (client or combiner name; "main" for the reducer); a trailing * admits every name with that prefix' },
  ttl: { type: 'number', default: 0, min: 0, integer: true, env: false, help: 'lifetime in seconds (0: no expiry)' },
  json: { type: 'boolean', default: false, env: false, help: 'print {"token", "sub", "role", "exp"} as JSON' },
});

export const tokenCommand: Command = {
  name: 'token',
  help: 'token --secret S --role client --sub k1 [--ttl 3600]     mint a node token',
  run: async (argv) => {
    const parsed = parseCommand('token', 'token --secret S --role ROLE --sub NAME [settings]', tokenSettings, argv);
    if (!parsed) return 0;
    const { settings: s } = parsed;
    if (!s.secret) throw new FedError('config', 'token needs --secret or FEDSTATE_SECRET (the secret the reducer and combiners verify with)');
    const role = s.role as Role;
    const sub = s.sub ?? (role === 'reducer' ? 'main' : undefined);
    if (!sub) throw new FedError('config', `a ${role} token needs --sub NAME`);
    const now = Date.now();
    const token = mintToken(s.secret, { sub, role, ttlSeconds: s.ttl || undefined }, now);
    const exp = s.ttl ? Math.floor(now / 1000) + s.ttl : 0;
    console.log(s.json ? JSON.stringify({ token, sub, role, exp }) : token);
    return 0;
  },
};
