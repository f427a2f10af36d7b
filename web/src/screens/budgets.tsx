// Budgets: per service what is spent and reserved against the month's budget (a bar and the
// figures), the thresholds crossed, when it runs out at the rate so far, its status and where its
// requests fall back to; a supervisor increases a budget, saying why. Each service's history is
// its stream's events. Live through `serviceUpdates`.

import { useRef, useState } from 'preact/hooks';
import { gql, useLive, useMutation, VersionedMap } from '../api/live';
import { SERVICE_FIELDS, type Service } from '../api/types';
import { useCanSupervise } from '../auth';
import { formatMoney, fromMicros, toMicros } from '../ui/format';
import { Dialog, Empty, ErrorNote, Field, Loaded, PageHead, Status, Time } from '../ui/parts';
import { StreamHistory } from './common';

interface Budget extends Service {
  fallbackServiceId: string | null;
  projectedSpend: string | null;
}

const BUDGET_FIELDS = `${SERVICE_FIELDS} fallbackServiceId projectedSpend`;

/// `part` as a percentage of `whole` (both `Decimal` strings), between 0 and 100.
function share(part: string, whole: string): number {
  const total = toMicros(whole);
  if (total <= 0n) return 0;
  return Math.min(100, Math.max(0, Number((toMicros(part) * 10_000n) / total) / 100));
}

/// The services requests fall through to, in order, stopping before a cycle comes round.
export function fallbackChain(service: Budget, byId: (id: string) => Budget | undefined): Budget[] {
  const chain: Budget[] = [];
  const seen = new Set([service.id]);
  let next = service.fallbackServiceId;
  while (next && !seen.has(next)) {
    seen.add(next);
    const found = byId(next);
    if (!found) break;
    chain.push(found);
    next = found.fallbackServiceId;
  }
  return chain;
}

export function Budgets() {
  const canSupervise = useCanSupervise();
  const services = useRef(new VersionedMap<Budget>()).current;
  const [, setTick] = useState(0);
  const changed = () => setTick((n) => n + 1);
  const [increasing, setIncreasing] = useState<Budget | null>(null);
  const [history, setHistory] = useState<Budget | null>(null);
  const live = useLive(
    [
      {
        query: `subscription BudgetsLive { serviceUpdates { ${BUDGET_FIELDS} } }`,
        next: (data) => {
          services.put(data.serviceUpdates);
          changed();
        },
      },
    ],
    async () => {
      (await gql<{ services: Budget[] }>(`{ services { ${BUDGET_FIELDS} } }`)).services.forEach((s) => services.put(s));
      changed();
    },
    [],
  );
  const rows = services.values().sort((a, b) => a.name.localeCompare(b.name));
  return (
    <section class="budgets">
      <PageHead title="Budgets" />
      <Loaded loading={live.loading} error={live.error} hasData={rows.length > 0 || !live.loading}>
        {live.liveError && <p class="notice">Live updates stopped: {live.liveError.message}</p>}
        {rows.length === 0 ? (
          <Empty>No service is registered yet.</Empty>
        ) : (
          <div class="stack">
            {rows.map((service) => (
              <BudgetCard
                key={service.id}
                service={service}
                chain={fallbackChain(service, (id) => services.get(id))}
                canSupervise={canSupervise}
                onIncrease={() => setIncreasing(service)}
                onHistory={() => setHistory(service)}
              />
            ))}
          </div>
        )}
      </Loaded>
      {increasing && (
        <Increase
          service={increasing}
          onDone={(updated) => {
            setIncreasing(null);
            if (updated) {
              services.put(updated);
              changed();
            }
          }}
        />
      )}
      {history && (
        <Dialog title={`History of ${history.name}`} onClose={() => setHistory(null)}>
          <StreamHistory streamId={`service-${history.id}`} />
        </Dialog>
      )}
    </section>
  );
}

function BudgetCard({
  service,
  chain,
  canSupervise,
  onIncrease,
  onHistory,
}: {
  service: Budget;
  chain: Budget[];
  canSupervise: boolean;
  onIncrease: () => void;
  onHistory: () => void;
}) {
  const money = (amount: string) => formatMoney(amount, service.currency);
  const spent = share(service.spent, service.monthlyBudget);
  const reserved = Math.min(100 - spent, share(service.reserved, service.monthlyBudget));
  const id = `service-${service.id}`;
  return (
    <article class="card" aria-labelledby={id} data-service={service.name}>
      <div class="page-head">
        <h2 id={id}>
          {service.name} <Status status={service.status} />
        </h2>
        <div class="actions">
          <button type="button" class="compact" onClick={onHistory}>
            History
          </button>
          {canSupervise && (
            <button type="button" class="compact primary" onClick={onIncrease}>
              Increase budget
            </button>
          )}
        </div>
      </div>
      <div
        class="budget-bar"
        role="img"
        aria-label={`${money(service.spent)} spent and ${money(service.reserved)} reserved of ${money(service.monthlyBudget)}`}
      >
        <span class="spent" style={{ width: `${spent}%` }} />
        <span class="reserved" style={{ width: `${reserved}%` }} />
        {service.thresholdsCrossed.map((t) => (
          <span key={t} class="mark" style={{ left: `${Math.min(99.5, t)}%` }} />
        ))}
      </div>
      <div class="legend" data-figures>
        <span>
          <span class="swatch spent" aria-hidden="true" />
          Spent {money(service.spent)} ({spent.toFixed(1)} %)
        </span>
        <span>
          <span class="swatch reserved" aria-hidden="true" />
          Reserved {money(service.reserved)}
        </span>
        <span>Remaining {money(service.remaining)}</span>
        <span>
          Budget {money(service.monthlyBudget)} for {service.period}
        </span>
      </div>
      <dl class="facts">
        <dt>Thresholds crossed</dt>
        <dd data-thresholds>
          {service.thresholdsCrossed.length ? service.thresholdsCrossed.map((t) => `⚑ ${t} %`).join(', ') : 'none'}
        </dd>
        <dt>Projected spend</dt>
        <dd>{service.projectedSpend ? money(service.projectedSpend) : '— (too early in the period)'}</dd>
        <dt>Runs out</dt>
        <dd>{service.projectedRunOutAt ? <Time at={service.projectedRunOutAt} /> : 'not before the period ends'}</dd>
        <dt>Falls back to</dt>
        <dd data-fallback>
          {chain.length ? chain.map((s) => `${s.name} (${s.status.toLowerCase()})`).join(' → ') : 'nothing'}
        </dd>
      </dl>
    </article>
  );
}

function Increase({ service, onDone }: { service: Budget; onDone: (updated?: Budget) => void }) {
  const [amount, setAmount] = useState('');
  const [reason, setReason] = useState('');
  const valid = /^\d+(\.\d{1,6})?$/.test(amount.trim()) && toMicros(amount.trim()) > 0n;
  const increase = useMutation(async () => {
    const data = await gql<{ increaseBudget: Budget }>(
      `mutation Increase($serviceId: ID!, $amount: Decimal!, $reason: String!) {
        increaseBudget(serviceId: $serviceId, amount: $amount, reason: $reason) { ${BUDGET_FIELDS} } }`,
      { serviceId: service.id, amount: amount.trim(), reason: reason.trim() },
    );
    return data.increaseBudget;
  });
  const after = valid ? fromMicros(toMicros(service.monthlyBudget) + toMicros(amount.trim())) : null;
  return (
    <Dialog title={`Increase the budget of ${service.name}`} onClose={() => onDone()}>
      <form
        class="form"
        onSubmit={async (event) => {
          event.preventDefault();
          const updated = await increase.run();
          if (updated) onDone(updated);
        }}
      >
        <Field
          label={`Amount to add (${service.currency})`}
          hint={after ? `The budget becomes ${formatMoney(after, service.currency)}.` : 'A positive amount, up to six decimals.'}
          error={amount && !valid ? 'Give a positive amount such as 25 or 12.50.' : null}
        >
          <input inputMode="decimal" required value={amount} onInput={(e) => setAmount(e.currentTarget.value)} />
        </Field>
        <Field label="Reason" hint="Recorded with who and when.">
          <textarea required value={reason} onInput={(e) => setReason(e.currentTarget.value)} />
        </Field>
        <ErrorNote error={increase.error} context="Not increased" />
        <div class="buttons">
          <button type="submit" class="primary" disabled={!valid || !reason.trim() || increase.running}>
            Increase
          </button>
          <button type="button" onClick={() => onDone()}>
            Cancel
          </button>
        </div>
      </form>
    </Dialog>
  );
}
