import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cliEnv, type StackInfo } from '../cli/stack-info.js';
import type { MigrationRecord } from '../core/migration.js';

/** What the demos (infra/demo.ts, infra/demo-engines.ts) print, and how they run the `ums` CLI a user would type. */
const cli = join(dirname(fileURLToPath(import.meta.url)), '..', 'cli', 'ums.js');

export const say = (line = ''): void => void process.stdout.write(`${line}\n`);
export const seconds = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;

/** Runs the CLI; its output goes to ours (all of it, or only the lines from `from` on). */
export function ums(stack: StackInfo, args: string[], from?: string): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], {
      env: { ...process.env, ...cliEnv(stack) },
      stdio: ['ignore', from === undefined ? 'inherit' : 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.once('close', (code) => {
      if (from !== undefined) {
        const lines = out.split('\n');
        const at = lines.findIndex((line) => line.startsWith(from));
        say(lines.slice(Math.max(at, 0)).join('\n').trimEnd());
      }
      resolve(code ?? 1);
    });
  });
}

/** Every migration record (`ums status --json`). */
export async function listMigrations(stack: StackInfo): Promise<MigrationRecord[]> {
  const out = await new Promise<string>((resolve) => {
    const child = spawn(process.execPath, [cli, 'status', '--json'], {
      env: { ...process.env, ...cliEnv(stack) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let text = '';
    child.stdout.on('data', (chunk: Buffer) => (text += chunk.toString()));
    child.once('close', () => resolve(text));
  });
  return (JSON.parse(out) as { migrations: MigrationRecord[] }).migrations;
}

/** Runs a demo's main; its result is the exit code. */
export function runDemo(main: () => Promise<number>): void {
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      process.stderr.write(`demo failed: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exit(1);
    },
  );
}
