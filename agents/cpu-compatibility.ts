import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { reasonFromLog } from './criu-log.js';

const execFileAsync = promisify(execFile);

/**
 * Whether this host's CPU can run processes started on another host. A program picks its code paths
 * (AVX-512, say) when it starts; restored on a CPU without them it dies of SIGILL later, after the source
 * copy is gone. CRIU's restore checks only the FPU by default, so the destination checks before the freeze:
 * the source's `criu cpuinfo dump` image (in its registration), against `criu cpuinfo check --cpu-cap=ins`,
 * which refuses when any instruction-set feature in the image is missing here (and accepts a CPU with more).
 */

/** This host's cpuinfo image, base64 (about 110 bytes on x86_64). */
export async function dumpCpuinfo(criu: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ums-cpuinfo-'));
  try {
    await execFileAsync(criu, ['cpuinfo', 'dump', '-D', dir], { timeout: 20_000 });
    return (await readFile(join(dir, 'cpuinfo.img'))).toString('base64');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export type CpuVerdict = { compatible: true } | { compatible: false; reason: string };

/** Checks another host's cpuinfo image (base64) against this CPU. */
export async function checkCpuinfo(criu: string, cpuinfoBase64: string): Promise<CpuVerdict> {
  const dir = await mkdtemp(join(tmpdir(), 'ums-cpuinfo-'));
  try {
    await writeFile(join(dir, 'cpuinfo.img'), Buffer.from(cpuinfoBase64, 'base64'));
    await execFileAsync(criu, ['cpuinfo', 'check', '-D', dir, '--cpu-cap=ins', '-o', 'check.log', '-v2'], { timeout: 20_000 });
    return { compatible: true };
  } catch (error) {
    const log = await readFile(join(dir, 'check.log'), 'utf8').catch(() => '');
    const why = reasonFromLog(log) ?? (error as Error).message;
    return { compatible: false, reason: `this CPU lacks instruction-set features of the source's CPU, which the service may use: ${why}` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
