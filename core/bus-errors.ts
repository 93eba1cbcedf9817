import type { ApiError } from 'nats';

/**
 * The bus's errors, told apart by code rather than by message text (modelled on nats.js's typed errors:
 * NatsError.code and, for a JetStream API answer, api_error.err_code).
 */

/**
 * The JetStream API error codes the bus acts on (nats-server's server/errors.json; nats.js 3 names them
 * JetStreamApiCodes). nats.js 2 puts the code of an API answer on `NatsError.api_error.err_code`.
 */
export const JetStreamApiCode = {
  ConsumerNotFound: 10014,
  NoMessageFound: 10037,
  StreamNotFound: 10059,
  StreamWrongLastSequence: 10071,
} as const;
export type JetStreamApiCode = (typeof JetStreamApiCode)[keyof typeof JetStreamApiCode];

/** The JetStream API error code of a broker error, if it is one (undefined for timeouts, disconnects, ...). */
export function jetStreamApiCode(error: unknown): number | undefined {
  // Read by shape, not instanceof NatsError: the seam (event-bus.ts) imports this module without loading nats.
  if (!(error instanceof Error) || !('api_error' in error)) return undefined;
  const code = (error.api_error as ApiError | undefined)?.err_code;
  return typeof code === 'number' ? code : undefined;
}

export function isJetStreamApiError(error: unknown, code: JetStreamApiCode): boolean {
  return jetStreamApiCode(error) === code;
}

export type BusErrorCode =
  /** A compare-and-set on a record lost: someone else changed it (RevisionConflictError). */
  | 'revision-conflict'
  /** A stored record or message does not parse or does not match its schema. */
  | 'invalid-record'
  /** A stream or durable consumer could not be created or brought up to date. */
  | 'setup-failed';

/** An error the bus raises itself; `cause` holds the broker's (or the parser's) error when there is one. */
export class BusError extends Error {
  constructor(
    readonly code: BusErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'BusError';
  }
}
