// What a supervisor does to tasks, shared by the board and the task page: create (with a spending
// cap, or waiting for approval), edit (only what they saw: `expectedVersion`), reprioritize, cap
// its spending, approve or reject, cancel, retry, delete. Each is one mutation; its
// answer comes back through `taskUpdates` too, so callers need not merge it themselves.

import { useState } from 'preact/hooks';
import { gql, useMutation } from '../api/live';
import { PRIORITIES, TASK_FIELDS, type Task } from '../api/types';
import { isAmount } from '../ui/format';
import { Confirm, Dialog, ErrorNote, Field } from '../ui/parts';

export function reprioritize(id: string, priority: number): Promise<Task> {
  return gql<{ reprioritizeTask: Task }>(
    `mutation Reprioritize($id: ID!, $priority: Int!) { reprioritizeTask(id: $id, priority: $priority) { ${TASK_FIELDS} } }`,
    { id, priority },
  ).then((data) => data.reprioritizeTask);
}

function capabilitiesOf(text: string): string[] {
  return text
    .split(',')
    .map((c) => c.trim())
    .filter(Boolean);
}

/// The form to create a task, or to edit one.
export function TaskForm({ task, onDone }: { task?: Task; onDone: (task?: Task) => void }) {
  const [title, setTitle] = useState(task?.title ?? '');
  const [description, setDescription] = useState(task?.description ?? '');
  const [priority, setPriority] = useState(task?.priority ?? 3);
  const [capabilities, setCapabilities] = useState(task?.requiredCapabilities.join(', ') ?? '');
  const [maxAttempts, setMaxAttempts] = useState('');
  const [maxCost, setMaxCost] = useState('');
  const [requiresApproval, setRequiresApproval] = useState(false);
  const save = useMutation(async () => {
    const common = { title: title.trim(), description, priority, requiredCapabilities: capabilitiesOf(capabilities) };
    if (task) {
      const data = await gql<{ updateTask: Task }>(
        `mutation UpdateTask($id: ID!, $input: UpdateTaskInput!) { updateTask(id: $id, input: $input) { ${TASK_FIELDS} } }`,
        { id: task.id, input: { ...common, expectedVersion: task.version } },
      );
      return data.updateTask;
    }
    const input = {
      ...common,
      ...(maxAttempts ? { maxAttempts: Number(maxAttempts) } : {}),
      ...(maxCost.trim() ? { maxCost: maxCost.trim() } : {}),
      requiresApproval,
    };
    const data = await gql<{ createTask: Task }>(
      `mutation CreateTask($input: CreateTaskInput!) { createTask(input: $input) { ${TASK_FIELDS} } }`,
      { input },
    );
    return data.createTask;
  });
  const titleError = title.trim() === '' ? 'A title is needed.' : null;
  const costError = maxCost.trim() && !isAmount(maxCost.trim()) ? 'An amount such as 12.50.' : null;
  const submit = async (event: Event) => {
    event.preventDefault();
    if (titleError || costError) return;
    const saved = await save.run();
    if (saved) onDone(saved);
  };
  return (
    <Dialog title={task ? 'Edit task' : 'New task'} onClose={() => onDone()}>
      <form class="form" onSubmit={submit}>
        <Field label="Title" error={title === '' ? null : titleError}>
          <input required value={title} onInput={(e) => setTitle(e.currentTarget.value)} />
        </Field>
        <Field label="Description">
          <textarea rows={4} value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
        </Field>
        <Field label="Priority" hint="5 is the highest">
          <select value={String(priority)} onChange={(e) => setPriority(Number(e.currentTarget.value))}>
            {PRIORITIES.map((p) => (
              <option key={p} value={String(p)}>
                {p}
              </option>
            ))}
          </select>
        </Field>
        <Field label="Required capabilities" hint="comma-separated, e.g. rust, docs">
          <input value={capabilities} onInput={(e) => setCapabilities(e.currentTarget.value)} />
        </Field>
        {!task && (
          <Field label="Attempts" hint="1 to 100; empty: the queue's default">
            <input
              type="number"
              min={1}
              max={100}
              value={maxAttempts}
              onInput={(e) => setMaxAttempts(e.currentTarget.value)}
            />
          </Field>
        )}
        {!task && (
          <Field label="Spending cap" hint="settled plus reserved, across services; empty: none" error={costError}>
            <input inputMode="decimal" placeholder="10.00" value={maxCost} onInput={(e) => setMaxCost(e.currentTarget.value)} />
          </Field>
        )}
        {!task && (
          <label class="check">
            <input type="checkbox" checked={requiresApproval} onChange={(e) => setRequiresApproval(e.currentTarget.checked)} />
            Requires a supervisor's approval before any agent claims it
          </label>
        )}
        <ErrorNote error={save.error} context={task ? 'Not saved' : 'Not created'} />
        <div class="buttons">
          <button type="submit" class="primary" disabled={save.running || !!titleError || !!costError}>
            {task ? 'Save' : 'Create task'}
          </button>
          <button type="button" onClick={() => onDone()}>
            Cancel
          </button>
        </div>
      </form>
    </Dialog>
  );
}


/// Caps what may be settled and reserved for a task, or changes its cap.
export function SpendingCapForm({ task, onDone }: { task: Task; onDone: () => void }) {
  const [cap, setCap] = useState(task.maxCost ?? '');
  const save = useMutation(() =>
    gql(`mutation SetTaskMaxCost($id: ID!, $cap: Decimal!) { setTaskMaxCost(id: $id, maxCost: $cap) { id maxCost version } }`, {
      id: task.id,
      cap: cap.trim(),
    }),
  );
  const error = isAmount(cap.trim()) ? null : 'An amount such as 12.50.';
  const submit = async (event: Event) => {
    event.preventDefault();
    if (error) return;
    if (await save.run()) onDone();
  };
  return (
    <Dialog title="Spending cap" onClose={onDone}>
      <form class="form" onSubmit={submit}>
        <p>
          What may be settled and reserved for <strong>{task.title}</strong> at most, across every service. Authorizations
          past it are refused, and the agent reads why.
        </p>
        <Field label="Cap" error={cap === '' ? null : error}>
          <input inputMode="decimal" required value={cap} onInput={(e) => setCap(e.currentTarget.value)} />
        </Field>
        <ErrorNote error={save.error} context="Not set" />
        <div class="buttons">
          <button type="submit" class="primary" disabled={save.running || !!error}>
            Set cap
          </button>
          <button type="button" onClick={onDone}>
            Cancel
          </button>
        </div>
      </form>
    </Dialog>
  );
}

type Action = 'approve' | 'reject' | 'cancel' | 'retry' | 'delete';

const ACTIONS: Record<Action, { label: string; confirm: string; mutation: string }> = {
  approve: {
    label: 'Approve task',
    confirm: 'Let agents claim this task?',
    mutation: `mutation ApproveTask($id: ID!, $note: String) { approveTask(id: $id, note: $note) { id status version } }`,
  },
  reject: {
    label: 'Reject task',
    confirm: 'Refuse this task for good? No agent will ever work on it.',
    mutation: `mutation RejectTask($id: ID!, $reason: String!) { rejectTask(id: $id, reason: $reason) { id status version } }`,
  },
  cancel: {
    label: 'Cancel task',
    confirm: 'Cancel this task? Its agent learns it at its next heartbeat.',
    mutation: `mutation CancelTask($id: ID!, $reason: String) { cancelTask(id: $id, reason: $reason) { id status version } }`,
  },
  retry: {
    label: 'Retry task',
    confirm: 'Give this failed task a fresh set of attempts?',
    mutation: `mutation RetryTask($id: ID!) { retryTask(id: $id) { id status version } }`,
  },
  delete: {
    label: 'Delete task',
    confirm: 'Delete this task? This cannot be undone (its history stays in the audit trail).',
    mutation: `mutation DeleteTask($id: ID!) { deleteTask(id: $id) }`,
  },
};

/// Whether the task can still change (its content, its priority): not once it ended.
export function isOpen(task: Task): boolean {
  return task.status === 'AWAITING_APPROVAL' || task.status === 'PENDING' || task.status === 'IN_PROGRESS';
}

/// The actions a task's status allows (a task in progress is cancelled before it is deleted).
export function actionsFor(task: Task): Action[] {
  const actions: Action[] = [];
  if (task.status === 'AWAITING_APPROVAL') actions.push('approve', 'reject');
  if (isOpen(task)) actions.push('cancel');
  if (task.status === 'FAILED') actions.push('retry');
  if (task.status !== 'DELETED' && task.status !== 'IN_PROGRESS') actions.push('delete');
  return actions;
}

/// What each action asks for beside the yes: a reason, a note, or nothing.
const TEXT: Partial<Record<Action, { label: string; hint: string; required?: boolean }>> = {
  approve: { label: 'Note (optional)', hint: 'Recorded with who and when.' },
  reject: { label: 'Reason', hint: 'Recorded with who and when.', required: true },
  cancel: { label: 'Reason (optional)', hint: 'Recorded with who and when.' },
};

/// Asks before an approval, a rejection, a cancel, retry or delete, then does it.
export function ConfirmAction({ task, action, onDone }: { task: Task; action: Action; onDone: (done: boolean) => void }) {
  const { label, confirm, mutation } = ACTIONS[action];
  const variables = (text: string | null): Record<Action, Record<string, unknown>> => ({
    approve: { id: task.id, note: text },
    reject: { id: task.id, reason: text ?? '' },
    cancel: { id: task.id, reason: text },
    retry: { id: task.id },
    delete: { id: task.id },
  });
  return (
    <Confirm
      title={label}
      text={TEXT[action]}
      confirm={label}
      danger={action === 'delete' || action === 'reject'}
      run={(text) => gql(mutation, variables(text)[action])}
      onDone={onDone}
    >
      {confirm} <strong>{task.title}</strong>
    </Confirm>
  );
}

/// The buttons for a task's actions, each opening its confirmation; Edit opens the form.
export function TaskActionButtons({ task, onDeleted }: { task: Task; onDeleted?: () => void }) {
  const [open, setOpen] = useState<Action | 'edit' | 'cap' | null>(null);
  return (
    <>
      {isOpen(task) && (
        <button type="button" onClick={() => setOpen('edit')}>
          Edit
        </button>
      )}
      {isOpen(task) && (
        <button type="button" onClick={() => setOpen('cap')}>
          {task.maxCost ? 'Change cap' : 'Cap spending'}
        </button>
      )}
      {actionsFor(task).map((action) => (
        <button type="button" key={action} class={action === 'delete' ? 'danger' : ''} onClick={() => setOpen(action)}>
          {ACTIONS[action].label.replace(' task', '')}
        </button>
      ))}
      {open === 'edit' && <TaskForm task={task} onDone={() => setOpen(null)} />}
      {open === 'cap' && <SpendingCapForm task={task} onDone={() => setOpen(null)} />}
      {open && open !== 'edit' && open !== 'cap' && (
        <ConfirmAction
          task={task}
          action={open}
          onDone={(done) => {
            setOpen(null);
            if (done && open === 'delete') onDeleted?.();
          }}
        />
      )}
    </>
  );
}
