/** Human and machine output of a replay: a table, one JSON line, and an SVG plot. */
import { alOf, CONTEXT_EDGES, type ReplayResult, type Tally } from './simulate.js';

const fixed = (value: number, digits = 3) => (Number.isFinite(value) ? value.toFixed(digits) : '-');

export interface ReplaySummary {
  al: number;
  alDrafted: number;
  /** AL over engine steps of at most tailBatch requests, where the gate speculates. */
  alTail: number;
  tailBatch: number;
  tailSteps: number;
  engineSteps: number;
  steps: number;
  emitted: number;
  draftedSteps: number;
  proposed: number;
  accepted: number;
  acceptanceRate: number;
  acceptedPerPos: number[];
  proposedPerPos: number[];
  acceptanceRatePerPos: number[];
  proposedPerStep: number;
  /** AL per rollout step, in order. */
  alPerStep: number[];
  /** AL per engine. */
  alPerEngine: number[];
  /** Request steps and AL by context length: [from, to) tokens (to null: open). */
  byContext: Array<{ from: number; to: number | null; steps: number; al: number; acceptanceRate: number }>;
  proposeUsP50: number;
  proposeUsP99: number;
}

export function summarize(result: ReplayResult): ReplaySummary {
  return {
    al: round(result.al, 4),
    alDrafted: round(result.alDrafted, 4),
    alTail: round(result.alTail, 4),
    tailBatch: result.tailBatch,
    tailSteps: result.tail.steps,
    engineSteps: result.engineSteps,
    steps: result.steps,
    emitted: result.emitted,
    draftedSteps: result.draftedSteps,
    proposed: result.proposed,
    accepted: result.accepted,
    acceptanceRate: round(result.acceptanceRate, 4),
    acceptedPerPos: result.acceptedPerPos,
    proposedPerPos: result.proposedPerPos,
    acceptanceRatePerPos: result.acceptedPerPos.map((a, j) => round(result.proposedPerPos[j] > 0 ? a / result.proposedPerPos[j] : 0, 4)),
    proposedPerStep: round(result.steps > 0 ? result.proposed / result.steps : 0, 4),
    alPerStep: result.perStep.map((t) => round(alOf(t), 4)),
    alPerEngine: result.perEngine.map((t) => round(alOf(t), 4)),
    byContext: result.byContext
      .map((t, i) => ({ from: CONTEXT_EDGES[i], to: CONTEXT_EDGES[i + 1] ?? null, steps: t.steps, al: round(alOf(t), 4), acceptanceRate: round(t.proposed > 0 ? t.accepted / t.proposed : 0, 4) }))
      .filter((bucket) => bucket.steps > 0),
    proposeUsP50: round(result.proposeUsP50, 3),
    proposeUsP99: round(result.proposeUsP99, 3),
  };
}

/** `value` rounded to `digits` decimals (for reports and benchmark JSON). */
export function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

const tokensLabel = (n: number) => (n >= 1024 ? `${n / 1024}k` : String(n));

export function formatTable(label: string, result: ReplayResult): string {
  const s = summarize(result);
  const lines = [
    `replay ${label}: ${result.rows} rows, K=${result.k}, siblings=${result.siblings}${result.engines > 1 ? `, ${result.engines} engines` : ''}`,
    `  AL (emitted / step)         ${fixed(s.al, 4)}`,
    `  ${`AL in the tail (B <= ${s.tailBatch})`.padEnd(28)}${fixed(s.alTail, 4)}  (${s.tailSteps} of ${s.steps} request steps)`,
    `  AL on drafted steps         ${fixed(s.alDrafted, 4)}`,
    `  steps / drafted             ${s.steps} / ${s.draftedSteps}  (${s.engineSteps} engine steps)`,
    `  emitted model tokens        ${s.emitted}`,
    `  draft tokens proposed       ${s.proposed}  (${fixed(s.proposedPerStep, 2)} per step)`,
    `  draft tokens accepted       ${s.accepted}  (rate ${fixed(s.acceptanceRate)})`,
    `  acceptance by position      ${s.acceptanceRatePerPos.map((r, j) => `${j + 1}:${fixed(r)}`).join('  ')}`,
    `  AL by context length        ${s.byContext.map((b) => `${tokensLabel(b.from)}+:${fixed(b.al)}`).join('  ')}`,
  ];
  if (s.alPerStep.length > 1) lines.push(`  AL per rollout step         ${s.alPerStep.map((al) => fixed(al)).join('  ')}`);
  if (s.alPerEngine.length > 1) lines.push(`  AL per engine               ${s.alPerEngine.map((al) => fixed(al)).join('  ')}`);
  lines.push(`  propose latency us p50/p99  ${fixed(s.proposeUsP50, 2)} / ${fixed(s.proposeUsP99, 2)}`);
  return lines.join('\n');
}

const COLOURS = ['#e45756', '#4c78a8', '#54a24b', '#b279a2'];

/**
 * Two panels over context-length buckets, one line per drafter (the policy first, then its
 * baselines): AL, and the acceptance rate of proposed draft tokens. The request steps in each
 * bucket are printed under the axis, so a reader sees which points rest on little data.
 */
export function renderPlot(label: string, series: ReadonlyArray<{ name: string; result: ReplayResult }>): string {
  const width = 900;
  const height = 340;
  const pad = 56;
  const panel = (width - 3 * pad) / 2;
  const plotHeight = height - 2 * pad - 30;
  const main = series[0].result;
  const buckets = main.byContext.map((_, i) => i).filter((i) => series.some(({ result }) => result.byContext[i].steps > 0));
  const xAt = (slot: number, x0: number) => x0 + (buckets.length > 1 ? (slot / (buckets.length - 1)) * panel : panel / 2);
  const maxAl = Math.max(2, ...series.flatMap(({ result }) => buckets.map((i) => alOf(result.byContext[i]))));
  const panelSvg = (x0: number, title: string, value: (t: Tally) => number | null, top: number, bottom: number): string => {
    const y = (v: number) => pad + plotHeight - ((v - bottom) / Math.max(1e-9, top - bottom)) * plotHeight;
    const lines = series
      .map(({ result }, s) => {
        const points = buckets
          .map((i, slot) => [slot, value(result.byContext[i])] as const)
          .filter(([, v]) => v !== null)
          .map(([slot, v]) => `${xAt(slot, x0).toFixed(1)},${y(v!).toFixed(1)}`)
          .join(' ');
        return `<polyline fill="none" stroke="${COLOURS[s % COLOURS.length]}" stroke-width="${s === 0 ? 2.5 : 1.5}" points="${points}"/>`;
      })
      .join('\n');
    const ticks = buckets
      .map((i, slot) => {
        const x = xAt(slot, x0).toFixed(1);
        return `<text x="${x}" y="${pad + plotHeight + 14}" text-anchor="middle">${tokensLabel(CONTEXT_EDGES[i])}</text><text x="${x}" y="${pad + plotHeight + 27}" text-anchor="middle" fill="#777">${main.byContext[i].steps}</text>`;
      })
      .join('');
    return `<text x="${x0 + panel / 2}" y="${pad - 10}" text-anchor="middle">${title}</text>
<line x1="${x0}" y1="${pad + plotHeight}" x2="${x0 + panel}" y2="${pad + plotHeight}" stroke="black"/>
<line x1="${x0}" y1="${pad}" x2="${x0}" y2="${pad + plotHeight}" stroke="black"/>
<text x="${x0 - 6}" y="${pad + 4}" text-anchor="end">${top.toFixed(1)}</text>
<text x="${x0 - 6}" y="${pad + plotHeight}" text-anchor="end">${bottom.toFixed(1)}</text>
${ticks}
${lines}`;
  };
  const legend = series
    .map(({ name, result }, s) => `<rect x="${pad + s * 210}" y="${height - 22}" width="14" height="4" fill="${COLOURS[s % COLOURS.length]}"/><text x="${pad + s * 210 + 20}" y="${height - 17}">${escapeXml(name)} (AL ${result.al.toFixed(3)})</text>`)
    .join('');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="${width / 2}" y="18" text-anchor="middle" font-size="13">${escapeXml(label)}: K=${main.k}, siblings=${main.siblings}; x: context length (tokens), grey: request steps per bucket</text>
${panelSvg(pad, 'AL (emitted tokens per step) by context length', (t) => (t.steps > 0 ? alOf(t) : null), maxAl, 1)}
${panelSvg(2 * pad + panel, 'acceptance rate of draft tokens by context length', (t) => (t.proposed > 0 ? t.accepted / t.proposed : null), 1, 0)}
${legend}
</svg>
`;
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);
}
