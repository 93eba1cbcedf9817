import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { probeCriuFacts } from '../../agents/capability-probe.js';
import { checkCpuinfo, dumpCpuinfo } from '../../agents/cpu-compatibility.js';
import { resolveCriu } from '../../agents/criu-command.js';

/**
 * The host checks that `criu check` does not make, run with the host's real CRIU: a dump and restore of a
 * process holding TCP sockets, and the CPU features check a destination runs against the source's
 * cpuinfo image. Needs root and infra/host-setup.sh's CRIU.
 */

/** Protobuf varints, enough to rewrite one field of CRIU's cpuinfo image (test-only). */
function readVarint(bytes: Uint8Array, at: number): [number, number] {
  let value = 0;
  let shift = 0;
  for (;;) {
    const byte = bytes[at++] as number;
    value += (byte & 0x7f) * 2 ** shift;
    shift += 7;
    if (byte < 0x80) return [value, at];
  }
}

function writeVarint(value: number): number[] {
  const out: number[] = [];
  do {
    const low = value % 128;
    value = Math.floor(value / 128);
    out.push(value > 0 ? low | 0x80 : low);
  } while (value > 0);
  return out;
}

/**
 * The image as a CPU that also has capability bit `bit` of word `word` would have written it: magic (8
 * bytes), a 4-byte little-endian size, then CpuinfoEntry { repeated CpuinfoX86Entry x86_entry = 1 }, whose
 * `repeated uint32 capability = 6` holds the CPU's feature words in the kernel's cpufeatures order.
 */
function withCapability(image: Buffer, word: number, bit: number): Buffer {
  const body = image.subarray(12);
  const [entryLength, entryStart] = readVarint(body, 1);
  const entry = body.subarray(entryStart, entryStart + entryLength);
  const out: number[] = [];
  let index = 0;
  for (let at = 0; at < entry.length;) {
    const tag = entry[at++] as number;
    if ((tag & 7) === 0) {
      let [value, next] = readVarint(entry, at);
      at = next;
      if (tag >> 3 === 6 && index++ === word) value = (value | (1 << bit)) >>> 0;
      out.push(tag, ...writeVarint(value));
    } else {
      const [length, next] = readVarint(entry, at);
      out.push(tag, ...entry.subarray(at, next + length));
      at = next + length;
    }
  }
  const message = Buffer.from([0x0a, ...writeVarint(out.length), ...out]);
  const size = Buffer.alloc(4);
  size.writeUInt32LE(message.length);
  return Buffer.concat([image.subarray(0, 8), size, message]);
}

describe('host checks with the real CRIU', async () => {
  const criu = await resolveCriu();

  it(
    "finds that this CRIU checkpoints and restores TCP sockets, and dumps the CPU's features",
    { skip: criu === undefined && 'no criu on this host' },
    async () => {
      const facts = await probeCriuFacts(criu as string);
      assert.equal(facts.sockets.available, true, facts.sockets.reason);
      assert.ok(facts.cpuinfo !== undefined && Buffer.from(facts.cpuinfo, 'base64').length > 12);
    },
  );

  it('says where the socket check is missing, instead of guessing', { skip: criu === undefined && 'no criu on this host' }, async () => {
    const facts = await probeCriuFacts(criu as string, '/nonexistent/criu-socket-check');
    assert.equal(facts.sockets.available, false);
    assert.match(facts.sockets.reason ?? '', /not installed \(infra\/host-setup\.sh installs it\)/);
  });

  it(
    "accepts the source's CPU when it is this one, and refuses one with an instruction set this CPU lacks",
    { skip: criu === undefined && 'no criu on this host' },
    async () => {
      const own = await dumpCpuinfo(criu as string);
      assert.deepEqual(await checkCpuinfo(criu as string, own), { compatible: true });
      // Word 18 (CPUID 7 EDX) bit 3: AVX512_4FMAPS, an AVX-512 extension of Xeon Phi only: no cloud VM has it.
      const richer = withCapability(Buffer.from(own, 'base64'), 18, 3);
      assert.notEqual(richer.toString('base64'), own, 'this CPU must not have the feature for the test to mean anything');
      const verdict = await checkCpuinfo(criu as string, richer.toString('base64'));
      assert.equal(verdict.compatible, false);
      assert.match(
        verdict.compatible ? '' : verdict.reason,
        /lacks instruction-set features .*CPU instruction capabilities do not match run time/,
      );
    },
  );
});
