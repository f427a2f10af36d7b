// The kill switch on the overview and the board: the pauses in effect, live, each with who paused,
// when and why, and for supervisors a button to pause claims (everything, one capability or one
// workflow, letting running tasks finish or stopping them) and to resume each pause.

import { useState } from 'preact/hooks';
import { useCanSupervise } from '../auth';
import { gql, useLive, useMutation } from '../api/live';
import { Dialog, ErrorNote, Field, Time } from '../ui/parts';

export interface ClaimScope {
  kind: 'ALL' | 'CAPABILITY' | 'WORKFLOW';
  capability: string | null;
  workflowId: string | null;
}

export interface ClaimPause {
  scope: ClaimScope;
  reason: string;
  drain: boolean;
  pausedAt: string;
  pausedBy: string;
}

export const PAUSE_FIELDS = 'scope { kind capability workflowId } reason drain pausedAt pausedBy';

function scopeName(scope: ClaimScope, workflows: Map<string, string>): string {
  if (scope.kind === 'ALL') return 'all work';
  if (scope.kind === 'CAPABILITY') return `capability ${scope.capability}`;
  return `workflow ${workflows.get(scope.workflowId ?? '') ?? scope.workflowId?.slice(0, 8)}`;
}

function scopeInput(scope: ClaimScope): Record<string, unknown> {
  if (scope.kind === 'CAPABILITY') return { kind: scope.kind, capability: scope.capability };
  if (scope.kind === 'WORKFLOW') return { kind: scope.kind, workflowId: scope.workflowId };
  return { kind: 'ALL' };
}

/// The pauses in effect, live; `null` until read.
export function usePauses(): ClaimPause[] | null {
  const [pauses, setPauses] = useState<ClaimPause[] | null>(null);
  useLive(
    [
      {
        query: `subscription Pauses { claimPauseUpdates { ${PAUSE_FIELDS} } }`,
        next: (data) => setPauses(data.claimPauseUpdates),
      },
    ],
    async () => setPauses((await gql<{ claimPauses: ClaimPause[] }>(`{ claimPauses { ${PAUSE_FIELDS} } }`)).claimPauses),
    [],
  );
  return pauses;
}

/// The pauses as a banner (nothing when none), with resume buttons and a pause button for
/// supervisors. `workflows` names workflow ids, where the screen knows them.
export function PauseBar({ workflows = new Map() }: { workflows?: Map<string, string> }) {
  const pauses = usePauses();
  const canSupervise = useCanSupervise();
  const [pausing, setPausing] = useState(false);
  const resume = useMutation(async (scope: ClaimScope) => {
    await gql(`mutation Resume($scope: ClaimScopeInput!) { resumeClaims(scope: $scope) { reason } }`, {
      scope: scopeInput(scope),
    });
  });
  return (
    <section class="pauses" aria-label="Claims">
      <div class="pause-list" role="status">
        {pauses && pauses.length > 0 && (
          <ul class="plain">
            {pauses.map((p) => (
              <li key={JSON.stringify(p.scope)} class="pause">
                <span>
                  <span class="tone-warn">
                    <span aria-hidden="true">‖</span> Claims paused
                  </span>{' '}
                  for <strong>{scopeName(p.scope, workflows)}</strong>: {p.reason}{' '}
                  <span class="muted">
                    ({p.drain ? 'running tasks finish' : 'running tasks stopped'}; by {p.pausedBy}, <Time at={p.pausedAt} />)
                  </span>
                </span>
                {canSupervise && (
                  <button type="button" disabled={resume.running} onClick={() => resume.run(p.scope)}>
                    Resume {scopeName(p.scope, workflows)}
                  </button>
                )}
              </li>
            ))}
          </ul>
        )}
      </div>
      <ErrorNote error={resume.error} context="Not resumed" />
      {canSupervise && (
        <button type="button" class="danger" onClick={() => setPausing(true)}>
          Pause claims…
        </button>
      )}
      {pausing && <PauseDialog workflows={workflows} onDone={() => setPausing(false)} />}
    </section>
  );
}

function PauseDialog({ workflows, onDone }: { workflows: Map<string, string>; onDone: () => void }) {
  const [kind, setKind] = useState<ClaimScope['kind']>('ALL');
  const [capability, setCapability] = useState('');
  const [workflowId, setWorkflowId] = useState('');
  const [reason, setReason] = useState('');
  const [drain, setDrain] = useState(true);
  const scope: ClaimScope = {
    kind,
    capability: kind === 'CAPABILITY' ? capability.trim() : null,
    workflowId: kind === 'WORKFLOW' ? workflowId.trim() : null,
  };
  const complete =
    reason.trim() !== '' &&
    (kind === 'ALL' || (kind === 'CAPABILITY' && scope.capability) || (kind === 'WORKFLOW' && scope.workflowId));
  const pause = useMutation(async () => {
    await gql(
      `mutation Pause($scope: ClaimScopeInput!, $reason: String!, $drain: Boolean!) {
        pauseClaims(scope: $scope, reason: $reason, drain: $drain) { reason } }`,
      { scope: scopeInput(scope), reason: reason.trim(), drain },
    );
    return true;
  });
  return (
    <Dialog title="Pause claims" onClose={onDone}>
      <form
        class="form"
        onSubmit={async (event) => {
          event.preventDefault();
          if (await pause.run()) onDone();
        }}
      >
        <Field label="What to pause" hint="No agent is handed a task in it until it is resumed.">
          <select value={kind} onChange={(e) => setKind(e.currentTarget.value as ClaimScope['kind'])}>
            <option value="ALL">All work</option>
            <option value="CAPABILITY">One capability</option>
            <option value="WORKFLOW">One workflow</option>
          </select>
        </Field>
        {kind === 'CAPABILITY' && (
          <Field label="Capability" hint="Tasks that require it are not handed out.">
            <input required value={capability} onInput={(e) => setCapability(e.currentTarget.value)} />
          </Field>
        )}
        {kind === 'WORKFLOW' && (
          <Field label="Workflow" hint="The tasks of its runs are not handed out.">
            {workflows.size > 0 ? (
              <select required value={workflowId} onChange={(e) => setWorkflowId(e.currentTarget.value)}>
                <option value="">Choose a workflow</option>
                {[...workflows].map(([id, name]) => (
                  <option key={id} value={id}>
                    {name}
                  </option>
                ))}
              </select>
            ) : (
              <input required value={workflowId} placeholder="workflow id" onInput={(e) => setWorkflowId(e.currentTarget.value)} />
            )}
          </Field>
        )}
        <Field label="Reason" hint="Recorded with who and when; agents can read it.">
          <textarea required value={reason} onInput={(e) => setReason(e.currentTarget.value)} />
        </Field>
        <label class="check">
          <input type="checkbox" checked={drain} onChange={(e) => setDrain(e.currentTarget.checked)} /> Let running tasks
          finish (otherwise each stops at its next heartbeat and goes back to the queue, no attempt used)
        </label>
        <ErrorNote error={pause.error} context="Not paused" />
        <div class="buttons">
          <button type="submit" class="danger" disabled={!complete || pause.running}>
            Pause
          </button>
          <button type="button" onClick={onDone}>
            Cancel
          </button>
        </div>
      </form>
    </Dialog>
  );
}
