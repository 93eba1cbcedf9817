import { z } from 'zod';
import { ContainerName, FrontmanId } from './events.js';

/**
 * What a frontman tells the world, refreshed by heartbeat into the JetStream KV bucket `ums_frontmen`: the
 * services it fronts. The planner reads it to know that a migration must wait for the frontman to drain
 * before the freeze (functions/migration-saga.ts); the frontman itself is frontman/.
 */
export const FrontedService = z.object({
  /** The container whose clients come through this frontman. */
  container: ContainerName,
  protocol: z.enum(['http', 'tcp']),
  /** The stable address clients use (host:port): the frontman's, never a host's. */
  listen: z.string().min(3).max(300),
  /** The host port the container publishes on whichever host runs it (the same after a migration). */
  port: z.number().int().min(1).max(65535),
});
export type FrontedService = z.infer<typeof FrontedService>;

export const FrontmanRegistration = z.object({
  frontmanId: FrontmanId,
  services: z.array(FrontedService).max(256),
  startedAt: z.iso.datetime({ offset: true }),
  heartbeatAt: z.iso.datetime({ offset: true }),
});
export type FrontmanRegistration = z.infer<typeof FrontmanRegistration>;

/** Heartbeats come every few seconds; a frontman silent for longer is not waited for (nor planned with). */
export const FRONTMAN_LIVENESS_MS = 15_000;

/** The live frontman that fronts `container`, if any. */
export function frontmanOf(
  registrations: readonly FrontmanRegistration[],
  container: string,
  now: number = Date.now(),
): FrontmanRegistration | undefined {
  return registrations.find(
    (r) => now - Date.parse(r.heartbeatAt) <= FRONTMAN_LIVENESS_MS && r.services.some((s) => s.container === container),
  );
}
