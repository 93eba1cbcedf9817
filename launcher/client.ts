import { closeSync, constants, fstatSync, lstatSync, openSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';

/**
 * Client for the control socket of ums-launcher (launcher/ums-launcher.c), the PID 1 of a
 * service-level image: it checkpoints and restores its own service with the CRIU inside the image, so the
 * host needs neither CRIU nor an engine checkpoint API. The host bind-mounts a directory at
 * /run/ums-launcher in the container and talks to `<dir>/control.sock`.
 *
 * Protocol (one request per connection): the client writes `VERB\n`; the launcher answers one line,
 * `ok KEY=VALUE...` or `err MESSAGE`; `checkpoint` then streams exactly `bytes=` bytes of tar; `restore`
 * reads a tar after the request line. Requests are served one at a time by the launcher.
 */

export type LauncherMode = 'running' | 'frozen' | 'waiting-for-restore' | 'restored';

export interface LauncherStatus {
  protocolVersion: number;
  mode: LauncherMode;
  /** PID of the service's root process (in the container's PID namespace); undefined when there is none. */
  pid: number | undefined;
  /** Processes in the service's tree (root and descendants). */
  processes: number;
  /** Resident memory of the tree, summed over its processes. */
  rssBytes: number;
  checkpoints: number;
  restores: number;
  lastDumpMs: number | undefined;
  lastRestoreMs: number | undefined;
  lastArchiveBytes: number;
}

export interface CheckpointInfo {
  /** CRIU's dump, from freeze to images on disk inside the container. */
  dumpMs: number;
  /** Exact length of the tar stream that follows. */
  bytes: number;
  /** Entries in it (CRIU images and the launcher's meta file). */
  files: number;
}

/** The checkpoint archive (a tar) as it streams out of the container, with what the launcher said of it. */
export type CheckpointStream = PassThrough & { readonly info: CheckpointInfo };

export interface RestoreResult {
  /** CRIU's restore alone. */
  restoreMs: number;
  /** Receiving and unpacking the archive (limited by how fast the caller's stream delivers it). */
  receiveMs: number;
  pid: number;
  processes: number;
  bytes: number;
}

export interface ResumeResult {
  mode: LauncherMode;
  pid: number;
  processes: number;
}

export type LauncherFailure = 'unreachable' | 'refused' | 'protocol' | 'stream' | 'timeout';

export class LauncherError extends Error {
  override readonly name = 'LauncherError';
  constructor(
    readonly operation: string,
    readonly where: string,
    /** unreachable: no socket/listener; refused: the launcher answered err; protocol: an answer we do not understand;
     * stream: an archive stream broke; timeout: no answer in time. */
    readonly failure: LauncherFailure,
    /** The launcher's own message (for 'refused') or the underlying error. */
    readonly detail: string,
    hint?: string,
  ) {
    super(`ums-launcher at ${where}: ${operation} failed: ${detail}${hint !== undefined ? ` (${hint})` : ''}`);
  }
}

export interface LauncherClientOptions {
  /** The control socket, e.g. `<bind-mounted dir>/control.sock`. */
  socketPath: string;
  /** How the launcher is named in errors (host and container). Default: the socket path. */
  where?: string;
  /** status/resume/discard answer within this. Default 15 s. */
  requestTimeoutMs?: number;
  /** checkpoint's first line (CRIU's dump) and restore's answer (after the archive) come within this. Default 10 min. */
  operationTimeoutMs?: number;
  /** Check the socket and its directory and connect without following links (pinControlSocket). Default true. */
  pinSocket?: boolean;
}

const MAX_LINE = 4096;

/** open(2)'s O_PATH on Linux (Node's fs.constants lacks it): a descriptor naming the inode, opening nothing. */
const O_PATH = 0o10000000;

/**
 * The control socket, opened without following links: its directory must be a real directory owned by root
 * and writable by nobody else (the container's root can still replace what is in it: it is bind-mounted
 * there), and the socket itself is opened with O_PATH | O_NOFOLLOW and checked to be a socket through that
 * descriptor, then connected to through /proc/self/fd, so a symlink put in its place (to the engine's API
 * socket, say) between the check and the connect is never followed. Returns the path to connect to and
 * the descriptor to close once connected; throws a LauncherError ('unreachable') otherwise.
 */
export function pinControlSocket(socketPath: string, verb: string, where: string): { path: string; close: () => void } {
  const refuse = (detail: string): never => {
    throw new LauncherError(verb, where, 'unreachable', detail, 'the control socket is not where and what the launcher makes it');
  };
  const missing = (error: unknown): LauncherError => {
    const code = (error as NodeJS.ErrnoException).code;
    return new LauncherError(
      verb,
      where,
      'unreachable',
      `${code ?? ''} ${(error as Error).message}`.trim(),
      code === 'ENOENT' ? 'no control socket: is the container running, with this directory bind-mounted at /run/ums-launcher?' : undefined,
    );
  };
  const dir = dirname(socketPath);
  let dirStat;
  try {
    dirStat = lstatSync(dir);
  } catch (error) {
    throw missing(error);
  }
  if (!dirStat.isDirectory()) refuse(`${dir} is not a directory${dirStat.isSymbolicLink() ? ' (a symbolic link)' : ''}`);
  if (dirStat.uid !== 0) refuse(`${dir} is owned by uid ${dirStat.uid}, not root`);
  if ((dirStat.mode & 0o022) !== 0) refuse(`${dir} is writable by group or others (mode ${(dirStat.mode & 0o777).toString(8)})`);
  let fd: number;
  try {
    fd = openSync(socketPath, O_PATH | constants.O_NOFOLLOW);
  } catch (error) {
    throw missing(error);
  }
  let open = true;
  // Once only: a descriptor number closed twice may by then name another file.
  const close = () => {
    if (!open) return;
    open = false;
    closeSync(fd);
  };
  const stats = fstatSync(fd);
  if (!stats.isSocket()) {
    close();
    refuse(`${socketPath} is ${stats.isSymbolicLink() ? 'a symbolic link' : 'not a socket'}`);
  }
  return { path: `/proc/self/fd/${fd}`, close };
}

interface Opened {
  socket: Socket;
  /** The answer line without `ok `/`err ` split off. */
  line: string;
  /** Bytes that came after the line in the same read. */
  rest: Buffer;
}

export class LauncherClient {
  readonly socketPath: string;
  private readonly where: string;
  private readonly requestTimeoutMs: number;
  private readonly operationTimeoutMs: number;
  private readonly pinSocket: boolean;

  constructor(options: LauncherClientOptions) {
    this.pinSocket = options.pinSocket ?? true;
    this.socketPath = options.socketPath;
    this.where = options.where ?? options.socketPath;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 15_000;
    this.operationTimeoutMs = options.operationTimeoutMs ?? 600_000;
  }

  async status(): Promise<LauncherStatus> {
    const fields = await this.simple('status', this.requestTimeoutMs);
    const mode = fields.get('mode');
    if (mode !== 'running' && mode !== 'frozen' && mode !== 'waiting-for-restore' && mode !== 'restored') {
      throw new LauncherError('status', this.where, 'protocol', `unknown mode '${String(mode)}'`);
    }
    const pid = this.int('status', fields, 'pid');
    const optionalMs = (key: string) => {
      const v = this.int('status', fields, key);
      return v < 0 ? undefined : v;
    };
    return {
      protocolVersion: this.int('status', fields, 'version'),
      mode,
      pid: pid > 0 ? pid : undefined,
      processes: this.int('status', fields, 'procs'),
      rssBytes: this.int('status', fields, 'rss_kb') * 1024,
      checkpoints: this.int('status', fields, 'checkpoints'),
      restores: this.int('status', fields, 'restores'),
      lastDumpMs: optionalMs('last_dump_ms'),
      lastRestoreMs: optionalMs('last_restore_ms'),
      lastArchiveBytes: this.int('status', fields, 'last_tar_bytes'),
    };
  }

  /**
   * Waits until the launcher answers status (a container that was just started has not bound its socket
   * yet) and returns that status.
   */
  async waitReady(timeoutMs = 30_000): Promise<LauncherStatus> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await this.status();
      } catch (error) {
        if (!(error instanceof LauncherError) || error.failure !== 'unreachable' || Date.now() > deadline) throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /**
   * CRIU-dumps the service (it stays stopped in its container until resume() or discard()) and returns the
   * archive as a stream. The stream errors with a LauncherError if it ends short of the announced length;
   * the service is still stopped then and resume() brings it back.
   */
  async checkpoint(): Promise<CheckpointStream> {
    const opened = await this.open('checkpoint', undefined, this.operationTimeoutMs);
    let fields: Map<string, string>;
    try {
      fields = this.parseAnswer('checkpoint', opened.line);
    } catch (error) {
      opened.socket.destroy();
      throw error;
    }
    const info: CheckpointInfo = {
      dumpMs: this.int('checkpoint', fields, 'dump_ms'),
      bytes: this.int('checkpoint', fields, 'bytes'),
      files: this.int('checkpoint', fields, 'files'),
    };
    const stream = Object.assign(new PassThrough(), { info }) as CheckpointStream;
    const { socket } = opened;
    let received = 0;
    const fail = (detail: string) => {
      socket.destroy();
      stream.destroy(
        new LauncherError(
          'checkpoint',
          this.where,
          'stream',
          detail,
          'the service is still stopped in its container: resume() it or checkpoint() again',
        ),
      );
    };
    const take = (chunk: Buffer): boolean => {
      received += chunk.length;
      if (received > info.bytes) {
        fail(`the launcher sent more than the announced ${info.bytes} bytes`);
        return false;
      }
      return stream.write(chunk);
    };
    // The archive often arrives in the same read as the answer line.
    if (opened.rest.length > 0) take(opened.rest);
    socket.on('data', (chunk: Buffer) => {
      if (!take(chunk)) socket.pause();
    });
    stream.on('drain', () => socket.resume());
    // A consumer that gives up (destroys the stream) must not keep the connection open.
    stream.on('close', () => socket.destroy());
    socket.on('error', (error) => fail(`connection broke after ${received} of ${info.bytes} bytes: ${error.message}`));
    socket.on('end', () => {
      if (received === info.bytes) stream.end();
      else fail(`the archive ended after ${received} of ${info.bytes} bytes`);
    });
    socket.resume();
    return stream;
  }

  /** The migration failed: the stopped service runs on in its own container. */
  async resume(): Promise<ResumeResult> {
    const fields = await this.simple('resume', this.requestTimeoutMs);
    const mode = fields.get('mode');
    return {
      mode: mode === 'restored' ? 'restored' : 'running',
      pid: this.int('resume', fields, 'pid'),
      processes: this.int('resume', fields, 'procs'),
    };
  }

  /** The migration succeeded (or this restore target is not wanted): the launcher kills the tree and exits. */
  async discard(): Promise<void> {
    await this.simple('discard', this.requestTimeoutMs);
  }

  /**
   * Sends `archive` (a checkpoint() stream, possibly from another host) to a launcher started in restore mode
   * and resolves once the service runs again. On failure the launcher keeps waiting, so a retry is possible.
   */
  async restore(archive: Readable): Promise<RestoreResult> {
    const opened = await this.open('restore', archive, this.operationTimeoutMs);
    opened.socket.destroy();
    const fields = this.parseAnswer('restore', opened.line);
    return {
      restoreMs: this.int('restore', fields, 'restore_ms'),
      receiveMs: this.int('restore', fields, 'receive_ms'),
      pid: this.int('restore', fields, 'pid'),
      processes: this.int('restore', fields, 'procs'),
      bytes: this.int('restore', fields, 'bytes'),
    };
  }

  private async simple(verb: string, timeoutMs: number): Promise<Map<string, string>> {
    const opened = await this.open(verb, undefined, timeoutMs);
    opened.socket.destroy();
    return this.parseAnswer(verb, opened.line);
  }

  /**
   * Connects, sends `VERB\n` (and `body`, then half-closes) and resolves with the answer line and the socket,
   * paused, for whatever follows.
   */
  private open(verb: string, body: Readable | undefined, timeoutMs: number): Promise<Opened> {
    let pinned: { path: string; close: () => void } | undefined;
    try {
      if (this.pinSocket) pinned = pinControlSocket(this.socketPath, verb, this.where);
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    return new Promise<Opened>((resolve, reject) => {
      const socket = createConnection({ path: pinned?.path ?? this.socketPath });
      socket.once('connect', () => pinned?.close());
      socket.once('close', () => pinned?.close());
      let buffered = Buffer.alloc(0);
      let settled = false;
      let connected = false;
      let bodyError: Error | undefined;
      const finish = (error: LauncherError | undefined, result?: Opened) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.removeAllListeners('data');
        if (error !== undefined) {
          socket.destroy();
          body?.unpipe(socket);
          reject(error);
        } else if (result !== undefined) {
          resolve(result);
        }
      };
      const timer = setTimeout(
        () =>
          finish(
            new LauncherError(
              verb,
              this.where,
              'timeout',
              `no answer within ${timeoutMs} ms`,
              'the launcher serves one request at a time; is another one running?',
            ),
          ),
        timeoutMs,
      );
      socket.once('connect', () => {
        connected = true;
        socket.write(`${verb}\n`);
        if (body === undefined) return;
        body.once('error', (error: Error) => {
          // The launcher sees a cut-off archive and refuses it; what broke on our side is the better message.
          bodyError = error;
          finish(
            new LauncherError(
              verb,
              this.where,
              'stream',
              `the archive stream failed: ${error.message}`,
              'the target launcher is still waiting for an archive',
            ),
          );
        });
        body.pipe(socket);
      });
      socket.on('data', (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        const newline = buffered.indexOf(0x0a);
        if (newline < 0) {
          if (buffered.length > MAX_LINE)
            finish(new LauncherError(verb, this.where, 'protocol', 'answer line too long: is this a ums-launcher socket?'));
          return;
        }
        socket.pause();
        // An answer before the whole archive went out (an early refusal): stop sending.
        body?.unpipe(socket);
        finish(undefined, { socket, line: buffered.subarray(0, newline).toString('utf8'), rest: buffered.subarray(newline + 1) });
      });
      socket.on('error', (error: NodeJS.ErrnoException) => {
        if (settled) return;
        if (!connected) {
          const hint =
            error.code === 'ENOENT'
              ? 'no control socket: is the container running, with this directory bind-mounted at /run/ums-launcher?'
              : error.code === 'ECONNREFUSED'
                ? 'nobody listens on the socket: the launcher exited (container stopped or discarded)'
                : undefined;
          finish(new LauncherError(verb, this.where, 'unreachable', `${error.code ?? ''} ${error.message}`.trim(), hint));
          return;
        }
        // EPIPE while sending the archive: the launcher stopped reading; its answer may still be on the way.
        if (error.code === 'EPIPE' && body !== undefined) return;
        finish(new LauncherError(verb, this.where, bodyError !== undefined ? 'stream' : 'protocol', `connection broke: ${error.message}`));
      });
      socket.on('end', () =>
        finish(
          new LauncherError(
            verb,
            this.where,
            'protocol',
            'the launcher closed the connection without answering',
            'see the container log (ums-launcher: lines)',
          ),
        ),
      );
    });
  }

  private parseAnswer(verb: string, line: string): Map<string, string> {
    if (line.startsWith('err ')) {
      throw new LauncherError(verb, this.where, 'refused', line.slice(4).replace(/^[a-z]+: /, ''));
    }
    if (line !== 'ok' && !line.startsWith('ok ')) {
      throw new LauncherError(verb, this.where, 'protocol', `unexpected answer '${line.slice(0, 200)}'`);
    }
    const fields = new Map<string, string>();
    for (const part of line.slice(3).split(' ')) {
      const eq = part.indexOf('=');
      if (eq > 0) fields.set(part.slice(0, eq), part.slice(eq + 1));
    }
    return fields;
  }

  private int(verb: string, fields: Map<string, string>, key: string): number {
    const raw = fields.get(key);
    const value = raw === undefined ? Number.NaN : Number(raw);
    if (!Number.isInteger(value)) {
      throw new LauncherError(
        verb,
        this.where,
        'protocol',
        `answer lacks an integer ${key} (got ${String(raw)}): launcher too old or too new?`,
      );
    }
    return value;
  }
}
