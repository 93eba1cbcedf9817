import type { UmsEvent } from './events.js';

/**
 * Who may state which event. Every event subject names its publisher (`ums.events.<migration>.<principal>.<name>`)
 * and the broker lets a principal publish only under its own name (infra/broker-credentials.ts), so the subject
 * is an identity the publisher cannot choose. This module is the one place that says whose word an event is:
 * the bus drops or refuses events whose subject's principal may not state them (core/nats-event-bus.ts), and the
 * functions and the restore job then compare that (checked) agent with the role the migration gives it.
 */

/** The principal of the functions (one credential for all of them: they share the saga's state). */
export const FUNCTIONS_PRINCIPAL = 'functions';
/** The principal of the `ums` CLI: it may only ask for migrations. */
export const CLI_PRINCIPAL = 'cli';

/** The frontmen's principal (frontman/): it states the frontman.* events. */
export const FRONTMAN_PRINCIPAL = 'frontman';

/** An agent's principal: a single subject token, prefixed so that no agent id can pass for another principal. */
export const agentPrincipal = (agentId: string): string => `agent-${agentId}`;

/**
 * The events the functions state; the CLI states migration.requested (unless an evacuation asks) and the drain
 * requests; the frontman its own; every other event is an agent's fact.
 */
const FUNCTION_EVENTS: ReadonlySet<string> = new Set(['migration.planned', 'migration.completed', 'migration.failed']);

/** The principal whose word `event` is: the one that alone may publish it (and the subject the bus puts it on). */
export function publisherOf(event: UmsEvent): string {
  // A person asks through the CLI; an evacuation asks as the functions (the data says which, the subject proves it).
  if (event.name === 'migration.requested') return event.data.evacuation === undefined ? CLI_PRINCIPAL : FUNCTIONS_PRINCIPAL;
  if (event.name === 'host.drain-requested' || event.name === 'host.drain-cancelled') return CLI_PRINCIPAL;
  if (FUNCTION_EVENTS.has(event.name)) return FUNCTIONS_PRINCIPAL;
  if (event.name === 'frontman.drained' || event.name === 'frontman.released') return FRONTMAN_PRINCIPAL;
  // A notice the cloud's event service reported reaches the bus through the functions' ingress: their word, not the agent's.
  if ((event.name === 'host.notice' || event.name === 'host.notice-withdrawn') && event.data.reportedBy !== undefined) {
    return FUNCTIONS_PRINCIPAL;
  }
  // Every remaining event's data names its agent (the schema requires it): the fact is that agent's word.
  return agentPrincipal((event.data as { agent: string }).agent);
}

/**
 * The publisher named by an event subject (`ums.events.<migration>.<principal>.<name...>`), or undefined
 * for a subject of another shape.
 */
export function publisherOfSubject(subject: string): string | undefined {
  const tokens = subject.split('.');
  if (tokens.length < 5 || tokens[0] !== 'ums' || tokens[1] !== 'events') return undefined;
  return tokens[3];
}

/**
 * Whether `event`, read from `subject`, is the word of the principal that may state it: the subject's
 * publisher is that principal and the name on the subject is the event's own. A fact whose data.agent is
 * not the agent that published it (an agent speaking for another) is refused.
 */
export function mayState(event: UmsEvent, subject: string): boolean {
  const publisher = publisherOfSubject(subject);
  if (publisher === undefined || publisher !== publisherOf(event)) return false;
  return subject.endsWith(`.${publisher}.${event.name}`);
}
