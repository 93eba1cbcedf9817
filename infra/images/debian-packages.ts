import { execFile } from 'node:child_process';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

/*
 * Debian packages for image root filesystems, fetched with the host's own apt-get but with a private
 * sources list, package lists and dpkg status, so the host's apt state is neither read nor changed and no
 * package is ever installed (nor any maintainer script run) on the host: each .deb is only unpacked with
 * `dpkg-deb -x` into a directory. Setup-time only.
 */

const execFileAsync = promisify(execFile);

export const DEFAULT_DEBIAN_MIRROR = 'http://deb.debian.org/debian';
export const DEFAULT_DEBIAN_SECURITY_MIRROR = 'http://deb.debian.org/debian-security';
const ARCHIVE_KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';

/**
 * Packages that a server's package depends on only for its maintainer scripts (creating a system user,
 * registering an init script, asking debconf questions) or for helper scripts in Perl. An image runs the
 * server directly as root and never runs those scripts, so these are declared already installed in the
 * private dpkg status: apt then leaves them, and everything only they need (perl, PAM, ...), out.
 */
export const MAINTAINER_SCRIPT_ONLY_PACKAGES: readonly string[] = [
  'adduser',
  'debconf',
  'dpkg',
  'init-system-helpers',
  'lsb-base',
  'passwd',
  'perl',
  'perl-base',
  'sysvinit-utils',
  'tar',
  'usrmerge',
];

export interface DebianSource {
  /** e.g. bookworm. The suite's -updates and -security suites are used too. */
  suite: string;
  /** Default http://deb.debian.org/debian (UMS_DEBIAN_MIRROR overrides). */
  mirror?: string;
  /** Default http://deb.debian.org/debian-security (UMS_DEBIAN_SECURITY_MIRROR overrides). */
  securityMirror?: string;
}

export interface ResolvedPackage {
  name: string;
  version: string;
  arch: string;
}

/**
 * A private apt configuration under `stateDir` (sources list, lists, stand-in dpkg status). The lists are
 * refreshed by `update()`; `resolve()` and `download()` then work from them.
 */
export class PrivateApt {
  private readonly options: string[];

  private constructor(
    stateDir: string,
    private readonly source: Required<DebianSource>,
  ) {
    this.options = [
      '-o',
      `Dir::Etc::SourceList=${join(stateDir, 'sources.list')}`,
      '-o',
      'Dir::Etc::SourceParts=/dev/null',
      '-o',
      `Dir::State::Lists=${join(stateDir, 'lists')}`,
      '-o',
      `Dir::State::status=${join(stateDir, 'status')}`,
      '-o',
      `Dir::Cache=${join(stateDir, 'cache')}`,
      '-o',
      `Dir::Cache::Archives=${join(stateDir, 'archives')}`,
      // The host's apt lock and sandbox user are about the host's own state, which this never touches.
      '-o',
      'Debug::NoLocking=1',
      '-o',
      'APT::Sandbox::User=root',
      '-o',
      'APT::Install-Recommends=false',
      '-o',
      'APT::Get::Assume-Yes=true',
    ];
  }

  static async create(stateDir: string, source: DebianSource): Promise<PrivateApt> {
    const resolved: Required<DebianSource> = {
      suite: source.suite,
      mirror: source.mirror ?? process.env.UMS_DEBIAN_MIRROR ?? DEFAULT_DEBIAN_MIRROR,
      securityMirror: source.securityMirror ?? process.env.UMS_DEBIAN_SECURITY_MIRROR ?? DEFAULT_DEBIAN_SECURITY_MIRROR,
    };
    for (const d of ['lists/partial', 'cache', 'archives/partial']) await mkdir(join(stateDir, d), { recursive: true });
    const signed = `[signed-by=${ARCHIVE_KEYRING}]`;
    await writeFile(
      join(stateDir, 'sources.list'),
      [
        `deb ${signed} ${resolved.mirror} ${resolved.suite} main`,
        `deb ${signed} ${resolved.mirror} ${resolved.suite}-updates main`,
        `deb ${signed} ${resolved.securityMirror} ${resolved.suite}-security main`,
        '',
      ].join('\n'),
    );
    await writeFile(join(stateDir, 'status'), standInStatus(MAINTAINER_SCRIPT_ONLY_PACKAGES));
    return new PrivateApt(stateDir, resolved);
  }

  async update(): Promise<void> {
    await this.aptGet(['update'], `apt-get update of Debian ${this.source.suite} from ${this.source.mirror}`);
  }

  /** The full dependency closure of `packages` (without recommends and the stand-ins), as apt would install it. */
  async resolve(packages: readonly string[]): Promise<ResolvedPackage[]> {
    const { stdout } = await this.aptGet(
      ['install', '--simulate', ...packages],
      `resolving ${packages.join(' ')} in Debian ${this.source.suite}`,
    );
    // "Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []"
    const resolved = [...stdout.matchAll(/^Inst (\S+) \((\S+) .*\[(\S+)\]\)/gm)].map((m) => ({
      name: m[1] as string,
      version: m[2] as string,
      arch: m[3] as string,
    }));
    for (const wanted of packages) {
      if (!resolved.some((p) => p.name === wanted)) {
        throw new Error(`apt did not resolve ${wanted} in Debian ${this.source.suite}: ${stdout.slice(-1000)}`);
      }
    }
    return resolved;
  }

  /** Downloads exactly these versions into `dir`; returns the .deb paths. */
  async download(packages: readonly ResolvedPackage[], dir: string): Promise<string[]> {
    await mkdir(dir, { recursive: true });
    await this.aptGet(
      ['download', ...packages.map((p) => `${p.name}:${p.arch}=${p.version}`)],
      `downloading ${packages.length} packages from Debian ${this.source.suite}`,
      dir,
    );
    const debs = (await readdir(dir)).filter((f) => f.endsWith('.deb')).sort();
    if (debs.length !== packages.length) {
      throw new Error(`apt-get download gave ${debs.length} .deb files for ${packages.length} packages in ${dir}`);
    }
    return debs.map((f) => join(dir, f));
  }

  private async aptGet(args: string[], what: string, cwd?: string): Promise<{ stdout: string; stderr: string }> {
    try {
      return await execFileAsync('apt-get', [...this.options, ...args], {
        cwd,
        env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive', LC_ALL: 'C' },
        maxBuffer: 16 * 1024 * 1024,
        timeout: 300_000,
      });
    } catch (error) {
      const e = error as { stderr?: string; stdout?: string; message: string };
      const detail = (e.stderr || e.stdout || e.message).trim().slice(-2000);
      throw new Error(`${what} failed (is ${this.source.mirror} reachable?): ${detail}`, { cause: error });
    }
  }
}

/** Unpacks each .deb into `rootfs` (data only: no maintainer script runs). Later packages win on overlaps. */
export async function unpackDebs(debs: readonly string[], rootfs: string): Promise<void> {
  await mkdir(rootfs, { recursive: true });
  for (const deb of debs) {
    await execFileAsync('dpkg-deb', ['-x', deb, rootfs]).catch((error: { stderr?: string; message: string }) => {
      throw new Error(`dpkg-deb -x ${deb} failed: ${(error.stderr ?? error.message).trim()}`, { cause: error });
    });
  }
}

/** A dpkg status file that says each package is installed (at a version above any real one, depending on nothing). */
function standInStatus(packages: readonly string[]): string {
  return packages
    .map((name) =>
      [
        `Package: ${name}`,
        'Status: install ok installed',
        'Version: 99999',
        'Architecture: all',
        // perl is also depended on as perl:any, which only a Multi-Arch: allowed package satisfies.
        'Multi-Arch: allowed',
        ...(name === 'debconf' ? ['Provides: debconf-2.0'] : []),
        'Maintainer: UMS image builder <nobody@localhost>',
        'Description: stand-in: only maintainer scripts need this package, and they never run in the image',
        '',
      ].join('\n'),
    )
    .join('\n');
}
