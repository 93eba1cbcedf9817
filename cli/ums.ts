#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import { closedHosts } from '../core/evacuation.js';
import { Approach } from '../core/events.js';
import { MigrationMode } from '../core/migration-mode.js';
import { planAgainst } from '../core/migration-plan.js';
import { timelineOf, whereItRuns } from '../core/migration.js';
import { connectCli } from './bus-connection.js';
import { drain, formatEvacuation, type DrainOptions } from './drain-command.js';
import { formatAgents, formatFrontman, formatImageShipping, formatMigrations, formatPlan, formatTimeline, planSummary } from './format.js';
import { migrate, requestChoices, type MigrateOptions } from './migrate-command.js';
import { parseHostList, runStack, stackDown, stackInfo, stackUp } from './stack-command.js';

const program = new Command('ums').description('Live migration of running containers across clouds').showHelpAfterError();
const natsOption = () => new Option('--nats <url>', 'NATS server (default: $NATS_URL, then the local stack)');
const approachOption = () =>
  new Option(
    '--approach <approach>',
    'force an approach (refused with the reason if it is not possible); default: the cheapest possible',
  ).choices(Approach.options);
const modeOption = () =>
  new Option(
    '--mode <mode>',
    'force a mode (refused with the reason if it is not possible); default: stop-and-copy, or post-copy where --frozen-budget says',
  ).choices(MigrationMode.options);
const budgetOption = () =>
  new Option(
    '--frozen-budget <seconds>',
    'the longest freeze to accept: above it, post-copy where both hosts can (the service runs at once on the destination while its memory follows)',
  ).argParser(parseSeconds);

function parseSeconds(value: string): number {
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new InvalidArgumentError('a positive number of seconds');
  return Math.round(seconds * 1000);
}

program
  .command('migrate')
  .description("live-migrate a running container to another agent's host")
  .argument('<container>', 'container name on the source host')
  .requiredOption('--to <agent>', 'destination agent id')
  .option('--from <agent>', 'source agent id (default: the agent that runs the container)')
  .option('--timeout <seconds>', 'give up following after this long', '600')
  .option('--id <migrationId>', 'choose the migration id (makes a retried request idempotent)')
  .addOption(approachOption())
  .addOption(modeOption())
  .addOption(budgetOption())
  .option('--json', 'print the result as JSON')
  .addOption(natsOption())
  .action(
    async (
      container: string,
      options: {
        to: string;
        from?: string;
        timeout: string;
        json?: boolean;
        nats?: string;
        id?: string;
        approach?: Approach;
        mode?: MigrationMode;
        frozenBudget?: number;
      },
    ) => {
      process.exitCode = await migrate(container, options);
    },
  );

program
  .command('plan')
  .description('show which migration approach would be used for a container, and why (nothing is moved)')
  .argument('<container>', 'container name on the source host')
  .requiredOption('--to <agent>', 'destination agent id')
  .option('--from <agent>', 'source agent id (default: the agent that runs the container)')
  .addOption(approachOption())
  .addOption(modeOption())
  .addOption(budgetOption())
  .option('--json', 'print as JSON')
  .addOption(natsOption())
  .action(
    async (container: string, options: Pick<MigrateOptions, 'to' | 'from' | 'approach' | 'mode' | 'frozenBudget' | 'json' | 'nats'>) => {
      const bus = await connectCli(options.nats);
      try {
        const [agents, evacuations] = await Promise.all([bus.agents.list(), bus.evacuations.list()]);
        const plan = planAgainst(
          agents.map((entry) => entry.value),
          { container, ...requestChoices(options) },
          Date.now(),
          closedHosts(evacuations.map((entry) => entry.value)),
        );
        process.stdout.write(options.json ? `${JSON.stringify(planSummary(plan), null, 2)}\n` : `${formatPlan(plan)}\n`);
        process.exitCode = plan.ok && plan.mode.kind === 'chosen' ? 0 : 1;
      } finally {
        await bus.close();
      }
    },
  );

program
  .command('agents')
  .description('list registered agents and their capabilities')
  .option('--json', 'print as JSON')
  .addOption(natsOption())
  .action(async (options: { json?: boolean; nats?: string }) => {
    const bus = await connectCli(options.nats);
    try {
      const [entries, evacuations] = await Promise.all([bus.agents.list(), bus.evacuations.list()]);
      const agents = entries.map((entry) => entry.value);
      const closed = closedHosts(evacuations.map((entry) => entry.value));
      process.stdout.write(options.json ? `${JSON.stringify(agents, null, 2)}\n` : `${formatAgents(agents, Date.now(), closed)}\n`);
    } finally {
      await bus.close();
    }
  });

program
  .command('status')
  .description('show migrations (all, or one with its timeline) and rejected messages')
  .argument('[migration]', 'a migration id')
  .option('--json', 'print as JSON')
  .addOption(natsOption())
  .action(async (id: string | undefined, options: { json?: boolean; nats?: string }) => {
    const bus = await connectCli(options.nats);
    try {
      if (id) {
        const record = await bus.migrations.get(id);
        if (!record) throw new Error(`no migration ${id}; "ums status" lists them`);
        const timeline = timelineOf(record.value);
        if (options.json) process.stdout.write(`${JSON.stringify({ ...record.value, timeline }, null, 2)}\n`);
        else {
          const r = record.value;
          const image = formatImageShipping(r);
          process.stdout.write(
            `${r.migrationId}: ${r.container} ${r.sourceAgent ?? '?'} -> ${r.destinationAgent}: ${r.state} (epoch ${r.epoch})${r.failure ? ` (${r.failure.phase}: ${r.failure.reason})` : ''}\n` +
              (r.approach ? `  approach: ${r.approachReason ?? r.approach}\n` : '') +
              (r.mode ? `  mode: ${r.modeReason ?? r.mode}\n` : '') +
              ('memoryBesideBytes' in r && r.memoryBesideBytes !== undefined && r.memoryBesideBytes > 0
                ? `  memory: ${(r.memoryBesideBytes / 1048576).toFixed(1)} MiB sent as CRIU wrote it, beside the engine's archive\n`
                : '') +
              (image !== undefined ? `  image: ${image}\n` : '') +
              `  service: ${describeWhere(whereItRuns(r))}${r.runningOnReport ? ` (${r.runningOnReport})` : ''}\n` +
              (r.frontman ? `  frontman: ${formatFrontman(r.frontman)}\n` : '') +
              (r.deadlineAt && !['done', 'failed'].includes(r.state) ? `  deadline of this phase: ${r.deadlineAt}\n` : '') +
              (r.rollback
                ? `  rollback: ${r.rollback.how ?? (r.rollback.destinationClear ? 'destination clear' : 'waiting for the destination to confirm it holds no copy')}\n`
                : '') +
              (r.pendingCleanup ? `  pending cleanup: ${r.pendingCleanup}\n` : '') +
              `${formatTimeline(timeline)}\n`,
          );
        }
        return;
      }
      const records = (await bus.migrations.list()).map((entry) => entry.value);
      const deadLetters = await bus.listDeadLetters(20);
      if (options.json) {
        process.stdout.write(`${JSON.stringify({ migrations: records, deadLetters }, null, 2)}\n`);
        return;
      }
      process.stdout.write(`${formatMigrations(records)}\n`);
      if (deadLetters.length > 0) {
        process.stdout.write(
          `\nrejected messages (dead letters):\n${deadLetters.map((d) => `  ${d.at} ${d.origin}: ${d.reason}`).join('\n')}\n`,
        );
      }
    } finally {
      await bus.close();
    }
  });

function describeWhere({ agent, frozen }: ReturnType<typeof whereItRuns>): string {
  if (agent === null) return 'NOT running anywhere (operator action needed)';
  if (agent === undefined) return 'where it runs is not known yet';
  return frozen ? `frozen on ${agent} (checkpoint kept) while the migration moves it` : `runs on ${agent}`;
}

program
  .command('drain')
  .description(
    "move every service off an agent's host to hosts the planner picks, a few at once, and close the host to new services; what cannot move is left running, with why",
  )
  .argument('<agent>', 'the agent whose host to empty')
  .option('--concurrency <n>', "migrations at once (default: the evacuation function's, UMS_EVACUATION_CONCURRENCY)", parsePositiveInt)
  .option('--cancel', 'stop draining (what is moving ends, nothing new starts) and open the host to new services again')
  .option('--timeout <seconds>', 'give up following after this long', '1800')
  .option('--json', 'print the evacuation record as JSON')
  .addOption(natsOption())
  .action(async (agent: string, options: DrainOptions) => {
    process.exitCode = await drain(agent, options);
  });

program
  .command('evacuations')
  .description("show each host's evacuation (drain or cloud notice): what was decided, why, and what became of each service")
  .argument('[agent]', 'one agent')
  .option('--json', 'print as JSON')
  .addOption(natsOption())
  .action(async (agent: string | undefined, options: { json?: boolean; nats?: string }) => {
    const bus = await connectCli(options.nats);
    try {
      const records = (await bus.evacuations.list()).map((entry) => entry.value).filter((r) => agent === undefined || r.agent === agent);
      if (options.json) process.stdout.write(`${JSON.stringify(records, null, 2)}\n`);
      else process.stdout.write(`${records.length === 0 ? 'no evacuations' : records.map(formatEvacuation).join('\n\n')}\n`);
    } finally {
      await bus.close();
    }
  });

function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0 || n > 64) throw new InvalidArgumentError('a whole number from 1 to 64');
  return n;
}

const stack = program
  .command('stack')
  .description('the local stack: NATS, object storage servers, functions, bridge, simulated hosts and agents');
const stackName = () => new Option('--name <name>', 'stack name (its own ports and folder)').default('default');
const dockerHosts = () =>
  new Option(
    '--docker-hosts <hosts>',
    'hosts that run Docker (a dockerd of their own) instead of Podman: clouds or agent ids, comma-separated, e.g. "gcp" or "azure,gcp"',
  )
    .argParser(parseHostList)
    .default([], 'every host on Podman');
const criHosts = () =>
  new Option(
    '--cri-hosts <hosts>',
    'hosts that are Kubernetes nodes (a containerd 2 of their own, driven through the CRI: orchestrator level) instead of Podman hosts: clouds or agent ids, comma-separated',
  )
    .argParser(parseHostList)
    .default([], 'none');
stack
  .command('up')
  .description(
    'start the local stack in the background (hosts: azure and gcp, each on Podman unless --docker-hosts or --cri-hosts names it)',
  )
  .addOption(stackName())
  .addOption(dockerHosts())
  .addOption(criHosts())
  .option('--json', 'print as JSON')
  .action((options: { name: string; dockerHosts: string[]; criHosts: string[]; json?: boolean }) =>
    stackUp(options.name, options.json ?? false, { dockerHosts: options.dockerHosts, criHosts: options.criHosts }),
  );
stack
  .command('down')
  .description('stop the local stack and remove its containers and data')
  .addOption(stackName())
  .action((options: { name: string }) => stackDown(options.name));
stack
  .command('info')
  .description("where each host's engine (Podman, Docker or containerd) socket is, and each agent's id")
  .addOption(stackName())
  .option('--json', 'print as JSON')
  .action((options: { name: string; json?: boolean }) => stackInfo(options.name, options.json ?? false));
stack
  .command('run', { hidden: true })
  .addOption(stackName())
  .addOption(dockerHosts())
  .addOption(criHosts())
  .action((options: { name: string; dockerHosts: string[]; criHosts: string[] }) =>
    runStack(options.name, { dockerHosts: options.dockerHosts, criHosts: options.criHosts }),
  );

program.parseAsync().catch((error: unknown) => {
  process.stderr.write(`ums: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
