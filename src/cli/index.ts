// Every `fedstate` subcommand, one module each. Add a command by importing it into this list.
import { trailCommand } from './trail.ts';
import type { Command } from './types.ts';

export const commands: Command[] = [
  trailCommand,
];
