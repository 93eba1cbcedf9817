import { status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';

/**
 * How a CRI call fails: the gRPC status as a code the caller can switch on, with the runtime's own message
 * kept word for word (containerd and CRI-O put the reason there, e.g. `an error occurred when trying to find
 * container "x": not found`), in the style of nats.js's typed errors.
 */

export type CriErrorCode =
  | 'cancelled'
  | 'unknown'
  | 'invalid-argument'
  | 'deadline-exceeded'
  | 'not-found'
  | 'already-exists'
  | 'permission-denied'
  | 'resource-exhausted'
  | 'failed-precondition'
  | 'aborted'
  | 'out-of-range'
  | 'unimplemented'
  | 'internal'
  | 'unavailable'
  | 'data-loss'
  | 'unauthenticated';

const CODES: Readonly<Record<number, CriErrorCode>> = {
  [GrpcStatus.CANCELLED]: 'cancelled',
  [GrpcStatus.UNKNOWN]: 'unknown',
  [GrpcStatus.INVALID_ARGUMENT]: 'invalid-argument',
  [GrpcStatus.DEADLINE_EXCEEDED]: 'deadline-exceeded',
  [GrpcStatus.NOT_FOUND]: 'not-found',
  [GrpcStatus.ALREADY_EXISTS]: 'already-exists',
  [GrpcStatus.PERMISSION_DENIED]: 'permission-denied',
  [GrpcStatus.RESOURCE_EXHAUSTED]: 'resource-exhausted',
  [GrpcStatus.FAILED_PRECONDITION]: 'failed-precondition',
  [GrpcStatus.ABORTED]: 'aborted',
  [GrpcStatus.OUT_OF_RANGE]: 'out-of-range',
  [GrpcStatus.UNIMPLEMENTED]: 'unimplemented',
  [GrpcStatus.INTERNAL]: 'internal',
  [GrpcStatus.UNAVAILABLE]: 'unavailable',
  [GrpcStatus.DATA_LOSS]: 'data-loss',
  [GrpcStatus.UNAUTHENTICATED]: 'unauthenticated',
};

export class CriError extends Error {
  constructor(
    readonly code: CriErrorCode,
    /** The gRPC status code as sent (grpc.status). */
    readonly grpcCode: number,
    /** The CRI method, e.g. CheckpointContainer. */
    readonly method: string,
    /** The runtime's own words (the gRPC status details). */
    readonly runtimeMessage: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CriError';
  }
}

/** What to do about a code, where the runtime's message alone does not say it. */
function hint(code: CriErrorCode, method: string): string {
  switch (code) {
    case 'unavailable':
      return ': is the runtime running and its socket the one given?';
    case 'unimplemented':
      return method === 'CheckpointContainer'
        ? ': this runtime has no CRI checkpoint (containerd before 2.0, or CRI-O without enable_criu_support)'
        : '';
    case 'deadline-exceeded':
      return ': the runtime did not answer in time; the operation may still finish on the node';
    default:
      return '';
  }
}

/** Turns a failed grpc-js call into a CriError that names the runtime, the method and the runtime's reason. */
export function criErrorFrom(error: ServiceError, method: string, where: string): CriError {
  const code = CODES[error.code] ?? 'unknown';
  const runtimeMessage = error.details;
  return new CriError(
    code,
    error.code,
    method,
    runtimeMessage,
    `${where}: ${method} failed (${code}): ${runtimeMessage}${hint(code, method)}`,
    {
      cause: error,
    },
  );
}
