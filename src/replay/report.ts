/** Human and machine output of a replay: a table, one JSON line, and an SVG plot. */
import type { ReplayResult } from './simulate.js';

const fixed = (value: number, digits = 3) => (Number.isFinite(value) ? value.toFixed(digits) : '-');

export interface ReplaySummary {
  al: number;
  alDrafted: number;
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
  proposeUsP50: number;
  proposeUsP99: number;
}

export function summarize(result: ReplayResult): ReplaySummary {
  return {
    al: round(result.al, 4),
    alDrafted: round(result.alDrafted, 4),
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
    proposeUsP50: round(result.proposeUsP50, 3),
    proposeUsP99: round(result.proposeUsP99, 3),
  };
}

/** `value` rounded to `digits` decimals (for reports and benchmark JSON). */
export function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

export function formatTable(label: string, result: ReplayResult): string {
  const s = summarize(result);
  const lines = [
    `replay ${label}: ${result.rows} rows, K=${result.k}, siblings=${result.siblings}`,
    `  AL (emitted / step)         ${fixed(s.al, 4)}`,
    `  AL on drafted steps         ${fixed(s.alDrafted, 4)}`,
    `  steps / drafted             ${s.steps} / ${s.draftedSteps}`,
    `  emitted model tokens        ${s.emitted}`,
    `  draft tokens proposed       ${s.proposed}  (${fixed(s.proposedPerStep, 2)} per step)`,
    `  draft tokens accepted       ${s.accepted}  (rate ${fixed(s.acceptanceRate)})`,
    `  acceptance by position      ${s.acceptanceRatePerPos.map((r, j) => `${j + 1}:${fixed(r)}`).join('  ')}`,
    `  propose latency us p50/p99  ${fixed(s.proposeUsP50, 2)} / ${fixed(s.proposeUsP99, 2)}`,
  ];
  return lines.join('\n');
}

/** Two panels: AL by position in the output, and acceptance rate by draft position. */
export function renderPlot(label: string, result: ReplayResult): string {
  const width = 820;
  const height = 300;
  const pad = 48;
  const panel = (width - 3 * pad) / 2;
  const plotHeight = height - 2 * pad;
  const positions = result.byOutputPosition;
  const al = positions.steps.map((steps, i) => (steps > 0 ? positions.emitted[i] / steps : 0));
  const maxAl = Math.max(result.k + 1, ...al);
  const x0 = pad;
  const points = al
    .map((value, i) => {
      const x = x0 + (al.length > 1 ? (i / (al.length - 1)) * panel : panel / 2);
      const y = pad + plotHeight - ((value - 1) / Math.max(1e-9, maxAl - 1)) * plotHeight;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(' ');
  const rates = result.acceptedPerPos.map((a, j) => (result.proposedPerPos[j] > 0 ? a / result.proposedPerPos[j] : 0));
  const x1 = 2 * pad + panel;
  const barWidth = panel / Math.max(1, rates.length) - 8;
  const bars = rates
    .map((rate, j) => {
      const h = rate * plotHeight;
      const x = x1 + j * (barWidth + 8) + 4;
      return `<rect x="${x.toFixed(1)}" y="${(pad + plotHeight - h).toFixed(1)}" width="${barWidth.toFixed(1)}" height="${h.toFixed(1)}" fill="#4c78a8"/><text x="${(x + barWidth / 2).toFixed(1)}" y="${(pad + plotHeight + 14).toFixed(1)}" text-anchor="middle">${j + 1}</text><text x="${(x + barWidth / 2).toFixed(1)}" y="${(pad + plotHeight - h - 4).toFixed(1)}" text-anchor="middle">${rate.toFixed(2)}</text>`;
    })
    .join('');
  const last = (al.length * result.positionBucket).toLocaleString('en-US');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="${width / 2}" y="18" text-anchor="middle" font-size="13">${escapeXml(label)}: AL ${result.al.toFixed(3)} (K=${result.k}, siblings=${result.siblings})</text>
<text x="${x0 + panel / 2}" y="${pad - 8}" text-anchor="middle">AL by position in the output (buckets of ${result.positionBucket} tokens)</text>
<line x1="${x0}" y1="${pad + plotHeight}" x2="${x0 + panel}" y2="${pad + plotHeight}" stroke="black"/>
<line x1="${x0}" y1="${pad}" x2="${x0}" y2="${pad + plotHeight}" stroke="black"/>
<text x="${x0 - 6}" y="${pad + 4}" text-anchor="end">${maxAl.toFixed(1)}</text>
<text x="${x0 - 6}" y="${pad + plotHeight}" text-anchor="end">1.0</text>
<text x="${x0}" y="${pad + plotHeight + 14}">0</text>
<text x="${x0 + panel}" y="${pad + plotHeight + 14}" text-anchor="end">${last}</text>
<polyline fill="none" stroke="#e45756" stroke-width="1.5" points="${points}"/>
<text x="${x1 + panel / 2}" y="${pad - 8}" text-anchor="middle">acceptance rate by draft position</text>
<line x1="${x1}" y1="${pad + plotHeight}" x2="${x1 + panel}" y2="${pad + plotHeight}" stroke="black"/>
${bars}
</svg>
`;
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);
}
