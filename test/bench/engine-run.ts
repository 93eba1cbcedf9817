import type { HostEngine, HostSpec } from '../../cli/stack-info.js';
import { createLogger } from '../../core/log.js';
import { AWS_HOST, DEFAULT_HOSTS, startLocalStack, type LocalStack } from '../../infra/local-stack.js';
import { approachIncident, approachRoute, runApproachMigration } from './approach-run.js';
import type { MigrationContext } from './migration-run.js';
import { ENGINE_PAIRS, type EngineSample } from './samples.js';
import { stopOnSignal } from './stack-signal.js';

/**
 * The engine comparison (issue 16): the launched single-process counter, filled to each size, moved between
 * Podman and Docker hosts of one stack at a forced level. Container level Podman -> Podman and Docker ->
 * Docker; service level Podman -> Podman, Podman -> Docker and Docker -> Podman. Podman -> Podman is each
 * level's baseline, measured in the same repetition as the moves it is compared with.
 */
const log = createLogger('bench-engines');

const [AZURE, GCP] = DEFAULT_HOSTS as [HostSpec, HostSpec];

/**
 * Two hosts of each engine; a move goes from its source engine's first host to its destination engine's
 * second. Every host uses the file store: the archive goes through the source's store, and a store per
 * cloud (Azurite for the Podman pair, the S3 server for the Docker pair) would be a second variable.
 */
/** The engines compared: Kubernetes nodes (containerd) move at orchestrator level only, which the others lack. */
export type ComparedEngine = Exclude<HostEngine, 'containerd'>;

export const ENGINE_HOSTS: Record<ComparedEngine, readonly [HostSpec, HostSpec]> = {
  podman: [
    { ...AZURE, store: 'file' },
    { ...GCP, store: 'file' },
  ],
  docker: [
    { ...AWS_HOST, store: 'file', engine: 'docker' },
    { agentId: 'aws-us-west-2-1', cloud: 'aws', region: 'us-west-2', store: 'file', engine: 'docker' },
  ],
};

export interface EngineOptions {
  sizes: number[];
  reps: number;
  /** the stack's directory: short, for Podman's runroot and the engines' unix sockets */
  dir: string;
  context: (stack: LocalStack) => MigrationContext;
}

/**
 * Every move at every size and repetition on one stack of its own. A move that throws or ends badly is an
 * incident; the run goes on with the next one.
 */
export async function measureEngines(options: EngineOptions): Promise<{ samples: EngineSample[]; incidents: string[] }> {
  const stack = await startLocalStack({
    name: `bench-engines-${process.pid}`,
    dir: options.dir,
    hosts: [...ENGINE_HOSTS.podman, ...ENGINE_HOSTS.docker],
  });
  const signal = stopOnSignal(stack, log);
  const samples: EngineSample[] = [];
  const incidents: string[] = [];
  try {
    const context = options.context(stack);
    for (const sizeMiB of options.sizes) {
      for (let rep = 0; rep < options.reps; rep++) {
        // Alternate the order, so that no move always follows another's leftovers.
        const order = rep % 2 === 0 ? [...ENGINE_PAIRS] : [...ENGINE_PAIRS].reverse();
        for (const { from, to, approach } of order) {
          const what = `engines ${from} -> ${to} ${approach} ${sizeMiB} MiB rep ${rep}`;
          log.info({ sizeMiB, rep, from, to, approach }, 'engine migration');
          try {
            const route = approachRoute(stack, ENGINE_HOSTS[from][0].agentId, ENGINE_HOSTS[to][1].agentId);
            const name = `eng-${from}-${to}-${approach}-${sizeMiB}-${rep}`;
            const sample = await runApproachMigration(context, route, 'single', approach, sizeMiB, rep, name);
            samples.push({ ...sample, sourceEngine: from, destinationEngine: to });
            const incident = approachIncident(what, sample);
            if (incident !== undefined) incidents.push(incident);
            log.info(
              {
                sizeMiB,
                rep,
                from,
                to,
                approach,
                ok: sample.ok,
                totalMs: sample.totalMs,
                frozenMs: sample.frozenMs,
                phases: sample.phases,
              },
              'engine migration measured',
            );
          } catch (error) {
            incidents.push(`${what}: ${error instanceof Error ? error.message : String(error)}`);
            log.error({ err: error }, what);
          }
        }
      }
    }
  } finally {
    if (!signal.interrupted()) {
      signal.release();
      await stack.stop();
    }
  }
  return { samples, incidents };
}
