// The `fedstate` command line: one entry point dispatching to subcommands.
import { errorMessage, isFedError } from './errors.ts';
import { runTrailVerify } from './store/verify-cli.ts';
import { parseFlags } from './util/args.ts';

type Command = (argv: string[]) => Promise<number>;

const commands: Record<string, { help: string; run: Command }> = {
  trail: {
    help: 'trail verify --store DIR     verify the hash-chained model trail of a reducer store',
    run: async (argv) => {
      const [sub, ...rest] = argv;
      if (sub !== 'verify') throw Object.assign(new Error(`unknown trail subcommand "${sub ?? ''}" (use: trail verify --store DIR)`), { usage: true });
      const args = parseFlags(rest, { store: { type: 'string', help: 'reducer store directory' } });
      if (!args.store) throw new Error('trail verify needs --store DIR');
      const { code, output } = await runTrailVerify(args.store);
      (code === 0 ? process.stdout : process.stderr).write(`${output}\n`);
      return code;
    },
  },
};

function usage(): string {
  return `usage: fedstate <command> [flags]\n\ncommands:\n${Object.values(commands)
    .map((c) => `  ${c.help}`)
    .join('\n')}`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === 'help') {
    console.log(usage());
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    console.error(`unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  return command.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    console.error(`fedstate: ${isFedError(e) ? e.message : errorMessage(e)}`);
    process.exitCode = 2;
  },
);
