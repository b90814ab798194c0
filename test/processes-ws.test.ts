// The acceptance check of multi-process runs over WebSocket (see processesMatchInproc).
import { processesMatchInproc } from './processes-helper.ts';

processesMatchInproc('ws');
