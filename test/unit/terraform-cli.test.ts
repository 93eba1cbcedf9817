import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { connect, nkeyAuthenticator } from 'nats';
import { freePort } from '../../core/free-port.js';
import { buckets, connectNatsBus, provisionBus, readBrokerCredential } from '../../core/nats-event-bus.js';
import { generateSigningKeyPair } from '../../core/signed-envelope.js';
import { createBrokerTls, writePrincipalCredentials } from '../../infra/broker-credentials.js';
import { agentEnvironmentFromCode, frontmanEnvironmentFromCode } from '../support/terraform-drift.js';
import { offlineTerraform, providerMirror, repoRoot, terraformRoot, terraformVersion, type TerraformCli } from '../support/terraform.js';

/*
 * The terraform CLI, offline (a CLI config of our own pointing at the machine's filesystem mirror, which
 * holds only hashicorp/aws): `fmt -check` on everything; `init`, `validate` and `terraform test` (mock
 * provider for aws) on the modules the CLI can load here; then what Terraform renders, rendered by Terraform
 * itself and run for real: the agent's cloud-init scripts through `bash -n` and shellcheck, its environment
 * against what the agent's code reads, and nats.conf through the real nats-server with TLS and the
 * principals' nkeys. The google and azurerm modules cannot be loaded without their providers: see
 * terraform-schema.test.ts for what is checked of them.
 */

const execFileAsync = promisify(execFile);
/** Where this build's JavaScript is (its dist/): the frontman started below is this build's, not a stale dist/. */
const compiledRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const version = await terraformVersion();
const skip =
  version === undefined ? 'the terraform CLI is not on PATH (not in Debian or npm; the CI machine image has it): skipped' : false;
const hasShellcheck = await execFileAsync('shellcheck', ['--version']).then(
  () => true,
  () => false,
);

/** Modules the CLI can initialise here: no provider, or only aws (in the mirror). */
const CLI_MODULES = [
  'agent-cloud-init',
  'nats-config',
  'aws-bucket',
  'aws-host',
  'aws-frontman',
  'aws-functions-role',
  'aws-notice-events',
];

const FAKE_SHA = '0'.repeat(64);
/** A real Ed25519 public key: the agent started from the rendered environment parses it. */
const VERIFY_KEY = generateSigningKeyPair().publicKey.publicKey;
const FAKE_CA = '-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n';

/** One server of the 3-server cluster the test runs from nats-config's rendering (loopback, ports of its own). */
interface ClusterMember {
  clientPort: number;
  clusterPort: number;
  store: string;
}

/** A root module that renders each cloud's agent cloud-init and the broker's configuration. */
function renderRoot(paths: {
  authorization: string;
  cert: string;
  key: string;
  ca: string;
  store: string;
  port: number;
  frontmanPort: number;
  /** The cluster's certificate: named only by DNS (localhost), as a real broker's names only dns_name and *.dns_name. */
  clusterCert: string;
  cluster: ClusterMember[];
}): string {
  const host = (name: string, cloud: string, region: string, store: string, secrets: string, engine = 'podman') => `
module "${name}" {
  source             = "../modules/agent-cloud-init"
  agent_id           = "${cloud}-${region}-${name === 'docker' ? '2' : '1'}"
  cloud              = "${cloud}"
  region             = "${region}"
  store_url          = "${store}"
  nats_url           = "tls://nats.ums.example:4222"
  nats_ca_pem        = "${FAKE_CA}"
  command_verify_key = "${VERIFY_KEY}"
  secrets            = ${secrets}
  engine             = "${engine}"
  page_relay_address = ${engine === 'podman' ? '"198.51.100.7"' : 'null'}
  service_address    = "198.51.100.7"
  release_url        = "https://releases.example/ums.tgz"
  release_sha256     = "${FAKE_SHA}"
}
output "${name}" {
  value = module.${name}
}
`;
  const nats = (name: string, member: { clientPort: number; clusterPort?: number; store: string; cert: string }, routes: string) => `
module "${name}" {
  source         = "../modules/nats-config"
  server_name    = "${name}"
  listen_address = "127.0.0.1"
  client_port    = ${member.clientPort}
  ${member.clusterPort !== undefined ? `cluster_port   = ${member.clusterPort}` : ''}
  routes         = ${routes}
  cert_file      = ${JSON.stringify(member.cert)}
  key_file       = ${JSON.stringify(paths.key)}
  ca_file        = ${JSON.stringify(paths.ca)}
  store_dir      = ${JSON.stringify(member.store)}
  authorization  = file(${JSON.stringify(paths.authorization)})
}
output "${name}" {
  value = module.${name}.nats_conf
}
`;
  // Routes by name, as gcp-nats-broker renders them (ums-nats-<i>.<dns_name>): the certificate names no address.
  const cluster = paths.cluster.map((member, i) =>
    nats(
      `cluster${i}`,
      { ...member, cert: paths.clusterCert },
      JSON.stringify(paths.cluster.filter((_, j) => j !== i).map((other) => `localhost:${other.clusterPort}`)),
    ),
  );
  return [
    host('gcp', 'gcp', 'us-central1', 'gs://ums-example/ums', '{ nats_credential = "agent-nats", project = "ums-example" }'),
    host(
      'azure',
      'azure',
      'eastus',
      'azblob://umsexample/checkpoints/ums',
      '{ nats_credential = "agent-nats", storage_key = "storage-key", vault = "ums-kv" }',
    ),
    host(
      'aws',
      'aws',
      'us-east-1',
      's3://ums-example/ums',
      '{ nats_credential = "arn:aws:secretsmanager:us-east-1:111122223333:secret:agent-nats" }',
    ),
    // A Docker host (engine = "docker"): dockerd in experimental mode, runc's CRIU options, no page relay.
    host('docker', 'gcp', 'us-central1', 'gs://ums-example/ums', '{ nats_credential = "agent-nats", project = "ums-example" }', 'docker'),
    // The frontman's unit, as gcp-frontman renders it (that module needs the google provider, this one none).
    `module "frontman" {
  source      = "../modules/agent-cloud-init"
  cloud       = "gcp"
  region      = "us-central1"
  nats_url    = "tls://nats.ums.example:4222"
  nats_ca_pem = "${FAKE_CA}"
  secrets     = { nats_credential = "ums-frontman-nats", project = "ums-example" }
  frontman = {
    id            = "frontman-1"
    services      = [{ container = "web", protocol = "http", listen = "127.0.0.1:${paths.frontmanPort}", port = 8080, hold_seconds = 20 }]
    drain_seconds = 3
    max_body_kib  = 512
  }
  release_url    = "https://releases.example/ums.tgz"
  release_sha256 = "${FAKE_SHA}"
}
output "frontman" {
  value = module.frontman
}
`,
    nats('single', { clientPort: paths.port, store: paths.store, cert: paths.cert }, '[]'),
    ...cluster,
    `module "broker_boot" {
  source          = "../modules/nats-config"
  server_name     = "ums-nats-0"
  authorization   = file(${JSON.stringify(paths.authorization)})
  server_cert_pem = "${FAKE_CA}"
  ca_pem          = "${FAKE_CA}"
  key_secret      = { project = "ums-example", secret = "nats-key" }
}
output "broker_boot_script" {
  value = module.broker_boot.boot_script
}
output "broker_key_script" {
  value = templatefile("../modules/nats-config/templates/ums-nats-key.sh.tftpl", { project = "ums-example", secret = "nats-key", key_file = "/run/ums-nats/server.key" })
}
`,
  ].join('');
}

/**
 * A certificate for the cluster signed by the test's CA (createBrokerTls left its key beside it), named only by
 * DNS (localhost), as a real broker's names dns_name and *.dns_name but no address: routes must then go by name.
 * serverAuth and clientAuth: each server presents it to the others on their routes, which verify it.
 */
async function clusterCertificate(tlsDir: string): Promise<string> {
  const file = (name: string) => join(tlsDir, name);
  await writeFile(file('cluster.ext'), 'subjectAltName = DNS:localhost\nextendedKeyUsage = serverAuth, clientAuth\n');
  await execFileAsync('openssl', ['req', '-new', '-key', file('server.key'), '-subj', '/CN=localhost', '-out', file('cluster.csr')]);
  await execFileAsync('openssl', [
    ...['x509', '-req', '-in', file('cluster.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial'],
    ...['-days', '1', '-extfile', file('cluster.ext'), '-out', file('cluster.pem')],
  ]);
  return file('cluster.pem');
}

/** The bootstrap's one line that runs host-setup.sh (with the environment it sets). */
function hostSetupLine(bootstrap: string): string {
  const lines = bootstrap.split('\n').filter((l) => /host-setup\.sh/.test(l) && !l.trimStart().startsWith('#'));
  assert.equal(lines.length, 1, `one host-setup.sh line in the bootstrap: ${lines.join(' | ')}`);
  return lines[0] ?? '';
}

interface RenderedHost {
  cloud_config: string;
  boot_script: string;
  environment: Record<string, string>;
  secret_environment: string[];
  unit: string;
  unit_name: string;
  bootstrap_script: string;
  start_script: string;
}
interface Rendered {
  gcp: RenderedHost;
  azure: RenderedHost;
  aws: RenderedHost;
  docker: RenderedHost;
  frontman: RenderedHost;
  single: string;
  cluster0: string;
  cluster1: string;
  cluster2: string;
  broker_key_script: string;
  broker_boot_script: string;
}

describe('terraform CLI, offline', { skip }, () => {
  let tf: TerraformCli;
  let modules: string;

  before(async () => {
    tf = await offlineTerraform();
    // A copy, so that `init` writes its lock files and data there, never into the repository.
    modules = join(tf.workDir, 'modules');
    await cp(join(terraformRoot, 'modules'), modules, { recursive: true });
  });
  after(async () => {
    if (tf !== undefined) await rm(tf.workDir, { recursive: true, force: true });
  });

  it('every .tf file is formatted (terraform fmt -check)', async () => {
    await tf.run(terraformRoot, ['fmt', '-check', '-recursive', '-diff', '-no-color'], join(tf.workDir, 'fmt'));
  });

  for (const name of CLI_MODULES) {
    it(`${name}: init, validate${name.startsWith('aws-') ? ' (by terraform test)' : ''} and terraform test`, async () => {
      if (name.startsWith('aws-') && providerMirror() === undefined) {
        assert.fail('no provider mirror holding hashicorp/aws (docs/environment.md): set UMS_TF_PLUGIN_MIRROR to its root');
      }
      const dir = join(modules, name);
      const data = join(tf.workDir, `data-${name}`);
      await tf.run(dir, ['init', '-backend=false', '-input=false', '-no-color'], data);
      // `terraform test` validates the module and its tests first (an unknown argument fails it); a separate
      // `validate` costs the aws provider's start again (7 s on a loaded machine), so it runs only where cheap.
      if (!name.startsWith('aws-')) await tf.run(dir, ['validate', '-no-color'], data);
      const out = await tf.run(dir, ['test', '-no-color'], data);
      assert.match(out, /Success! \d+ passed, 0 failed/);
    });
  }

  describe('what Terraform renders, run for real', () => {
    let rendered: Rendered;
    let dir: string;
    let port: number;
    let paths: Parameters<typeof renderRoot>[0];
    let credentialFiles: Map<string, string>;

    before(async () => {
      dir = join(tf.workDir, 'render');
      await mkdir(dir, { recursive: true });
      const tls = await createBrokerTls(join(dir, 'tls'));
      const credentials = await writePrincipalCredentials(join(dir, 'credentials'), ['gcp-us-central1-1']);
      credentialFiles = credentials.files;
      await writeFile(join(dir, 'authorization.conf'), credentials.authorization);
      port = await freePort();
      const cluster: ClusterMember[] = [];
      for (let i = 0; i < 3; i++)
        cluster.push({ clientPort: await freePort(), clusterPort: await freePort(), store: join(dir, `jetstream-${i}`) });
      paths = {
        authorization: join(dir, 'authorization.conf'),
        cert: tls.certFile,
        key: tls.keyFile,
        ca: tls.caFile,
        store: join(dir, 'jetstream'),
        port,
        frontmanPort: await freePort(),
        clusterCert: await clusterCertificate(join(dir, 'tls')),
        cluster,
      };
      await writeFile(join(dir, 'main.tf'), renderRoot(paths));
      const data = join(tf.workDir, 'data-render');
      await tf.run(dir, ['init', '-backend=false', '-input=false', '-no-color'], data);
      await tf.run(dir, ['apply', '-auto-approve', '-input=false', '-no-color'], data);
      const outputs = JSON.parse(await tf.run(dir, ['output', '-json'], data)) as Record<string, { value: unknown }>;
      rendered = Object.fromEntries(Object.entries(outputs).map(([k, v]) => [k, v.value])) as unknown as Rendered;
    });

    it("each cloud's agent environment is what the agent's code reads, with every mandatory option", async () => {
      const code = await agentEnvironmentFromCode();
      for (const cloud of ['gcp', 'azure', 'aws', 'docker'] as const) {
        const host = rendered[cloud];
        const names = [...Object.keys(host.environment), ...host.secret_environment];
        // AZURE_STORAGE_KEY is read by core/object-stores (the Azure store's credentials).
        assert.deepEqual(
          names.filter((n) => !code.all.has(n) && n !== 'AZURE_STORAGE_KEY'),
          [],
          `${cloud}: set but never read`,
        );
        for (const mandatory of code.mandatory) assert.ok(mandatory in host.environment, `${cloud}: ${mandatory}`);
        assert.equal(host.environment.UMS_CLOUD, cloud === 'docker' ? 'gcp' : cloud);
        // The unit reads the file cloud-init writes, and the file holds exactly the environment.
        assert.match(host.unit, /^EnvironmentFile=\/etc\/ums\/agent\.env$/m);
        assert.ok(host.cloud_config.includes('"path": "/etc/ums/agent.env"'), `${cloud}: cloud-init writes the environment file`);
        for (const [k, v] of Object.entries(host.environment)) assert.ok(host.cloud_config.includes(`${k}="${v}"`), `${cloud}: ${k}`);
        // What the start script sets is what it says it sets.
        for (const name of host.secret_environment) assert.match(host.start_script, new RegExp(`export ${name}\\b`), `${cloud}: ${name}`);
      }
      assert.deepEqual(rendered.azure.secret_environment, ['UMS_NATS_CREDENTIALS', 'AZURE_STORAGE_KEY']);
    });

    it("the frontman's environment is what frontman/main.ts reads, and its environment file reads back to it", async () => {
      const code = await frontmanEnvironmentFromCode();
      const fm = rendered.frontman;
      const names = [...Object.keys(fm.environment), ...fm.secret_environment];
      assert.deepEqual(
        names.filter((n) => !code.all.has(n)),
        [],
        'set but never read',
      );
      for (const mandatory of code.mandatory) assert.ok(mandatory in fm.environment, mandatory);
      assert.equal(fm.unit_name, 'ums-frontman');
      assert.match(fm.unit, /^EnvironmentFile=\/etc\/ums\/frontman\.env$/m);
      assert.match(fm.unit, /^DynamicUser=yes$/m);
      assert.deepEqual(fm.secret_environment, ['UMS_NATS_CREDENTIALS']);
      assert.doesNotMatch(fm.bootstrap_script, /^bash .*host-setup\.sh/m, 'a frontman installs no container engine');
      // The file the boot script writes, read back by a shell (systemd's EnvironmentFile quoting is the same for
      // \\ \" \$ `): the JSON of UMS_FRONTMAN_SERVICES survives its quoting.
      const root = join(dir, 'frontman-root');
      const script = fm.boot_script
        .replace(/^(install -d -m \d+|chmod \d+) '\//gm, `$1 '${root}/`)
        .replaceAll(">'/", `>'${root}/`)
        .replace(/^exec .*$/m, 'exit 0');
      await writeFile(join(dir, 'frontman-boot-local.sh'), script);
      await execFileAsync('bash', [join(dir, 'frontman-boot-local.sh')]);
      const { stdout } = await execFileAsync(
        'bash',
        // --norc: a bash whose stdin is a socket (Node's pipes) and whose environment has no SHLVL takes itself for
        // a remote shell and reads ~/.bashrc, which on a developer's machine can take seconds and print noise.
        ['--norc', '-c', `set -a; . '${root}/etc/ums/frontman.env'; node -e 'process.stdout.write(JSON.stringify(process.env))'`],
        {
          env: { PATH: process.env.PATH },
        },
      );
      const readBack = JSON.parse(stdout) as Record<string, string>;
      for (const [k, v] of Object.entries(fm.environment)) assert.equal(readBack[k], v, k);
      assert.deepEqual(JSON.parse(readBack.UMS_FRONTMAN_SERVICES ?? ''), [
        { container: 'web', protocol: 'http', listen: `127.0.0.1:${paths.frontmanPort}`, port: 8080, holdSeconds: 20 },
      ]);
    });

    it('no secret value is in the cloud-init: secrets are fetched by name at start', () => {
      for (const cloud of ['gcp', 'azure', 'aws', 'docker', 'frontman'] as const) {
        const text = rendered[cloud].cloud_config;
        assert.doesNotMatch(text, /"seed"|SU[A-Z2-7]{50,}|PRIVATE KEY/, cloud);
      }
    });

    for (const cloud of ['gcp', 'azure', 'aws', 'docker', 'frontman'] as const) {
      for (const script of ['bootstrap_script', 'start_script', 'boot_script'] as const) {
        it(`${cloud} ${script} passes bash -n${hasShellcheck ? ' and shellcheck' : ''}`, async (t) => {
          const file = join(dir, `${cloud}-${script}.sh`);
          await writeFile(file, rendered[cloud][script]);
          await execFileAsync('bash', ['-n', file]);
          if (!hasShellcheck) {
            t.skip('shellcheck is not installed (infra/setup.sh installs it): bash -n only');
            return;
          }
          const result = await execFileAsync('shellcheck', ['-s', 'bash', '-S', 'warning', file]).catch(
            (error: unknown) => error as { stdout: string },
          );
          assert.equal('stdout' in result ? result.stdout : '', '', `shellcheck ${cloud} ${script}`);
        });
      }
    }

    for (const script of ['broker_key_script', 'broker_boot_script'] as const) {
      it(`the broker's ${script} passes bash -n and shellcheck`, async (t) => {
        const file = join(dir, `${script}.sh`);
        await writeFile(file, rendered[script]);
        await execFileAsync('bash', ['-n', file]);
        if (!hasShellcheck) return t.skip('shellcheck is not installed: bash -n only');
        await execFileAsync('shellcheck', ['-s', 'bash', '-S', 'warning', file]);
      });
    }

    it('a boot script writes exactly the files the cloud-config writes, byte for byte', async () => {
      // Run the GCE boot script with its paths moved under a scratch root and its final exec stubbed out.
      const root = join(dir, 'boot-root');
      const script = rendered.gcp.boot_script
        .replace(/^(install -d -m \d+|chmod \d+) '\//gm, `$1 '${root}/`)
        .replaceAll(">'/", `>'${root}/`)
        .replace(/^exec .*$/m, 'exit 0');
      // Never outside the scratch root: every path it writes or creates was moved.
      for (const line of script.split('\n').filter((l) => /^(install|chmod) /.test(l) || l.includes(">'"))) {
        assert.ok(line.includes(`'${root}/`), `not moved under the scratch root: ${line.slice(0, 80)}`);
      }
      await writeFile(join(dir, 'boot-local.sh'), script);
      await execFileAsync('bash', [join(dir, 'boot-local.sh')]);
      const expected: Record<string, string> = {
        'etc/ums/agent.env': Object.entries(rendered.gcp.environment)
          .sort(([a], [b]) => (a < b ? -1 : 1))
          .map(([k, v]) => `${k}="${v}"\n`)
          .join(''),
        'etc/systemd/system/ums-agent.service': rendered.gcp.unit,
        'usr/local/libexec/ums/ums-agent-start': rendered.gcp.start_script,
        'usr/local/libexec/ums/bootstrap': rendered.gcp.bootstrap_script,
      };
      for (const [path, content] of Object.entries(expected)) assert.equal(await readFile(join(root, path), 'utf8'), content, path);
      assert.ok(rendered.gcp.cloud_config.includes('"path": "/usr/local/libexec/ums/ums-agent-start"'));
    });

    it('the clustered nats.conf passes nats-server -t', async () => {
      const file = join(dir, 'cluster0.conf');
      await writeFile(file, rendered.cluster0);
      await execFileAsync('nats-server', ['-t', '-c', file]);
      // And a broken one fails it (the check can fail).
      await writeFile(join(dir, 'broken.conf'), rendered.cluster0.replace('cluster {', 'cluster {{'));
      await assert.rejects(execFileAsync('nats-server', ['-t', '-c', join(dir, 'broken.conf')]));
    });

    it('a host gets the production packages only: its bootstrap runs host-setup.sh without the test tools', async () => {
      const listed = async (line: string, extra: NodeJS.ProcessEnv = {}) => {
        // The bootstrap's own line, run from the repository's host-setup.sh in its listing mode (changes nothing).
        // --norc: see the frontman's environment test above.
        const { stdout } = await execFileAsync('bash', ['--norc', '-c', `app=${JSON.stringify(repoRoot)}; ${line} --list-packages`], {
          env: { PATH: process.env.PATH, ...extra },
        });
        return stdout.split('\n').filter((p) => p !== '');
      };
      const podmanLine = hostSetupLine(rendered.gcp.bootstrap_script);
      const production = await listed(podmanLine);
      // What a development machine adds (infra/setup.sh passes UMS_DEV_MACHINE=1): the list a host must not get.
      const devOnly = (await listed(podmanLine, { UMS_DEV_MACHINE: '1' })).filter((p) => !production.includes(p));
      for (const tool of ['redis-tools', 'libmemcached-tools', 'busybox-static', 'nats-server', 'python3']) {
        assert.ok(devOnly.includes(tool), `${tool} is a development machine's (the check can fail)`);
      }
      for (const cloud of ['gcp', 'azure', 'aws', 'docker'] as const) {
        const packages = await listed(hostSetupLine(rendered[cloud].bootstrap_script));
        assert.deepEqual(
          packages.filter((p) => devOnly.includes(p)),
          [],
          `${cloud}: the cloud-init asks for test tools`,
        );
        assert.ok(packages.includes('criu') && packages.includes('gcc'), `${cloud}: CRIU and what builds its socket check`);
        assert.ok(packages.includes(cloud === 'docker' ? 'docker.io' : 'podman'), `${cloud}: its engine`);
        assert.ok(!packages.includes(cloud === 'docker' ? 'podman' : 'docker.io'), `${cloud}: not the other engine`);
      }
      // Nor does anything else in the cloud-init ask for them.
      for (const cloud of ['gcp', 'azure', 'aws', 'docker', 'frontman'] as const) {
        const installs = rendered[cloud].bootstrap_script.split('\n').filter((l) => /apt-get install/.test(l));
        for (const line of installs) for (const tool of devOnly) assert.ok(!line.split(/\s+/).includes(tool), `${cloud}: ${line}`);
      }
    });

    it("a Docker host: dockerd in experimental mode with runc's CRIU options, the agent on its socket, no page relay", () => {
      const host = rendered.docker;
      assert.equal(host.environment.UMS_ENGINE, 'docker');
      assert.equal(host.environment.UMS_DOCKER_SOCKET, 'unix:///run/docker.sock');
      assert.ok(!('UMS_PODMAN_URL' in host.environment) && !('UMS_PAGE_RELAY_ADDRESS' in host.environment));
      // What infra/docker-host.ts gives the local stack's Docker hosts, and agents/docker-engine.ts checks.
      const daemonJson = /^put \/etc\/docker\/daemon\.json '([^']*)'$/m.exec(host.bootstrap_script)?.[1];
      assert.deepEqual(JSON.parse(daemonJson ?? 'null'), { experimental: true }, "dockerd's daemon.json");
      assert.match(host.bootstrap_script, /^put \/etc\/criu\/runc\.conf '[^']*\ntcp-established\nfile-locks'$/m);
      assert.match(host.bootstrap_script, /ExperimentalBuild/);
      assert.doesNotMatch(host.bootstrap_script, /podman/);
      assert.match(host.unit, /^Requires=docker\.service$/m);
    });

    describe('the rendered 3-server cluster on real nats-servers', () => {
      const members: ChildProcess[] = [];
      const logs: string[] = ['', '', ''];

      before(async () => {
        for (const i of [0, 1, 2] as const) {
          const file = join(dir, `cluster${i}.conf`);
          await writeFile(file, rendered[`cluster${i}`]);
          const member = spawn('nats-server', ['-c', file], { stdio: ['ignore', 'ignore', 'pipe'] });
          member.stderr?.on('data', (chunk: Buffer) => (logs[i] += chunk.toString()));
          members.push(member);
        }
      });
      after(async () => {
        for (const member of members) {
          if (member.exitCode !== null) continue;
          member.kill('SIGTERM');
          await new Promise((r) => member.once('exit', r));
        }
      });

      it('its routes verify each other by name, and provisioning gives every stream and bucket 3 copies, raising existing ones', async () => {
        const options = {
          // By name: the certificate names no address (a client verifies the server as a route does).
          servers: paths.cluster.map((m) => `tls://localhost:${m.clientPort}`).join(','),
          name: 'terraform-test-cluster',
          credentials: credentialFiles.get('admin'),
          ca: paths.ca,
        };
        // As an earlier one-server deployment left them (1 replica), once the cluster has elected its JetStream leader.
        const deadline = Date.now() + 20_000;
        for (;;) {
          const result = await provisionBus(options, { replicas: 1 }).catch((error: unknown) => error as Error);
          if (result === undefined) break;
          if (Date.now() > deadline) assert.fail(`the cluster did not take the streams: ${result.message}\n${logs.join('\n')}`);
          await new Promise((r) => setTimeout(r, 250));
        }
        await provisionBus(options, { replicas: 3 });
        const admin = await readBrokerCredential(credentialFiles.get('admin') ?? '');
        const nc = await connect({
          servers: options.servers.split(','),
          tls: { caFile: paths.ca },
          authenticator: nkeyAuthenticator(new TextEncoder().encode(admin.seed)),
        });
        try {
          const jsm = await nc.jetstreamManager();
          const streams = ['UMS_EVENTS', 'UMS_COMMANDS', 'UMS_DEAD_LETTERS', ...Object.values(buckets).map((b) => `KV_${b}`)];
          for (const name of streams) {
            // The cluster places the new copies and elects the group's leader anew: wait for it to settle.
            let info = await jsm.streams.info(name);
            for (const until = Date.now() + 10_000; Date.now() < until; info = await jsm.streams.info(name)) {
              if (info.cluster?.leader !== undefined && info.cluster.replicas?.filter((r) => r.current).length === 2) break;
              await new Promise((r) => setTimeout(r, 100));
            }
            assert.equal(info.config.num_replicas, 3, name);
            assert.ok(info.cluster?.leader !== undefined, `${name}: a leader`);
            assert.deepEqual(
              info.cluster?.replicas?.map((r) => r.current),
              [true, true],
              `${name}: and two other copies, caught up (${JSON.stringify(info.cluster)})`,
            );
          }
        } finally {
          await nc.close();
        }
        for (const log of logs) assert.doesNotMatch(log, /TLS route handshake error|\[FTL\]/);
      });
    });

    describe('the rendered nats.conf on the real nats-server, and the rendered agent against it', () => {
      let server: ChildProcess;
      let log = '';
      let servers: string;

      before(async () => {
        const file = join(dir, 'nats.conf');
        await writeFile(file, rendered.single);
        server = spawn('nats-server', ['-c', file], { stdio: ['ignore', 'ignore', 'pipe'] });
        server.stderr?.on('data', (chunk: Buffer) => (log += chunk.toString()));
        servers = `tls://127.0.0.1:${port}`;
        const admin = await readBrokerCredential(credentialFiles.get('admin') ?? '');
        const deadline = Date.now() + 10_000;
        for (;;) {
          const nc = await connect({
            servers,
            reconnect: false,
            timeout: 500,
            tls: { caFile: paths.ca },
            authenticator: nkeyAuthenticator(new TextEncoder().encode(admin.seed)),
          }).catch((error: unknown) => error as Error);
          if (!(nc instanceof Error)) {
            await nc.close();
            break;
          }
          if (Date.now() > deadline) assert.fail(`nats-server did not accept the admin: ${nc.message}\n${log}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      });
      after(async () => {
        if (server === undefined || server.exitCode !== null) return;
        server.kill('SIGTERM');
        await new Promise((r) => server.once('exit', r));
      });

      it('TLS, JetStream, anonymous and plain TCP refused, each principal binds as itself', async () => {
        // The config it runs is the rendered one, with the principals' block from authorization.conf.
        assert.ok(rendered.single.includes((await readFile(paths.authorization, 'utf8')).trim()));
        // An anonymous client, even over TLS, is refused.
        await assert.rejects(connect({ servers, reconnect: false, timeout: 1000, tls: { caFile: paths.ca } }), /Authorization/i);
        // Plain TCP is refused.
        await assert.rejects(connect({ servers: `nats://127.0.0.1:${port}`, reconnect: false, timeout: 1000 }));
        // JetStream works: the admin provisions the streams and buckets, as deploy-credentials provision does.
        await provisionBus({ servers, name: 'terraform-test', credentials: credentialFiles.get('admin'), ca: paths.ca });
        // The agent, the functions, the bridge, the CLI and the frontman bind as themselves, with their least-privilege permissions.
        for (const principal of ['agent-gcp-us-central1-1', 'functions', 'bridge', 'cli', 'frontman']) {
          const bus = await connectNatsBus({
            servers,
            name: `terraform-test-${principal}`,
            credentials: credentialFiles.get(principal),
            ca: paths.ca,
          });
          await bus.close();
        }
        assert.doesNotMatch(log, /\[FTL\]/);
      });

      it('a single server refuses streams with more than one replica, saying why', async () => {
        await assert.rejects(
          provisionBus({ servers, name: 'terraform-test', credentials: credentialFiles.get('admin'), ca: paths.ca }, { replicas: 3 }),
          /3 replicas need a clustered broker/,
        );
      });

      it("the rendered unit's command and environment start the real agent, which connects as its principal and takes commands", async () => {
        const host = rendered.gcp;
        // The unit's ExecStart execs this command line (the start script's last line), from the release dir.
        const command = /^exec (\S+) (\S+)$/m.exec(host.start_script);
        assert.ok(command !== null, 'the start script execs the agent');
        const [, node, script] = command;
        assert.equal(node, '/usr/bin/node');
        const entry = (script ?? '').replace(/^\/opt\/ums\/app\//, `${repoRoot}/`);
        // The rendered environment, names and values, with what points at the VM's files moved here: the
        // broker, its CA and the credential the start script writes; the state dir; Podman's socket (absent:
        // this test never touches the machine's Podman, so the agent registers no engine facts).
        const local = join(dir, 'agent');
        const env: NodeJS.ProcessEnv = {
          PATH: process.env.PATH,
          ...host.environment,
          NATS_URL: servers,
          UMS_NATS_CA: paths.ca,
          UMS_NATS_CREDENTIALS: credentialFiles.get('agent-gcp-us-central1-1'),
          UMS_STATE_DIR: join(local, 'state'),
          UMS_LAUNCHER_DIR: join(local, 'launcher'),
          UMS_PODMAN_URL: `unix://${join(local, 'no-podman.sock')}`,
        };
        // No post-copy here: its probe would run the machine's CRIU.
        delete env.UMS_PAGE_RELAY_ADDRESS;
        const agent = spawn(process.execPath, [entry], { env, stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        agent.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString()));
        agent.stderr?.on('data', (chunk: Buffer) => (out += chunk.toString()));
        try {
          const deadline = Date.now() + 20_000;
          while (!out.includes('"agent started"') && agent.exitCode === null && Date.now() < deadline)
            await new Promise((r) => setTimeout(r, 100));
          assert.ok(out.includes('"agent started"'), `the agent did not start:\n${out}`);
          assert.match(out, /"agentId":"gcp-us-central1-1"/);
        } finally {
          agent.kill('SIGTERM');
          await new Promise((r) => (agent.exitCode !== null ? r(undefined) : agent.once('exit', r)));
        }
      });

      it("the rendered frontman unit's command and environment start the real frontman, which registers as its principal", async () => {
        const fm = rendered.frontman;
        const command = /^exec (\S+) (\S+)$/m.exec(fm.start_script);
        assert.ok(command !== null, 'the start script execs the frontman');
        const [, node, script] = command;
        assert.equal(node, '/usr/bin/node');
        const entry = (script ?? '').replace(/^\/opt\/ums\/app\//, `${repoRoot}/`);
        assert.ok(entry.endsWith('/dist/frontman/main.js'), entry);
        const env: NodeJS.ProcessEnv = {
          PATH: process.env.PATH,
          ...fm.environment,
          NATS_URL: servers,
          UMS_NATS_CA: paths.ca,
          UMS_NATS_CREDENTIALS: credentialFiles.get('frontman'),
        };
        const frontman = spawn(process.execPath, [entry.replace(`${repoRoot}/dist/`, `${compiledRoot}/`)], {
          env,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        frontman.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString()));
        frontman.stderr?.on('data', (chunk: Buffer) => (out += chunk.toString()));
        try {
          const deadline = Date.now() + 20_000;
          while (!out.includes('"frontman started"') && frontman.exitCode === null && Date.now() < deadline)
            await new Promise((r) => setTimeout(r, 100));
          assert.ok(out.includes('"frontman started"'), `the frontman did not start:\n${out}`);
          assert.match(out, /"frontmanId":"frontman-1"/);
          // Its registration is in the bucket the planner reads, under the principal's permissions.
          const bus = await connectNatsBus({
            servers,
            name: 'terraform-test-reader',
            credentials: credentialFiles.get('admin'),
            ca: paths.ca,
          });
          try {
            const registration = await bus.frontmen.get('frontman-1');
            assert.deepEqual(registration?.value.services, [
              { container: 'web', protocol: 'http', listen: `127.0.0.1:${paths.frontmanPort}`, port: 8080 },
            ]);
          } finally {
            await bus.close();
          }
        } finally {
          frontman.kill('SIGTERM');
          await new Promise((r) => (frontman.exitCode !== null ? r(undefined) : frontman.once('exit', r)));
        }
      });
    });
  });
});
