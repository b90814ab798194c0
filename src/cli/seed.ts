// `fedstate seed`: uploads the initial global model — a built-in model from a seed, or encoded bytes
// from a file — to the reducer API.
import { readFileSync } from 'node:fs';
import { defineSettings } from '../config.ts';
import { FedError, errorMessage } from '../errors.ts';
import { decodeModel, encodeModel } from '../model/codec.ts';
import { apiSettings, callApi, parseCommand } from './common.ts';
import { initialParams, modelKinds, type ModelKind } from './tf-setup.ts';
import type { Command } from './types.ts';

export const seedSettings = defineSettings({
  ...apiSettings,
  model: { type: 'string', choices: modelKinds, help: 'build this model (default mlp unless --file)' },
  seed: { type: 'number', default: 1, min: 0, integer: true, help: 'initialisation seed of --model' },
  file: { type: 'string', help: 'upload this encoded model (fedstate model codec) instead' },
  json: { type: 'boolean', default: false, env: false, help: 'print {"modelId": …} as JSON' },
});

export const seedCommand: Command = {
  name: 'seed',
  help: 'seed --api URL [--model mlp --seed 1 | --file model.bin] [--token A]     upload the initial model',
  run: async (argv) => {
    const parsed = parseCommand('seed', 'seed [--model mlp|cnn --seed N | --file FILE] [settings]', seedSettings, argv);
    if (!parsed) return 0;
    const { settings: s } = parsed;
    if (s.file && s.model) throw new FedError('config', 'give --model or --file, not both');
    let bytes: Uint8Array;
    if (s.file) {
      try {
        bytes = readFileSync(s.file);
      } catch (e) {
        throw new FedError('config', `cannot read model file ${s.file}: ${errorMessage(e)}`);
      }
      decodeModel(bytes); // a file that is not a model is refused here, not after the upload
    } else {
      bytes = encodeModel(await initialParams((s.model ?? 'mlp') as ModelKind, s.seed));
    }
    const { modelId } = await callApi<{ modelId: string }>(s.api, 'api/models/seed', { body: bytes, token: s.adminToken });
    console.log(s.json ? JSON.stringify({ modelId, bytes: bytes.byteLength }) : `seeded ${modelId} (${bytes.byteLength} bytes)`);
    return 0;
  },
};
