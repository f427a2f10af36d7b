// Small SVG line charts for the analytics: a series per line, gaps where a bucket has no figure,
// a labelled scale, and a legend whose lines differ in dash as well as colour. The figures are
// in a table beside each chart, for reading exactly and for screen readers.

import { formatNumber } from '../ui/format';

export interface Series {
  name: string;
  values: (number | null)[];
}

const W = 420;
const H = 180;
const LEFT = 56;
const BOTTOM = 22;
const TOP = 8;

/// A round upper bound for the scale: 1, 2 or 5 times a power of ten.
export function niceMax(value: number): number {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return ([1, 2, 5, 10].find((m) => m * power >= value) ?? 10) * power;
}

function path(values: (number | null)[], x: (i: number) => number, y: (v: number) => number): string {
  let d = '';
  let open = false;
  values.forEach((v, i) => {
    if (v === null || !Number.isFinite(v)) {
      open = false;
      return;
    }
    d += `${open ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)} `;
    open = true;
  });
  return d.trim();
}

export function LineChart({
  label,
  labels,
  series,
  format = formatNumber,
}: {
  label: string;
  labels: string[];
  series: Series[];
  format?: (value: number) => string;
}) {
  const measured = series.some((s) => s.values.some((v) => v !== null && v !== 0));
  if (!measured) return <p class="empty">Nothing was measured in this window.</p>;
  const top = niceMax(Math.max(0, ...series.flatMap((s) => s.values.filter((v): v is number => v !== null))));
  const n = Math.max(1, labels.length - 1);
  const x = (i: number) => LEFT + ((W - LEFT - 8) * i) / n;
  const y = (v: number) => TOP + (H - TOP - BOTTOM) * (1 - v / top);
  const ticks = [0, top / 2, top];
  const every = Math.max(1, Math.ceil(labels.length / 6));
  return (
    <figure class="chart-figure">
      <svg class="chart" viewBox={`0 0 ${W} ${H}`} role="img" aria-label={label}>
        {ticks.map((t) => (
          <g key={t}>
            <line class="grid-line" x1={LEFT} x2={W - 8} y1={y(t)} y2={y(t)} />
            <text x={LEFT - 6} y={y(t) + 4} text-anchor="end">
              {format(t)}
            </text>
          </g>
        ))}
        <line class="axis" x1={LEFT} x2={W - 8} y1={y(0)} y2={y(0)} />
        {labels.map((l, i) =>
          i % every === 0 ? (
            <text key={i} x={x(i)} y={H - 6} text-anchor="middle">
              {l}
            </text>
          ) : null,
        )}
        {series.map((s, i) => (
          <path key={s.name} class={`series series-${i % 7} dashed-${i % 4}`} fill="none" d={path(s.values, x, y)} />
        ))}
        {series.map((s, i) =>
          s.values.map((v, j) =>
            v !== null && (labels.length < 40 || s.values.filter((w) => w !== null).length === 1) ? (
              <circle key={`${i}-${j}`} class={`series-${i % 7}`} cx={x(j)} cy={y(v)} r="2.5" />
            ) : null,
          ),
        )}
      </svg>
      <figcaption class="legend">
        {series.map((s, i) => (
          <span key={s.name}>
            <svg width="26" height="10" aria-hidden="true">
              <line class={`series series-${i % 7} dashed-${i % 4}`} x1="0" x2="26" y1="5" y2="5" />
            </svg>{' '}
            {s.name}
          </span>
        ))}
      </figcaption>
    </figure>
  );
}

/// The chart's figures as a table, folded away.
export function ChartTable({
  caption,
  labels,
  series,
  format = formatNumber,
}: {
  caption: string;
  labels: string[];
  series: Series[];
  format?: (value: number) => string;
}) {
  return (
    <details>
      <summary>{caption}: the figures</summary>
      <div class="table-wrap">
        <table class="table">
          <thead>
            <tr>
              <th scope="col">Bucket</th>
              {series.map((s) => (
                <th key={s.name} scope="col" class="num">
                  {s.name}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {labels.map((l, i) => (
              <tr key={i}>
                <th scope="row">{l}</th>
                {series.map((s) => (
                  <td key={s.name} class="num">
                    {s.values[i] === null ? '—' : format(s.values[i]!)}
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </details>
  );
}
