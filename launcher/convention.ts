import { join } from 'node:path';

/*
 * How a container runs the UMS launcher (launcher/README.md), in one place: where it listens, how the host
 * reaches that socket, and what `podman run` (or the engine's API) must grant it. The agents, the image
 * build, the tests and the benchmark all take it from here.
 */

/** Where the launcher listens inside the container; the host bind-mounts a directory of its own here. */
export const LAUNCHER_CONTROL_DIR = '/run/ums-launcher';
/** The control socket's name in that directory (on both sides of the bind mount). */
export const LAUNCHER_SOCKET_NAME = 'control.sock';
/** The agent's default host directory holding one control dir per container: <dir>/<container>. */
export const DEFAULT_LAUNCHER_HOST_DIR = '/run/ums-launcher';

/**
 * What a container running the launcher needs to checkpoint itself: CRIU's two capabilities, and no
 * seccomp filter (CRIU cannot suspend one without CAP_SYS_ADMIN in the initial user namespace). Nothing
 * privileged, nothing from the host but the control directory.
 */
export const LAUNCHER_CAPABILITIES: readonly string[] = ['CHECKPOINT_RESTORE', 'SYS_PTRACE'];
export const LAUNCHER_SECCOMP = 'unconfined';
/** In a container's environment: start as a restore target (wait for an archive) instead of the service. */
export const LAUNCHER_RESTORE_ENV: Readonly<Record<string, string>> = { UMS_LAUNCHER_RESTORE: '1' };

/** The host directory bind-mounted at LAUNCHER_CONTROL_DIR in `container`: <hostDir>/<container>. */
export function launcherControlDir(container: string, hostDir: string = DEFAULT_LAUNCHER_HOST_DIR): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(container) || container.includes('..')) throw new Error(`invalid container name "${container}"`);
  return join(hostDir, container);
}

/** The host side of `container`'s control socket: <hostDir>/<container>/control.sock. */
export function launcherSocketPath(container: string, hostDir: string = DEFAULT_LAUNCHER_HOST_DIR): string {
  return join(launcherControlDir(container, hostDir), LAUNCHER_SOCKET_NAME);
}

/** The launcher's part of a container spec for the engine's API (ContainerEngine.runContainer). */
export function launcherRunSpec(controlDir: string): {
  capAdd: string[];
  seccompProfile: string;
  binds: Array<{ source: string; destination: string }>;
} {
  return {
    capAdd: [...LAUNCHER_CAPABILITIES],
    seccompProfile: LAUNCHER_SECCOMP,
    binds: [{ source: controlDir, destination: LAUNCHER_CONTROL_DIR }],
  };
}

/**
 * The same as `podman run` or `docker run` flags: `podman run -d --name NAME ...launcherRunArgs(dir) IMAGE`.
 * One `--cap-add` per capability: docker takes each value as one capability name, podman also splits commas.
 */
export function launcherRunArgs(controlDir: string): string[] {
  return [
    ...LAUNCHER_CAPABILITIES.flatMap((cap) => ['--cap-add', cap]),
    '--security-opt',
    `seccomp=${LAUNCHER_SECCOMP}`,
    '-v',
    `${controlDir}:${LAUNCHER_CONTROL_DIR}`,
  ];
}
