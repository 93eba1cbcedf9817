import { z } from 'zod';
import { COST_MODEL, type MigrationApproach, type PostCopyCapability } from './migration-approach.js';

/**
 * How a migration moves the service's memory (docs/design/post-copy.md):
 * - stop-and-copy: the service stays frozen while its whole checkpoint goes through the object store; the
 *   source keeps a complete copy until the destination confirmed, so any failure rolls back.
 * - post-copy: only the non-memory state goes through the store; the destination resumes at once and its
 *   pages follow from the source over the agents' page relay. The frozen time no longer grows with memory,
 *   but until the last page arrived both hosts are needed: losing either loses the service's memory state.
 */
export const MigrationMode = z.enum(['stop-and-copy', 'post-copy']);
export type MigrationMode = z.infer<typeof MigrationMode>;

/**
 * The post-copy cost model. The service is frozen for Podman's checkpoint of the non-memory state, the
 * archive's trip (its rootfs changes) and Podman's restore; calibrated from `npm run bench` (docs/bench/
 * post-copy/report.md, container level, 2026-12-01: 0.61-0.89 s at 256 MiB and at 1 GiB, through a local
 * file; the object store adds a round trip). Pages then move at 100-190 MiB/s through CRIU's lazy-pages
 * protocol and the relays on one machine: the lower figure stands, a WAN only slows it.
 */
export const POST_COPY_MODEL = {
  frozenFixedMs: 900,
  pagesBytesPerSecond: 110 * 1024 * 1024,
} as const;

export interface ModeInput {
  approach: MigrationApproach;
  /** The user's choice, if any. */
  requested?: MigrationMode;
  /** The frozen time the user accepts, if any: above it, post-copy is chosen where both hosts qualify. */
  frozenBudgetMs?: number;
  /** The stop-and-copy estimate of the chosen approach: the service is frozen for all of it. */
  stopAndCopyMs: number;
  /** Bytes of memory the pages of a post-copy migration would move, and of rootfs changes the archive would. */
  memoryBytes: number;
  rootfsChangesBytes: number;
  bandwidthBytesPerSecond?: number;
  source: PostCopyCapability | undefined;
  destination: PostCopyCapability | undefined;
}

export type ModePrediction =
  | {
      mode: MigrationMode;
      feasible: true;
      /** What the prediction assumed. */
      why: string;
      frozenMs: number;
      /** post-copy: from the resume at the destination until its last page arrived (both hosts needed). */
      pagesMs?: number;
    }
  | { mode: MigrationMode; feasible: false; why: string };

export type ModeDecision =
  | { kind: 'chosen'; mode: MigrationMode; reason: string; predictions: ModePrediction[] }
  | { kind: 'refused'; reason: string; predictions: ModePrediction[] };

/**
 * Picks the mode: the requested one if it is feasible (refused otherwise, never a silent fallback); without
 * a request, stop-and-copy unless its predicted frozen time exceeds the budget and post-copy, feasible, is
 * predicted shorter. With no budget, stop-and-copy: it is the mode that can always roll back.
 */
export function decideMode(input: ModeInput): ModeDecision {
  const stopFrozen = Math.round(input.stopAndCopyMs);
  const stopAndCopy: ModePrediction = {
    mode: 'stop-and-copy',
    feasible: true,
    why: 'frozen for the whole checkpoint, transfer and restore',
    frozenMs: stopFrozen,
  };
  const postCopy = predictPostCopy(input);
  const predictions = [stopAndCopy, postCopy];
  if (input.requested === 'post-copy') {
    return postCopy.feasible
      ? { kind: 'chosen', mode: 'post-copy', reason: 'post-copy, as requested', predictions }
      : { kind: 'refused', reason: `post-copy was requested but cannot be used: ${postCopy.why}`, predictions };
  }
  if (input.requested === 'stop-and-copy')
    return { kind: 'chosen', mode: 'stop-and-copy', reason: 'stop-and-copy, as requested', predictions };
  const budget = input.frozenBudgetMs;
  if (budget === undefined) {
    return {
      kind: 'chosen',
      mode: 'stop-and-copy',
      reason: 'stop-and-copy: no frozen-time budget was given (the mode that can always roll back)',
      predictions,
    };
  }
  if (stopFrozen <= budget) {
    return {
      kind: 'chosen',
      mode: 'stop-and-copy',
      reason: `stop-and-copy: its predicted frozen time ${fmt(stopFrozen)} is within the budget of ${fmt(budget)}`,
      predictions,
    };
  }
  if (!postCopy.feasible || postCopy.frozenMs >= stopFrozen) {
    const why = postCopy.feasible
      ? `post-copy is not predicted shorter (${fmt(postCopy.frozenMs)})`
      : `post-copy cannot be used: ${postCopy.why}`;
    return {
      kind: 'chosen',
      mode: 'stop-and-copy',
      reason: `stop-and-copy: predicted frozen ${fmt(stopFrozen)}, over the budget of ${fmt(budget)}, but ${why}`,
      predictions,
    };
  }
  return {
    kind: 'chosen',
    mode: 'post-copy',
    reason: `post-copy: stop-and-copy would be frozen ${fmt(stopFrozen)}, over the budget of ${fmt(budget)}; post-copy ${fmt(postCopy.frozenMs)}, then ${fmt(postCopy.pagesMs ?? 0)} with both hosts needed`,
    predictions,
  };
}

function predictPostCopy(input: ModeInput): ModePrediction {
  const refuse = (why: string): ModePrediction => ({ mode: 'post-copy', feasible: false, why });
  // Service level would need the launcher's lazy verbs and a host sysctl (docs/design/post-copy.md §5.3).
  if (input.approach !== 'container') return refuse(`only container level migrates post-copy; this migration is ${input.approach} level`);
  for (const [role, capability] of [
    ['source', input.source],
    ['destination', input.destination],
  ] as const) {
    if (capability?.available !== true)
      return refuse(`the ${role} host cannot: ${capability?.reason ?? 'its agent reports no post-copy capability'}`);
  }
  const bandwidth = input.bandwidthBytesPerSecond ?? COST_MODEL.defaultBandwidthBytesPerSecond;
  const frozenMs = Math.round(POST_COPY_MODEL.frozenFixedMs + (input.rootfsChangesBytes * 1000) / bandwidth);
  const pagesMs = Math.round((input.memoryBytes * 1000) / POST_COPY_MODEL.pagesBytesPerSecond);
  return {
    mode: 'post-copy',
    feasible: true,
    why: 'frozen for the non-memory state only; pages follow from the source',
    frozenMs,
    pagesMs,
  };
}

const fmt = (ms: number): string => (ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`);
