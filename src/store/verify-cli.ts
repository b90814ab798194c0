// `fedstate trail verify --store DIR`. runTrailVerify is pure (returns code and text, no exit, no
// printing) so the CLI and tests can both call it; run this file directly for a standalone check:
//   npx tsx src/store/verify-cli.ts --store DIR
// Exit codes: 0 intact, 1 trail broken, 2 could not check (usage, missing or locked store).
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { errorMessage, isFedError } from '../errors.ts';
import { openLevelStore } from './level.ts';
import { verifyTrail } from './trail.ts';
import type { Store } from './types.ts';

export async function runTrailVerify(dir: string): Promise<{ code: number; output: string }> {
  let store: Store;
  try {
    store = await openLevelStore(dir, { createIfMissing: false });
  } catch (e) {
    const why = isFedError(e, 'conflict') ? 'it is open in another process; stop that process or verify a copy' : errorMessage(e);
    return { code: 2, output: `trail verify: cannot open store ${dir}: ${why}` };
  }
  try {
    const result = await verifyTrail(store);
    if (result.ok) {
      const head = result.entries > 0 ? await store.trailHead() : undefined;
      const tail = head ? ` (head #${head.index} model ${head.modelId}, session ${head.sessionId} round ${head.round})` : '';
      return { code: 0, output: `trail ok: ${result.entries} entries${tail}` };
    }
    const model = result.modelId ? ` model ${result.modelId}` : '';
    return {
      code: 1,
      output: `trail BROKEN at entry #${result.badIndex}${model}: ${result.reason}\n` + `${result.badIndex} of ${result.entries} committed entries verified before it`,
    };
  } catch (e) {
    return { code: 2, output: `trail verify: ${errorMessage(e)}` };
  } finally {
    await store.close();
  }
}

export function parseVerifyArgs(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--store') return argv[i + 1];
    if (arg?.startsWith('--store=')) return arg.slice('--store='.length);
  }
  return undefined;
}

function isMain(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  const dir = parseVerifyArgs(process.argv.slice(2));
  if (!dir) {
    console.error('usage: verify-cli.ts --store DIR');
    process.exitCode = 2;
  } else {
    const { code, output } = await runTrailVerify(dir);
    (code === 0 ? console.log : console.error)(output);
    process.exitCode = code;
  }
}
