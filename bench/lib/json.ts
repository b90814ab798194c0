// `--json`: a bench prints its human-readable report as usual and, last, one line holding a JSON object
// with its results, so scripts can take the final stdout line and parse it.
export const wantsJson = (argv: readonly string[] = process.argv.slice(2)): boolean => argv.includes('--json');

/** Prints `result` as the final stdout line when --json was given. */
export function emitJson(result: Record<string, unknown>, argv?: readonly string[]): void {
  if (wantsJson(argv)) process.stdout.write(`${JSON.stringify(result)}\n`);
}
