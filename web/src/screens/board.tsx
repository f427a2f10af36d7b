// The task board: a column per status, newest first, each virtualized and paged through `tasks`
// as it is scrolled, so ten thousand tasks cost one page per column. Counts come from
// `queueStats`. Filters live in the address. A supervisor drags a card onto a priority (or picks
// one in the card's priority menu, from the keyboard) to reprioritize it with one mutation.

import { useEffect, useReducer, useRef, useState } from 'preact/hooks';
import { ApiError } from '../api/client';
import { gql, useLive, VersionedMap } from '../api/live';
import {
  newestFirst,
  PRIORITIES,
  QUEUE_STATS_FIELDS,
  TASK_FIELDS,
  TASK_STATUSES,
  type Connection,
  type QueueStats,
  type Task,
} from '../api/types';
import { useCanSupervise } from '../auth';
import type { ScreenProps } from '../routes';
import { setQuery } from '../router';
import { formatAge, formatMoney, formatNumber } from '../ui/format';
import { Dialog, ErrorNote, Loading, PageHead, Status, statusLabel } from '../ui/parts';
import { PauseBar } from './pauses';
import { useVirtual } from '../ui/virtual';
import { isOpen, reprioritize, TaskActionButtons, TaskForm } from './task-actions';

type Column = { items: Task[]; cursor: string | null; hasNext: boolean; loading: boolean; error: ApiError | null };

type BoardStatus = (typeof TASK_STATUSES)[number];

interface Filters {
  statuses: BoardStatus[];
  priorities: number[];
  capability: string;
  agent: string;
  text: string;
}

const PAGE = 50;
const CARD_HEIGHT = 140;
/// Pages a column fetches by itself to fill up under a filter the API cannot apply.
const AUTO_PAGES = 10;
const DRAG_TYPE = 'application/x-devart-task';

function parseFilters(query: URLSearchParams): Filters {
  const list = (key: string) => (query.get(key) ?? '').split(',').filter(Boolean);
  const statuses = list('status').filter((s): s is BoardStatus => (TASK_STATUSES as string[]).includes(s));
  const priorities = list('priority')
    .map(Number)
    .filter((p) => PRIORITIES.includes(p));
  return {
    statuses: statuses.length ? statuses : [...TASK_STATUSES],
    priorities,
    capability: query.get('capability') ?? '',
    agent: query.get('agent') ?? '',
    text: query.get('q') ?? '',
  };
}

/// The filters the API cannot apply, applied to the cards a column has.
function visible(task: Task, filters: Filters): boolean {
  if (filters.capability && !task.requiredCapabilities.includes(filters.capability)) return false;
  if (filters.agent && task.lease?.agentId !== filters.agent) return false;
  if (filters.text) {
    const text = filters.text.toLowerCase();
    if (!`${task.title}\n${task.description}\n${task.id}`.toLowerCase().includes(text)) return false;
  }
  return true;
}

function emptyColumn(): Column {
  return { items: [], cursor: null, hasNext: false, loading: true, error: null };
}

const PAGE_FIELDS = `edges { cursor node { ${TASK_FIELDS} } } pageInfo { hasNextPage endCursor }`;

function startOfMonthUtc(): string {
  const now = new Date();
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)).toISOString();
}

export function Board({ query }: ScreenProps) {
  const filters = parseFilters(query);
  const canSupervise = useCanSupervise();
  const [, rerender] = useReducer((n: number) => n + 1, 0);
  const store = useRef(new VersionedMap<Task>()).current;
  const columns = useRef(new Map<BoardStatus, Column>()).current;
  const [stats, setStats] = useState<QueueStats | null>(null);
  const [agents, setAgents] = useState<{ id: string; name: string }[]>([]);
  const [costs, setCosts] = useState<Map<string, string>>(new Map());
  const [announcement, setAnnouncement] = useState('');
  const [creating, setCreating] = useState(false);
  const statsLive = useRef(true);
  const statsTimer = useRef<number | undefined>(undefined);
  const serverKey = `${filters.statuses.join(',')}|${filters.priorities.join(',')}`;

  /// Without `queueStatsUpdates`, counts are read again shortly after the board changed.
  const refreshStatsSoon = () => {
    if (statsLive.current || statsTimer.current !== undefined) return;
    statsTimer.current = window.setTimeout(async () => {
      statsTimer.current = undefined;
      try {
        setStats((await gql<{ queueStats: QueueStats }>(`{ queueStats { ${QUEUE_STATS_FIELDS} } }`)).queueStats);
      } catch {
        // The next change tries again.
      }
    }, 400);
  };

  /// A task as the board holds it now: moved to its status's column, in order, if that column
  /// has loaded as far as the task's place; gone when deleted.
  const place = (task: Task) => {
    if (!store.put(task)) return;
    for (const column of columns.values()) {
      const at = column.items.findIndex((t) => t.id === task.id);
      if (at >= 0) column.items.splice(at, 1);
    }
    const column = task.status !== 'DELETED' ? columns.get(task.status as BoardStatus) : undefined;
    const wanted = filters.priorities.length === 0 || filters.priorities.includes(task.priority);
    if (column && wanted) {
      const last = column.items[column.items.length - 1];
      if (!column.hasNext || !last || newestFirst(task, last) <= 0) {
        let at = column.items.findIndex((t) => newestFirst(task, t) < 0);
        if (at < 0) at = column.items.length;
        column.items.splice(at, 0, task);
      }
    }
    rerender(0);
    refreshStatsSoon();
  };

  /// A page as read, each task replaced by a newer copy seen meanwhile and left out of this
  /// column when that copy has moved on.
  const settle = (status: BoardStatus, page: Connection<Task>): Task[] => {
    const tasks: Task[] = [];
    for (const { node } of page.edges) {
      store.put(node);
      const held = store.get(node.id) ?? node;
      if (held.status === status) tasks.push(held);
    }
    return tasks;
  };

  const load = async () => {
    const shown = filters.statuses;
    const aliases = shown
      .map((s, i) => `c${i}: tasks(filter: {status: [${s}], priority: $priority}, first: ${PAGE}) { ${PAGE_FIELDS} }`)
      .join('\n');
    const data = await gql<Record<string, Connection<Task>> & { queueStats: QueueStats; agents: { id: string; name: string }[] }>(
      `query Board($priority: [Int!]) { ${aliases}
        queueStats { ${QUEUE_STATS_FIELDS} }
        agents { id name } }`,
      { priority: filters.priorities.length ? filters.priorities : null },
    );
    columns.clear();
    shown.forEach((status, i) => {
      const page = data[`c${i}`];
      columns.set(status, {
        items: settle(status, page),
        cursor: page.pageInfo.endCursor,
        hasNext: page.pageInfo.hasNextPage,
        loading: false,
        error: null,
      });
    });
    setStats(data.queueStats);
    setAgents(data.agents);
    rerender(0);
    // Costs are a nicety: the board does not wait for them, nor fail without them.
    gql<{ analytics: { topTasks: { taskId: string; totalCost: string | null; cost: string }[] } }>(
      `query Costs($from: DateTime!, $to: DateTime!) { analytics(from: $from, to: $to, bucket: DAY) { topTasks(first: 100) { taskId cost totalCost } } }`,
      { from: startOfMonthUtc(), to: new Date().toISOString() },
    ).then(
      (costData) => setCosts(new Map(costData.analytics.topTasks.map((t) => [t.taskId, t.totalCost ?? t.cost]))),
      () => {},
    );
  };

  const live = useLive(
    [
      { query: `subscription BoardTasks { taskUpdates { ${TASK_FIELDS} } }`, next: (data) => place(data.taskUpdates) },
      {
        query: `subscription BoardStats { queueStatsUpdates { ${QUEUE_STATS_FIELDS} } }`,
        next: (data) => setStats(data.queueStatsUpdates),
        error: () => {
          statsLive.current = false;
        },
      },
    ],
    load,
    [serverKey],
  );

  const loadMore = async (status: BoardStatus) => {
    const column = columns.get(status);
    if (!column || column.loading || !column.hasNext) return;
    column.loading = true;
    rerender(0);
    try {
      const data = await gql<{ tasks: Connection<Task> }>(
        `query More($status: [TaskStatus!], $priority: [Int!], $after: String) {
          tasks(filter: {status: $status, priority: $priority}, first: ${PAGE}, after: $after) { ${PAGE_FIELDS} } }`,
        { status: [status], priority: filters.priorities.length ? filters.priorities : null, after: column.cursor },
      );
      const known = new Set(column.items.map((t) => t.id));
      column.items.push(...settle(status, data.tasks).filter((t) => !known.has(t.id)));
      column.cursor = data.tasks.pageInfo.endCursor;
      column.hasNext = data.tasks.pageInfo.hasNextPage;
      column.error = null;
    } catch (error) {
      column.error = error instanceof ApiError ? error : new ApiError(String(error), 'INTERNAL');
    } finally {
      column.loading = false;
      rerender(0);
    }
  };

  const move = async (id: string, priority: number) => {
    const task = store.get(id);
    if (!task || task.priority === priority) return;
    setAnnouncement(`Moving “${task.title}” to priority ${priority}…`);
    try {
      place(await reprioritize(id, priority));
      setAnnouncement(`Moved “${task.title}” to priority ${priority}.`);
    } catch (error) {
      const failure = error instanceof ApiError ? error : new ApiError(String(error), 'INTERNAL');
      setAnnouncement(`Not moved: ${failure.message} (${failure.code})`);
    }
  };

  const agentName = (id: string) => agents.find((a) => a.id === id)?.name ?? id.slice(0, 8);
  const capabilities = [...new Set((stats?.byCapability ?? []).map((c) => c.capability))];

  return (
    <section class="board">
      <PageHead title="Tasks">
        {canSupervise && (
          <button type="button" class="primary" onClick={() => setCreating(true)}>
            New task
          </button>
        )}
      </PageHead>
      <PauseBar />
      <BoardFilters filters={filters} agents={agents} capabilities={capabilities} />
      {canSupervise && <PriorityRail stats={stats} onDrop={move} />}
      <p class="sr-only" role="status" aria-live="polite">
        {announcement}
      </p>
      {announcement && <p class="announcement">{announcement}</p>}
      <ErrorNote error={live.error} context="Could not read the board" />
      {live.liveError && <ErrorNote error={live.liveError} context="Live updates stopped" />}
      {columns.size === 0 && live.loading ? (
        <Loading what="Loading the board" />
      ) : (
        <div class="columns">
          {filters.statuses.map((status) => (
            <BoardColumn
              key={status}
              status={status}
              column={columns.get(status) ?? emptyColumn()}
              count={countOf(status, stats, filters)}
              filters={filters}
              canSupervise={canSupervise}
              agentName={agentName}
              costs={costs}
              onMore={() => loadMore(status)}
              onMove={move}
            />
          ))}
        </div>
      )}
      {creating && (
        <TaskForm
          onDone={(task) => {
            setCreating(false);
            if (task) place(task);
          }}
        />
      )}
    </section>
  );
}

/// The column's size from `queueStats`, where it counts that status and no priority filter
/// narrows it.
function countOf(status: BoardStatus, stats: QueueStats | null, filters: Filters): number | null {
  if (!stats) return null;
  if (status === 'PENDING') {
    if (!filters.priorities.length) return stats.pending;
    return stats.byPriority.filter((p) => filters.priorities.includes(p.priority)).reduce((n, p) => n + p.pending, 0);
  }
  if (filters.priorities.length) return null;
  if (status === 'IN_PROGRESS') return stats.inFlight;
  if (status === 'FAILED') return stats.failed;
  return null;
}

function BoardFilters({
  filters,
  agents,
  capabilities,
}: {
  filters: Filters;
  agents: { id: string; name: string }[];
  capabilities: string[];
}) {
  const [text, setText] = useState(filters.text);
  useEffect(() => setText(filters.text), [filters.text]);
  // Typing updates the address after a pause, not at every key.
  useEffect(() => {
    if (text === filters.text) return;
    const timer = setTimeout(() => setQuery({ q: text }), 250);
    return () => clearTimeout(timer);
  }, [text]);
  const toggle = (key: 'status' | 'priority', all: string[], value: string, chosen: string[]) => {
    const set = new Set(chosen.length === all.length && key === 'status' ? [] : chosen);
    if (set.has(value)) set.delete(value);
    else set.add(value);
    const next = all.filter((v) => set.has(v));
    setQuery({ [key]: next.length === all.length ? undefined : next.join(',') });
  };
  const allStatuses = filters.statuses.length === TASK_STATUSES.length;
  return (
    <form class="filters" aria-label="Filters" onSubmit={(e) => e.preventDefault()}>
      <fieldset>
        <legend>Status</legend>
        {TASK_STATUSES.map((status) => (
          <label key={status} class="check">
            <input
              type="checkbox"
              checked={!allStatuses && filters.statuses.includes(status)}
              onChange={() => toggle('status', TASK_STATUSES, status, allStatuses ? [] : filters.statuses)}
            />
            {statusLabel(status)}
          </label>
        ))}
      </fieldset>
      <fieldset>
        <legend>Priority</legend>
        {PRIORITIES.map((p) => (
          <label key={p} class="check">
            <input
              type="checkbox"
              checked={filters.priorities.includes(p)}
              onChange={() =>
                toggle(
                  'priority',
                  PRIORITIES.map(String),
                  String(p),
                  filters.priorities.map(String),
                )
              }
            />
            P{p}
          </label>
        ))}
      </fieldset>
      <label class="field inline">
        <span class="label">Capability</span>
        <select value={filters.capability} onChange={(e) => setQuery({ capability: e.currentTarget.value })}>
          <option value="">any</option>
          {[...new Set([...capabilities, filters.capability].filter(Boolean))].map((c) => (
            <option key={c} value={c}>
              {c}
            </option>
          ))}
        </select>
      </label>
      <label class="field inline">
        <span class="label">Agent</span>
        <select value={filters.agent} onChange={(e) => setQuery({ agent: e.currentTarget.value })}>
          <option value="">any</option>
          {agents.map((a) => (
            <option key={a.id} value={a.id}>
              {a.name}
            </option>
          ))}
        </select>
      </label>
      <label class="field inline grow">
        <span class="label">Search</span>
        <input type="search" value={text} placeholder="title, description or id" onInput={(e) => setText(e.currentTarget.value)} />
      </label>
    </form>
  );
}

/// Drop targets, one per priority, with the pending tasks at each.
function PriorityRail({ stats, onDrop }: { stats: QueueStats | null; onDrop: (id: string, priority: number) => void }) {
  const [over, setOver] = useState<number | null>(null);
  return (
    <div class="priority-rail" aria-label="Drop a card on a priority to reprioritize it" role="group">
      <span class="rail-label">Drop on a priority:</span>
      {PRIORITIES.map((p) => {
        const pending = stats?.byPriority.find((b) => b.priority === p)?.pending ?? 0;
        return (
          <div
            key={p}
            class={`drop-zone prio-${p}${over === p ? ' over' : ''}`}
            data-priority-drop={p}
            onDragOver={(e) => {
              if (e.dataTransfer?.types.includes(DRAG_TYPE)) {
                e.preventDefault();
                e.dataTransfer.dropEffect = 'move';
                setOver(p);
              }
            }}
            onDragLeave={() => setOver(null)}
            onDrop={(e) => {
              e.preventDefault();
              setOver(null);
              const id = e.dataTransfer?.getData(DRAG_TYPE);
              if (id) onDrop(id, p);
            }}
          >
            <strong>P{p}</strong> <span class="muted">{formatNumber(pending)} pending</span>
          </div>
        );
      })}
    </div>
  );
}

function BoardColumn({
  status,
  column,
  count,
  filters,
  canSupervise,
  agentName,
  costs,
  onMore,
  onMove,
}: {
  status: BoardStatus;
  column: Column;
  count: number | null;
  filters: Filters;
  canSupervise: boolean;
  agentName: (id: string) => string;
  costs: Map<string, string>;
  onMore: () => void;
  onMove: (id: string, priority: number) => void;
}) {
  const items = column.items.filter((t) => visible(t, filters));
  const { scrollRef, items: rows, totalSize } = useVirtual(items.length, CARD_HEIGHT);
  const autoPages = useRef(0);
  const filterKey = `${filters.capability}|${filters.agent}|${filters.text}`;
  useEffect(() => {
    autoPages.current = 0;
  }, [filterKey]);
  // Page on when the end is in view, or when a filter left too few cards to fill the column.
  const lastShown = rows.length ? rows[rows.length - 1].index : -1;
  useEffect(() => {
    if (!column.hasNext || column.loading) return;
    const filtered = items.length < column.items.length;
    if (lastShown >= items.length - 5) {
      if (filtered && autoPages.current >= AUTO_PAGES) return;
      if (filtered) autoPages.current += 1;
      onMore();
    }
  }, [lastShown, items.length, column.hasNext, column.loading]);
  const id = `column-${status.toLowerCase()}`;
  const shown = count ?? column.items.length;
  return (
    <section class={`column column-${status.toLowerCase()}`} aria-labelledby={id} data-column={status}>
      <h2 id={id} class="column-head">
        {statusLabel(status)}{' '}
        <span class="count" data-count>
          {formatNumber(shown)}
          {count === null && column.hasNext ? '+' : ''}
        </span>
      </h2>
      <div class="column-scroll" ref={scrollRef} tabIndex={-1}>
        {items.length === 0 && !column.loading ? (
          <p class="empty">{column.items.length ? 'No card matches the filters.' : 'No tasks.'}</p>
        ) : (
          <div class="virtual" role="list" style={{ height: `${totalSize}px` }}>
            {rows.map((row) => {
              const task = items[row.index];
              return (
                <div
                  key={task.id}
                  class="virtual-row"
                  role="listitem"
                  style={{ transform: `translateY(${row.start}px)`, height: `${CARD_HEIGHT}px` }}
                >
                  <Card
                    task={task}
                    canSupervise={canSupervise}
                    agentName={agentName}
                    cost={costs.get(task.id) ?? task.costOutlier?.cost ?? null}
                    onMove={onMove}
                  />
                </div>
              );
            })}
          </div>
        )}
        {column.loading && <Loading what="Loading more" />}
        <ErrorNote error={column.error} context="Could not load more" />
      </div>
    </section>
  );
}

function Card({
  task,
  canSupervise,
  agentName,
  cost,
  onMove,
}: {
  task: Task;
  canSupervise: boolean;
  agentName: (id: string) => string;
  cost: string | null;
  onMove: (id: string, priority: number) => void;
}) {
  const [actions, setActions] = useState(false);
  const movable = canSupervise && isOpen(task);
  return (
    <article
      class={`card task-card prio-${task.priority}`}
      data-task-id={task.id}
      draggable={movable}
      onDragStart={(e) => {
        e.dataTransfer?.setData(DRAG_TYPE, task.id);
        e.dataTransfer?.setData('text/plain', task.title);
      }}
    >
      <div class="card-top">
        <span class={`prio-badge prio-${task.priority}`} title={`Priority ${task.priority} of 5`}>
          P{task.priority}
        </span>
        <a class="card-title" href={`/tasks/${task.id}`} title={task.title}>
          {task.title}
        </a>
      </div>
      <div class="chips">
        {task.requiredCapabilities.map((c) => (
          <span key={c} class="chip">
            {c}
          </span>
        ))}
      </div>
      <div class="card-meta">
        <span>
          attempt {task.attempt}/{task.maxAttempts}
        </span>
        <span>{formatAge(task.createdAt)} old</span>
        {task.lease ? <span>agent {agentName(task.lease.agentId)}</span> : <span>no agent</span>}
        {cost && <span>cost {formatMoney(cost)}</span>}
        {task.progress?.percent != null && <span>{task.progress.percent} % done</span>}
      </div>
      {canSupervise && (
        <div class="card-actions">
          {movable && (
            <label class="sr-only" for={`prio-${task.id}`}>
              Priority of {task.title}
            </label>
          )}
          {movable && (
            <select
              id={`prio-${task.id}`}
              class="compact"
              value={String(task.priority)}
              onChange={(e) => onMove(task.id, Number(e.currentTarget.value))}
            >
              {PRIORITIES.map((p) => (
                <option key={p} value={String(p)}>
                  Priority {p}
                </option>
              ))}
            </select>
          )}
          <button type="button" class="compact" aria-label={`Actions for ${task.title}`} onClick={() => setActions(true)}>
            Actions…
          </button>
          {actions && <CardActions task={task} onClose={() => setActions(false)} />}
        </div>
      )}
    </article>
  );
}

function CardActions({ task, onClose }: { task: Task; onClose: () => void }) {
  return (
    <Dialog title={task.title} onClose={onClose}>
      <p>
        <Status status={task.status} /> · priority {task.priority} · attempt {task.attempt}/{task.maxAttempts}
      </p>
      <div class="buttons">
        <TaskActionButtons task={task} onDeleted={onClose} />
      </div>
    </Dialog>
  );
}
