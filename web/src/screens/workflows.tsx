// Workflows: each template with its stages drawn as the DAG they form, a run started with a JSON
// input (supervisor), and the runs with each stage's status as it moves (`workflowRunUpdates`).
// The selected template and run are in the address.

import { useRef, useState } from 'preact/hooks';
import { gql, useLive, useMutation } from '../api/live';
import { useCanSupervise } from '../auth';
import { setQuery } from '../router';
import type { ScreenProps } from '../routes';
import { Dialog, Empty, ErrorNote, Field, Loaded, PageHead, Status, Time } from '../ui/parts';
import { JsonView, parseJson, shortId } from './common';
import { Dag, type DagNode } from './dag';

interface Stage {
  key: string;
  title: string;
  description: string;
  priority: number;
  requiredCapabilities: string[];
  dependsOn: string[];
  maxAttempts: number;
  requiresApproval: boolean;
}

interface Workflow {
  id: string;
  name: string;
  description: string;
  version: number;
  stages: Stage[];
  createdAt: string | null;
  updatedAt: string | null;
}

interface RunStage {
  key: string;
  title: string;
  dependsOn: string[];
  requiredCapabilities: string[];
  status: string;
  taskId: string | null;
  attempt: number;
  error: string | null;
  startedAt: string | null;
  finishedAt: string | null;
}

interface Run {
  id: string;
  workflowId: string;
  workflowName: string;
  workflowVersion: number;
  status: string;
  input: unknown;
  failure: string | null;
  stages: RunStage[];
  createdBy: string | null;
  createdAt: string | null;
  updatedAt: string | null;
  finishedAt: string | null;
}

const WORKFLOW_FIELDS = `id name description version createdAt updatedAt
  stages { key title description priority requiredCapabilities dependsOn maxAttempts requiresApproval }`;
const RUN_FIELDS = `id workflowId workflowName workflowVersion status input failure createdBy createdAt updatedAt finishedAt
  stages { key title dependsOn requiredCapabilities status taskId attempt error startedAt finishedAt }`;

const STAGE_TONE: Record<string, DagNode['tone']> = {
  COMPLETED: 'good',
  FAILED: 'bad',
  IN_PROGRESS: 'info',
  CANCELLED: 'muted',
  SKIPPED: 'muted',
};

const STAGE_SIGN: Record<string, string> = {
  WAITING: '◌',
  PENDING: '○',
  IN_PROGRESS: '◐',
  COMPLETED: '✓',
  FAILED: '✕',
  CANCELLED: '⊘',
  SKIPPED: '↷',
};

/// Keeps the newer copy of a run: the one changed last (a stage's move changes the run).
function newer(held: Run | undefined, run: Run): boolean {
  return !held || (run.updatedAt ?? '') >= (held.updatedAt ?? '');
}

export function Workflows({ query }: ScreenProps) {
  const canSupervise = useCanSupervise();
  const [workflows, setWorkflows] = useState<Workflow[] | null>(null);
  const runs = useRef(new Map<string, Run>()).current;
  const [, setTick] = useState(0);
  const changed = () => setTick((n) => n + 1);
  const [starting, setStarting] = useState<Workflow | null>(null);
  const take = (run: Run) => {
    if (newer(runs.get(run.id), run)) runs.set(run.id, run);
  };
  const live = useLive(
    [
      {
        query: `subscription RunsLive { workflowRunUpdates { ${RUN_FIELDS} } }`,
        next: (data) => {
          take(data.workflowRunUpdates);
          changed();
        },
      },
    ],
    async () => {
      const data = await gql<{ workflows: Workflow[]; workflowRuns: Run[] }>(
        `{ workflows { ${WORKFLOW_FIELDS} } workflowRuns(first: 100) { ${RUN_FIELDS} } }`,
      );
      setWorkflows(data.workflows);
      data.workflowRuns.forEach(take);
      changed();
    },
    [],
  );
  const list = workflows ?? [];
  const picked = list.find((w) => w.id === query.get('workflow')) ?? list[0];
  const allRuns = [...runs.values()].sort((a, b) => ((a.createdAt ?? '') < (b.createdAt ?? '') ? 1 : -1));
  const run = allRuns.find((r) => r.id === query.get('run'));
  const shownRuns = picked ? allRuns.filter((r) => r.workflowId === picked.id) : allRuns;
  return (
    <section class="workflows">
      <PageHead title="Workflows" />
      <Loaded loading={live.loading} error={live.error} hasData={workflows !== null}>
        {live.liveError && <p class="notice">Live updates stopped: {live.liveError.message}</p>}
        {list.length === 0 ? (
          <Empty>No workflow is defined yet (see `defineWorkflow`).</Empty>
        ) : (
          <div class="split">
            <div class="stack">
              {run ? (
                <RunView run={run} />
              ) : (
                picked && <Template workflow={picked} canSupervise={canSupervise} onStart={() => setStarting(picked)} />
              )}
            </div>
            <div class="stack">
              <nav class="card" aria-label="Workflows">
                <h2>Templates</h2>
                <ul class="list-pick">
                  {list.map((w) => (
                    <li key={w.id}>
                      <a
                        href={`/workflows?workflow=${w.id}`}
                        aria-current={!run && picked?.id === w.id ? 'true' : undefined}
                      >
                        {w.name} <span class="muted">v{w.version} · {w.stages.length} stages</span>
                      </a>
                    </li>
                  ))}
                </ul>
              </nav>
              <div class="card">
                <h2>Runs{picked ? ` of ${picked.name}` : ''}</h2>
                {shownRuns.length === 0 ? (
                  <Empty>No run yet.</Empty>
                ) : (
                  <ul class="list-pick" aria-label="Runs">
                    {shownRuns.map((r) => (
                      <li key={r.id} data-run={r.id} data-run-status={r.status}>
                        <a href={`/workflows?workflow=${r.workflowId}&run=${r.id}`} aria-current={run?.id === r.id ? 'true' : undefined}>
                          <Status status={r.status} /> {shortId(r.id)} · <Time at={r.createdAt} />{' '}
                          <span class="muted">
                            {r.stages.filter((s) => s.status === 'COMPLETED').length}/{r.stages.length} done
                          </span>
                        </a>
                      </li>
                    ))}
                  </ul>
                )}
              </div>
            </div>
          </div>
        )}
      </Loaded>
      {starting && (
        <StartRun
          workflow={starting}
          onDone={(started) => {
            setStarting(null);
            if (started) {
              take(started);
              changed();
              setQuery({ workflow: started.workflowId, run: started.id });
            }
          }}
        />
      )}
    </section>
  );
}

function Template({ workflow, canSupervise, onStart }: { workflow: Workflow; canSupervise: boolean; onStart: () => void }) {
  const nodes: DagNode[] = workflow.stages.map((s) => ({ key: s.key, label: s.title, sub: s.key, dependsOn: s.dependsOn }));
  return (
    <article class="card" aria-labelledby="workflow-title">
      <div class="page-head">
        <h2 id="workflow-title">
          {workflow.name} <span class="muted">version {workflow.version}</span>
        </h2>
        {canSupervise && (
          <div class="actions">
            <button type="button" class="primary" onClick={onStart}>
              Start a run
            </button>
          </div>
        )}
      </div>
      {workflow.description && <p>{workflow.description}</p>}
      <Dag nodes={nodes} label={`Stages of ${workflow.name}`} />
      <div class="table-wrap">
        <table class="table" aria-label="Stages">
          <thead>
            <tr>
              <th scope="col">Stage</th>
              <th scope="col">Title</th>
              <th scope="col">After</th>
              <th scope="col">Capabilities</th>
              <th scope="col" class="num">Priority</th>
              <th scope="col" class="num">Attempts</th>
              <th scope="col">Approval</th>
            </tr>
          </thead>
          <tbody>
            {workflow.stages.map((s) => (
              <tr key={s.key}>
                <th scope="row">
                  <code>{s.key}</code>
                </th>
                <td>{s.title}</td>
                <td>{s.dependsOn.join(', ') || '—'}</td>
                <td>{s.requiredCapabilities.join(', ') || '—'}</td>
                <td class="num">P{s.priority}</td>
                <td class="num">{s.maxAttempts}</td>
                <td>{s.requiresApproval ? 'required' : '—'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </article>
  );
}

function RunView({ run }: { run: Run }) {
  const nodes: DagNode[] = run.stages.map((s) => ({
    key: s.key,
    label: s.title,
    sub: `${STAGE_SIGN[s.status] ?? '•'} ${s.status.toLowerCase().replace('_', ' ')}`,
    dependsOn: s.dependsOn,
    tone: STAGE_TONE[s.status],
  }));
  return (
    <article class="card" aria-labelledby="run-title" data-run-view={run.id}>
      <div class="page-head">
        <h2 id="run-title">
          Run {shortId(run.id)} of {run.workflowName} <span class="muted">v{run.workflowVersion}</span> <Status status={run.status} />
        </h2>
        <div class="actions">
          <a href={`/workflows?workflow=${run.workflowId}`}>Back to the template</a>
        </div>
      </div>
      {run.failure && (
        <p class="bad-note">
          <span aria-hidden="true">✕</span> Failed: {run.failure}
        </p>
      )}
      <dl class="facts">
        <dt>Started</dt>
        <dd>
          <Time at={run.createdAt} /> by {run.createdBy ?? '—'}
        </dd>
        <dt>Finished</dt>
        <dd>
          <Time at={run.finishedAt} fallback="not yet" />
        </dd>
      </dl>
      <Dag nodes={nodes} label={`Stages of run ${shortId(run.id)}`} />
      <div class="table-wrap">
        <table class="table" aria-label="Stages of the run">
          <thead>
            <tr>
              <th scope="col">Stage</th>
              <th scope="col">Status</th>
              <th scope="col">Task</th>
              <th scope="col" class="num">Attempt</th>
              <th scope="col">Started</th>
              <th scope="col">Finished</th>
              <th scope="col">Error</th>
            </tr>
          </thead>
          <tbody>
            {run.stages.map((s) => (
              <tr key={s.key} data-stage={s.key} data-stage-status={s.status}>
                <th scope="row">
                  {s.title} <code class="muted">{s.key}</code>
                </th>
                <td>
                  <Status status={s.status} />
                </td>
                <td>{s.taskId ? <a href={`/tasks/${s.taskId}`}>{shortId(s.taskId)}</a> : '—'}</td>
                <td class="num">{s.attempt || '—'}</td>
                <td>
                  <Time at={s.startedAt} />
                </td>
                <td>
                  <Time at={s.finishedAt} />
                </td>
                <td>{s.error ?? '—'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <h3>Input</h3>
      <JsonView value={run.input} label="The run's input" />
    </article>
  );
}

function StartRun({ workflow, onDone }: { workflow: Workflow; onDone: (run?: Run) => void }) {
  const [input, setInput] = useState('');
  const parsed = parseJson(input);
  const start = useMutation(async () => {
    if (!parsed.ok) return undefined;
    const data = await gql<{ startWorkflow: Run }>(
      `mutation Start($workflowId: ID!, $input: JSON) { startWorkflow(workflowId: $workflowId, input: $input) { ${RUN_FIELDS} } }`,
      { workflowId: workflow.id, input: parsed.value },
    );
    return data.startWorkflow;
  });
  return (
    <Dialog title={`Start a run of ${workflow.name}`} onClose={() => onDone()}>
      <form
        class="form"
        onSubmit={async (event) => {
          event.preventDefault();
          const run = await start.run();
          if (run) onDone(run);
        }}
      >
        <Field
          label="Input (JSON)"
          hint="Reaches every stage's task; leave empty for none."
          error={parsed.ok ? null : parsed.error}
        >
          <textarea rows={6} value={input} spellcheck={false} onInput={(e) => setInput(e.currentTarget.value)} />
        </Field>
        <ErrorNote error={start.error} context="Not started" />
        <div class="buttons">
          <button type="submit" class="primary" disabled={!parsed.ok || start.running}>
            Start
          </button>
          <button type="button" onClick={() => onDone()}>
            Cancel
          </button>
        </div>
      </form>
    </Dialog>
  );
}
