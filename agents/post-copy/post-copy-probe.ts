import { execFile } from 'node:child_process';
import { access, constants, readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import type { PostCopyCapability } from '../../core/migration-approach.js';
import type { EngineInfo } from '../container-engine.js';

const execFileAsync = promisify(execFile);

/** Where infra/host-setup.sh installs the runtime shim (runc-shim, beside this file); containers.conf names it. */
export const RUNTIME_SHIM = '/usr/local/libexec/ums/runc-shim';
/** CRIU's lazy dump keeps the memory in pipes of this size (docs/design/post-copy.md §0). */
export const PIPE_MAX_BYTES = 4 * 1024 * 1024;

export interface PostCopyProbeDeps {
  engineInfo: () => Promise<EngineInfo>;
  /** The address the other host's agent reaches this host's page relay at; undefined: not configured. */
  relayAddress: string | undefined;
  criu: string | undefined;
  shim?: string;
}

/**
 * Whether Podman runs containers through the runtime shim (runc-shim, beside this file): what post-copy and
 * the memory beside the export (agents/memory/) both need.
 */
export async function probeRuntimeShim(deps: Pick<PostCopyProbeDeps, 'engineInfo' | 'shim'>): Promise<PostCopyCapability> {
  const shim = deps.shim ?? RUNTIME_SHIM;
  const installed = await access(shim, constants.X_OK).then(
    () => true,
    () => false,
  );
  if (!installed) return { available: false, reason: `the runtime shim ${shim} is not installed (infra/host-setup.sh)` };
  const info = await deps.engineInfo();
  if (info.ociRuntimePath !== shim) {
    return {
      available: false,
      reason: `Podman's OCI runtime is ${info.ociRuntimePath ?? info.ociRuntime}, not the runtime shim ${shim}: name it first for runc in containers.conf`,
    };
  }
  return { available: true };
}

/**
 * Whether this host can take part in a post-copy migration, and if not the first reason why: the agent has
 * a page relay address, Podman's runc is the runtime shim, CRIU has lazy pages (userfaultfd for other
 * processes: `criu check --feature uffd-noncoop`) and the kernel lets pipes grow to what a lazy dump needs.
 */
export async function probePostCopy(deps: PostCopyProbeDeps): Promise<PostCopyCapability> {
  const no = (reason: string): PostCopyCapability => ({ available: false, reason });
  if (deps.relayAddress === undefined)
    return no('the agent has no page relay address (UMS_PAGE_RELAY_ADDRESS): the other host could not reach its pages');
  const shim = await probeRuntimeShim(deps);
  if (!shim.available) return shim;
  if (deps.criu === undefined) return no('no criu on this host');
  const check = await execFileAsync(deps.criu, ['check', '--feature', 'uffd-noncoop'], { timeout: 30_000 }).then(
    () => undefined,
    (error: { stderr?: string; message: string }) => (error.stderr?.trim() || error.message).split('\n').at(-1),
  );
  if (check !== undefined) return no(`CRIU has no lazy pages here (criu check --feature uffd-noncoop: ${check})`);
  const pipeMax = Number((await readFile('/proc/sys/fs/pipe-max-size', 'utf8')).trim());
  if (!(pipeMax >= PIPE_MAX_BYTES))
    return no(`fs.pipe-max-size is ${pipeMax}, below the ${PIPE_MAX_BYTES} a lazy dump needs (infra/host-setup.sh raises it)`);
  return { available: true };
}
