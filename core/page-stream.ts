import { createHash, randomBytes, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { unwrapDataKey, wrapDataKey, WrappedKey, type SealingPublicKey } from './checkpoint-sealing.js';

/**
 * The per-migration secret of a post-copy page stream (agents/post-copy/page-relay.ts: TLS-PSK between the
 * two agents' relays). The planner draws it and wraps it for each agent's registered X25519 key, as the
 * checkpoint's data key is wrapped (core/checkpoint-sealing.ts): it travels in signed commands and rests in
 * the migration record, and only the two agents can open it.
 */
export const PageStreamId = z.string().regex(/^[A-Za-z0-9._-]{8,96}$/);

export const PageStreamGrant = z.object({ streamId: PageStreamId, psk: WrappedKey });
export type PageStreamGrant = z.infer<typeof PageStreamGrant>;

/** Where the source's page relay listens (the destination's relay dials it), and whose pages it serves. */
export const PageServer = z.object({
  host: z.union([z.ipv4(), z.ipv6(), z.hostname()]),
  port: z.number().int().min(1).max(65_535),
  /** The source container's id: the runtime shim names the destination's marker after it. */
  containerId: z.string().regex(/^[0-9a-f]{64}$/),
});
export type PageServer = z.infer<typeof PageServer>;

/** A page stream's identity and secret, as both relays use it. */
export interface PageStreamKey {
  /** The TLS-PSK identity: names the stream, proves nothing. */
  streamId: string;
  /** 32 bytes. */
  psk: Buffer;
}

const PSK_BYTES = 32;

/** A fresh stream: its id (the TLS-PSK identity, not secret) and key, to be granted to each agent. */
export function newPageStream(): PageStreamKey {
  return { streamId: `pages.${randomBytes(12).toString('hex')}`, psk: randomBytes(PSK_BYTES) };
}

/** The stream's key wrapped for `recipient`, bound to the migration and the stream id. */
export function grantPageStream(stream: PageStreamKey, recipient: SealingPublicKey, migrationId: string): PageStreamGrant {
  return { streamId: stream.streamId, psk: wrapDataKey(stream.psk, recipient, migrationId, bindingOf(stream.streamId)) };
}

/** Opens a grant with this agent's private key; throws SealingError if it was not for this key or was altered. */
export function openPageStream(grant: PageStreamGrant, privateKey: KeyObject, migrationId: string): PageStreamKey {
  return { streamId: grant.streamId, psk: unwrapDataKey(grant.psk, privateKey, migrationId, bindingOf(grant.streamId)) };
}

/** The wrapping's associated data names the stream, so a grant cannot be replayed for another stream. */
function bindingOf(streamId: string): Buffer {
  return createHash('sha256').update(`ums page stream\0${streamId}`).digest().subarray(0, 4);
}
