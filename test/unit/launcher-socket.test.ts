/**
 * The launcher client opens its control socket without following links (launcher/client.ts,
 * pinControlSocket): a real socket in a root-owned directory writable by nobody else is connected to
 * through /proc/self/fd; a symbolic link in its place (to another socket), a directory that is a link,
 * writable by others or owned by another user, or a file that is not a socket, are refused. Needs root
 * (chown); every unit test here runs as root.
 */
import assert from 'node:assert/strict';
import { chmod, chown, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { LauncherClient, LauncherError, pinControlSocket } from '../../launcher/client.js';

describe('launcher control socket: opened without following links', () => {
  let base: string;
  let server: Server;
  let other: Server;

  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'ums-ls-'));
    await mkdir(join(base, 'good'), { mode: 0o755 });
    await mkdir(join(base, 'elsewhere'), { mode: 0o755 });
    server = await listen(
      join(base, 'good', 'control.sock'),
      'ok version=1 mode=running pid=7 procs=1 rss_kb=4 checkpoints=0 restores=0 last_dump_ms=-1 last_restore_ms=-1 last_tar_bytes=0',
    );
    other = await listen(join(base, 'elsewhere', 'engine.sock'), 'HTTP/1.1 400 Bad Request');
  });

  after(async () => {
    server?.close();
    other?.close();
    if (base !== undefined) await rm(base, { recursive: true, force: true });
  });

  it('connects to the real socket through its descriptor', async () => {
    const pinned = pinControlSocket(join(base, 'good', 'control.sock'), 'status', 'test');
    assert.match(pinned.path, /^\/proc\/self\/fd\/\d+$/);
    pinned.close();
    const status = await new LauncherClient({ socketPath: join(base, 'good', 'control.sock') }).status();
    assert.equal(status.mode, 'running');
  });

  it('refuses a symbolic link in place of the socket', async () => {
    await mkdir(join(base, 'link'), { mode: 0o755 });
    await symlink(join(base, 'elsewhere', 'engine.sock'), join(base, 'link', 'control.sock'));
    await assert.rejects(new LauncherClient({ socketPath: join(base, 'link', 'control.sock') }).status(), (error: unknown) => {
      assert.ok(error instanceof LauncherError && error.failure === 'unreachable');
      assert.match(error.message, /control.sock is a symbolic link/);
      return true;
    });
  });

  it('refuses a file that is not a socket', async () => {
    await mkdir(join(base, 'file'), { mode: 0o755 });
    await writeFile(join(base, 'file', 'control.sock'), 'x');
    assert.throws(() => pinControlSocket(join(base, 'file', 'control.sock'), 'status', 'test'), /is not a socket/);
  });

  it('refuses a directory that is a link, writable by others, or not owned by root', async () => {
    await symlink(join(base, 'good'), join(base, 'dirlink'));
    assert.throws(
      () => pinControlSocket(join(base, 'dirlink', 'control.sock'), 'status', 'test'),
      /is not a directory \(a symbolic link\)/,
    );
    await mkdir(join(base, 'open'));
    await chmod(join(base, 'open'), 0o777);
    assert.throws(() => pinControlSocket(join(base, 'open', 'control.sock'), 'status', 'test'), /writable by group or others \(mode 777\)/);
    await mkdir(join(base, 'user'), { mode: 0o755 });
    await chown(join(base, 'user'), 1000, 1000);
    assert.throws(() => pinControlSocket(join(base, 'user', 'control.sock'), 'status', 'test'), /owned by uid 1000, not root/);
  });

  it('says so when there is no socket', async () => {
    await assert.rejects(new LauncherClient({ socketPath: join(base, 'good', 'missing.sock') }).status(), /ENOENT.*no control socket/);
    await assert.rejects(new LauncherClient({ socketPath: join(base, 'nowhere', 'control.sock') }).status(), /ENOENT.*bind-mounted/);
  });
});

function listen(path: string, answer: string): Promise<Server> {
  return new Promise((resolve) => {
    const server = createServer((socket) => socket.end(`${answer}\n`));
    server.listen(path, () => resolve(server));
  });
}
