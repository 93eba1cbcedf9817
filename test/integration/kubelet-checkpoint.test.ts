/**
 * The orchestrator-level adapter (agents/kubelet/) against RECORDED kubelet behaviour: no
 * cluster runs here (no kubelet, no CRI-O, no k3s), so a local HTTPS server with a certificate made by the
 * `openssl` CLI replays the kubelet's answers from test/fixtures/kubelet/ (each file says where its answer
 * comes from: the kubelet's source and error texts quoted in Kubernetes issues, by version; none was captured
 * from a live kubelet by us). What this proves: the requests the adapter sends (method, path, query, bearer
 * token, TLS with the given CA) and how it reads each answer. What it cannot prove: that a real kubelet
 * still answers this way, and that CRI-O restores from the image built here (needs a CRI-O node with CRIU).
 *
 * The checkpoint image is checked for real: Podman (a simulated host, infra/podman-host.ts) loads it and
 * `podman image inspect` shows the annotation CRI-O looks for.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { z } from 'zod';
import { KUBELET_CHECKPOINT_DIR, openArchive, parseCheckpointArchiveName, removeArchive } from '../../agents/kubelet/checkpoint-archive.js';
import { buildCheckpointImageArchive, CRIO_CHECKPOINT_ANNOTATION } from '../../agents/kubelet/checkpoint-image.js';
import { KubeletCheckpointClient, tokenFromFile } from '../../agents/kubelet/kubelet-client.js';
import { KubeletCheckpointError, type KubeletCheckpointErrorCode } from '../../agents/kubelet/kubelet-errors.js';
import { restorePodManifest } from '../../agents/kubelet/restore-pod.js';
import { startPodmanHost, type PodmanHost } from '../../infra/podman-host.js';
import { repoPath } from '../../infra/repo-paths.js';

const execFileAsync = promisify(execFile);

const Fixture = z.object({
  source: z.string().min(20),
  kubernetesVersion: z.string(),
  runtime: z.string().optional(),
  delayMs: z.number().int().nonnegative().optional(),
  response: z.object({ status: z.number().int(), headers: z.record(z.string(), z.string()), body: z.string() }),
});
type Fixture = z.infer<typeof Fixture>;

async function fixture(name: string): Promise<Fixture> {
  return Fixture.parse(JSON.parse(await readFile(repoPath('test', 'fixtures', 'kubelet', `${name}.json`), 'utf8')));
}

interface Recorded {
  method: string;
  path: string;
  query: URLSearchParams;
  authorization: string | undefined;
}

const ref = { namespace: 'default', pod: 'counters', container: 'counter' };
const ARCHIVE_NAME = 'checkpoint-counters_default-counter-2024-02-12T13:20:06Z.tar';

describe('kubelet checkpoint adapter against recorded kubelet answers', { timeout: 300_000 }, () => {
  let dir: string;
  let checkpointsDir: string;
  let ca: string;
  let server: Server;
  let url: string;
  let replay: Fixture | undefined;
  const requests: Recorded[] = [];
  let archiveBytes: Buffer;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ums-kubelet-'));
    checkpointsDir = join(dir, 'checkpoints');
    await mkdir(checkpointsDir);
    // A kubelet's self-signed serving certificate, for 127.0.0.1 (Node has no X.509 API; openssl does).
    await execFileAsync('openssl', [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-keyout',
      join(dir, 'key.pem'),
      '-out',
      join(dir, 'cert.pem'),
      '-subj',
      '/CN=node-a@1700000000',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
    ]);
    ca = await readFile(join(dir, 'cert.pem'), 'utf8');
    archiveBytes = await makeCheckpointTar(join(dir, 'ctr'), join(checkpointsDir, ARCHIVE_NAME));

    server = createServer({ key: await readFile(join(dir, 'key.pem')), cert: ca }, (req, res) => {
      const parsed = new URL(req.url ?? '/', 'https://127.0.0.1');
      requests.push({
        method: req.method ?? '',
        path: parsed.pathname,
        query: parsed.searchParams,
        authorization: req.headers.authorization,
      });
      const answer = replay;
      if (answer === undefined) {
        res.writeHead(599).end('no fixture set');
        return;
      }
      const [, , namespace = '', pod = '', container = ''] = parsed.pathname.split('/').map(decodeURIComponent);
      const body = answer.response.body
        .replaceAll('{namespace}', namespace)
        .replaceAll('{pod}', pod)
        .replaceAll('{container}', container)
        .replaceAll(KUBELET_CHECKPOINT_DIR, checkpointsDir);
      const send = (): void => {
        if (!res.destroyed) res.writeHead(answer.response.status, answer.response.headers).end(body);
      };
      if (answer.delayMs !== undefined) setTimeout(send, answer.delayMs).unref();
      else send();
    });
    await new Promise<void>((resolveListen) => server.listen(0, '127.0.0.1', resolveListen));
    url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server?.closeAllConnections();
    await new Promise<void>((resolveClose) => (server ? server.close(() => resolveClose()) : resolveClose()));
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  function client(extra: Partial<ConstructorParameters<typeof KubeletCheckpointClient>[0]> = {}): KubeletCheckpointClient {
    return new KubeletCheckpointClient({ url, token: 'test-token', ca, nodeName: 'node-a', ...extra });
  }

  async function expectFailure(name: string, code: KubeletCheckpointErrorCode, message: RegExp): Promise<KubeletCheckpointError> {
    replay = await fixture(name);
    const error = await client()
      .checkpoint(ref)
      .then(
        () => assert.fail(`${name}: expected ${code}`),
        (e: unknown) => e,
      );
    assert.ok(error instanceof KubeletCheckpointError, `${name}: ${String(error)}`);
    assert.equal(error.code, code, error.message);
    assert.match(error.message, message);
    assert.equal(error.status, replay.response.status);
    return error;
  }

  it('checkpoints: POST /checkpoint/{ns}/{pod}/{ctr}?timeout=N with the bearer token, and reads the archive path', async () => {
    replay = await fixture('success');
    requests.length = 0;
    const result = await client().checkpoint(ref, { timeoutSeconds: 30 });
    assert.equal(requests.length, 1);
    const [sent] = requests;
    assert.equal(sent?.method, 'POST');
    assert.equal(sent?.path, '/checkpoint/default/counters/counter');
    assert.deepEqual([...(sent?.query ?? [])], [['timeout', '30']]);
    assert.equal(sent?.authorization, 'Bearer test-token');
    assert.equal(result.archivePath, join(checkpointsDir, ARCHIVE_NAME));
    assert.deepEqual(result.items, [result.archivePath]);
    assert.equal(result.checkpointedAt, '2024-02-12T13:20:06Z');
    assert.deepEqual(parseCheckpointArchiveName(result.archivePath), {
      podAndContainer: 'counters_default-counter',
      checkpointedAt: '2024-02-12T13:20:06Z',
    });

    // Without a timeout the kubelet uses the CRI default: no query at all.
    requests.length = 0;
    await client().checkpoint(ref);
    assert.equal(requests[0]?.query.toString(), '');
  });

  it('reads the token per request from a file (service-account tokens rotate) and sends none when given none', async () => {
    replay = await fixture('success');
    const tokenFile = join(dir, 'token');
    await writeFile(tokenFile, 'first\n');
    const rotating = client({ token: tokenFromFile(tokenFile) });
    requests.length = 0;
    await rotating.checkpoint(ref);
    await writeFile(tokenFile, 'second\n');
    await rotating.checkpoint(ref);
    await client({ token: undefined }).checkpoint(ref);
    assert.deepEqual(
      requests.map((r) => r.authorization),
      ['Bearer first', 'Bearer second', undefined],
    );
  });

  it("streams the archive from the node's disk, and only from the checkpoint directory", async () => {
    const opened = await openArchive(join(checkpointsDir, ARCHIVE_NAME), { root: checkpointsDir });
    assert.equal(opened.sizeBytes, archiveBytes.length);
    const chunks: Buffer[] = [];
    for await (const chunk of opened.stream) chunks.push(chunk as Buffer);
    assert.deepEqual(Buffer.concat(chunks), archiveBytes);
    await assert.rejects(openArchive(join(checkpointsDir, '..', 'key.pem'), { root: checkpointsDir }), /read only from/);
    await assert.rejects(openArchive('/etc/passwd', { root: checkpointsDir }), /read only from/);
    await assert.rejects(openArchive(checkpointsDir + '/', { root: checkpointsDir }), /read only from|not a regular file/);
    const copy = join(checkpointsDir, 'checkpoint-copy.tar');
    await writeFile(copy, archiveBytes);
    await removeArchive(copy, { root: checkpointsDir });
    await assert.rejects(stat(copy), /ENOENT/);
    await removeArchive(copy, { root: checkpointsDir }); // already gone: not an error
  });

  it('feature gate off: 404 "404 page not found" names the ContainerCheckpoint gate', async () => {
    await expectFailure('feature-gate-off', 'feature-disabled', /ContainerCheckpoint feature gate is off.*1\.30/);
  });

  it('404 from the handler: pod and container not found, told apart from the gate by the body', async () => {
    await expectFailure('pod-not-found', 'pod-not-found', /runs no pod default\/counters/);
    await expectFailure('container-not-found', 'container-not-found', /has no container "counter" \(container counter does not exist\)/);
  });

  it('401 and 403 say what authentication and which RBAC rule are needed', async () => {
    await expectFailure('unauthorized', 'unauthorized', /token is missing, expired or unknown.*--authentication-token-webhook/);
    const forbidden = await expectFailure(
      'forbidden',
      'forbidden',
      /bind "system:serviceaccount:ums:ums-agent" to a ClusterRole with apiGroups: \[""\], resources: \["nodes\/checkpoint"\], verbs: \["create"\]/,
    );
    assert.match(forbidden.detail, /subresource=checkpoint/);
  });

  it('500 from the runtime: CRI-O without CRIU support, and a runtime without the RPC (containerd 1.x)', async () => {
    const crio = await expectFailure('crio-without-criu', 'runtime-criu-disabled', /enable_criu_support = true/);
    assert.equal(
      crio.detail,
      'checkpointing of default/counters/counter failed (rpc error: code = Unknown desc = checkpoint/restore support not available)',
    );
    await expectFailure('containerd-unimplemented', 'runtime-unsupported', /does not implement CheckpointContainer.*needs CRI-O/);
  });

  it('a kubelet slower than the request timeout: a timeout error that warns the archive may still appear', async () => {
    replay = await fixture('slow');
    const started = Date.now();
    const error = await client({ requestTimeoutMs: 400 })
      .checkpoint(ref, { timeoutSeconds: 1 })
      .then(
        () => assert.fail('expected a timeout'),
        (e: unknown) => e,
      );
    assert.ok(error instanceof KubeletCheckpointError);
    assert.equal(error.code, 'timeout');
    assert.match(error.message, /within 400 ms.*may still finish on the node.*must be removed/);
    assert.ok(Date.now() - started < 2500, "gave up at the request timeout, not at the server's delay");
  });

  it('refuses a kubelet whose certificate it cannot verify, and bad references before sending anything', async () => {
    replay = await fixture('success');
    const noCa = new KubeletCheckpointClient({ url, token: 'test-token', nodeName: 'node-a' });
    await assert.rejects(
      noCa.checkpoint(ref),
      (e: unknown) => e instanceof KubeletCheckpointError && e.code === 'tls' && /UMS_KUBELET_CA_FILE/.test(e.message),
    );
    requests.length = 0;
    await assert.rejects(
      client().checkpoint({ ...ref, pod: 'Bad_Pod' }),
      (e: unknown) => e instanceof KubeletCheckpointError && e.code === 'invalid-request' && /pod/.test(e.message),
    );
    await assert.rejects(client().checkpoint(ref, { timeoutSeconds: 0 }), /positive integer/);
    assert.equal(requests.length, 0);
    assert.throws(() => new KubeletCheckpointClient({ url: 'http://127.0.0.1:10255' }), /must be https/);
    const refused = new KubeletCheckpointClient({ url: 'https://127.0.0.1:1', ca, requestTimeoutMs: 2000 });
    await assert.rejects(refused.checkpoint(ref), (e: unknown) => e instanceof KubeletCheckpointError && e.code === 'unreachable');
  });

  it('probes without checkpointing: "pod does not exist" means enabled and authorised', async () => {
    replay = await fixture('pod-not-found');
    requests.length = 0;
    assert.deepEqual(await client().probe(), { available: true });
    assert.equal(requests[0]?.method, 'POST');
    assert.match(requests[0]?.path ?? '', /^\/checkpoint\/ums-probe\/ums-capability-probe-nonexistent\/probe$/);
    for (const [name, code] of [
      ['feature-gate-off', 'feature-disabled'],
      ['forbidden', 'forbidden'],
      ['unauthorized', 'unauthorized'],
    ] as const) {
      replay = await fixture(name);
      const probed = await client().probe();
      assert.equal(probed.available, false, name);
      assert.equal(probed.available === false ? probed.error.code : undefined, code);
    }
  });

  describe('the checkpoint image for CRI-O', () => {
    let podmanHost: PodmanHost | undefined;
    let podmanBase: string | undefined;

    after(async () => {
      await podmanHost?.destroy();
      if (podmanBase !== undefined) await rm(podmanBase, { recursive: true, force: true });
    });

    it('builds an OCI image archive whose only layer is the archive, with the annotation in the manifest', async () => {
      const image = await buildCheckpointImageArchive({
        archive: join(checkpointsDir, ARCHIVE_NAME),
        containerName: 'counter',
        imageName: 'localhost/ums/checkpoint-counter:test',
        annotations: { 'io.kubernetes.cri-o.annotations.checkpoint.rootfsImageName': 'localhost/ums/counter:1' },
        created: new Date('2024-02-12T13:21:00Z'),
      });
      const archivePath = join(dir, 'image.tar');
      await pipeline(image.stream, createWriteStream(archivePath));
      // GNU tar reads it, and the layer blob is the checkpoint archive byte for byte.
      const layout = join(dir, 'layout');
      await mkdir(layout);
      await execFileAsync('tar', ['-xf', archivePath, '-C', layout]);
      const sha = createHash('sha256').update(archiveBytes).digest('hex');
      assert.equal(image.layerDigest, `sha256:${sha}`);
      assert.deepEqual(await readFile(join(layout, 'blobs', 'sha256', sha)), archiveBytes);
      const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as {
        manifests: { digest: string; annotations: Record<string, string> }[];
      };
      assert.equal(index.manifests[0]?.digest, image.manifestDigest);
      assert.equal(index.manifests[0]?.annotations['org.opencontainers.image.ref.name'], 'localhost/ums/checkpoint-counter:test');
      const manifestBytes = await readFile(join(layout, 'blobs', 'sha256', image.manifestDigest.slice(7)));
      assert.equal(`sha256:${createHash('sha256').update(manifestBytes).digest('hex')}`, image.manifestDigest);
      const manifest = JSON.parse(manifestBytes.toString('utf8')) as {
        annotations: Record<string, string>;
        layers: { digest: string; size: number; mediaType: string }[];
      };
      assert.equal(manifest.annotations[CRIO_CHECKPOINT_ANNOTATION], 'counter');
      assert.deepEqual(manifest.layers, [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: image.layerDigest, size: archiveBytes.length },
      ]);
      assert.deepEqual(
        (await readdir(join(layout, 'blobs', 'sha256'))).sort(),
        [sha, image.configDigest.slice(7), image.manifestDigest.slice(7)].sort(),
      );

      // Podman loads it (oci-archive) and shows the annotation CRI-O reads; its layer is the archive's digest.
      // Short path: the API socket lives below it and unix socket paths are limited to 108 bytes.
      podmanBase = await mkdtemp(join(tmpdir(), 'ums-kc-'));
      podmanHost = await startPodmanHost({ name: 'kc', dir: join(podmanBase, 'h'), network: 'shared' });
      const loaded = await podmanHost.podman(['load', '-i', archivePath], { timeoutMs: 120_000 });
      assert.match(loaded.stdout + loaded.stderr, /Loaded image.*localhost\/ums\/checkpoint-counter:test/);
      const inspected = JSON.parse((await podmanHost.podman(['image', 'inspect', 'localhost/ums/checkpoint-counter:test'])).stdout) as {
        Id: string;
        Digest: string;
        Annotations?: Record<string, string>;
        RootFS: { Layers: string[] };
        ManifestType: string;
      }[];
      const [info] = inspected;
      assert.ok(info !== undefined);
      assert.equal(info.Annotations?.[CRIO_CHECKPOINT_ANNOTATION], 'counter', 'podman image inspect shows the checkpoint annotation');
      assert.equal(info.Annotations?.['io.kubernetes.cri-o.annotations.checkpoint.rootfsImageName'], 'localhost/ums/counter:1');
      assert.equal(info.ManifestType, 'application/vnd.oci.image.manifest.v1+json');
      assert.equal(info.Digest, image.manifestDigest, 'the manifest was stored unchanged');
      assert.equal(`sha256:${info.Id}`, image.configDigest);
      assert.deepEqual(info.RootFS.Layers, [image.layerDigest]);
    });

    it('streams from a download when size and digest are known, and refuses a corrupt or compressed archive', async () => {
      const sha = createHash('sha256').update(archiveBytes).digest('hex');
      const ok = await buildCheckpointImageArchive({
        archive: Readable.from([archiveBytes.subarray(0, 700), archiveBytes.subarray(700)]),
        sizeBytes: archiveBytes.length,
        sha256: sha,
        containerName: 'counter',
      });
      let total = 0;
      for await (const chunk of ok.stream) total += (chunk as Buffer).length;
      assert.equal(total % 512, 0);
      assert.ok(total > archiveBytes.length);

      const corrupt = Buffer.from(archiveBytes);
      corrupt[2000] = (corrupt[2000] ?? 0) ^ 0xff;
      const bad = await buildCheckpointImageArchive({
        archive: Readable.from([corrupt]),
        sizeBytes: corrupt.length,
        sha256: sha,
        containerName: 'counter',
      });
      await assert.rejects(pipeline(bad.stream, createWriteStream(join(dir, 'bad.tar'))), /changed or is corrupt: sha256/);

      const short = await buildCheckpointImageArchive({
        archive: Readable.from([archiveBytes.subarray(0, 1024)]),
        sizeBytes: archiveBytes.length,
        sha256: sha,
        containerName: 'counter',
      });
      await assert.rejects(pipeline(short.stream, createWriteStream(join(dir, 'short.tar'))), /ended after 1024 of/);

      await assert.rejects(
        buildCheckpointImageArchive({ archive: Readable.from([archiveBytes]), containerName: 'counter' }),
        /needs its sizeBytes and sha256/,
      );
      const gz = join(dir, 'ck.tar.gz');
      await writeFile(gz, Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), Buffer.alloc(600)]));
      await assert.rejects(buildCheckpointImageArchive({ archive: gz, containerName: 'counter' }), /gzip-compressed.*decompress/);
      await assert.rejects(
        buildCheckpointImageArchive({ archive: join(checkpointsDir, ARCHIVE_NAME), containerName: 'a b' }),
        /invalid container name/,
      );
    });

    it('gives the Pod that restores it', () => {
      const pod = restorePodManifest({
        podName: 'counters-restored',
        namespace: 'default',
        containerName: 'counter',
        image: 'localhost/ums/checkpoint-counter:test',
        nodeName: 'node-b',
      });
      assert.deepEqual(pod, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'counters-restored', namespace: 'default' },
        spec: {
          nodeName: 'node-b',
          restartPolicy: 'Never',
          containers: [{ name: 'counter', image: 'localhost/ums/checkpoint-counter:test', imagePullPolicy: 'IfNotPresent' }],
        },
      });
      assert.throws(() => restorePodManifest({ podName: 'x', containerName: 'Counter', image: 'i' }), /container/);
    });
  });
});

/**
 * A small archive shaped like CRI-O's (what `tar -tf` of a real one lists: config.dump, spec.dump,
 * checkpoint/ with CRIU's images, rootfs-diff.tar, deleted.files, dump.log, stats-dump), made with GNU tar.
 * The CRIU images are random bytes: nothing restores from them here.
 */
async function makeCheckpointTar(workDir: string, target: string): Promise<Buffer> {
  await mkdir(join(workDir, 'checkpoint'), { recursive: true });
  await writeFile(
    join(workDir, 'config.dump'),
    JSON.stringify({ id: 'f'.repeat(64), name: 'counter', rootfsImageName: 'localhost/ums/counter:1', runtime: 'runc' }),
  );
  await writeFile(join(workDir, 'spec.dump'), JSON.stringify({ ociVersion: '1.0.2', process: { args: ['/usr/local/bin/counter'] } }));
  await writeFile(join(workDir, 'checkpoint', 'inventory.img'), Buffer.from([0x01, 0x02, 0x03]));
  await writeFile(join(workDir, 'checkpoint', 'pages-1.img'), createHash('sha512').update('pages').digest());
  await writeFile(join(workDir, 'deleted.files'), '[]');
  await writeFile(join(workDir, 'dump.log'), 'Dumping finished successfully\n');
  await execFileAsync('tar', ['-cf', join(workDir, 'rootfs-diff.tar'), '-C', workDir, 'deleted.files']);
  await execFileAsync('tar', [
    '-cf',
    target,
    '-C',
    workDir,
    'config.dump',
    'spec.dump',
    'checkpoint',
    'rootfs-diff.tar',
    'deleted.files',
    'dump.log',
  ]);
  return readFile(target);
}
