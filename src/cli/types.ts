// A `fedstate` subcommand: its one-line help and what it does with the remaining arguments.
export interface Command {
  name: string;
  help: string;
  /** Resolves with the process exit code. */
  run(argv: string[]): Promise<number>;
}
