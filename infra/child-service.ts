import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ServiceSpec {
  name: string;
  command: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  /** stdout and stderr are appended here. */
  logFile: string;
  /** Resolves true once the service answers; polled until `readyTimeoutMs`. */
  ready: () => Promise<boolean>;
  readyTimeoutMs?: number;
}

/**
 * One process of the local stack, started, probed until ready, and stoppable or killable on demand
 * (the fault-injection tests kill -9 and restart single components).
 */
export class ChildService {
  private child: ChildProcess | undefined;
  private log: WriteStream | undefined;
  private exited: Promise<void> = Promise.resolve();

  constructor(readonly spec: ServiceSpec) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async start(): Promise<this> {
    const { spec } = this;
    this.log = createWriteStream(spec.logFile, { flags: 'a' });
    const child = spawn(spec.command, spec.args, { env: spec.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    child.stdout?.pipe(this.log, { end: false });
    child.stderr?.pipe(this.log, { end: false });
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    const spawnError = new Promise<never>((_, reject) =>
      child.once('error', (error) => reject(new Error(`${spec.name} could not start (${spec.command}): ${error.message}`))),
    );
    const deadline = Date.now() + (spec.readyTimeoutMs ?? 30_000);
    for (;;) {
      if (!this.running) {
        throw new Error(`${spec.name} exited during start-up (code ${child.exitCode ?? child.signalCode}); see ${spec.logFile}`);
      }
      const ready = await Promise.race([spec.ready().catch(() => false), spawnError]);
      if (ready) return this;
      if (Date.now() > deadline) {
        await this.kill();
        throw new Error(`${spec.name} did not become ready within ${(spec.readyTimeoutMs ?? 30_000) / 1000} s; see ${spec.logFile}`);
      }
      await sleep(100);
    }
  }

  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
  async stop(graceMs = 10_000): Promise<void> {
    if (!this.running) return this.closeLog();
    this.child?.kill('SIGTERM');
    // The grace timer is cancelled once the service has exited: left running it would keep the caller's
    // process (a test file) alive for the whole grace period after everything else is done.
    const grace = new AbortController();
    const stopped = await Promise.race([this.exited.then(() => true), sleep(graceMs, false, { signal: grace.signal }).catch(() => true)]);
    grace.abort();
    if (!stopped) await this.kill();
    await this.closeLog();
  }

  /** Starts it again with the same command, port and files (after kill or stop). */
  async restart(): Promise<void> {
    await this.kill();
    await this.start();
  }

  /** kill -9: what a crash looks like to everyone else. */
  async kill(): Promise<void> {
    if (this.running) {
      this.child?.kill('SIGKILL');
      await this.exited;
    }
    await this.closeLog();
  }

  private async closeLog(): Promise<void> {
    const log = this.log;
    this.log = undefined;
    if (log) await new Promise<void>((resolve) => log.end(resolve));
  }
}
