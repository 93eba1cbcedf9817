import { z } from 'zod';
import { Cloud } from './cloud.js';

/**
 * A service's evacuation policy, from its container's labels: where it may run (clouds, regions: data that
 * must stay in the EU) and how much it matters when a deadline cannot fit every service. The agent reads the
 * labels into its registration; the evacuation policy (core/evacuation-plan.ts) obeys them.
 */

/** The labels a service's container carries to say where it may go and how much it matters (docs: README "Evacuation"). */
export const POLICY_LABELS = {
  /** An integer; higher moves first when a deadline cannot fit every service. Default 0. */
  priority: 'dev.ums.priority',
  /** Comma-separated clouds the service may run in (azure, gcp, aws, edge, local). Default: any. */
  allowedClouds: 'dev.ums.allowed-clouds',
  /** Comma-separated regions the service may run in; a trailing `*` matches a prefix (`europe-*`). Default: any. */
  allowedRegions: 'dev.ums.allowed-regions',
} as const;

const RegionPattern = z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}\*?$/, 'a region name, optionally ending in "*"');

/** What a service's labels say (ServicePolicy), as its agent registers it. */
export const ServicePolicy = z.object({
  priority: z.number().int().min(-1_000_000).max(1_000_000),
  allowedClouds: z.array(Cloud).max(8).optional(),
  allowedRegions: z.array(RegionPattern).max(64).optional(),
  /** A label the agent could not read: the service is not moved by an evacuation, since where it may go is not known. */
  invalid: z.string().max(500).optional(),
});
export type ServicePolicy = z.infer<typeof ServicePolicy>;

export const DEFAULT_POLICY: ServicePolicy = { priority: 0 };

/** Reads the policy labels of a container; a label that does not parse is kept as `invalid`, with why. */
export function servicePolicyOf(labels: Readonly<Record<string, string>>): ServicePolicy {
  const problems: string[] = [];
  const policy: ServicePolicy = { priority: 0 };
  const rawPriority = labels[POLICY_LABELS.priority];
  if (rawPriority !== undefined) {
    const priority = Number(rawPriority.trim());
    if (Number.isInteger(priority) && Math.abs(priority) <= 1_000_000) policy.priority = priority;
    else problems.push(`${POLICY_LABELS.priority}="${rawPriority.slice(0, 40)}" is not an integer`);
  }
  const list = (value: string) =>
    value
      .split(',')
      .map((item) => item.trim())
      .filter((item) => item.length > 0);
  const rawClouds = labels[POLICY_LABELS.allowedClouds];
  if (rawClouds !== undefined) {
    const clouds = z.array(Cloud).min(1).max(8).safeParse(list(rawClouds));
    if (clouds.success) policy.allowedClouds = clouds.data;
    else
      problems.push(`${POLICY_LABELS.allowedClouds}="${rawClouds.slice(0, 80)}" names no cloud, or one not in ${Cloud.options.join(', ')}`);
  }
  const rawRegions = labels[POLICY_LABELS.allowedRegions];
  if (rawRegions !== undefined) {
    const regions = z.array(RegionPattern).min(1).max(64).safeParse(list(rawRegions));
    if (regions.success) policy.allowedRegions = regions.data;
    else problems.push(`${POLICY_LABELS.allowedRegions}="${rawRegions.slice(0, 80)}" is not a list of regions`);
  }
  if (problems.length > 0) policy.invalid = problems.join('; ');
  return policy;
}

/** Whether the policy lets the service run in this cloud and region; if not, why. */
export function policyAllows(policy: ServicePolicy, cloud: Cloud, region: string): { ok: true } | { ok: false; reason: string } {
  if (policy.allowedClouds !== undefined && !policy.allowedClouds.includes(cloud)) {
    return { ok: false, reason: `its policy allows the clouds ${policy.allowedClouds.join(', ')}, not ${cloud}` };
  }
  if (policy.allowedRegions !== undefined && !policy.allowedRegions.some((pattern) => regionMatches(pattern, region))) {
    return { ok: false, reason: `its policy allows the regions ${policy.allowedRegions.join(', ')}, not ${region}` };
  }
  return { ok: true };
}

const regionMatches = (pattern: string, region: string): boolean =>
  pattern.endsWith('*') ? region.startsWith(pattern.slice(0, -1)) : region === pattern;
