// Analytics over a chosen window: cost over time per service, the completion rate, the time to
// claim and to complete (p50 and p95), the queue depth, the dearest tasks and each agent's
// figures. The window is in the address; the figures are read again when spend or tasks move.

import { useState } from 'preact/hooks';
import { gql, useLive, useSoon } from '../api/live';
import { setQuery } from '../router';
import type { ScreenProps } from '../routes';
import { formatMoney, formatNumber, formatPercent, formatSeconds } from '../ui/format';
import { Empty, Loaded, PageHead, Status } from '../ui/parts';
import { ChartTable, LineChart, type Series } from './chart';
import { shortId } from './common';

type Bucket = 'HOUR' | 'DAY' | 'WEEK';

const WINDOWS: Record<string, { label: string; hours: number; bucket: Bucket }> = {
  '24h': { label: 'Last 24 hours, by hour', hours: 24, bucket: 'HOUR' },
  '7d': { label: 'Last 7 days, by day', hours: 24 * 7, bucket: 'DAY' },
  '30d': { label: 'Last 30 days, by day', hours: 24 * 30, bucket: 'DAY' },
  '12w': { label: 'Last 12 weeks, by week', hours: 24 * 7 * 12, bucket: 'WEEK' },
};

interface Durations {
  count: number;
  p50Seconds: number | null;
  p95Seconds: number | null;
  overTime: { start: string; p50Seconds: number | null; p95Seconds: number | null }[];
}

interface Analytics {
  from: string;
  to: string;
  totalCost: string;
  costOverTime: { start: string; cost: string; services: { serviceId: string; name: string | null; cost: string }[] }[];
  topTasks: { taskId: string; cost: string; charges: number; totalCost: string | null; status: string | null; task: { title: string } | null }[];
  agents: {
    agentId: string;
    name: string | null;
    cost: string;
    charges: number;
    tasksCompleted: number;
    tasksFailed: number;
    successRate: number | null;
  }[];
  completion: {
    created: number;
    completed: number;
    failed: number;
    cancelled: number;
    rate: number | null;
    overTime: { start: string; completed: number; failed: number; rate: number | null }[];
  };
  timeToClaim: Durations;
  timeToComplete: Durations;
  queueDepth: { start: string; pending: number; inProgress: number }[];
}

const DURATIONS = 'count p50Seconds p95Seconds overTime { start p50Seconds p95Seconds }';
const ANALYTICS = `query Analytics($from: DateTime!, $to: DateTime!, $bucket: Bucket!) {
  analytics(from: $from, to: $to, bucket: $bucket) {
    from to totalCost
    costOverTime { start cost services { serviceId name cost } }
    topTasks(first: 10) { taskId cost charges totalCost status task { title } }
    agents { agentId name cost charges tasksCompleted tasksFailed successRate }
    completion { created completed failed cancelled rate overTime { start completed failed rate } }
    timeToClaim { ${DURATIONS} } timeToComplete { ${DURATIONS} }
    queueDepth { start pending inProgress } } }`;

const hourLabel = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayLabel = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });

function bucketLabel(start: string, bucket: Bucket): string {
  const at = new Date(start);
  return bucket === 'HOUR' ? hourLabel.format(at) : dayLabel.format(at);
}

/// Cost per bucket: the total and the (up to) five dearest services over the window.
function costSeries(data: Analytics): Series[] {
  const totals = new Map<string, { name: string; total: number }>();
  data.costOverTime.forEach((b) =>
    b.services.forEach((s) => {
      const held = totals.get(s.serviceId) ?? { name: s.name ?? shortId(s.serviceId), total: 0 };
      held.total += Number(s.cost);
      totals.set(s.serviceId, held);
    }),
  );
  const dearest = [...totals.entries()].sort((a, b) => b[1].total - a[1].total).slice(0, 5);
  return [
    { name: 'All services', values: data.costOverTime.map((b) => Number(b.cost)) },
    ...dearest.map(([id, { name }]) => ({
      name,
      values: data.costOverTime.map((b) => Number(b.services.find((s) => s.serviceId === id)?.cost ?? 0)),
    })),
  ];
}

function durationSeries(d: Durations): Series[] {
  return [
    { name: 'p50', values: d.overTime.map((b) => b.p50Seconds) },
    { name: 'p95', values: d.overTime.map((b) => b.p95Seconds) },
  ];
}

export function AnalyticsScreen({ query }: ScreenProps) {
  const range = WINDOWS[query.get('window') ?? ''] ? query.get('window')! : '7d';
  const window = WINDOWS[range];
  const [data, setData] = useState<Analytics | null>(null);
  const read = async () => {
    const to = new Date();
    const from = new Date(to.getTime() - window.hours * 3_600_000);
    const result = await gql<{ analytics: Analytics }>(ANALYTICS, {
      from: from.toISOString(),
      to: to.toISOString(),
      bucket: window.bucket,
    });
    setData(result.analytics);
  };
  const readSoon = useSoon(read, 2000);
  const live = useLive(
    [
      { query: 'subscription AnalyticsSpend { serviceUpdates { id } }', next: () => readSoon() },
      { query: 'subscription AnalyticsTasks { taskUpdates { id } }', next: () => readSoon() },
    ],
    read,
    [range],
  );
  return (
    <section class="analytics">
      <PageHead title="Analytics" />
      <div class="filters">
        <label class="field inline">
          <span class="label">Window</span>
          <select value={range} onChange={(e) => setQuery({ window: e.currentTarget.value === '7d' ? undefined : e.currentTarget.value })}>
            {Object.entries(WINDOWS).map(([key, w]) => (
              <option key={key} value={key}>
                {w.label}
              </option>
            ))}
          </select>
        </label>
      </div>
      <Loaded loading={live.loading} error={live.error} hasData={data !== null}>
        {data && <Figures data={data} bucket={window.bucket} />}
      </Loaded>
    </section>
  );
}

function Figures({ data, bucket }: { data: Analytics; bucket: Bucket }) {
  const labels = (starts: { start: string }[]) => starts.map((b) => bucketLabel(b.start, bucket));
  const cost = costSeries(data);
  const money = (v: number) => formatMoney(v.toFixed(2), '');
  const seconds = (v: number) => formatSeconds(v);
  const rate: Series[] = [{ name: 'Completion rate', values: data.completion.overTime.map((b) => (b.rate === null ? null : b.rate * 100)) }];
  const depth: Series[] = [
    { name: 'Pending', values: data.queueDepth.map((b) => b.pending) },
    { name: 'In progress', values: data.queueDepth.map((b) => b.inProgress) },
  ];
  const percent = (v: number) => `${v.toFixed(0)} %`;
  return (
    <>
      <div class="tiles">
        <Tile label="Spent" value={formatMoney(data.totalCost, '')} />
        <Tile label="Completion rate" value={formatPercent(data.completion.rate)}>
          {formatNumber(data.completion.completed)} completed · {formatNumber(data.completion.failed)} failed ·{' '}
          {formatNumber(data.completion.created)} created
        </Tile>
        <Tile label="Time to claim" value={data.timeToClaim.p50Seconds === null ? '—' : seconds(data.timeToClaim.p50Seconds)}>
          p50; p95 {data.timeToClaim.p95Seconds === null ? '—' : seconds(data.timeToClaim.p95Seconds)} over{' '}
          {formatNumber(data.timeToClaim.count)}
        </Tile>
        <Tile label="Time to complete" value={data.timeToComplete.p50Seconds === null ? '—' : seconds(data.timeToComplete.p50Seconds)}>
          p50; p95 {data.timeToComplete.p95Seconds === null ? '—' : seconds(data.timeToComplete.p95Seconds)} over{' '}
          {formatNumber(data.timeToComplete.count)}
        </Tile>
      </div>
      <div class="grid two">
        <ChartCard title="Cost over time" labels={labels(data.costOverTime)} series={cost} format={money} />
        <ChartCard title="Completion rate" labels={labels(data.completion.overTime)} series={rate} format={percent} />
        <ChartCard title="Time to claim" labels={labels(data.timeToClaim.overTime)} series={durationSeries(data.timeToClaim)} format={seconds} />
        <ChartCard
          title="Time to complete"
          labels={labels(data.timeToComplete.overTime)}
          series={durationSeries(data.timeToComplete)}
          format={seconds}
        />
        <ChartCard title="Queue depth" labels={labels(data.queueDepth)} series={depth} />
      </div>
      <div class="grid two">
        <div class="card">
          <h2>Dearest tasks</h2>
          {data.topTasks.length === 0 ? (
            <Empty>No charge in this window.</Empty>
          ) : (
            <table class="table" aria-label="Dearest tasks">
              <thead>
                <tr>
                  <th scope="col">Task</th>
                  <th scope="col">Status</th>
                  <th scope="col" class="num">In the window</th>
                  <th scope="col" class="num">Charges</th>
                  <th scope="col" class="num">All time</th>
                </tr>
              </thead>
              <tbody>
                {data.topTasks.map((t) => (
                  <tr key={t.taskId}>
                    <th scope="row">
                      <a href={`/tasks/${t.taskId}`}>{t.task?.title ?? shortId(t.taskId)}</a>
                    </th>
                    <td>{t.status ? <Status status={t.status} /> : '—'}</td>
                    <td class="num">{formatMoney(t.cost, '')}</td>
                    <td class="num">{formatNumber(t.charges)}</td>
                    <td class="num">{t.totalCost ? formatMoney(t.totalCost, '') : '—'}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
        <div class="card">
          <h2>Agents</h2>
          {data.agents.length === 0 ? (
            <Empty>No agent spent or finished a task in this window.</Empty>
          ) : (
            <table class="table" aria-label="Agents in the window">
              <thead>
                <tr>
                  <th scope="col">Agent</th>
                  <th scope="col" class="num">Cost</th>
                  <th scope="col" class="num">Charges</th>
                  <th scope="col" class="num">Completed</th>
                  <th scope="col" class="num">Failed</th>
                  <th scope="col" class="num">Success</th>
                </tr>
              </thead>
              <tbody>
                {data.agents.map((a) => (
                  <tr key={a.agentId}>
                    <th scope="row">{a.name ?? shortId(a.agentId)}</th>
                    <td class="num">{formatMoney(a.cost, '')}</td>
                    <td class="num">{formatNumber(a.charges)}</td>
                    <td class="num">{formatNumber(a.tasksCompleted)}</td>
                    <td class="num">{formatNumber(a.tasksFailed)}</td>
                    <td class="num">{formatPercent(a.successRate)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
      </div>
    </>
  );
}

function ChartCard({
  title,
  labels,
  series,
  format,
}: {
  title: string;
  labels: string[];
  series: Series[];
  format?: (value: number) => string;
}) {
  return (
    <div class="card" data-chart={title}>
      <h2>{title}</h2>
      <LineChart label={title} labels={labels} series={series} format={format} />
      <ChartTable caption={title} labels={labels} series={series} format={format} />
    </div>
  );
}

function Tile({ label, value, children }: { label: string; value: string; children?: preact.ComponentChildren }) {
  return (
    <div class="tile card">
      <span class="tile-label">{label}</span>
      <span class="tile-value">{value}</span>
      {children && <span class="tile-more">{children}</span>}
    </div>
  );
}
