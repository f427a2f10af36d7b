// Agents' requests for approval of risky steps in their work (not tasks waiting for approval to
// start): the overview's queue of pending ones across tasks and each task page's list of its own,
// with Approve and Deny for supervisors. Each request shows when it runs out and what it comes to
// if nobody answers; the server decides it by that default at its deadline.

import { useRef, useState } from 'preact/hooks';
import { gql, useLive, useSoon } from '../api/live';
import { APPROVAL_FIELDS, type ApprovalRequest } from '../api/types';
import { useCanSupervise } from '../auth';
import { formatSeconds, formatUtc } from '../ui/format';
import { Confirm, Empty, ErrorNote, Loading, Status, Time, useNow } from '../ui/parts';

/// A pending request as the overview lists it, with the title of its task.
export interface QueuedApproval extends ApprovalRequest {
  task: { id: string; title: string } | null;
}

/// How many pending requests the overview reads (the ones that run out first).
const QUEUE_MAX = 100;

/// Decided requests remembered so that a read which began before their answer does not list
/// them again; the oldest are forgotten past this many.
const DECIDED_REMEMBERED_MAX = 1000;

const DECIDE = `mutation DecideApproval($taskId: ID!, $requestId: ID!, $approve: Boolean!, $note: String) {
  decideApproval(taskId: $taskId, requestId: $requestId, approve: $approve, note: $note) { id status } }`;

interface Decision {
  request: ApprovalRequest;
  title: string;
  approve: boolean;
}

/// Asks before approving or denying a request, with an optional note the agent reads.
function DecideDialog({ decision, onDone }: { decision: Decision; onDone: () => void }) {
  const { request, title, approve } = decision;
  return (
    <Confirm
      title={approve ? 'Approve request' : 'Deny request'}
      text={{ label: 'Note (optional)', hint: 'The agent reads it with the answer; recorded with who and when.' }}
      confirm={approve ? 'Approve' : 'Deny'}
      danger={!approve}
      run={(note) => gql(DECIDE, { taskId: request.taskId, requestId: request.id, approve, note })}
      onDone={onDone}
    >
      {approve ? 'Let the agent take this step?' : 'Refuse this step? The agent does not take it.'}{' '}
      <strong>{request.action}</strong> on <strong>{title}</strong>
    </Confirm>
  );
}

/// When a pending request runs out and what it comes to then.
function RunsOut({ request, now }: { request: ApprovalRequest; now: number }) {
  const left = (new Date(request.expiresAt).getTime() - now) / 1000;
  return (
    <span class="runs-out">
      runs out{' '}
      <time dateTime={request.expiresAt} title={formatUtc(request.expiresAt)}>
        {left > 0.5 ? `in ${formatSeconds(left)}` : 'now'}
      </time>{' '}
      → <strong>{request.approveOnTimeout ? 'approved' : 'denied'}</strong> by default
    </span>
  );
}

function json(value: unknown): string {
  return JSON.stringify(value ?? null, null, 2);
}

/// The pending requests across tasks, live, for the overview. `agentNames` names agents by id,
/// where the screen knows them.
export function ApprovalQueue({ agentNames = new Map() }: { agentNames?: Map<string, string> }) {
  const canSupervise = useCanSupervise();
  const [requests, setRequests] = useState<QueuedApproval[] | null>(null);
  const [deciding, setDeciding] = useState<Decision | null>(null);
  const decided = useRef(new Set<string>()).current;
  const now = useNow(1000, !!requests?.length);

  const remember = (ids: string[]) => {
    ids.forEach((id) => decided.add(id));
    for (const id of decided) {
      if (decided.size <= DECIDED_REMEMBERED_MAX) break;
      decided.delete(id);
    }
  };
  const read = async () => {
    const data = await gql<{ approvalRequests: QueuedApproval[] }>(
      `query ApprovalQueue($first: Int!) { approvalRequests(status: PENDING, first: $first) { ${APPROVAL_FIELDS} task { id title } } }`,
      { first: QUEUE_MAX },
    );
    setRequests(data.approvalRequests.filter((r) => !decided.has(r.id)));
  };
  const readSoon = useSoon(read);

  const live = useLive(
    [
      {
        query: `subscription ApprovalQueueTasks { taskUpdates { id approvals { id status } } }`,
        next: (data) => {
          const task: { id: string; approvals: { id: string; status: string }[] } = data.taskUpdates;
          const listed = !!requests?.some((r) => r.taskId === task.id);
          if (!listed && !task.approvals.some((a) => a.status === 'PENDING')) return;
          // An answer leaves the list at once; the read after the burst brings in what is new.
          const answered = task.approvals.filter((a) => a.status !== 'PENDING').map((a) => a.id);
          remember(answered);
          if (answered.length) setRequests((held) => held && held.filter((r) => !decided.has(r.id)));
          readSoon();
        },
      },
    ],
    read,
    [],
  );

  return (
    <section class="approval-queue" aria-labelledby="approval-queue-title">
      <h2 id="approval-queue-title">Requests for approval from agents</h2>
      <ErrorNote error={live.error} context="Could not read the requests" />
      {live.liveError && <p class="notice">Live updates stopped: {live.liveError.message}</p>}
      {requests === null ? (
        !live.error && <Loading what="Reading the requests" />
      ) : requests.length ? (
        <ul class="plain approvals">
          {requests.map((r) => (
            <li key={r.id} class="approval" data-approval-request={r.id}>
              <div class="approval-head">
                <strong id={`approval-action-${r.id}`}>{r.action}</strong>
                <span>
                  on <a href={`/tasks/${r.taskId}`}>{r.task?.title ?? `task ${r.taskId.slice(0, 8)}`}</a>
                </span>
              </div>
              <div class="muted">
                asked by {agentNames.get(r.agentId) ?? <code>{r.agentId.slice(0, 8)}</code>} (attempt {r.attempt}) ·{' '}
                <RunsOut request={r} now={now} />
              </div>
              {r.details != null && (
                <details>
                  <summary>Details</summary>
                  <pre class="json">{json(r.details)}</pre>
                </details>
              )}
              {canSupervise && (
                <DecideButtons
                  request={r}
                  onDecide={(approve) => setDeciding({ request: r, title: r.task?.title ?? r.taskId, approve })}
                />
              )}
            </li>
          ))}
        </ul>
      ) : (
        <Empty>No agent waits for an answer.</Empty>
      )}
      {requests && requests.length >= QUEUE_MAX && (
        <p class="muted">The {QUEUE_MAX} that run out first are shown.</p>
      )}
      {deciding && <DecideDialog decision={deciding} onDone={() => setDeciding(null)} />}
    </section>
  );
}

function DecideButtons({ request, onDecide }: { request: ApprovalRequest; onDecide: (approve: boolean) => void }) {
  const describedBy = `approval-action-${request.id}`;
  return (
    <div class="buttons">
      <button type="button" class="primary" aria-describedby={describedBy} onClick={() => onDecide(true)}>
        Approve
      </button>
      <button type="button" class="danger" aria-describedby={describedBy} onClick={() => onDecide(false)}>
        Deny
      </button>
    </div>
  );
}

/// A task's requests for approval, answered or not, oldest first; the page keeps them live.
export function TaskApprovals({ taskTitle, approvals }: { taskTitle: string; approvals: ApprovalRequest[] }) {
  const canSupervise = useCanSupervise();
  const [deciding, setDeciding] = useState<Decision | null>(null);
  const now = useNow(1000, approvals.some((a) => a.status === 'PENDING'));
  return (
    <section class="card" aria-labelledby="task-approvals-title">
      <h2 id="task-approvals-title">Requests for approval</h2>
      {approvals.length ? (
        <ol class="plain approvals">
          {approvals.map((r) => (
            <li key={r.id} class="approval" data-approval-request={r.id} data-status={r.status}>
              <div class="approval-head">
                <Status status={r.status} /> <strong id={`approval-action-${r.id}`}>{r.action}</strong>
                <span class="muted">
                  attempt {r.attempt}, agent <code>{r.agentId.slice(0, 8)}</code>
                </span>
              </div>
              <div class="approval-outcome">
                {r.status === 'PENDING' ? (
                  <RunsOut request={r} now={now} />
                ) : r.timedOut ? (
                  <span>
                    <strong>Timed out:</strong> nobody answered by <Time at={r.expiresAt} />, so it was{' '}
                    {r.status === 'APPROVED' ? 'approved' : 'denied'} by default
                  </span>
                ) : (
                  <span>
                    Answered by <code>{r.decidedBy ?? 'a supervisor'}</code>
                    {r.decidedAt && (
                      <>
                        {' '}
                        <Time at={r.decidedAt} />
                      </>
                    )}
                  </span>
                )}
              </div>
              {r.note && (
                <p class="approval-note">
                  <span class="label">Note:</span> {r.note}
                </p>
              )}
              <pre class="json">{json(r.details)}</pre>
              {canSupervise && r.status === 'PENDING' && (
                <DecideButtons request={r} onDecide={(approve) => setDeciding({ request: r, title: taskTitle, approve })} />
              )}
            </li>
          ))}
        </ol>
      ) : (
        <Empty>No agent asked for approval on this task.</Empty>
      )}
      {deciding && <DecideDialog decision={deciding} onDone={() => setDeciding(null)} />}
    </section>
  );
}
