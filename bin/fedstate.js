#!/usr/bin/env node
// The `fedstate` command. fedstate ships TypeScript sources; tsx's loader runs them directly.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli.ts');
