import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseGmtDate } from '../../agents/notices/notice-watcher.js';
import { subjects } from '../../core/event-bus.js';
import { mayState, publisherOf } from '../../core/event-identity.js';
import { eventScope, HOST_SCOPE, InvalidMessageError, makeEvent, parseEvent, toWire, type EventData } from '../../core/events.js';
import { endsTheHost, HostNotice, NoticeKind } from '../../core/host-notice.js';

const notice: EventData<'host.notice'> = {
  agent: 'azure-eastus-1',
  cloud: 'azure',
  noticeId: 'C7061BAC-AFDC-4513-B24B-AA5F13A16123',
  kind: 'preemption',
  evicts: true,
  deadline: '2026-04-11T22:26:58.000Z',
  summary: 'Preempt Scheduled; not before Sat, 11 Apr 2026 22:26:58 GMT; source Platform; resources azure-eastus-1',
  observedAt: '2026-04-11T22:26:28.000Z',
};

describe('host notices', () => {
  it('evacuate only for notices that end the host', () => {
    // The rule: Azure Preempt, Terminate, Reboot, Redeploy; GCP preemption or TERMINATE on maintenance;
    // AWS interruption (and its scheduled reboots, stops and retirements) end the host. Azure's Freeze, GCP's
    // live migration, AWS's network/power maintenance and rebalance advice do not.
    const ending = NoticeKind.options.filter(endsTheHost).sort();
    assert.deepEqual(ending, ['maintenance-terminate', 'preemption', 'reboot', 'redeploy', 'retirement', 'stop', 'termination']);
    assert.deepEqual(NoticeKind.options.filter((k) => !endsTheHost(k)).sort(), [
      'freeze',
      'maintenance',
      'maintenance-live-migrate',
      'rebalance-advisory',
    ]);
  });

  it('round-trips a host.notice fact, filed under the host scope with the agent as its subject and publisher', () => {
    const event = makeEvent('host.notice', '/ums/agents/azure-eastus-1', notice, 'azure-eastus-1.notice.1');
    const parsed = parseEvent(new TextEncoder().encode(JSON.stringify(toWire(event))));
    assert.equal(parsed.name, 'host.notice');
    assert.equal(parsed.type, 'dev.ums.host.notice.v1');
    assert.equal(parsed.subject, 'azure-eastus-1');
    assert.deepEqual(parsed.data, notice);
    assert.equal(eventScope(parsed), HOST_SCOPE);
    const subject = subjects.event(eventScope(parsed), publisherOf(parsed), parsed.name);
    assert.equal(subject, 'ums.events._host.agent-azure-eastus-1.host.notice');
    assert.ok(mayState(parsed, subject));
    assert.ok(!mayState(parsed, 'ums.events._host.agent-gcp-1.host.notice'), 'another agent cannot state this host’s notice');
    // No migration id can take the host scope's place.
    assert.throws(() => makeEvent('migration.requested', '/ums/cli', { migrationId: HOST_SCOPE, container: 'c', destinationAgent: 'a' }));

    const withdrawn = makeEvent('host.notice-withdrawn', '/ums/agents/azure-eastus-1', {
      agent: 'azure-eastus-1',
      cloud: 'azure',
      noticeId: notice.noticeId,
      kind: 'preemption',
      evicts: true,
      withdrawnAt: '2026-04-11T22:27:00.000Z',
    });
    assert.equal(parseEvent(toWire(withdrawn)).name, 'host.notice-withdrawn');
  });

  it('refuses forged and malformed notices, naming the field', () => {
    const wire = toWire(makeEvent('host.notice', '/ums/agents/azure-eastus-1', notice));
    const refused = (data: Record<string, unknown>, field: RegExp) =>
      assert.throws(
        () => parseEvent({ ...wire, data: { ...notice, ...data } }),
        (e: unknown) => e instanceof InvalidMessageError && field.test(e.message),
      );
    // A pause that claims to end the host, and an eviction that claims not to.
    refused({ kind: 'freeze', evicts: true }, /evicts: evicts must say whether the kind ends the host/);
    refused({ kind: 'maintenance-live-migrate', evicts: true }, /evicts/);
    refused({ evicts: false }, /evicts/);
    refused({ kind: 'eviction' }, /kind/);
    refused({ cloud: 'local' }, /cloud/);
    refused({ agent: 'azure.eastus' }, /agent/);
    refused({ agent: undefined }, /agent/);
    refused({ noticeId: '../etc/passwd' }, /noticeId/);
    refused({ noticeId: '' }, /noticeId/);
    refused({ deadline: 'Mon, 19 Sep 2016 18:29:47 GMT' }, /deadline/);
    refused({ observedAt: undefined }, /observedAt/);
    refused({ summary: 'x'.repeat(501) }, /summary/);
    assert.throws(() => makeEvent('host.notice', '/a', { ...notice, kind: 'freeze' }), /evicts/);
    const withdrawn = toWire(
      makeEvent('host.notice-withdrawn', '/a', {
        agent: 'aws-us-east-1-1',
        cloud: 'aws',
        noticeId: 'spot-instance-action',
        kind: 'preemption',
        evicts: true,
        withdrawnAt: '2026-04-11T22:27:00Z',
      }),
    );
    const { withdrawnAt: _withdrawnAt, ...undated } = withdrawn.data as Record<string, unknown>;
    assert.throws(() => parseEvent({ ...withdrawn, data: undated }), /withdrawnAt/);
    // The watchers' own model holds to the same rule.
    const { agent: _agent, ...model } = notice;
    assert.equal(HostNotice.parse(model).evicts, true);
    assert.throws(() => HostNotice.parse({ ...model, kind: 'rebalance-advisory' }), /evicts/);
  });

  it('reads the metadata services’ GMT dates strictly', () => {
    assert.equal(parseGmtDate('Mon, 19 Sep 2016 18:29:47 GMT')?.toISOString(), '2016-09-19T18:29:47.000Z', 'Azure NotBefore (RFC 1123)');
    assert.equal(parseGmtDate('21 Jan 2019 09:00:43 GMT')?.toISOString(), '2019-01-21T09:00:43.000Z', 'AWS scheduled-event NotBefore');
    assert.equal(parseGmtDate('1 Feb 2019 09:00:43 GMT')?.toISOString(), '2019-02-01T09:00:43.000Z');
    for (const bad of [
      '',
      '31 Feb 2019 09:00:43 GMT',
      '21 Jan 2019 25:00:43 GMT',
      '2019-01-21T09:00:43Z',
      'tomorrow',
      '21 Jan 2019 09:00:43 UTC',
    ]) {
      assert.equal(parseGmtDate(bad), undefined, bad);
    }
  });
});
