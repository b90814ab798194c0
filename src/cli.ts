// The `fedstate` command line: dispatches to the subcommands in src/cli/.
import { commands } from './cli/index.ts';
import { errorMessage, isFedError } from './errors.ts';

function usage(): string {
  return `usage: fedstate <command> [flags]\n\ncommands:\n${commands.map((c) => `  ${c.help}`).join('\n')}`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === 'help') {
    console.log(usage());
    return name ? 0 : 2;
  }
  const command = commands.find((c) => c.name === name);
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
