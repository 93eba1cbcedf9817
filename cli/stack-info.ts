import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { Cloud } from '../core/agent-registration.js';
import { FrontedService } from '../core/frontman-registration.js';

/*
 * What a running local stack says about itself (its stack.json), and where it lives: the contract
 * between the development harness that writes it (infra/local-stack.ts) and the CLI that reads it to find
 * the broker and to print `ums stack info`. It lives with the CLI, its only production reader, so that
 * `ums status`/`migrate`/`plan`/`agents` read the file without loading the harness (the Podman and Docker host
 * simulation, the image builders, the storage emulators); the harness imports it from here.
 */

export const StoreKind = z.enum(['azure', 'gcs', 's3', 'file']);
export type StoreKind = z.infer<typeof StoreKind>;

/**
 * The container engine a simulated host runs: its own Podman service, its own dockerd, or its own containerd 2
 * as a Kubernetes node's runtime, which its agent drives through the CRI.
 */
export const HostEngine = z.enum(['podman', 'docker', 'containerd']);
export type HostEngine = z.infer<typeof HostEngine>;

export const HostSpec = z.object({
  agentId: z.string(),
  cloud: Cloud,
  region: z.string(),
  store: StoreKind,
  /** Default podman. */
  engine: HostEngine.optional(),
});
export type HostSpec = z.infer<typeof HostSpec>;

/** What `ums stack up` writes to stack.json, for the CLI and for anyone driving the stack by hand. */
export const StackInfo = z.object({
  name: z.string(),
  dir: z.string(),
  pid: z.number(),
  natsUrl: z.string(),
  /** The CA that signed the broker's certificate (the broker requires TLS). */
  natsCa: z.string().optional(),
  /** The CLI's broker credential (mode 0600, in the stack's directory): the CLI connects as the `cli` principal. */
  cliCredentials: z.string().optional(),
  startedAt: z.string(),
  image: z.string(),
  /** Real-server images loaded into every host (LocalStackOptions.serverImages), by ref. */
  serverImages: z.array(z.string()).optional(),
  hosts: z.array(
    HostSpec.extend({
      engine: HostEngine.default('podman'),
      /** The engine's API (unix://...): `podman --url URL`, or `docker -H URL`. */
      engineUrl: z.string().optional(),
      /** The same URL, on Podman hosts only (what readers of older stack.json files look for). */
      podmanUrl: z.string().optional(),
      socketPath: z.string(),
      storeUrl: z.string(),
      netns: z.string().optional(),
      /** The host's address on the stack's WAN: where other hosts and WAN clients reach it and its published ports. */
      wanAddress: z.string(),
      agentLog: z.string(),
      /** Where a service-level container's control dir goes (<launcherDir>/<container>, bind-mounted at /run/ums-launcher). */
      launcherDir: z.string(),
      /**
       * The stand-in for its cloud's instance metadata service (infra/metadata-servers/), when the stack was started
       * with notices: its agent watches it, and /ums-control/notices on it announces an eviction.
       */
      metadataUrl: z.string().optional(),
    })
      // A stack.json written before hosts had engines has no engineUrl: it is the socket's.
      .transform(({ engineUrl, ...host }) => ({ ...host, engineUrl: engineUrl ?? `unix://${host.socketPath}` })),
  ),
  functions: z.record(z.string(), z.string()),
  /** The network joining the hosts: its namespace (holding the bridge), subnet and the bridge's address. */
  wan: z.object({ netns: z.string(), subnet: z.string(), bridgeAddress: z.string() }),
  /** The frontman, at its own place on the WAN (an edge): where clients reach the services it fronts. */
  frontman: z
    .object({ id: z.string(), netns: z.string(), address: z.string(), services: z.array(FrontedService), log: z.string() })
    .optional(),
});
export type StackInfo = z.infer<typeof StackInfo>;

/** Where `ums stack up` keeps a stack by default; the CLI finds the broker there when NATS_URL is unset. */
export const defaultStackDir = (name = 'default'): string =>
  join(process.env.UMS_HOME ?? (process.getuid?.() === 0 ? '/var/lib/ums' : join(homedir(), '.ums')), 'stacks', name);

export const stackInfoPath = (dir: string): string => join(dir, 'stack.json');

/** The environment that points the `ums` CLI at this stack's broker, as its `cli` principal (paths, never the seed). */
export function cliEnv(info: StackInfo): Record<string, string> {
  return {
    NATS_URL: info.natsUrl,
    ...(info.cliCredentials !== undefined ? { UMS_NATS_CREDENTIALS: info.cliCredentials } : {}),
    ...(info.natsCa !== undefined ? { UMS_NATS_CA: info.natsCa } : {}),
  };
}

export async function readStackInfo(dir: string): Promise<StackInfo> {
  const raw = await readFile(stackInfoPath(dir), 'utf8').catch(() => {
    throw new Error(`no local stack is running in ${dir} (no stack.json); start one with "npm run stack:up"`);
  });
  return StackInfo.parse(JSON.parse(raw));
}
