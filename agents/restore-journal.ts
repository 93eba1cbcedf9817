import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { ContainerName, MigrationId } from '../core/events.js';

const Entry = z.object({ migrationId: MigrationId, container: ContainerName, at: z.string() });
export type JournalEntry = z.infer<typeof Entry>;

/**
 * The destination's own record, on the host's disk, of the restores it has started: a container is
 * written here before the engine may create it, and the entry stays until the migration is over. It is
 * how an agent that restarted knows which container is its own work (to report it restored, or to
 * remove it when the migration rolled back) and never touches a container someone else made.
 */
export class RestoreJournal {
  constructor(private readonly dir: string) {}

  private file(migrationId: string): string {
    return join(this.dir, `${MigrationId.parse(migrationId)}.json`);
  }

  async record(migrationId: string, container: string): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeFile(this.file(migrationId), JSON.stringify({ migrationId, container, at: new Date().toISOString() }));
  }

  async get(migrationId: string): Promise<JournalEntry | undefined> {
    try {
      return Entry.parse(JSON.parse(await readFile(this.file(migrationId), 'utf8')));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new Error(
        `the restore journal entry for ${migrationId} in ${this.dir} is unreadable (${(error as Error).message}); remove it once the container is checked by hand`,
      );
    }
  }

  async forget(migrationId: string): Promise<void> {
    await rm(this.file(migrationId), { force: true });
  }

  async list(): Promise<JournalEntry[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const entries = await Promise.all(names.filter((n) => n.endsWith('.json')).map((n) => this.get(n.slice(0, -5)).catch(() => undefined)));
    return entries.filter((e): e is JournalEntry => e !== undefined);
  }
}
