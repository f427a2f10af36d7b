// Cost outliers: tasks whose cost stands out against comparable ones, with the figures behind the
// flag (the z-score against the threshold, the group's median and spread) and why in a sentence.
// A supervisor acknowledges one with a note. Live through `outlierUpdates`, or the flag and
// acknowledgment events (the read model follows each a moment later).

import { useState } from 'preact/hooks';
import { gql, useLive, useMutation, useSoon } from '../api/live';
import { useCanSupervise } from '../auth';
import { setQuery } from '../router';
import type { ScreenProps } from '../routes';
import { formatMoney, formatNumber } from '../ui/format';
import { Dialog, Empty, ErrorNote, Field, Loaded, PageHead, Time } from '../ui/parts';
import { shortId } from './common';

interface Outlier {
  taskId: string;
  cost: string;
  median: string;
  mad: number;
  zScore: number;
  threshold: number;
  comparable: number;
  group: string;
  why: string;
  flaggedAt: string;
  acknowledged: boolean;
  acknowledgedAt: string | null;
  acknowledgedBy: string | null;
  note: string | null;
  task: { id: string; title: string; status: string } | null;
}

const OUTLIER_FIELDS = `taskId cost median mad zScore threshold comparable group why flaggedAt acknowledged
  acknowledgedAt acknowledgedBy note task { id title status }`;

const SHOW = { open: false, acknowledged: true, all: undefined } as const;
type Show = keyof typeof SHOW;

function parseShow(query: URLSearchParams): Show {
  const show = query.get('show');
  return show === 'acknowledged' || show === 'all' ? show : 'open';
}

export function Outliers({ query }: ScreenProps) {
  const canSupervise = useCanSupervise();
  const show = parseShow(query);
  const [outliers, setOutliers] = useState<Outlier[] | null>(null);
  const [acknowledging, setAcknowledging] = useState<Outlier | null>(null);
  const readAll = async () => {
    const data = await gql<{ outliers: Outlier[] }>(
      `query Outliers($acknowledged: Boolean) { outliers(acknowledged: $acknowledged, first: 500) { ${OUTLIER_FIELDS} } }`,
      { acknowledged: SHOW[show] },
    );
    setOutliers(data.outliers);
  };
  const readSoon = useSoon(readAll, 700);
  const live = useLive(
    [
      {
        query: `subscription OutliersLive { outlierUpdates { taskId } }`,
        next: () => readSoon(),
        error: () => {},
      },
      {
        query: `subscription OutlierEvents { events(types: ["TaskFlaggedAsCostOutlier", "TaskOutlierAcknowledged"]) { position } }`,
        next: () => readSoon(),
      },
    ],
    readAll,
    [show],
  );
  const rows = outliers ?? [];
  return (
    <section class="outliers">
      <PageHead title="Cost outliers" />
      <div class="filters">
        <label class="field inline">
          <span class="label">Show</span>
          <select value={show} onChange={(event) => setQuery({ show: event.currentTarget.value === 'open' ? undefined : event.currentTarget.value })}>
            <option value="open">Not acknowledged</option>
            <option value="acknowledged">Acknowledged</option>
            <option value="all">All</option>
          </select>
        </label>
      </div>
      <Loaded loading={live.loading} error={live.error} hasData={outliers !== null}>
        {rows.length === 0 ? (
          <Empty>{show === 'open' ? 'No cost outlier waits for a look.' : 'No cost outlier here.'}</Empty>
        ) : (
          <div class="table-wrap">
            <table class="table" aria-label="Cost outliers">
              <thead>
                <tr>
                  <th scope="col">Task</th>
                  <th scope="col">State</th>
                  <th scope="col" class="num">Cost</th>
                  <th scope="col" class="num">Median</th>
                  <th scope="col" class="num">z-score</th>
                  <th scope="col">Group</th>
                  <th scope="col">Why</th>
                  <th scope="col">Flagged</th>
                  {canSupervise && <th scope="col">Actions</th>}
                </tr>
              </thead>
              <tbody>
                {rows.map((outlier) => (
                  <tr key={outlier.taskId} data-outlier={outlier.taskId}>
                    <th scope="row">
                      <a href={`/tasks/${outlier.taskId}`}>{outlier.task?.title ?? shortId(outlier.taskId)}</a>
                    </th>
                    <td data-outlier-state>
                      {outlier.acknowledged ? (
                        <>
                          <span class="tone-good">✓ Acknowledged</span>
                          <div class="muted">
                            by {outlier.acknowledgedBy ?? '—'}, <Time at={outlier.acknowledgedAt} />
                          </div>
                          {outlier.note && <div>“{outlier.note}”</div>}
                        </>
                      ) : (
                        <span class="tone-bad">⚑ Open</span>
                      )}
                    </td>
                    <td class="num">{formatMoney(outlier.cost, '')}</td>
                    <td class="num">{formatMoney(outlier.median, '')}</td>
                    <td class="num" title={`spread (MAD) ${outlier.mad.toFixed(3)}`}>
                      {outlier.zScore.toFixed(2)} <span class="muted">&gt; {outlier.threshold.toFixed(2)}</span>
                    </td>
                    <td>
                      <code>{outlier.group}</code>
                      <div class="muted">of {formatNumber(outlier.comparable)} comparable</div>
                    </td>
                    <td>{outlier.why}</td>
                    <td>
                      <Time at={outlier.flaggedAt} />
                    </td>
                    {canSupervise && (
                      <td>
                        {!outlier.acknowledged && (
                          <button type="button" class="compact" onClick={() => setAcknowledging(outlier)}>
                            Acknowledge
                          </button>
                        )}
                      </td>
                    )}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Loaded>
      {acknowledging && (
        <Acknowledge
          outlier={acknowledging}
          onDone={(done) => {
            setAcknowledging(null);
            if (done) readSoon();
          }}
        />
      )}
    </section>
  );
}

function Acknowledge({ outlier, onDone }: { outlier: Outlier; onDone: (done: boolean) => void }) {
  const [note, setNote] = useState('');
  const acknowledge = useMutation(async () => {
    await gql(`mutation Acknowledge($taskId: ID!, $note: String!) { acknowledgeOutlier(taskId: $taskId, note: $note) { id } }`, {
      taskId: outlier.taskId,
      note: note.trim(),
    });
    return true;
  });
  return (
    <Dialog title={`Acknowledge the cost of “${outlier.task?.title ?? shortId(outlier.taskId)}”`} onClose={() => onDone(false)}>
      <form
        class="form"
        onSubmit={async (event) => {
          event.preventDefault();
          if (await acknowledge.run()) onDone(true);
        }}
      >
        <p>{outlier.why}</p>
        <Field label="Note" hint="Why the cost is fine; kept with the acknowledgment.">
          <textarea required value={note} onInput={(event) => setNote(event.currentTarget.value)} />
        </Field>
        <ErrorNote error={acknowledge.error} context="Not acknowledged" />
        <div class="buttons">
          <button type="submit" class="primary" disabled={acknowledge.running || !note.trim()}>
            Acknowledge
          </button>
          <button type="button" onClick={() => onDone(false)}>
            Cancel
          </button>
        </div>
      </form>
    </Dialog>
  );
}
