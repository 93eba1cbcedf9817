import type { EventOf } from '../core/events.js';
import type { FunctionContext } from './function-context.js';
import {
  destinationAborted,
  frontmanReleased,
  pagesArrived,
  pagesLost,
  restoreCompleted,
  runStep,
  serviceRunning,
  sourceDiscarded,
  sourceResumed,
  sourceResumeFailed,
  stepFailed,
} from './migration-saga.js';

export type FinalizeTrigger = EventOf<
  | 'restore.completed'
  | 'restore.pages-arrived'
  | 'restore.pages-lost'
  | 'restore.failed'
  | 'restore.aborted'
  | 'checkpoint.failed'
  | 'source.discarded'
  | 'source.resumed'
  | 'source.resume-failed'
  | 'service.running'
  | 'frontman.released'
>;

/**
 * Ends a migration, either way (functions/migration-saga.ts, steps 4 to 6 and the compensations): on
 * restore.completed the source is told to discard its copy (post-copy: once restore.pages-arrived); on a failure after the freeze the saga turns
 * back (abort the destination, then resume the source); the migration is done or failed once the source
 * confirms. service.running corrects where an ended migration's service runs; frontman.released records
 * where the frontman sent what it held.
 */
export function finalize(event: FinalizeTrigger, ctx: FunctionContext): Promise<void> {
  switch (event.name) {
    case 'restore.completed':
      return runStep(event, ctx, restoreCompleted);
    case 'restore.pages-arrived':
      return runStep(event, ctx, pagesArrived);
    case 'restore.pages-lost':
      return runStep(event, ctx, pagesLost);
    case 'source.discarded':
      return runStep(event, ctx, sourceDiscarded);
    case 'checkpoint.failed':
    case 'restore.failed':
      return runStep(event, ctx, stepFailed);
    case 'restore.aborted':
      return runStep(event, ctx, destinationAborted);
    case 'source.resumed':
      return runStep(event, ctx, sourceResumed);
    case 'source.resume-failed':
      return runStep(event, ctx, sourceResumeFailed);
    case 'service.running':
      return runStep(event, ctx, serviceRunning);
    case 'frontman.released':
      return runStep(event, ctx, frontmanReleased);
  }
}
