import type { EventBus, Versioned } from '../core/event-bus.js';
import type { UmsCommand } from '../core/events.js';
import { COMMAND_VALID_IN, type MigrationRecord } from '../core/migration.js';

export type FenceVerdict = { accepted: true; record: Versioned<MigrationRecord> } | { accepted: false; reason: string };

/**
 * Checks a command against the migration record before an agent acts on it: the command's epoch must
 * be the record's, and the record must be in a state where the command still applies. A command that
 * fails this is stale (issued before the saga turned back, or redelivered after its step was done):
 * carrying it out could freeze a service that was just resumed, or resume one that runs elsewhere.
 */
export async function checkFence(bus: EventBus, command: UmsCommand): Promise<FenceVerdict> {
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
  return { accepted: true, record };
}
