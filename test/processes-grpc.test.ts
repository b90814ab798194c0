// The acceptance check of multi-process runs over gRPC (see processesMatchInproc).
import { processesMatchInproc } from './processes-helper.ts';

processesMatchInproc('grpc');
