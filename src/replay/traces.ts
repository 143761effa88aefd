/** Trace rows: one request's prompt and output token ids, with environment-inserted spans. */
import { readFileSync } from 'node:fs';
import { sidecarError } from '../core/errors.js';

export interface TraceRow {
  id: string;
  /** Only used by the replay to order rows; the engine finds siblings from the prompt ids. */
  group: string;
  prompt: number[];
  output: number[];
  /** Half-open [start, end) spans of `output` that the model did not generate. */
  env: Array<[number, number]>;
  /** The rollout step the row belongs to, when a file holds several (rows of a step are contiguous or not). */
  step?: string;
}

function isTokenArray(value: unknown): value is number[] {
  return Array.isArray(value) && value.every((t) => Number.isInteger(t) && t >= 0);
}

/** Parses one token-id JSONL row, naming the line and field of any problem. */
export function parseTraceRow(value: unknown, where: string): TraceRow {
  if (typeof value !== 'object' || value === null) throw sidecarError('TRACE_INVALID', `${where}: not a JSON object`, 'row');
  const row = value as Record<string, unknown>;
  if (!isTokenArray(row.prompt)) throw sidecarError('TRACE_INVALID', `${where}: prompt must be an array of token ids`, 'prompt');
  if (!isTokenArray(row.output)) throw sidecarError('TRACE_INVALID', `${where}: output must be an array of token ids`, 'output');
  const output = row.output;
  const env: Array<[number, number]> = [];
  if (row.env !== undefined) {
    if (!Array.isArray(row.env)) throw sidecarError('TRACE_INVALID', `${where}: env must be an array of [start, end) spans`, 'env');
    let previousEnd = 0;
    for (const span of row.env) {
      if (!Array.isArray(span) || span.length !== 2 || !Number.isInteger(span[0]) || !Number.isInteger(span[1])) {
        throw sidecarError('TRACE_INVALID', `${where}: env span ${JSON.stringify(span)} is not [start, end)`, 'env');
      }
      const [start, end] = span as [number, number];
      if (start < previousEnd || end < start || end > output.length) {
        throw sidecarError('TRACE_INVALID', `${where}: env span [${start}, ${end}) out of order or beyond the output`, 'env');
      }
      env.push([start, end]);
      previousEnd = end;
    }
  }
  const id = typeof row.id === 'string' ? row.id : where;
  const group = typeof row.group === 'string' ? row.group : id;
  if (row.step !== undefined && typeof row.step !== 'string' && !(Number.isInteger(row.step) && (row.step as number) >= 0)) {
    throw sidecarError('TRACE_INVALID', `${where}: step must be a non-negative integer or a string`, 'step');
  }
  const parsed: TraceRow = { id, group, prompt: row.prompt, output, env };
  if (row.step !== undefined) parsed.step = String(row.step);
  return parsed;
}

export function parseTraceJsonl(text: string, source: string): TraceRow[] {
  const rows: TraceRow[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (error) {
      throw sidecarError('TRACE_INVALID', `${source}:${i + 1}: ${(error as Error).message}`, 'line');
    }
    rows.push(parseTraceRow(value, `${source}:${i + 1}`));
  }
  return rows;
}

export function loadTraceFile(path: string): TraceRow[] {
  return parseTraceJsonl(readTraceText(path), path);
}

/** A trace file's text; a file that cannot be read is a coded error naming it, not a stack trace. */
export function readTraceText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw sidecarError('TRACE_INVALID', `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, 'file');
  }
}

/**
 * Rows split into rollout steps, in order: by their `step` field (steps in order of first
 * appearance; rows without one form a step of their own at the start).
 */
export function splitSteps(rows: readonly TraceRow[]): TraceRow[][] {
  const steps = new Map<string | undefined, TraceRow[]>();
  for (const row of rows) {
    const list = steps.get(row.step);
    if (list) list.push(row);
    else steps.set(row.step, [row]);
  }
  const unnamed = steps.get(undefined);
  steps.delete(undefined);
  return unnamed === undefined ? [...steps.values()] : [unnamed, ...steps.values()];
}
