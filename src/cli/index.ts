// Every `fedstate` subcommand, one module each. Add a command by importing it into this list.
import { trailCommand } from './trail.ts';
import { reducerCommand } from './reducer.ts';
import { combinerCommand } from './combiner.ts';
import { clientCommand } from './client.ts';
import { seedCommand } from './seed.ts';
import { startCommand } from './start.ts';
import { statusCommand } from './status.ts';
import { stopCommand } from './stop.ts';
import { inspectCommand } from './inspect.ts';
import { certsCommand } from './certs.ts';
import { tokenCommand } from './token.ts';
import type { Command } from './types.ts';

export const commands: Command[] = [
  trailCommand,
  reducerCommand,
  combinerCommand,
  clientCommand,
  seedCommand,
  startCommand,
  statusCommand,
  stopCommand,
  inspectCommand,
  certsCommand,
  tokenCommand,
];
