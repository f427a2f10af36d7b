-- Requests for approval an agent makes during its work (`TaskApprovalRequested`): when each task's
-- first pending one runs out, rewritten by the statement that appends the task's events, so that
-- the lease reaper brings it to its default (`TaskApprovalDecided`, timed out) on time.
create table approval_deadlines (
    task_id         uuid primary key,
    due             timestamptz not null
);

create index approval_deadlines_due on approval_deadlines (due);

-- The tasks read model keeps each task's requests for approval and their answers:
-- `[{requestId, agentId, attempt, action, details, approveOnTimeout, expiresAt, status, timedOut, note}]`.
alter table tasks add column approvals jsonb not null default '[]';
