import { appendFileSync } from 'node:fs';

/*
 * Module hooks (node:module register) that append the URL of every module a program resolves to a file,
 * one per line: which modules a command really loads. Registered by test/unit/cli-module-graph.test.ts with
 *   node --import 'data:text/javascript,import { register } from "node:module"; register(HOOKS_URL, { data: FILE })' PROGRAM
 */

let file: string | undefined;

export function initialize(data: string): void {
  file = data;
}

interface ResolveResult {
  url: string;
}

export async function resolve(
  specifier: string,
  context: unknown,
  nextResolve: (specifier: string, context: unknown) => Promise<ResolveResult>,
): Promise<ResolveResult> {
  const result = await nextResolve(specifier, context);
  if (file !== undefined) appendFileSync(file, `${result.url}\n`);
  return result;
}
