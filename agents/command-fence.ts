import type { EventBus, Versioned } from '../core/event-bus.js';
import type { CommandName, UmsCommand } from '../core/events.js';
import { COMMAND_VALID_IN, type MigrationRecord } from '../core/migration.js';
import { canonicalJson as canonical, SignatureError } from '../core/signed-envelope.js';
import { type CommandVerifier } from '../core/command-signature.js';

export type FenceVerdict = { accepted: true; record: Versioned<MigrationRecord> } | { accepted: false; reason: string };

/** Which end of the migration each command is for. */
const ADDRESSED_TO: Record<CommandName, 'source' | 'destination'> = {
  checkpoint: 'source',
  discard: 'source',
  resume: 'source',
  'ship-image': 'source',
  prepare: 'destination',
  'chunk-urls': 'destination',
  abort: 'destination',
};

/**
 * What an agent does with every command before acting on it: the signature first (the functions signed it,
 * for this agent, and it has not expired: core/signed-envelope.ts), then the fence against the record. A
 * validly signed command is still refused if its migration, epoch or agent are not the record's (a replay).
 */
export async function admitCommand(bus: EventBus, verifier: CommandVerifier, command: UmsCommand, agentId: string): Promise<FenceVerdict> {
  try {
    verifier.verify(command, agentId);
  } catch (error) {
    if (!(error instanceof SignatureError)) throw error;
    return { accepted: false, reason: `unverified command (${error.code}): ${error.message}` };
  }
  return checkFence(bus, command, agentId);
}

/**
 * Checks a command against the migration record before an agent acts on it: the command's epoch must
 * be the record's, and the record must be in a state where the command still applies. A command that
 * fails this is stale (issued before the saga turned back, or redelivered after its step was done):
 * carrying it out could freeze a service that was just resumed, or resume one that runs elsewhere.
 * It must also be the record's command: for the record's container, addressed to the agent the record
 * gives that step (`agentId`, the one about to act), with the record's plan (approach, source, image,
 * requirements, artifact location); anything else is refused as misaddressed.
 */
export async function checkFence(bus: EventBus, command: UmsCommand, agentId?: string): Promise<FenceVerdict> {
  const { migrationId, epoch } = command.data;
  const record = await bus.migrations.get(migrationId);
  if (!record)
    return { accepted: false, reason: `stale command: migration ${migrationId} is unknown (never planned, or its record was removed)` };
  const { state, epoch: current } = record.value;
  if (epoch !== current) {
    return {
      accepted: false,
      reason: `stale command: ${command.name} was issued at epoch ${epoch}, migration ${migrationId} is at epoch ${current} (${state})`,
    };
  }
  if (!COMMAND_VALID_IN[command.name].includes(state)) {
    return { accepted: false, reason: `stale command: ${command.name} does not apply to migration ${migrationId} in state ${state}` };
  }
  // A done migration still wants its discard only while the source's cleanup is pending; after that, a
  // discard is a replay, whatever the container here is now (it may be the service, migrated back).
  if (command.name === 'discard' && record.value.state === 'done' && record.value.pendingCleanup === undefined) {
    return { accepted: false, reason: `stale command: discard of migration ${migrationId}, which is done and wants no cleanup` };
  }
  const mismatch = commandMismatch(record.value, command, agentId);
  if (mismatch !== undefined)
    return { accepted: false, reason: `misaddressed command: ${command.name} of migration ${migrationId} ${mismatch}` };
  return { accepted: true, record };
}

/** How the command differs from what the record says (undefined: it is the record's). */
export function commandMismatch(record: MigrationRecord, command: UmsCommand, agentId?: string): string | undefined {
  const data = command.data as Partial<Record<string, unknown>>;
  const plan = record as Partial<Extract<MigrationRecord, { state: 'preflight' }>>;
  if (typeof data.container === 'string' && data.container !== record.container) {
    return `names container "${data.container}", the record's is "${record.container}"`;
  }
  const end = ADDRESSED_TO[command.name];
  const expected = end === 'source' ? plan.sourceAgent : record.destinationAgent;
  if (agentId !== undefined && expected !== agentId) {
    return `was delivered to ${agentId}, but the record's ${end} is ${expected ?? 'not known yet'}`;
  }
  if (typeof data.approach === 'string' && plan.approach !== undefined && data.approach !== plan.approach) {
    return `asks for ${data.approach} level, the record planned ${plan.approach} level`;
  }
  if (command.name === 'prepare') {
    const prepare = command.data;
    if (prepare.sourceAgent !== plan.sourceAgent)
      return `names source ${prepare.sourceAgent}, the record's is ${plan.sourceAgent ?? 'not known'}`;
    if (prepare.imageId !== plan.imageId || prepare.image !== plan.image)
      return `names image ${prepare.image} (${prepare.imageId}), not the record's`;
    if (canonical(prepare.requirements ?? {}) !== canonical(plan.requirements ?? {})) return "carries requirements other than the record's";
    if (plan.sourceManifestKey === undefined || prepare.sourceManifestKey.publicKey !== plan.sourceManifestKey.publicKey)
      return "names a manifest-signing key other than the source's the record planned with";
  }
  if (command.name === 'checkpoint') {
    const { artifact } = command.data;
    const planned = plan.artifactLocation;
    if (planned === undefined || artifact.storeUrl !== planned.storeUrl || artifact.prefix !== planned.prefix) {
      return `uploads to ${artifact.storeUrl} ${artifact.prefix}, not where the record planned`;
    }
  }
  return undefined;
}
