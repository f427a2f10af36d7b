// Agents: who works, on what, how well; registering one (its API key shown once), rotating its key
// (admin), activating and deactivating it (supervisor). Live through `agentUpdates`.

import { useRef, useState } from 'preact/hooks';
import { gql, useLive, useMutation, useSoon, VersionedMap } from '../api/live';
import { AGENT_FIELDS, type Agent } from '../api/types';
import { useCanSupervise, useIsAdmin } from '../auth';
import { formatNumber, formatPercent } from '../ui/format';
import { Dialog, Empty, ErrorNote, Field, Loaded, PageHead, ShownOnce, Status, Time } from '../ui/parts';

interface Registration {
  agent: Agent;
  apiKey: string;
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
    ],
    readAll,
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
}: {
  agent: Agent;
  canSupervise: boolean;
  isAdmin: boolean;
  onChanged: (agent: Agent) => void;
  onRotated: (registration: Registration) => void;
}) {
  const [confirmRotate, setConfirmRotate] = useState(false);
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
      <td>
        <code>{agent.keyId}</code>
      </td>
      {canSupervise && (
        <td>
          <div class="row-actions">
          <button type="button" class="compact" disabled={toggle.running} onClick={() => void toggle.run()}>
            {agent.active ? 'Deactivate' : 'Activate'}
          </button>
          {isAdmin && (
            <button type="button" class="compact" onClick={() => setConfirmRotate(true)}>
              Rotate key
            </button>
          )}
          </div>
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
