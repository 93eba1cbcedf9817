import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cliEnv, type StackInfo } from '../../cli/stack-info.js';

const cli = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'cli', 'ums.js');

/** Runs the real `ums` CLI against a stack's broker (as the stack's CLI principal); what it printed, and its exit code. */
export function umsText(stack: StackInfo, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...args], {
      env: { ...process.env, ...cliEnv(stack) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Runs the real `ums` CLI with `--json` against a stack's broker; the JSON it prints, and its exit code. */
export async function umsJson<T>(stack: StackInfo, args: string[]): Promise<{ code: number; json: T }> {
  const { code, stdout, stderr } = await umsText(stack, [...args, '--json']);
  try {
    return { code, json: JSON.parse(stdout) as T };
  } catch {
    throw new Error(`ums ${args.join(' ')} printed no JSON (exit ${code}): ${stdout}\n${stderr}`);
  }
}
