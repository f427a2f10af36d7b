// The overview: the queue, the agents at work, the spend today and this month, and what needs a
// look (budgets past a threshold or suspended, agents' requests for approval, tasks waiting for
// approval to start, tasks that failed for good, unacknowledged cost outliers). Live: each figure
// is read again when a change that moves it arrives.

import { useRef, useState } from 'preact/hooks';
import { gql, useLive, useSoon, VersionedMap } from '../api/live';
import {
  AGENT_FIELDS,
  QUEUE_STATS_FIELDS,
  SERVICE_FIELDS,
  TASK_FIELDS,
  type Agent,
  type Connection,
  type QueueStats,
  type Service,
  type Task,
} from '../api/types';
import { addDecimals, formatMoney, formatNumber, formatSeconds } from '../ui/format';
import { Empty, Loaded, PageHead, Status, Time } from '../ui/parts';
import { ApprovalQueue } from './approvals';
import { PauseBar } from './pauses';


interface Outlier {
  taskId: string;
  cost: string;
  why: string;
  task: { title: string } | null;
}

function startOfTodayLocal(): Date {
  const now = new Date();
  return new Date(now.getFullYear(), now.getMonth(), now.getDate());
}

/// What was charged since local midnight. (This month's spend is the services' own `spent`:
/// their period is the calendar month, and it arrives with every `serviceUpdates`.)
async function readSpendToday(): Promise<string> {
  const data = await gql<{ analytics: { totalCost: string } }>(
    `query SpendToday($from: DateTime!, $to: DateTime!) { analytics(from: $from, to: $to, bucket: HOUR) { totalCost } }`,
    { from: startOfTodayLocal().toISOString(), to: new Date().toISOString() },
  );
  return data.analytics.totalCost;
}

export function Overview() {
  const [stats, setStats] = useState<QueueStats | null>(null);
  const agents = useRef(new VersionedMap<Agent>()).current;
  const services = useRef(new VersionedMap<Service>()).current;
  const failures = useRef(new VersionedMap<Task>()).current;
  const approvals = useRef(new VersionedMap<Task>()).current;
  const [outliers, setOutliers] = useState<Outlier[]>([]);
  const [spentToday, setSpentToday] = useState<string | null>(null);
  const [, setTick] = useState(0);
  const changed = () => setTick((n) => n + 1);
  const live = useRef({ stats: true, agents: true });

  const readStats = useSoon(async () => {
    setStats((await gql<{ queueStats: QueueStats }>(`{ queueStats { ${QUEUE_STATS_FIELDS} } }`)).queueStats);
  });
  const readAgents = useSoon(async () => {
    (await gql<{ agents: Agent[] }>(`{ agents { ${AGENT_FIELDS} } }`)).agents.forEach((a) => agents.put(a));
    changed();
  });
  const readSpendSoon = useSoon(async () => setSpentToday(await readSpendToday()), 200);
  const readOutliers = useSoon(async () => {
    const data = await gql<{ outliers: Outlier[] }>(`{ outliers(acknowledged: false, first: 5) { taskId cost why task { title } } }`);
    setOutliers(data.outliers);
  });

  const state = useLive(
    [
      {
        query: `subscription OverviewStats { queueStatsUpdates { ${QUEUE_STATS_FIELDS} } }`,
        next: (data) => setStats(data.queueStatsUpdates),
        error: () => {
          live.current.stats = false;
        },
      },
      {
        query: `subscription OverviewTasks { taskUpdates { ${TASK_FIELDS} } }`,
        next: (data) => {
          const task: Task = data.taskUpdates;
          if (task.status === 'FAILED') failures.put(task);
          else if (failures.get(task.id) && failures.get(task.id)!.version < task.version) failures.delete(task.id);
          if (task.status === 'AWAITING_APPROVAL') approvals.put(task);
          else if (approvals.get(task.id) && approvals.get(task.id)!.version < task.version) approvals.delete(task.id);
          if (!live.current.stats) readStats();
          if (!live.current.agents) readAgents();
          changed();
        },
      },
      {
        query: `subscription OverviewAgents { agentUpdates { ${AGENT_FIELDS} } }`,
        next: (data) => {
          agents.put(data.agentUpdates);
          changed();
        },
        error: () => {
          live.current.agents = false;
        },
      },
      {
        query: `subscription OverviewServices { serviceUpdates { ${SERVICE_FIELDS} } }`,
        next: (data) => {
          services.put(data.serviceUpdates);
          readSpendSoon();
          changed();
        },
      },
      {
        query: `subscription OverviewOutliers { outlierUpdates { taskId } }`,
        next: () => readOutliers(),
        error: () => {},
      },
    ],
    async () => {
      const data = await gql<{
        queueStats: QueueStats;
        agents: Agent[];
        services: Service[];
        failed: Connection<Task>;
        awaiting: Connection<Task>;
        outliers: Outlier[];
      }>(`{
        queueStats { ${QUEUE_STATS_FIELDS} }
        agents { ${AGENT_FIELDS} }
        services { ${SERVICE_FIELDS} }
        failed: tasks(filter: {status: [FAILED]}, first: 8) { edges { cursor node { ${TASK_FIELDS} } } pageInfo { hasNextPage endCursor } }
        awaiting: tasks(filter: {status: [AWAITING_APPROVAL]}, first: 20) { edges { cursor node { ${TASK_FIELDS} } } pageInfo { hasNextPage endCursor } }
        outliers(acknowledged: false, first: 5) { taskId cost why task { title } } }`);
      setStats(data.queueStats);
      data.agents.forEach((a) => agents.put(a));
      data.services.forEach((s) => services.put(s));
      data.failed.edges.forEach((e) => failures.put(e.node));
      data.awaiting.edges.forEach((e) => approvals.put(e.node));
      setOutliers(data.outliers);
      setSpentToday(await readSpendToday());
      changed();
    },
    [],
  );

  const allAgents = agents.values();
  const working = allAgents.filter((a) => a.active && a.currentTaskId);
  const agentNames = new Map(allAgents.map((a) => [a.id, a.name]));
  const allServices = services.values().sort((a, b) => a.name.localeCompare(b.name));
  const alerts = allServices.filter((s) => s.status !== 'ACTIVE' || s.thresholdsCrossed.length > 0);
  const failed = failures
    .values()
    .filter((t) => t.status === 'FAILED')
    .sort((a, b) => (a.updatedAt < b.updatedAt ? 1 : -1))
    .slice(0, 8);
  const awaiting = approvals
    .values()
    .filter((t) => t.status === 'AWAITING_APPROVAL')
    .sort((a, b) => (a.createdAt < b.createdAt ? -1 : 1))
    .slice(0, 20);
  const currencies = [...new Set(allServices.map((s) => s.currency))];
  const currency = currencies.length === 1 ? currencies[0] : '';
  const budget = addDecimals(allServices.map((s) => s.monthlyBudget));
  const spentMonth = addDecimals(allServices.map((s) => s.spent));

  return (
    <section class="overview">
      <PageHead title="Overview" />
      <PauseBar />
      <Loaded loading={state.loading} error={state.error} hasData={!!stats}>
        {state.liveError && <p class="notice">Live updates stopped: {state.liveError.message}</p>}
        <div class="tiles">
          <Tile label="Queue depth" value={stats ? formatNumber(stats.pending) : '—'} id="tile-queue">
            {stats && (
              <>
                {formatNumber(stats.due)} due · {formatNumber(stats.retrying)} retrying
                <br />
                oldest waits {stats.oldestPendingAgeSeconds != null ? formatSeconds(stats.oldestPendingAgeSeconds) : '—'}
              </>
            )}
          </Tile>
          <Tile label="In progress" value={stats ? formatNumber(stats.inFlight) : '—'} id="tile-inflight">
            {stats && <>{formatNumber(stats.failed)} failed for good</>}
          </Tile>
          <Tile label="Agents at work" value={formatNumber(working.length)} id="tile-agents">
            of {formatNumber(allAgents.filter((a) => a.active).length)} active ({formatNumber(allAgents.length)} registered)
          </Tile>
          <Tile label="Spend today" value={spentToday ? formatMoney(spentToday, currency) : '—'} id="tile-today">
            since local midnight
          </Tile>
          <Tile label="Spend this month" value={formatMoney(spentMonth, currency)} id="tile-month">
            of {formatMoney(budget, currency)} budgeted{currencies.length > 1 ? ` in ${currencies.join(', ')}` : ''}
          </Tile>
        </div>
        <div class="grid two">
          <div class="card">
            <h2>Pending by priority</h2>
            {stats && stats.pending > 0 ? (
              <ul class="bars" aria-label="Pending tasks by priority">
                {[5, 4, 3, 2, 1].map((p) => {
                  const n = stats.byPriority.find((b) => b.priority === p)?.pending ?? 0;
                  return (
                    <li key={p}>
                      <span class="bar-label">P{p}</span>
                      <span class="bar-track">
                        <span class={`bar-fill prio-${p}`} style={{ width: `${(100 * n) / Math.max(1, stats.pending)}%` }} />
                      </span>
                      <span class="bar-value">{formatNumber(n)}</span>
                    </li>
                  );
                })}
              </ul>
            ) : (
              <Empty>Nothing is waiting.</Empty>
            )}
            <h2>Agents at work</h2>
            {working.length ? (
              <ul class="plain">
                {working.map((a) => (
                  <li key={a.id}>
                    <strong>{a.name}</strong> on <a href={`/tasks/${a.currentTaskId}`}>task {a.currentTaskId!.slice(0, 8)}</a>
                  </li>
                ))}
              </ul>
            ) : (
              <Empty>No agent holds a task.</Empty>
            )}
          </div>
          <div class="card" aria-labelledby="alerts-title">
            <h2 id="alerts-title">Alerts</h2>
            {alerts.length === 0 && outliers.length === 0 ? (
              <Empty>No budget alert and no unacknowledged cost outlier.</Empty>
            ) : (
              <ul class="plain alerts">
                {alerts.map((s) => (
                  <li key={s.id}>
                    {s.status === 'ACTIVE' ? (
                      <span class="tone-warn">
                        <span aria-hidden="true">⚠</span> Over {Math.max(...s.thresholdsCrossed)} %
                      </span>
                    ) : (
                      <Status status={s.status} />
                    )}{' '}
                    <strong>{s.name}</strong>: {formatMoney(s.spent, s.currency)} of{' '}
                    {formatMoney(s.monthlyBudget, s.currency)}
                    {s.thresholdsCrossed.length > 0 && <> — crossed {s.thresholdsCrossed.map((t) => `${t} %`).join(', ')}</>}
                  </li>
                ))}
                {outliers.map((o) => (
                  <li key={o.taskId}>
                    <span class="tone-bad">⚑ Cost outlier</span>{' '}
                    <a href={`/tasks/${o.taskId}`}>{o.task?.title ?? o.taskId.slice(0, 8)}</a>: {formatMoney(o.cost)} — {o.why}
                  </li>
                ))}
              </ul>
            )}
            <ApprovalQueue agentNames={agentNames} />
            <h2>Tasks awaiting approval to start</h2>
            {awaiting.length ? (
              <ul class="plain">
                {awaiting.map((t) => (
                  <li key={t.id} data-awaiting-task={t.id}>
                    <Status status="AWAITING_APPROVAL" /> <a href={`/tasks/${t.id}`}>{t.title}</a> · <Time at={t.createdAt} />
                  </li>
                ))}
              </ul>
            ) : (
              <Empty>No task waits for an approval.</Empty>
            )}
            <h2>Recent failures</h2>
            {failed.length ? (
              <ul class="plain">
                {failed.map((t) => (
                  <li key={t.id} data-failed-task={t.id}>
                    <Status status="FAILED" /> <a href={`/tasks/${t.id}`}>{t.title}</a> · <Time at={t.updatedAt} />
                  </li>
                ))}
              </ul>
            ) : (
              <Empty>No task failed for good.</Empty>
            )}
          </div>
        </div>
      </Loaded>
    </section>
  );
}

function Tile({ label, value, id, children }: { label: string; value: string; id: string; children?: preact.ComponentChildren }) {
  return (
    <div class="tile card" aria-labelledby={id}>
      <span class="tile-label" id={id}>
        {label}
      </span>
      <span class="tile-value" data-tile={id}>
        {value}
      </span>
      {children && <span class="tile-more">{children}</span>}
    </div>
  );
}
