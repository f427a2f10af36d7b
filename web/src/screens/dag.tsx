// A workflow's stages drawn as the DAG they form: each stage in the column of its longest path
// from a stage without dependencies, an arrow from each dependency. Plain SVG; the state of a
// stage is in its words (and its outline's dash), never in colour alone.

export interface DagNode {
  key: string;
  label: string;
  sub: string;
  dependsOn: string[];
  tone?: 'good' | 'bad' | 'info' | 'muted';
}

const WIDTH = 170;
const HEIGHT = 46;
const GAP_X = 56;
const GAP_Y = 18;

/// Each node's column: 0 for a stage without dependencies, else one past its deepest dependency.
export function depths(nodes: DagNode[]): Map<string, number> {
  const byKey = new Map(nodes.map((n) => [n.key, n]));
  const depth = new Map<string, number>();
  const visit = (key: string, trail: Set<string>): number => {
    const known = depth.get(key);
    if (known !== undefined) return known;
    const node = byKey.get(key);
    if (!node || trail.has(key)) return 0;
    trail.add(key);
    const d = node.dependsOn.reduce((most, dep) => Math.max(most, byKey.has(dep) ? visit(dep, trail) + 1 : 0), 0);
    trail.delete(key);
    depth.set(key, d);
    return d;
  };
  nodes.forEach((n) => visit(n.key, new Set()));
  return depth;
}

function clip(text: string, max = 22): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

let drawn = 0;

export function Dag({ nodes, label }: { nodes: DagNode[]; label: string }) {
  const depth = depths(nodes);
  const columns: DagNode[][] = [];
  nodes.forEach((n) => (columns[depth.get(n.key) ?? 0] ??= []).push(n));
  const place = new Map<string, { x: number; y: number }>();
  columns.forEach((column, c) =>
    column.forEach((n, r) => place.set(n.key, { x: c * (WIDTH + GAP_X), y: r * (HEIGHT + GAP_Y) })),
  );
  const tallest = Math.max(1, ...columns.map((c) => c?.length ?? 0));
  const width = Math.max(1, columns.length) * (WIDTH + GAP_X) - GAP_X + 4;
  const height = tallest * (HEIGHT + GAP_Y) - GAP_Y + 4;
  const marker = `dag-arrow-${(drawn = (drawn + 1) % 1_000_000)}`;
  return (
    <svg class="dag" viewBox={`-2 -2 ${width} ${height}`} width={width} height={height} role="img" aria-label={label}>
      <defs>
        <marker id={marker} viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto">
          <path class="dag-arrow" d="M0,0 L10,5 L0,10 z" />
        </marker>
      </defs>
      {nodes.flatMap((n) =>
        n.dependsOn
          .filter((dep) => place.has(dep))
          .map((dep) => {
            const from = place.get(dep)!;
            const to = place.get(n.key)!;
            const x1 = from.x + WIDTH;
            const y1 = from.y + HEIGHT / 2;
            const x2 = to.x;
            const y2 = to.y + HEIGHT / 2;
            const bend = (x2 - x1) / 2;
            return (
              <path
                key={`${dep}->${n.key}`}
                class="dag-edge"
                d={`M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`}
                marker-end={`url(#${marker})`}
              />
            );
          }),
      )}
      {nodes.map((n) => {
        const at = place.get(n.key)!;
        return (
          <g key={n.key} class={`dag-node${n.tone ? ` tone-${n.tone}` : ''}`} transform={`translate(${at.x},${at.y})`} data-dag-node={n.key}>
            <title>{`${n.label} (${n.key}): ${n.sub}`}</title>
            <rect width={WIDTH} height={HEIGHT} />
            <text x="10" y="19">
              {clip(n.label)}
            </text>
            <text class="dag-sub" x="10" y="36">
              {clip(n.sub, 26)}
            </text>
          </g>
        );
      })}
    </svg>
  );
}
