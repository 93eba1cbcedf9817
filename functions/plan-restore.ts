import type { EventOf } from '../core/events.js';
import type { FunctionContext } from './function-context.js';
import {
  destinationReady,
  frontmanDrained,
  imageNeeded,
  imageUploaded,
  restoreStarted,
  runStep,
  sourceUploaded,
  urlsNeeded,
} from './migration-saga.js';

export type PlanRestoreTrigger = EventOf<
  | 'restore.image-needed'
  | 'source.image-uploaded'
  | 'restore.prepared'
  | 'frontman.drained'
  | 'restore.urls-needed'
  | 'checkpoint.uploaded'
  | 'restore.started'
>;

/**
 * The forward steps while the image and the archive move (functions/migration-saga.ts, steps 2b, 3 and 4): on
 * restore.image-needed the source ships the image, on source.image-uploaded its URLs go to the destination; on
 * restore.prepared the first URLs and the freeze (with a frontman: once it drained, frontman.drained), on restore.urls-needed the next batch of signed URLs,
 * on checkpoint.uploaded the artifact, on restore.started the destination's engine restoring.
 */
export function planRestore(event: PlanRestoreTrigger, ctx: FunctionContext): Promise<void> {
  switch (event.name) {
    case 'restore.image-needed':
      return runStep(event, ctx, imageNeeded);
    case 'source.image-uploaded':
      return runStep(event, ctx, imageUploaded);
    case 'restore.prepared':
      return runStep(event, ctx, destinationReady);
    case 'frontman.drained':
      return runStep(event, ctx, frontmanDrained);
    case 'restore.urls-needed':
      return runStep(event, ctx, urlsNeeded);
    case 'checkpoint.uploaded':
      return runStep(event, ctx, sourceUploaded);
    case 'restore.started':
      return runStep(event, ctx, restoreStarted);
  }
}
