// People (admin): users and their roles; creating one (a generated password shown once),
// changing a role, deactivating and reactivating, resetting a password (shown once); and the
// security log of refused sign-ins, keys and tokens. Live through `userUpdates` where served.

import { useRef, useState } from 'preact/hooks';
import { gql, useLive, useMutation, VersionedMap } from '../api/live';
import type { Role } from '../api/session';
import { useUser } from '../auth';
import { Dialog, Empty, ErrorNote, Field, Loaded, PageHead, ShownOnce, Status, Time } from '../ui/parts';

interface Person {
  id: string;
  email: string;
  role: Role;
  active: boolean;
  version: number;
}

interface SecurityEvent {
  at: string;
  kind: string;
  subject: string;
  reason: string;
}

const USER_FIELDS = 'id email role active version';
const ROLES: Role[] = ['VIEWER', 'SUPERVISOR', 'ADMIN'];

export function People() {
  const me = useUser();
  const users = useRef(new VersionedMap<Person>()).current;
  const [log, setLog] = useState<SecurityEvent[] | null>(null);
  const [, setTick] = useState(0);
  const changed = () => setTick((n) => n + 1);
  const [creating, setCreating] = useState(false);
  const [secret, setSecret] = useState<{ title: string; password: string } | null>(null);
  const took = (user: Person) => {
    users.put(user);
    changed();
  };
  const readLog = async () => {
    setLog((await gql<{ securityLog: SecurityEvent[] }>(`{ securityLog(first: 200) { at kind subject reason } }`)).securityLog);
  };
  const live = useLive(
    [
      {
        query: `subscription PeopleLive { userUpdates { ${USER_FIELDS} } }`,
        next: (data) => took(data.userUpdates),
        error: () => {},
      },
    ],
    async () => {
      const data = await gql<{ users: Person[]; securityLog: SecurityEvent[] }>(
        `{ users { ${USER_FIELDS} } securityLog(first: 200) { at kind subject reason } }`,
      );
      data.users.forEach((u) => users.put(u));
      setLog(data.securityLog);
      changed();
    },
    [],
  );
  const refreshLog = useMutation(readLog);
  const rows = users.values().sort((a, b) => a.email.localeCompare(b.email));
  return (
    <section class="people">
      <PageHead title="People">
        <button type="button" class="primary" onClick={() => setCreating(true)}>
          Add a person
        </button>
      </PageHead>
      <Loaded loading={live.loading} error={live.error} hasData={log !== null}>
        <div class="table-wrap">
          <table class="table" aria-label="People">
            <thead>
              <tr>
                <th scope="col">Email</th>
                <th scope="col">Status</th>
                <th scope="col">Role</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((user) => (
                <PersonRow
                  key={user.id}
                  user={user}
                  self={user.id === me.id}
                  onChanged={took}
                  onPassword={(password) => setSecret({ title: `New password for ${user.email}`, password })}
                />
              ))}
            </tbody>
          </table>
        </div>
        <div class="page-head">
          <h2>Security log</h2>
          <div class="actions">
            <button type="button" class="compact" disabled={refreshLog.running} onClick={() => void refreshLog.run()}>
              Refresh
            </button>
          </div>
        </div>
        <ErrorNote error={refreshLog.error} context="Could not read the security log" />
        {log && log.length === 0 ? (
          <Empty>Nothing was refused.</Empty>
        ) : (
          <div class="table-wrap">
            <table class="table" aria-label="Security log">
              <thead>
                <tr>
                  <th scope="col">When</th>
                  <th scope="col">Kind</th>
                  <th scope="col">Subject</th>
                  <th scope="col">Reason</th>
                </tr>
              </thead>
              <tbody>
                {(log ?? []).map((event, i) => (
                  <tr key={`${event.at}-${i}`}>
                    <td>
                      <Time at={event.at} />
                    </td>
                    <td>
                      <code>{event.kind}</code>
                    </td>
                    <td>{event.subject}</td>
                    <td>{event.reason}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Loaded>
      {creating && (
        <CreatePerson
          onDone={(created) => {
            setCreating(false);
            if (!created) return;
            took(created.user);
            if (created.password) setSecret({ title: `${created.user.email} can sign in`, password: created.password });
          }}
        />
      )}
      {secret && (
        <Dialog title={secret.title} onClose={() => setSecret(null)}>
          <ShownOnce label="Password" secret={secret.password} />
          <div class="buttons">
            <button type="button" class="primary" onClick={() => setSecret(null)}>
              I have passed it on
            </button>
          </div>
        </Dialog>
      )}
    </section>
  );
}

function PersonRow({
  user,
  self,
  onChanged,
  onPassword,
}: {
  user: Person;
  self: boolean;
  onChanged: (user: Person) => void;
  onPassword: (password: string) => void;
}) {
  const [confirmReset, setConfirmReset] = useState(false);
  const role = useMutation(async (next: Role) => {
    const data = await gql<{ changeRole: Person }>(
      `mutation ChangeRole($userId: ID!, $role: Role!) { changeRole(userId: $userId, role: $role) { ${USER_FIELDS} } }`,
      { userId: user.id, role: next },
    );
    onChanged(data.changeRole);
  });
  const active = useMutation(async () => {
    const field = user.active ? 'deactivateUser' : 'reactivateUser';
    const data = await gql<Record<string, Person>>(`mutation Active($userId: ID!) { ${field}(userId: $userId) { ${USER_FIELDS} } }`, {
      userId: user.id,
    });
    onChanged(data[field]);
  });
  const reset = useMutation(async () => {
    const data = await gql<{ resetPassword: { user: Person; password: string } }>(
      `mutation Reset($userId: ID!) { resetPassword(userId: $userId) { password user { ${USER_FIELDS} } } }`,
      { userId: user.id },
    );
    setConfirmReset(false);
    onChanged(data.resetPassword.user);
    onPassword(data.resetPassword.password);
  });
  const roleId = `role-${user.id}`;
  return (
    <tr data-user-email={user.email}>
      <th scope="row">
        {user.email} {self && <span class="muted">(you)</span>}
      </th>
      <td data-user-status>
        <Status status={user.active ? 'ACTIVE' : 'INACTIVE'} />
      </td>
      <td>
        <label class="sr-only" for={roleId}>
          Role of {user.email}
        </label>
        <select
          id={roleId}
          class="compact"
          value={user.role}
          disabled={role.running || self}
          title={self ? 'Another admin changes your role' : undefined}
          onChange={(event) => void role.run(event.currentTarget.value as Role)}
        >
          {ROLES.map((r) => (
            <option key={r} value={r}>
              {r.toLowerCase()}
            </option>
          ))}
        </select>
        <ErrorNote error={role.error} context="Role not changed" />
      </td>
      <td>
        <div class="row-actions">
          {!self && (
            <button type="button" class="compact" disabled={active.running} onClick={() => void active.run()}>
              {user.active ? 'Deactivate' : 'Reactivate'}
            </button>
          )}
          <button type="button" class="compact" onClick={() => setConfirmReset(true)}>
            Reset password
          </button>
        </div>
        <ErrorNote error={active.error} />
        {confirmReset && (
          <Dialog title={`Reset the password of ${user.email}?`} onClose={() => setConfirmReset(false)}>
            <p>Their current password stops working at once; the new one is shown once, to pass on.</p>
            <ErrorNote error={reset.error} context="Not reset" />
            <div class="buttons">
              <button type="button" class="danger" disabled={reset.running} onClick={() => void reset.run()}>
                Reset password
              </button>
              <button type="button" onClick={() => setConfirmReset(false)}>
                Keep it
              </button>
            </div>
          </Dialog>
        )}
      </td>
    </tr>
  );
}

function CreatePerson({ onDone }: { onDone: (created?: { user: Person; password: string | null }) => void }) {
  const [email, setEmail] = useState('');
  const [role, setRole] = useState<Role>('VIEWER');
  const create = useMutation(async () => {
    const data = await gql<{ createUser: { user: Person; password: string | null } }>(
      `mutation CreateUser($input: CreateUserInput!) { createUser(input: $input) { password user { ${USER_FIELDS} } } }`,
      { input: { email: email.trim(), role } },
    );
    return data.createUser;
  });
  return (
    <Dialog title="Add a person" onClose={() => onDone()}>
      <form
        class="form"
        onSubmit={async (event) => {
          event.preventDefault();
          const created = await create.run();
          if (created) onDone(created);
        }}
      >
        <Field label="Email">
          <input type="email" required value={email} onInput={(e) => setEmail(e.currentTarget.value)} />
        </Field>
        <Field label="Role">
          <select value={role} onChange={(e) => setRole(e.currentTarget.value as Role)}>
            {ROLES.map((r) => (
              <option key={r} value={r}>
                {r.toLowerCase()}
              </option>
            ))}
          </select>
        </Field>
        <p class="hint">A password is generated and shown once, for you to pass on.</p>
        <ErrorNote error={create.error} context="Not added" />
        <div class="buttons">
          <button type="submit" class="primary" disabled={create.running || !email.trim()}>
            Add
          </button>
          <button type="button" onClick={() => onDone()}>
            Cancel
          </button>
        </div>
      </form>
    </Dialog>
  );
}
