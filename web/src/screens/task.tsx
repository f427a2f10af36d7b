// A task's page: its state, its chain (parent and children), progress, each failed attempt's
// error, its agents' requests for approval, and its history with what each event changed; live
// through `taskUpdates(id)`.

import { useRef, useState } from 'preact/hooks';
import { gql, useLive } from '../api/live';
import { APPROVAL_FIELDS, TASK_FIELDS, type ApprovalRequest, type Task } from '../api/types';
import { useCanSupervise } from '../auth';
import { navigate } from '../router';
import type { ScreenProps } from '../routes';
import { formatMoney } from '../ui/format';
import { Empty, Loaded, PageHead, Status, Time } from '../ui/parts';
import { TaskApprovals } from './approvals';
import { TaskActionButtons } from './task-actions';

interface TaskDetail extends Task {
  input: unknown;
  result: unknown;
  errors: { attempt: number; agentId: string; error: string }[];
  parent: { id: string; title: string; status: string } | null;
  children: { id: string; title: string; status: string; priority: number }[];
  costOutlier: (Task['costOutlier'] & { why: string; zScore: number; median: string }) | null;
  spending: { settled: string; reserved: string; room: string | null };
  approvals: ApprovalRequest[];
}

interface HistoryEntry {
  event: { id: string; position: string; type: string; version: number; occurredAt: string; actor: { kind: string; id: string } };
  changes: Record<string, { from: unknown; to: unknown }>;
}

const DETAIL = `${TASK_FIELDS} input result errors { attempt agentId error }
  parent { id title status } children { id title status priority }
  costOutlier { cost acknowledged why zScore median } spending { settled reserved room }
  approvals { ${APPROVAL_FIELDS} }`;

const HISTORY = `event { id position type version occurredAt actor { kind id } } changes`;

function show(value: unknown): string {
  if (value === null || value === undefined) return '—';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

export function TaskPage({ params }: ScreenProps) {
  const id = params.id;
  const canSupervise = useCanSupervise();
  const [task, setTask] = useState<TaskDetail | null>(null);
  const [missing, setMissing] = useState(false);
  const [history, setHistory] = useState<HistoryEntry[]>([]);
  const held = useRef<TaskDetail | null>(null);

  const keep = (next: TaskDetail) => {
    if (held.current && held.current.version >= next.version) return;
    held.current = next;
    setTask(next);
  };

  const readHistory = async () => {
    const data = await gql<{ history: HistoryEntry[] }>(`query History($stream: String!) { history(streamId: $stream) { ${HISTORY} } }`, {
      stream: `task-${id}`,
    });
    setHistory(data.history);
  };

  const live = useLive(
    [
      {
        query: `subscription OneTask($id: ID!) { taskUpdates(id: $id) { ${DETAIL} } }`,
        variables: { id },
        next: (data) => {
          keep(data.taskUpdates);
          void readHistory().catch(() => {});
        },
      },
    ],
    async () => {
      const data = await gql<{ task: TaskDetail | null; history: HistoryEntry[] }>(
        `query TaskPage($id: ID!, $stream: String!) { task(id: $id) { ${DETAIL} } history(streamId: $stream) { ${HISTORY} } }`,
        { id, stream: `task-${id}` },
      );
      setMissing(!data.task && !held.current);
      if (data.task) keep(data.task);
      setHistory(data.history);
    },
    [id],
  );

  if (missing && !task) {
    return (
      <section>
        <PageHead title="Task not found" />
        <Empty>
          There is no task <code>{id}</code>. <a href="/tasks">Back to the board</a>.
        </Empty>
      </section>
    );
  }

  return (
    <Loaded loading={live.loading} error={live.error} hasData={!!task}>
      {task && (
        <section class="task-page">
          <p class="crumbs">
            <a href="/tasks">Tasks</a> ›
          </p>
          <PageHead title={task.title}>
            {canSupervise && task.status !== 'DELETED' && (
              <TaskActionButtons task={task} onDeleted={() => navigate('/tasks')} />
            )}
          </PageHead>
          <div class="grid two">
            <div class="card">
              <h2>State</h2>
              <dl class="facts">
                <dt>Status</dt>
                <dd>
                  <Status status={task.status} />
                </dd>
                <dt>Priority</dt>
                <dd>{task.priority} of 5</dd>
                <dt>Capabilities</dt>
                <dd>{task.requiredCapabilities.join(', ') || 'none'}</dd>
                <dt>Attempt</dt>
                <dd>
                  {task.attempt} of {task.maxAttempts} ({task.failures} failed)
                </dd>
                <dt>Agent</dt>
                <dd>{task.lease ? <code>{task.lease.agentId}</code> : '—'}</dd>
                <dt>Lease until</dt>
                <dd>
                  <Time at={task.lease?.expiresAt} />
                </dd>
                <dt>Created</dt>
                <dd>
                  <Time at={task.createdAt} /> by {task.createdBy}
                </dd>
                <dt>Updated</dt>
                <dd>
                  <Time at={task.updatedAt} />
                </dd>
                <dt>Not before</dt>
                <dd>
                  <Time at={task.runAfter} />
                </dd>
                {task.workflowRunId && (
                  <>
                    <dt>Workflow run</dt>
                    <dd>
                      <code>{task.workflowRunId}</code> stage <code>{task.stageKey}</code>
                    </dd>
                  </>
                )}
                <dt>Spending</dt>
                <dd class="spending">
                  {formatMoney(task.spending.settled, '')} settled, {formatMoney(task.spending.reserved, '')} reserved
                  {task.maxCost ? (
                    <>
                      {' '}
                      of a {formatMoney(task.maxCost, '')} cap
                      {task.spending.room != null && (
                        <span class={Number(task.spending.room) === 0 ? 'tone-bad' : 'muted'}>
                          {' '}
                          ({formatMoney(task.spending.room, '')} left)
                        </span>
                      )}
                    </>
                  ) : (
                    <span class="muted"> (no cap)</span>
                  )}
                </dd>
                {task.costOutlier && (
                  <>
                    <dt>Cost</dt>
                    <dd>
                      {formatMoney(task.costOutlier.cost)} — <span class="tone-bad">⚑ outlier</span> {task.costOutlier.why}
                    </dd>
                  </>
                )}
                <dt>Version</dt>
                <dd>{task.version}</dd>
              </dl>
              {task.description && <p class="description">{task.description}</p>}
            </div>
            <div class="card">
              <h2>Progress</h2>
              {task.progress ? (
                <>
                  <p>{task.progress.message}</p>
                  {task.progress.percent != null && (
                    <progress max={100} value={task.progress.percent} aria-label="Progress">
                      {task.progress.percent} %
                    </progress>
                  )}
                </>
              ) : (
                <Empty>No progress reported.</Empty>
              )}
              <h2>Chain</h2>
              <p>
                Parent:{' '}
                {task.parent ? (
                  <a href={`/tasks/${task.parent.id}`}>
                    {task.parent.title} (<Status status={task.parent.status} />)
                  </a>
                ) : (
                  'none'
                )}
              </p>
              {task.children.length ? (
                <ul class="plain">
                  {task.children.map((child) => (
                    <li key={child.id}>
                      <a href={`/tasks/${child.id}`}>{child.title}</a> <Status status={child.status} />
                    </li>
                  ))}
                </ul>
              ) : (
                <p class="muted">No follow-up tasks.</p>
              )}
              <h2>Errors per attempt</h2>
              {task.errors.length ? (
                <ol class="plain">
                  {task.errors.map((e) => (
                    <li key={e.attempt}>
                      <strong>Attempt {e.attempt}</strong> (agent <code>{e.agentId.slice(0, 8)}</code>): <code class="wrap">{e.error}</code>
                    </li>
                  ))}
                </ol>
              ) : (
                <p class="muted">No attempt failed.</p>
              )}
            </div>
          </div>
          <TaskApprovals taskTitle={task.title} approvals={task.approvals} />
          <div class="grid two">
            <div class="card">
              <h2>Input</h2>
              <pre class="json">{JSON.stringify(task.input ?? null, null, 2)}</pre>
            </div>
            <div class="card">
              <h2>Result</h2>
              <pre class="json">{JSON.stringify(task.result ?? null, null, 2)}</pre>
            </div>
          </div>
          <div class="card">
            <h2>History</h2>
            <table class="table">
              <thead>
                <tr>
                  <th scope="col">#</th>
                  <th scope="col">Event</th>
                  <th scope="col">When</th>
                  <th scope="col">Who</th>
                  <th scope="col">What changed</th>
                </tr>
              </thead>
              <tbody>
                {history.map((entry) => (
                  <tr key={entry.event.id}>
                    <td>{entry.event.version}</td>
                    <td>{entry.event.type}</td>
                    <td>
                      <Time at={entry.event.occurredAt} />
                    </td>
                    <td>
                      {entry.event.actor.kind.toLowerCase()}:{entry.event.actor.id.slice(0, 12)}
                    </td>
                    <td>
                      {Object.entries(entry.changes ?? {}).map(([field, change]) => (
                        <div key={field}>
                          <code>{field}</code>: {show(change.from)} → {show(change.to)}
                        </div>
                      ))}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </section>
      )}
    </Loaded>
  );
}
