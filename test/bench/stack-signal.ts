import type { Logger } from '../../core/log.js';
import type { LocalStack } from '../../infra/local-stack.js';

/**
 * While one of the benchmark's stacks runs, SIGINT or SIGTERM stops it (its engines, namespaces and
 * servers would otherwise outlive the process) and exits 130. `release` removes the handlers; `interrupted`
 * says the handler has begun stopping the stack, which the caller must then not stop again.
 */
export function stopOnSignal(stack: LocalStack, log: Logger): { interrupted: () => boolean; release: () => void } {
  let stopping = false;
  const onSignal = () => {
    if (stopping) return;
    stopping = true;
    log.warn('interrupted: stopping the stack');
    void stack.stop().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return {
    interrupted: () => stopping,
    release: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}
