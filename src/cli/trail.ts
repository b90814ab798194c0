import { runTrailVerify } from '../store/verify-cli.ts';
import { parseFlags } from '../util/args.ts';
import { FedError } from '../errors.ts';
import type { Command } from './types.ts';

export const trailCommand: Command = {
  name: 'trail',
  help: 'trail verify --store DIR     verify the hash-chained model trail of a reducer store',
  run: async (argv) => {
    const [sub, ...rest] = argv;
    if (sub !== 'verify') throw new FedError('config', `unknown trail subcommand "${sub ?? ''}" (use: trail verify --store DIR)`);
    const args = parseFlags(rest, { store: { type: 'string', help: 'reducer store directory' } });
    if (!args.store) throw new FedError('config', 'trail verify needs --store DIR');
    const { code, output } = await runTrailVerify(args.store);
    (code === 0 ? process.stdout : process.stderr).write(`${output}\n`);
    return code;
  },
};
