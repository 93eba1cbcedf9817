/**
 * RestoreJob (the destination's side of a migration) against bad input, issue 3: a missing chunk, a
 * truncated chunk, a corrupted chunk, a manifest replaced in the store, a manifest signed by another agent than
 * the source or altered after signing (its new digest announced), a manifest that does not parse, an
 * expired and a forged signed URL, a validly signed URL for another object and plain http at an endpoint
 * not configured as allowed (both refused by the job's URL policy before any request); sealed chunks
 * (core/checkpoint-sealing.ts) altered or swapped with their digests re-announced (as an attacker holding
 * the store and the broker would), and a checkpoint sealed for another agent's key; and a full disk at
 * the destination, both as the job's own check sees it
 * (container storage too small for the size the manifest gives) and as it really happens (the disk Podman
 * spools the incoming archive on fills up half-way). Each is refused with the right RestoreRefusedError
 * code, names the chunk where it concerns one, and leaves nothing behind: no container on the host, no
 * restore performed by Podman (its event log), and no spooled archive in Podman's TMPDIR (the host's
 * staging dir). The job has no archive file of its own: it streams verified chunks straight into Podman's
 * restore request, which Podman spools to `<TMPDIR>/restoreNNN` (the spool-full case's error shows that
 * path); a refusal aborts the request before its end, so the archive never completes and Podman deletes
 * the spool. One good case restores for real (the counter goes on from where it was frozen), so the
 * refusals are measured against input that does work.
 *
 * Everything is real, nothing is mocked: a nats-server with JetStream (the job follows the migration's
 * events on it and publishes restore.prepared / restore.urls-needed through it), Azurite (it verifies SAS
 * signatures and expiry, so the expired and forged URLs are refused by the store itself with 403, as Azure
 * would), simulated Podman hosts (own storage, runroot and network namespace) with the counter image, a
 * real CRIU checkpoint archive cut into 64 KiB chunks and sealed for the destination by uploadChunked (per
 * case, since the sealing binds the migration id), and real tmpfs mounts, resized
 * per case, under a second destination's container storage and spool dir. The point of the issue is what happens at those boundaries (HTTP status
 * codes from a store that checks signatures, Podman's handling of an import aborted half-way, the free
 * space Podman reports, which containers exist afterwards): a mock would only repeat our own assumptions
 * about them. The source side (checkpoint.chunk / checkpoint.uploaded events and the chunk-urls command) is
 * played by the test with the real chunk refs from the manifest, or with the lie a case needs. The saga
 * (the source resumes) is tested elsewhere.
 *
 * Needs root (tmpfs, Podman), podman, runc, CRIU >= 4.1 (infra/host-setup.sh) and Azurite (npm ci).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { PodmanEngine } from '../../agents/podman-engine.js';
import { ArchivePolicyCheck } from '../../agents/archive-policy.js';
import { RestoreAbandonedError, RestoreJob, RestoreRefusedError, type RestoredArchive } from '../../agents/restore-job.js';
import { artifactPrefix, chunkKey, manifestKey, type ChunkRef, type Manifest } from '../../core/checkpoint-artifact.js';
import { ChunkSealer, generateSealingKeyPair, type SealingPublicKey } from '../../core/checkpoint-sealing.js';
import type { ContainerSecurityProfile } from '../../core/container-security.js';
import { uploadChunked } from '../../core/chunked-upload.js';
import { generateSigningKeyPair, type SigningKeyPair } from '../../core/signed-envelope.js';
import { makeEvent, type Artifact, type CommandData, type EventData, type EventName, type FailureCode } from '../../core/events.js';
import { createLogger } from '../../core/log.js';
import { agentPrincipal } from '../../core/event-identity.js';
import { connectNatsBus, type NatsEventBus } from '../../core/nats-event-bus.js';
import type { ObjectStore } from '../../core/object-store.js';
import { openObjectStore } from '../../core/object-stores/open-object-store.js';
import { buildCounterImage, DEFAULT_COUNTER_IMAGE, type CounterImage } from '../../infra/images/build-counter-image.js';
import { readTicks } from '../../infra/images/counter-output.js';
import { startNatsServer, type NatsServer } from '../../infra/nats-server.js';
import { startAzurite, type ObjectServer } from '../../infra/object-servers.js';
import { startPodmanHost, type PodmanHost } from '../../infra/podman-host.js';

const execFileAsync = promisify(execFile);

const IMAGE = DEFAULT_COUNTER_IMAGE;
const NAME = 'rj-counter';
const SOURCE = 'azure-eastus-1';
const DESTINATION = 'gcp-us-central1-1';
const CHUNK_BYTES = 64 * 1024;
/** The chunk the chunk cases spoil: not the first, not the last. */
const BAD = 2;
/** A hung case fails within this rather than hanging the suite. */
const IDLE_TIMEOUT_MS = 15_000;

/** The good archive in clear, as the engine gave it; each case seals it for its own migration. */
interface GoodArchive {
  archive: Buffer;
  chunkCount: number;
  /** The counter's last count before the freeze. */
  frozenAt: number;
  /** The source container's security profile, from its inspect. */
  profile: ContainerSecurityProfile;
}

/** The destination's sealing key pair (an agent keeps its own in its state dir). */
const DESTINATION_KEY = generateSealingKeyPair();
/** The source's manifest-signing key pair: its public half is what the prepare command names. */
const SOURCE_SIGNING_KEY = generateSigningKeyPair();

/** A destination host and the engine the job drives. */
interface Destination {
  host: PodmanHost;
  engine: PodmanEngine;
}

/** What a case stores, announces and signs; every field defaults to the good artifact, sealed for the destination. */
interface CaseInput {
  /** Spoils the stored (sealed) chunks: bodies to store instead by index; undefined removes the chunk from the store. */
  spoilChunks?: (sealed: Buffer[]) => Array<Buffer | undefined>;
  /** What the checkpoint.chunk events announce, from the real refs and what the store holds (default: the real refs). */
  announceChunks?: (refs: ChunkRef[], stored: Array<Buffer | undefined>) => ChunkRef[];
  /** Replaces the stored manifest. */
  manifestBody?: (manifest: Manifest) => Buffer;
  /** Announces the digest of the replaced manifest (as one holding the broker too would), not the source's. */
  announceManifestDigestOfStored?: boolean;
  /** Who signs the manifest (default: the source, with the key the prepare command names). */
  manifestSigner?: { agentId: string; key: SigningKeyPair };
  /** Whose key the chunks are sealed for (default: the destination's). */
  sealFor?: SealingPublicKey;
  /** What checkpoint.uploaded announces, over the real artifact. */
  announce?: Partial<Pick<Artifact, 'manifestSha256' | 'sizeBytes' | 'chunkCount' | 'sha256'>>;
  /** TTL per chunk URL (default 300 s). */
  chunkTtlSeconds?: (index: number) => number;
  /** Alters the signed URL of a chunk (e.g. forges its signature). */
  alterChunkUrl?: (index: number, url: string) => string;
  /** Time to let pass between signing the URLs and handing them over (expiry). */
  waitAfterSigningMs?: number;
  /** Default: the main destination host. */
  destination?: Destination;
  /** Signs chunk `index`'s URL for another key of the same store (a valid signature for the wrong object). */
  signChunkAs?: (index: number, prefix: string) => string | undefined;
  /** The endpoints the job allows besides the clouds' https hosts (default: Azurite's, as the stack sets). */
  allowedEndpoints?: string[];
  /**
   * Another agent (not the migration's source) states, as itself, that the checkpoint failed and announces a
   * spoiled chunk 0 before the source announces anything: the job must follow the source's facts only.
   */
  forgedBy?: string;
  /** The registered profile the archive policy holds the archive to (agents/archive-policy.ts); default: the source's own. */
  profile?: ContainerSecurityProfile;
  /** The saga turns back while the job's preflight still runs (the agent's abandon, as a rolling-back record makes it). */
  abandonInPreflight?: string;
}

interface CaseRun {
  migrationId: string;
  destination: Destination;
  /** What the job emitted, in order. */
  emitted: EventName[];
  /** The chunks as they lie in the store. */
  stored: Array<Buffer | undefined>;
  result: Promise<RestoredArchive>;
}

describe('RestoreJob refuses bad input before anything is restored', { timeout: 600_000 }, () => {
  const log = createLogger('restore-job-test');
  let base: string;
  let main: Destination;
  let small: Destination | undefined;
  let nats: NatsServer;
  let azurite: ObjectServer;
  let bus: NatsEventBus;
  let store: ObjectStore;
  let image: CounterImage;
  let good: GoodArchive;
  const mounts: string[] = [];
  /** What each spool mount holds with nothing spooled. */
  const emptyUsage = new Map<string, number>();

  before(async () => {
    // Short path: the host's API socket lives below it (unix socket paths are limited to 108 bytes).
    base = await mkdtemp(join(tmpdir(), 'ums-rj-'));
    for (const d of ['nats', 'azurite']) await mkdir(join(base, d), { recursive: true });
    // Each assigned as soon as it is up, so that after() stops it even if another fails to start.
    await Promise.all([
      startPodmanHost({ name: 'rj', dir: join(base, 'main') }).then((host) => {
        main = { host, engine: new PodmanEngine({ socketPath: host.socketPath, where: 'host rj' }) };
      }),
      startNatsServer(join(base, 'nats')).then((server) => (nats = server)),
      startAzurite(join(base, 'azurite')).then((server) => (azurite = server)),
    ]);
    const { host } = main;
    bus = await connectNatsBus({ servers: nats.url, name: 'restore-job-test' });
    store = await openObjectStore(`${azurite.storeUrl}/restore-job`, { ...process.env, ...azurite.env });
    image = await buildCounterImage(host.url, IMAGE, { env: host.env });

    // A real checkpoint of a running counter, stored the way the source stores it. 1 MiB of random
    // memory makes the archive about 1.2 MB: some 20 chunks of 64 KiB.
    await host.podman(['run', '-d', '--name', NAME, '-e', 'COUNTER_MEM_MIB=1', IMAGE]);
    await waitForCount(host, NAME, 5);
    const profile = (await main.engine.securityProfile(NAME))!;
    const archive = await readAll(await main.engine.checkpoint(NAME));
    const frozenAt = maxCount(await readTicks(host.url, NAME));
    // The name must be free at the destination: the preflight refuses an existing one.
    await main.engine.removeContainer(NAME, { force: true });
    assert.equal(await main.engine.inspectContainer(NAME), undefined);

    const chunkCount = Math.ceil(archive.length / CHUNK_BYTES);
    assert.ok(chunkCount > BAD + 2, `the archive (${archive.length} bytes) has several chunks (${chunkCount})`);
    assert.ok(archive.includes('ustar'), 'the archive in clear is a tar (its headers say "ustar")');
    good = { archive, chunkCount, frozenAt, profile };
    console.log(`archive: ${archive.length} bytes in ${chunkCount} chunks of ${CHUNK_BYTES}; counter frozen at ${frozenAt}`);
  });

  after(async () => {
    await bus?.close().catch(() => undefined);
    // destroy() unmounts everything below the host's dir, the small host's tmpfs included.
    await Promise.allSettled([main?.host.destroy(), small?.host.destroy(), nats?.stop(), azurite?.stop()]);
    for (const mount of mounts) await execFileAsync('umount', [mount]).catch(() => undefined);
    if (base !== undefined) await rm(base, { recursive: true, force: true });
  });

  /**
   * Seals the good archive for the case's migration and stores it under its prefix as the source does
   * (uploadChunked), spoils what the case spoils, runs a RestoreJob and plays the source.
   */
  async function startCase(label: string, input: CaseInput = {}): Promise<CaseRun> {
    const destination = input.destination ?? main;
    const migrationId = `rj-${label}-${randomUUID().slice(0, 8)}`;
    const prefix = artifactPrefix(migrationId);
    const sealer = ChunkSealer.forRecipient(input.sealFor ?? DESTINATION_KEY.publicKey, migrationId);
    const uploaded = await uploadChunked(Readable.from([good.archive]), store, prefix, {
      migrationId,
      chunkBytes: CHUNK_BYTES,
      parallel: 4,
      sealer,
      signer: input.manifestSigner ?? { agentId: SOURCE, key: SOURCE_SIGNING_KEY },
      onChunk: async () => undefined,
    });
    const { manifest } = uploaded;
    const sealed = await Promise.all(manifest.chunks.map(async (chunk) => readAll(await store.get(chunkKey(prefix, chunk.index)))));
    const stored: Array<Buffer | undefined> = input.spoilChunks?.(sealed) ?? sealed;
    for (const [index, body] of stored.entries()) {
      if (body === sealed[index]) continue;
      if (body === undefined) await store.delete(chunkKey(prefix, index));
      else await store.put(chunkKey(prefix, index), Readable.from([body]), { contentType: 'application/octet-stream' });
    }
    let manifestSha256 = uploaded.manifestSha256;
    if (input.manifestBody) {
      const body = input.manifestBody(manifest);
      await store.put(manifestKey(prefix), Readable.from([body]), { contentType: 'application/json' });
      if (input.announceManifestDigestOfStored === true) manifestSha256 = sha256(body);
    } else {
      manifestSha256 = sha256(await readAll(await store.get(manifestKey(prefix))));
      assert.equal(manifestSha256, uploaded.manifestSha256);
    }
    const refs = input.announceChunks?.(manifest.chunks, stored) ?? manifest.chunks;

    const manifestUrl = await store.signedReadUrl(manifestKey(prefix), 300);
    const chunkUrls = await Promise.all(
      manifest.chunks.map(async (chunk) => {
        const key = input.signChunkAs?.(chunk.index, prefix) ?? chunkKey(prefix, chunk.index);
        const signed = await store.signedReadUrl(key, input.chunkTtlSeconds?.(chunk.index) ?? 300);
        return { index: chunk.index, url: input.alterChunkUrl?.(chunk.index, signed.url) ?? signed.url };
      }),
    );
    if (input.waitAfterSigningMs !== undefined) await sleep(input.waitAfterSigningMs);

    const policy = new ArchivePolicyCheck(input.profile ?? good.profile, image.id, DESTINATION);
    const emitted: EventName[] = [];
    let prepared!: () => void;
    const preparedPromise = new Promise<void>((resolve) => (prepared = resolve));
    const job: RestoreJob = new RestoreJob({
      command: {
        migrationId,
        epoch: 1,
        approach: 'container',
        container: NAME,
        image: IMAGE,
        imageId: image.id,
        sourceAgent: SOURCE,
        artifact: { storeUrl: store.url, prefix },
        sourceManifestKey: SOURCE_SIGNING_KEY.publicKey,
      },
      engine: destination.engine,
      bus,
      emit: async <N extends EventName>(name: N, data: EventData<N>): Promise<void> => {
        emitted.push(name);
        await bus.publishEvent(makeEvent(name, `/agents/${DESTINATION}`, data));
        if (name === 'restore.prepared') prepared();
      },
      agentId: DESTINATION,
      sealingKey: DESTINATION_KEY.privateKey,
      log: log.child({ migrationId }),
      parallel: 4,
      urlLowWater: 2,
      urlBatch: 8,
      idleTimeoutMs: IDLE_TIMEOUT_MS,
      ...(input.abandonInPreflight !== undefined
        ? { checkRequirements: async (): Promise<void> => job.abandon(input.abandonInPreflight!) }
        : {}),
      beforeRestore: async () => undefined,
      restoreFrom: (archive) => destination.engine.restoreFromArchive(NAME, archive),
      removePartial: () => destination.engine.removeContainer(NAME, { force: true }),
      urlPolicy: { endpoints: input.allowedEndpoints ?? [azurite.endpoint] },
      inspectArchive: (chunk, last) => policy.write(chunk, last),
    });
    // The source's chunk-urls command, all of it up front: no case waits for URLs it does not have.
    const urls: CommandData<'chunk-urls'> = {
      migrationId,
      epoch: 1,
      manifestUrl: manifestUrl.url,
      chunks: chunkUrls,
      expiresAt: manifestUrl.expiresAt,
    };
    job.addUrls(urls);
    const result = job.run();
    result.catch(() => undefined);

    // The source freezes once the destination is prepared, then announces the chunks and the upload.
    await Promise.race([
      preparedPromise,
      result.then(
        () => undefined,
        () => undefined,
      ),
    ]);
    const source = `/agents/${SOURCE}`;
    if (input.forgedBy !== undefined) {
      const agent = input.forgedBy;
      const [first] = refs;
      assert.ok(first);
      await bus.publishEvent(
        makeEvent('checkpoint.chunk', `/agents/${agent}`, {
          migrationId,
          agent,
          chunk: { ...first, sha256: '0'.repeat(64) },
          sealing: sealer.sealing,
        }),
      );
      await bus.publishEvent(
        makeEvent('checkpoint.failed', `/agents/${agent}`, {
          migrationId,
          agent,
          code: 'engine-failed',
          reason: 'forged',
          containerCheckpointed: false,
        }),
      );
    }
    for (const chunk of refs) {
      await bus.publishEvent(makeEvent('checkpoint.chunk', source, { migrationId, agent: SOURCE, chunk, sealing: sealer.sealing }));
    }
    const now = new Date().toISOString();
    const artifact: Artifact = {
      storeUrl: store.url,
      prefix,
      sizeBytes: manifest.sizeBytes,
      sha256: manifest.sha256,
      chunkCount: manifest.chunks.length,
      manifestSha256,
      ...input.announce,
    };
    await bus.publishEvent(
      makeEvent('checkpoint.uploaded', source, {
        migrationId,
        agent: SOURCE,
        container: NAME,
        image: IMAGE,
        artifact,
        checkpointStartedAt: now,
        firstByteAt: now,
        uploadedAt: now,
      }),
    );
    return { migrationId, destination, emitted, result, stored };
  }

  /** The job refuses with `code`; nothing is left: no container, no restore by Podman, no spooled archive. */
  async function assertRefused(run: CaseRun, code: FailureCode | FailureCode[], message: RegExp, restoresBefore: number): Promise<void> {
    const codes = Array.isArray(code) ? code : [code];
    const { host, engine } = run.destination;
    await assert.rejects(run.result, (error: unknown) => {
      assert.ok(error instanceof RestoreRefusedError, `RestoreRefusedError, got ${String(error)}`);
      assert.ok(codes.includes(error.code), `code ${codes.join(' or ')}, got ${error.code}: ${error.message}`);
      assert.match(error.message, message);
      console.log(`${run.migrationId}: refused (${error.code}): ${error.message}`);
      return true;
    });
    assert.equal(await engine.inspectContainer(NAME), undefined, `no container "${NAME}" on host ${host.name}`);
    assert.deepEqual(
      (await engine.listContainers()).map((c) => c.name),
      [],
      `no container at all on host ${host.name}`,
    );
    assert.equal(await restoreEvents(host), restoresBefore, 'Podman restored nothing');
    // Podman spools an imported body into its TMPDIR (the host's staging dir); an aborted import must not leave it there.
    await waitFor(
      async () => (await readdir(join(host.dir, 'staging'))).length === 0,
      `${host.name}'s staging dir to be empty`,
      10_000,
    ).catch(async (error: unknown) => {
      assert.fail(`${(error as Error).message}: ${(await readdir(join(host.dir, 'staging'))).join(', ')}`);
    });
    // The job's own announcement really went out on the bus.
    assert.ok(run.emitted.includes('restore.prepared'));
    assert.ok(await lastEvent(run.migrationId, 'restore.prepared'), 'restore.prepared is on the bus');
  }

  async function restoreEvents(host: PodmanHost): Promise<number> {
    const { stdout } = await host.podman(['events', '--stream=false', '--filter', 'event=restore', '--format', '{{.Name}}']);
    return stdout.split('\n').filter((line) => line.trim() !== '').length;
  }

  async function lastEvent(migrationId: string, name: EventName) {
    // The job's facts are the destination's word.
    return bus.lastEvent(migrationId, name, agentPrincipal(DESTINATION));
  }

  it('restores good input for real: the counter goes on from where it was frozen', async () => {
    const { host, engine } = main;
    const restoresBefore = await restoreEvents(host);
    const run = await startCase('good');
    // What lies in the store is ciphertext: not one chunk shows the tar headers the archive has in clear.
    for (const [index, body] of run.stored.entries()) assert.equal(body?.includes('ustar'), false, `stored chunk ${index} is sealed`);
    const restored = await run.result;
    assert.match(restored.containerId, /^[0-9a-f]{64}$/);
    assert.equal((await engine.inspectContainer(NAME))?.state, 'running');
    assert.equal(await restoreEvents(host), restoresBefore + 1, 'Podman restored once');
    await waitForCount(host, NAME, good.frozenAt + 2);
    const ticks = await readTicks(host.url, NAME);
    assert.ok(maxCount(ticks) > good.frozenAt, `count after the restore (${maxCount(ticks)}) > count at the freeze (${good.frozenAt})`);
    assert.equal(ticks.filter((t) => t.count === 1).length, 1, 'the counter never started over');
    assert.ok(await lastEvent(run.migrationId, 'restore.prepared'), 'restore.prepared is on the bus');
    await waitFor(async () => (await lastEvent(run.migrationId, 'restore.urls-needed')) !== undefined, 'restore.urls-needed on the bus');
    await engine.removeContainer(NAME, { force: true });
    assert.equal(await engine.inspectContainer(NAME), undefined);
    await waitFor(async () => (await readdir(join(host.dir, 'staging'))).length === 0, 'the staging dir to be empty', 10_000);
  });

  it('follows the source only: checkpoint facts another agent states about the migration are ignored', async () => {
    const run = await startCase('forged', { forgedBy: 'aws-us-east-1' });
    const restored = await run.result;
    assert.match(restored.containerId, /^[0-9a-f]{64}$/);
    await main.engine.removeContainer(NAME, { force: true });
    await waitFor(async () => (await readdir(join(main.host.dir, 'staging'))).length === 0, 'the staging dir to be empty', 10_000);
  });

  it('ends with the reason when abandoned during its preflight, restores nothing, and throws nothing past the job (the agent stays up)', async () => {
    const restoresBefore = await restoreEvents(main.host);
    const run = await startCase('abandoned', { abandonInPreflight: 'migration rj-abandoned is rolling back (epoch 2)' });
    await assert.rejects(run.result, (error: unknown) => {
      assert.ok(error instanceof RestoreAbandonedError, `RestoreAbandonedError, got ${String(error)}`);
      assert.match(error.message, /rolling back \(epoch 2\)/);
      return true;
    });
    assert.equal(await main.engine.inspectContainer(NAME), undefined, 'no container');
    assert.equal(await restoreEvents(main.host), restoresBefore, 'Podman restored nothing');
  });

  it(`refuses a missing chunk (download-failed, naming chunk ${BAD})`, async () => {
    const restoresBefore = await restoreEvents(main.host);
    const run = await startCase('missing', { spoilChunks: (chunks) => chunks.map((body, i) => (i === BAD ? undefined : body)) });
    await assertRefused(run, 'download-failed', new RegExp(`chunk ${BAD}\\b.*missing`), restoresBefore);
  });

  it(`refuses a truncated chunk (size-mismatch, naming chunk ${BAD})`, async () => {
    const restoresBefore = await restoreEvents(main.host);
    const run = await startCase('truncated', {
      spoilChunks: (chunks) => chunks.map((body, i) => (i === BAD ? body.subarray(0, body.length - 1000) : body)),
    });
    await assertRefused(run, 'size-mismatch', new RegExp(`chunk ${BAD}\\b`), restoresBefore);
  });

  it(`refuses a corrupted chunk of the right size (digest-mismatch, naming chunk ${BAD})`, async () => {
    const restoresBefore = await restoreEvents(main.host);
    const run = await startCase('corrupted', { spoilChunks: (chunks) => chunks.map((body, i) => (i === BAD ? flipByte(body) : body)) });
    await assertRefused(run, 'digest-mismatch', new RegExp(`chunk ${BAD}\\b.*sha256`), restoresBefore);
  });

  /** The stored chunks' digests as announced after spoiling: the announcements lie along with the store. */
  const tamperedChunk = (index: number | string): RegExp =>
    new RegExp(`chunk ${index} fails authentication|chunk ${index} was announced differently from what the manifest lists`);
  const reannounce = (refs: ChunkRef[], stored: Array<Buffer | undefined>): ChunkRef[] =>
    refs.map((ref, i) => ({ ...ref, sha256: sha256(stored[i] ?? Buffer.alloc(0)) }));

  it(`refuses a tampered sealed chunk whose new digest is announced too (seal-invalid, naming chunk ${BAD})`, async () => {
    const restoresBefore = await restoreEvents(main.host);
    const run = await startCase('tampered', {
      spoilChunks: (chunks) => chunks.map((body, i) => (i === BAD ? flipByte(body) : body)),
      announceChunks: reannounce,
    });
    // Whichever check meets the chunk first refuses it: its seal, or the signed manifest, which still lists its old digest.
    await assertRefused(run, ['seal-invalid', 'manifest-invalid'], tamperedChunk(BAD), restoresBefore);
  });

  it(`refuses two sealed chunks swapped in the store, their digests announced swapped (seal-invalid, naming chunk ${BAD})`, async () => {
    const restoresBefore = await restoreEvents(main.host);
    const run = await startCase('swapped', {
      spoilChunks: (chunks) => chunks.map((body, i) => (i === BAD ? chunks[BAD + 1] : i === BAD + 1 ? chunks[BAD] : body)),
      announceChunks: reannounce,
    });
    // Both are fetched at once: whichever is checked first is the one named, by its seal or the signed manifest.
    await assertRefused(run, ['seal-invalid', 'manifest-invalid'], tamperedChunk(`(${BAD}|${BAD + 1})`), restoresBefore);
  });

  it("refuses a checkpoint sealed for another agent's key (seal-invalid, before any chunk is fetched)", async () => {
    const restoresBefore = await restoreEvents(main.host);
    const run = await startCase('other-key', { sealFor: generateSealingKeyPair().publicKey });
    await assertRefused(run, 'seal-invalid', /data key .* cannot be unwrapped: the data key was wrapped for key/, restoresBefore);
  });

  it('refuses a manifest whose bytes differ from the digest the source announced (manifest-invalid)', async () => {
    const restoresBefore = await restoreEvents(main.host);
    // A well-formed manifest, but not the one the source wrote: it claims a different whole-archive digest.
    const run = await startCase('manifest-replaced', {
      manifestBody: (manifest) => Buffer.from(JSON.stringify({ ...manifest, sha256: 'f'.repeat(64) })),
    });
    await assertRefused(run, 'manifest-invalid', /manifest has sha256 .* the source announced/, restoresBefore);
  });

  it('refuses a manifest signed by another agent than the source (manifest-invalid), its digest announced', async () => {
    const restoresBefore = await restoreEvents(main.host);
    const run = await startCase('manifest-other-signer', { manifestSigner: { agentId: 'aws-us-east-1', key: generateSigningKeyPair() } });
    await assertRefused(run, 'manifest-invalid', /manifest is refused \(signer-unknown\): .*signed by aws-us-east-1/, restoresBefore);
  });

  it('refuses a manifest altered after the source signed it, its new digest announced (manifest-invalid)', async () => {
    const restoresBefore = await restoreEvents(main.host);
    // As an attacker holding the store and the broker would: the manifest changed, its announced digest to match.
    const altered = (manifest: Manifest) => Buffer.from(JSON.stringify({ ...manifest, createdAt: new Date(0).toISOString() }));
    const run = await startCase('manifest-altered', { manifestBody: altered, announceManifestDigestOfStored: true });
    await assertRefused(run, 'manifest-invalid', /manifest is refused \(signature-invalid\): .*altered after signing/, restoresBefore);
  });

  it('refuses a manifest that does not parse (manifest-invalid), its digest announced so the parse is reached', async () => {
    const restoresBefore = await restoreEvents(main.host);
    const garbage = Buffer.from('{"formatVersion": 2, "chunks": [ this is not json');
    const run = await startCase('manifest-garbage', { manifestBody: () => garbage, announce: { manifestSha256: sha256(garbage) } });
    await assertRefused(run, 'manifest-invalid', /manifest does not parse/, restoresBefore);
  });

  it(`refuses an expired signed URL (url-rejected by the store, naming chunk ${BAD})`, async () => {
    const restoresBefore = await restoreEvents(main.host);
    const run = await startCase('expired', { chunkTtlSeconds: (i) => (i === BAD ? 1 : 300), waitAfterSigningMs: 2_500 });
    await assertRefused(run, 'url-rejected', new RegExp(`chunk ${BAD}\\b.*HTTP 403`), restoresBefore);
  });

  it(`refuses a forged signed URL (url-rejected by the store, naming chunk ${BAD})`, async () => {
    const restoresBefore = await restoreEvents(main.host);
    const run = await startCase('forged', {
      alterChunkUrl: (i, url) => {
        if (i !== BAD) return url;
        const forged = new URL(url);
        assert.ok(forged.searchParams.get('sig'), 'an Azure SAS carries its signature in "sig"');
        forged.searchParams.set('sig', randomBytes(32).toString('base64'));
        return forged.toString();
      },
    });
    await assertRefused(run, 'url-rejected', new RegExp(`chunk ${BAD}\\b.*HTTP 403`), restoresBefore);
  });

  it(`refuses a validly signed URL for another object of the same store (url-rejected before any request, naming chunk ${BAD})`, async () => {
    const restoresBefore = await restoreEvents(main.host);
    // Another migration's chunk, in the same container: the store would serve it (its signature is good).
    const other = artifactPrefix(`rj-other-${randomUUID().slice(0, 8)}`);
    await store.put(chunkKey(other, BAD), Readable.from([Buffer.from("another migration's chunk")]), {
      contentType: 'application/octet-stream',
    });
    const run = await startCase('other-key', { signChunkAs: (i) => (i === BAD ? chunkKey(other, BAD) : undefined) });
    await assertRefused(run, 'url-rejected', new RegExp(`chunk ${BAD}\\b.*not allowed`), restoresBefore);
  });

  it('refuses plain-http URLs when the store endpoint is not configured as allowed (url-rejected)', async () => {
    const restoresBefore = await restoreEvents(main.host);
    const run = await startCase('http-not-allowed', { allowedEndpoints: [] });
    await assertRefused(run, 'url-rejected', /chunk \d+\b.*not allowed.*plain http/, restoresBefore);
  });

  it('refuses an archive asking for more than the registered profile (archive-refused), before its end reaches Podman', async () => {
    const restoresBefore = await restoreEvents(main.host);
    // As if the source had registered the container without CAP_NET_RAW: the archive's spec.dump holds it.
    const profile = { ...good.profile, capabilities: good.profile.capabilities.filter((cap) => cap !== 'CAP_NET_RAW') };
    const run = await startCase('policy', { profile });
    await assertRefused(
      run,
      'archive-refused',
      /before anything was restored: it adds capabilities beyond the registered set: CAP_NET_RAW/,
      restoresBefore,
    );
  });

  /**
   * A second destination with its container storage (graph root) and its Podman TMPDIR (where an imported
   * archive is spooled) each on a tmpfs: roomy while the image loads, resized per case with remount.
   */
  async function smallDestination(): Promise<Destination & { root: string; spool: string }> {
    const dir = join(base, 'small');
    const root = join(dir, 'root');
    const spool = join(dir, 'staging');
    if (small === undefined) {
      for (const [mountPoint, size] of [
        [root, '256m'],
        [spool, '64m'],
      ] as const) {
        await mkdir(mountPoint, { recursive: true });
        await execFileAsync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'ums-rj-small', mountPoint]);
        mounts.push(mountPoint);
      }
      const host = await startPodmanHost({ name: 'rjsmall', dir });
      small = { host, engine: new PodmanEngine({ socketPath: host.socketPath, where: 'host rjsmall' }) };
      assert.equal((await buildCounterImage(host.url, IMAGE, { env: host.env })).id, image.id, 'the same image id as the source');
      emptyUsage.set(spool, await usedBytes(spool));
    }
    return { ...small, root, spool };
  }

  /**
   * Restarts the small destination's Podman service. Podman 4.3.1 removes the spool file of an import its client
   * aborted but keeps it open, until Go's garbage collector closes it at some unknown moment: its blocks count
   * against the spool until then, and when freed they would give this case's spool room for the whole archive.
   */
  async function freshService<T extends Destination>(destination: T): Promise<T> {
    await destination.host.stop();
    const host = await startPodmanHost({ name: destination.host.name, dir: destination.host.dir });
    small = { host, engine: new PodmanEngine({ socketPath: host.socketPath, where: `host ${host.name}` }) };
    return { ...destination, ...small };
  }

  async function usedBytes(mountPoint: string): Promise<number> {
    const disk = await statfs(mountPoint);
    return (disk.blocks - disk.bfree) * disk.bsize;
  }

  /**
   * Resizes a tmpfs to what it holds now plus `freeBytes` (its size is one limit, seen from every mount namespace).
   * A spool is first let drain to what it held empty: a file unlinked but still open keeps its blocks until closed.
   */
  async function leaveFree(mountPoint: string, freeBytes: number): Promise<void> {
    const settled = emptyUsage.get(mountPoint);
    if (settled !== undefined) {
      await waitFor(async () => (await usedBytes(mountPoint)) <= settled, `${mountPoint} to drain to ${settled} bytes used`, 30_000);
    }
    const used = await usedBytes(mountPoint);
    await execFileAsync('mount', ['-o', `remount,size=${Math.ceil((used + freeBytes) / 4096) * 4096}`, mountPoint]);
  }

  it('refuses, once the manifest gives the size, a destination whose container storage is too small (disk-full)', async () => {
    const destination = await smallDestination();
    // About one archive's worth free: the job wants room for about two (Podman's spool and the unpacked checkpoint).
    await leaveFree(destination.root, good.archive.length);
    try {
      const free = (await destination.engine.info()).freeDiskBytes;
      console.log(`small destination: ${free} bytes free in its container storage for a ${good.archive.length}-byte archive`);
      assert.ok(free < good.archive.length * 2, 'the engine reports less than two archives of room');
      const restoresBefore = await restoreEvents(destination.host);
      const run = await startCase('storage-full', { destination });
      await assertRefused(run, 'disk-full', /bytes free.*checkpoint/, restoresBefore);
    } finally {
      await execFileAsync('mount', ['-o', 'remount,size=256m', destination.root]);
    }
  });

  it('refuses when the disk Podman spools the incoming archive on fills up half-way (disk-full)', async () => {
    const destination = await freshService(await smallDestination());
    // The container storage has plenty of room (the job's own check passes); the spool holds about 4 of 19 chunks.
    await leaveFree(destination.spool, 4 * CHUNK_BYTES);
    try {
      assert.ok((await destination.engine.info()).freeDiskBytes > good.archive.length * 2);
      const restoresBefore = await restoreEvents(destination.host);
      const run = await startCase('spool-full', { destination });
      await assertRefused(run, 'disk-full', /ran out of disk space.*no space left on device/, restoresBefore);
    } finally {
      await execFileAsync('mount', ['-o', 'remount,size=64m', destination.spool]);
    }
  });
});

function flipByte(body: Buffer): Buffer {
  const spoiled = Buffer.from(body);
  spoiled[1234] = (spoiled[1234] ?? 0) ^ 0xff;
  return spoiled;
}

function sha256(body: Buffer): string {
  return createHash('sha256').update(body).digest('hex');
}

async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(part as Buffer);
  return Buffer.concat(parts);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function maxCount(ticks: Array<{ count: number }>): number {
  return ticks.reduce((max, t) => Math.max(max, t.count), 0);
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function waitForCount(host: PodmanHost, name: string, atLeast: number): Promise<void> {
  await waitFor(
    async () => maxCount(await readTicks(host.url, name).catch(() => [])) >= atLeast,
    `${name} on ${host.name} to reach count=${atLeast}`,
  );
}
