import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const cli = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'cli', 'ums.js');

/** Runs the real `ums` CLI with `--json` against a stack's broker; the JSON it prints, and its exit code. */
export function umsJson<T>(natsUrl: string, args: string[]): Promise<{ code: number; json: T }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...args, '--json'], { env: { ...process.env, NATS_URL: natsUrl }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
    child.once('error', reject);
    child.once('close', (code) => {
      try {
        resolve({ code: code ?? -1, json: JSON.parse(out) as T });
      } catch {
        reject(new Error(`ums ${args.join(' ')} printed no JSON (exit ${code}): ${out}\n${err}`));
      }
    });
  });
}
