// Agents: who works, on what, how well, what each spent today against its daily cap; registering
// one (its API key shown once), rotating its key (admin), activating and deactivating it and
// capping its daily spending (supervisor). Live through `agentUpdates`, spending through
// `serviceUpdates`.

import { useRef, useState } from 'preact/hooks';
import { gql, useLive, useMutation, useSoon, VersionedMap } from '../api/live';
import { AGENT_FIELDS, type Agent } from '../api/types';
import { useCanSupervise, useIsAdmin } from '../auth';
import { formatMoney, formatNumber, formatPercent, isAmount } from '../ui/format';
import { Dialog, Empty, ErrorNote, Field, Loaded, PageHead, ShownOnce, Status, Time } from '../ui/parts';

interface Registration {
  agent: Agent;
  apiKey: string;
}

/// What an agent spent today (UTC) against its daily cap, as the write side keeps it.
interface Spending {
  dailyCap: string | null;
  settledToday: string;
  reserved: string;
  room: string | null;
}


function successRate(agent: Agent): number | null {
  const ended = agent.tasksCompleted + agent.tasksFailed;
  return ended ? agent.tasksCompleted / ended : null;
}

export function Agents() {
  const canSupervise = useCanSupervise();
  const isAdmin = useIsAdmin();
  const agents = useRef(new VersionedMap<Agent>()).current;
  const [, setTick] = useState(0);
  const changed = () => setTick((n) => n + 1);
  const [registering, setRegistering] = useState(false);
  const [shown, setShown] = useState<{ title: string; registration: Registration } | null>(null);
  const agentsLive = useRef(true);

  const readAll = async () => {
    (await gql<{ agents: Agent[] }>(`{ agents { ${AGENT_FIELDS} } }`)).agents.forEach((a) => agents.put(a));
    changed();
  };
  const readSoon = useSoon(readAll);
  const [spending, setSpending] = useState<Record<string, Spending>>({});
  const readSpending = async () => {
    const data = await gql<{ agents: { id: string; spending: Spending }[] }>(
      `{ agents { id spending { dailyCap settledToday reserved room } } }`,
    );
    setSpending(Object.fromEntries(data.agents.map((a) => [a.id, a.spending])));
  };
  const readSpendingSoon = useSoon(readSpending, 300);

  const live = useLive(
    [
      {
        query: `subscription AgentsLive { agentUpdates { ${AGENT_FIELDS} } }`,
        next: (data) => {
          agents.put(data.agentUpdates);
          changed();
        },
        error: () => {
          agentsLive.current = false;
        },
      },
      {
        // Without `agentUpdates`, an agent's figures move with the tasks it works.
        query: `subscription AgentsTasks { taskUpdates { id } }`,
        next: () => {
          if (!agentsLive.current) readSoon();
        },
      },
      {
        // Agents' spend moves with the services' authorizations and charges.
        query: `subscription AgentsSpend { serviceUpdates { id } }`,
        next: () => readSpendingSoon(),
        error: () => {},
      },
    ],
    async () => {
      await readAll();
      await readSpending();
    },
    [],
  );

  const took = (agent: Agent) => {
    agents.put(agent);
    changed();
  };
  const rows = agents.values().sort((a, b) => (a.registeredAt < b.registeredAt ? -1 : 1));

  return (
    <section class="agents">
      <PageHead title="Agents">
        {isAdmin && (
          <button type="button" class="primary" onClick={() => setRegistering(true)}>
            Register agent
          </button>
        )}
      </PageHead>
      <Loaded loading={live.loading} error={live.error} hasData={rows.length > 0 || !live.loading}>
        {rows.length === 0 ? (
          <Empty>No agent is registered yet.</Empty>
        ) : (
          <div class="table-wrap">
            <table class="table" aria-label="Agents">
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Status</th>
                  <th scope="col">Capabilities</th>
                  <th scope="col">Last seen</th>
                  <th scope="col">Current task</th>
                  <th scope="col" class="num">Claimed</th>
                  <th scope="col" class="num">Completed</th>
                  <th scope="col" class="num">Failed attempts</th>
                  <th scope="col" class="num">Success rate</th>
                  <th scope="col">Spent today</th>
                  <th scope="col">Key</th>
                  {canSupervise && <th scope="col">Actions</th>}
                </tr>
              </thead>
              <tbody>
                {rows.map((agent) => (
                  <AgentRow
                    key={agent.id}
                    agent={agent}
                    canSupervise={canSupervise}
                    isAdmin={isAdmin}
                    onChanged={took}
                    spending={spending[agent.id]}
                    onSpendingChanged={() => void readSpending()}
                    onRotated={(registration) => {
                      took(registration.agent);
                      setShown({ title: `New key for ${registration.agent.name}`, registration });
                    }}
                  />
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Loaded>
      {registering && (
        <RegisterAgent
          onDone={(registration) => {
            setRegistering(false);
            if (registration) {
              took(registration.agent);
              setShown({ title: `${registration.agent.name} is registered`, registration });
            }
          }}
        />
      )}
      {shown && (
        <Dialog title={shown.title} onClose={() => setShown(null)}>
          <ShownOnce label="API key" secret={shown.registration.apiKey} />
          <div class="buttons">
            <button type="button" class="primary" onClick={() => setShown(null)}>
              I have stored it
            </button>
          </div>
        </Dialog>
      )}
    </section>
  );
}

function AgentRow({
  agent,
  canSupervise,
  isAdmin,
  onChanged,
  onRotated,
  spending,
  onSpendingChanged,
}: {
  agent: Agent;
  canSupervise: boolean;
  isAdmin: boolean;
  onChanged: (agent: Agent) => void;
  onRotated: (registration: Registration) => void;
  spending: Spending | undefined;
  onSpendingChanged: () => void;
}) {
  const [confirmRotate, setConfirmRotate] = useState(false);
  const [capping, setCapping] = useState(false);
  const toggle = useMutation(async () => {
    const data = await gql<{ setAgentActive: Agent }>(
      `mutation SetAgentActive($id: ID!, $active: Boolean!) { setAgentActive(id: $id, active: $active) { ${AGENT_FIELDS} } }`,
      { id: agent.id, active: !agent.active },
    );
    onChanged(data.setAgentActive);
  });
  const rotate = useMutation(async () => {
    const data = await gql<{ rotateAgentKey: Registration }>(
      `mutation RotateKey($id: ID!) { rotateAgentKey(id: $id) { apiKey agent { ${AGENT_FIELDS} } } }`,
      { id: agent.id },
    );
    setConfirmRotate(false);
    onRotated(data.rotateAgentKey);
  });
  return (
    <tr data-agent-id={agent.id}>
      <th scope="row">{agent.name}</th>
      <td data-agent-status>
        {agent.quarantined ? (
          <span class="status tone-bad" title={agent.quarantined}>
            <span aria-hidden="true">☣</span> Quarantined <span class="muted">({agent.quarantined})</span>
          </span>
        ) : (
          <Status status={agent.active ? 'ACTIVE' : 'INACTIVE'} />
        )}
      </td>
      <td>{agent.capabilities.join(', ') || '—'}</td>
      <td>
        <Time at={agent.lastSeenAt} fallback="never" />
      </td>
      <td>{agent.currentTaskId ? <a href={`/tasks/${agent.currentTaskId}`}>{agent.currentTaskId.slice(0, 8)}</a> : '—'}</td>
      <td class="num">{formatNumber(agent.tasksClaimed)}</td>
      <td class="num">{formatNumber(agent.tasksCompleted)}</td>
      <td class="num">{formatNumber(agent.tasksFailed)}</td>
      <td class="num">{formatPercent(successRate(agent))}</td>
      <td data-agent-spending>
        {spending ? (
          <>
            {formatMoney(spending.settledToday, '')} settled, {formatMoney(spending.reserved, '')} reserved
            {spending.dailyCap ? (
              <span class={spending.room === '0.00' ? 'tone-bad' : 'muted'}>
                {' '}
                of {formatMoney(spending.dailyCap, '')} a day
              </span>
            ) : (
              <span class="muted"> (no daily cap)</span>
            )}
          </>
        ) : (
          '—'
        )}
      </td>
      <td>
        <code>{agent.keyId}</code>
      </td>
      {canSupervise && (
        <td>
          <div class="row-actions">
          <button type="button" class="compact" disabled={toggle.running} onClick={() => void toggle.run()}>
            {agent.active ? 'Deactivate' : 'Activate'}
          </button>
          <button type="button" class="compact" onClick={() => setCapping(true)}>
            Daily cap
          </button>
          {isAdmin && (
            <button type="button" class="compact" onClick={() => setConfirmRotate(true)}>
              Rotate key
            </button>
          )}
          </div>
          {capping && (
            <DailyCapForm
              agent={agent}
              current={spending?.dailyCap ?? null}
              onDone={(changed) => {
                setCapping(false);
                if (changed) onSpendingChanged();
              }}
            />
          )}
          <ErrorNote error={toggle.error} />
          {confirmRotate && (
            <Dialog title={`Rotate the key of ${agent.name}?`} onClose={() => setConfirmRotate(false)}>
              <p>The agent's current key stops working at once; the new one is shown once.</p>
              <ErrorNote error={rotate.error} context="Not rotated" />
              <div class="buttons">
                <button type="button" class="danger" disabled={rotate.running} onClick={() => void rotate.run()}>
                  Rotate key
                </button>
                <button type="button" onClick={() => setConfirmRotate(false)}>
                  Keep the key
                </button>
              </div>
            </Dialog>
          )}
        </td>
      )}
    </tr>
  );
}

/// Caps what an agent may settle and reserve in a day, or lifts its cap (left empty).
function DailyCapForm({ agent, current, onDone }: { agent: Agent; current: string | null; onDone: (changed: boolean) => void }) {
  const [cap, setCap] = useState(current ?? '');
  const save = useMutation(() =>
    gql(`mutation SetDailyCap($id: ID!, $cap: Decimal) { setAgentDailySpendingCap(id: $id, dailyCap: $cap) { id } }`, {
      id: agent.id,
      cap: cap.trim() || null,
    }),
  );
  const error = cap.trim() && !isAmount(cap.trim()) ? 'An amount such as 25.00.' : null;
  const submit = async (event: Event) => {
    event.preventDefault();
    if (error) return;
    if (await save.run()) onDone(true);
  };
  return (
    <Dialog title={`Daily spending cap of ${agent.name}`} onClose={() => onDone(false)}>
      <form class="form" onSubmit={submit}>
        <p>What the agent may settle in a day (UTC) plus what it holds reserved, across every service. Authorizations past it are refused, and the agent reads why.</p>
        <Field label="Cap per day" hint="empty: no daily cap" error={error}>
          <input inputMode="decimal" placeholder="25.00" value={cap} onInput={(e) => setCap(e.currentTarget.value)} />
        </Field>
        <ErrorNote error={save.error} context="Not set" />
        <div class="buttons">
          <button type="submit" class="primary" disabled={save.running || !!error}>
            {cap.trim() ? 'Set cap' : 'Lift cap'}
          </button>
          <button type="button" onClick={() => onDone(false)}>
            Cancel
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function RegisterAgent({ onDone }: { onDone: (registration?: Registration) => void }) {
  const [name, setName] = useState('');
  const [capabilities, setCapabilities] = useState('');
  const register = useMutation(async () => {
    const data = await gql<{ registerAgent: Registration }>(
      `mutation RegisterAgent($input: RegisterAgentInput!) { registerAgent(input: $input) { apiKey agent { ${AGENT_FIELDS} } } }`,
      {
        input: {
          name: name.trim(),
          capabilities: capabilities
            .split(',')
            .map((c) => c.trim())
            .filter(Boolean),
        },
      },
    );
    return data.registerAgent;
  });
  const submit = async (event: Event) => {
    event.preventDefault();
    const registration = await register.run();
    if (registration) onDone(registration);
  };
  return (
    <Dialog title="Register an agent" onClose={() => onDone()}>
      <form class="form" onSubmit={submit}>
        <Field label="Name">
          <input required value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </Field>
        <Field label="Capabilities" hint="comma-separated, e.g. rust, docs">
          <input value={capabilities} onInput={(e) => setCapabilities(e.currentTarget.value)} />
        </Field>
        <ErrorNote error={register.error} context="Not registered" />
        <div class="buttons">
          <button type="submit" class="primary" disabled={register.running || !name.trim()}>
            Register
          </button>
          <button type="button" onClick={() => onDone()}>
            Cancel
          </button>
        </div>
      </form>
    </Dialog>
  );
}
