import { randomBytes } from 'node:crypto';
import type { Logger } from '../core/log.js';
import type { ObjectStore } from '../core/object-store.js';
import type { Uplink } from '../core/uplink.js';

/** Enough bytes for the measure to be a rate rather than latency (Uplink's minimum), in pieces sent at once. */
const PROBE_PIECES = 4;
const PROBE_PIECE_BYTES = 4 * 1024 * 1024;

/**
 * Measures the host's uplink to its store once, by storing random bytes through it and deleting them: a host
 * that has moved nothing yet (a fresh spot VM) then has a measured rate when its eviction notice comes, and the
 * evacuation policy (core/evacuation-plan.ts) does not have to assume one. The bytes are random: nothing of the
 * host's. Failing is not fatal: the policy then says it assumed a rate.
 */
export async function probeUplink(store: ObjectStore, uplink: Uplink, agentId: string, log: Logger): Promise<void> {
  const prefix = `uplink-probe/${agentId}/`;
  const keys = Array.from({ length: PROBE_PIECES }, (_, i) => `${prefix}${i}`);
  const startedAt = Date.now();
  try {
    // All at once: the uplink measures one busy period, as it does for a migration's parallel chunks.
    await Promise.all(keys.map((key) => uplink.send(PROBE_PIECE_BYTES, () => store.put(key, randomBytes(PROBE_PIECE_BYTES)))));
    log.info({ bytes: PROBE_PIECES * PROBE_PIECE_BYTES, ms: Date.now() - startedAt }, 'uplink measured');
  } catch (error) {
    log.warn({ err: error }, 'could not measure the uplink; the evacuation policy will assume a rate until a migration measures it');
  } finally {
    await Promise.all(keys.map((key) => store.delete(key).catch(() => undefined)));
  }
}
