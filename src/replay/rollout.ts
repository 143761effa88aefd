/**
 * A whole rollout step under continuous batching, to compare gate policies: every row is queued at
 * once, at most `maxNumSeqs` run together, finished rows are replaced from the queue, and each
 * engine step goes through the real Step service (ingest, score, gate, draft). Time comes from a
 * step-cost model: a plain decode step of B requests costs baseMs + perSeqMs * B, and verifying
 * drafts multiplies it by up to verifyCost(B) (in proportion to the draft slots actually used).
 * The model's numbers are assumptions to be replaced by measurements on the target hardware; the
 * comparison shows where each gate policy wins under them.
 */
import type { EngineOptions } from '../core/engine.js';
import { type GateConfig, UNGATED, verifyCostAt } from '../core/gate.js';
import { StepService } from '../core/step-service.js';
import { batchOf, draftsOf } from './batch.js';
import { advance, RowCursor, type StepItem } from './simulate.js';
import type { TraceRow } from './traces.js';

export interface CostModel {
  baseMs: number;
  perSeqMs: number;
  /** Step cost with K drafts per request relative to without, by batch size. */
  verifyCost: ReadonlyArray<readonly [number, number]>;
}

export type GatePolicy = { name: string; speculate: false } | { name: string; speculate: true; gate: Readonly<GateConfig> };

export interface RolloutResult {
  policy: string;
  engineSteps: number;
  speculativeSteps: number;
  emitted: number;
  proposed: number;
  accepted: number;
  timeMs: number;
  /** Share of the time spent in steps with at most `tailBatch` requests. */
  tailTimeShare: number;
  /** Mean tokens per request per step on speculative steps. */
  alSpeculative: number;
}

export interface RolloutOptions {
  k: number;
  maxNumSeqs: number;
  cost: CostModel;
  tailBatch?: number;
  /** Drafting options of the Step service (default: the sidecar's). */
  engine?: Partial<EngineOptions>;
}

export function simulateRollout(rows: TraceRow[], policy: GatePolicy, options: RolloutOptions): RolloutResult {
  const { k, maxNumSeqs, cost } = options;
  const tailBatch = options.tailBatch ?? 32;
  const service = new StepService(
    { maxK: Math.max(k, 1), requestTtlMs: Number.POSITIVE_INFINITY, maxTokens: Number.MAX_SAFE_INTEGER, stepCacheSize: 1 },
    policy.speculate ? policy.gate : UNGATED,
    options.engine,
  );
  const queue = rows.map((row) => new RowCursor(row));
  let next = 0;
  let running: RowCursor[] = [];
  const result: RolloutResult = { policy: policy.name, engineSteps: 0, speculativeSteps: 0, emitted: 0, proposed: 0, accepted: 0, timeMs: 0, tailTimeShare: 0, alSpeculative: 0 };
  let tailMs = 0;
  let emittedOnSpeculative = 0;
  let requestStepsOnSpeculative = 0;
  let finished: string[] = [];
  let stepId = 0n;
  while (running.length > 0 || next < queue.length) {
    while (running.length < maxNumSeqs && next < queue.length) running.push(queue[next++]);
    for (const cursor of running) cursor.skipEnvironment();
    for (const cursor of running) if (cursor.done) finished.push(cursor.row.id);
    running = running.filter((cursor) => !cursor.done);
    if (running.length === 0) continue;
    const items: StepItem[] = running.map((cursor) => {
      const item: StepItem = { id: cursor.row.id, start: cursor.held, tokens: cursor.pending, promptLength: cursor.stepsTaken === 0 ? cursor.row.prompt.length : undefined };
      cursor.held += cursor.pending.length;
      cursor.pending = [];
      return item;
    });
    const outcome = service.step(batchOf('rollout', ++stepId, items, finished, policy.speculate ? k : 0), 0);
    finished = [];
    const drafts = draftsOf(outcome);
    let proposedNow = 0;
    let emittedNow = 0;
    running.forEach((cursor, i) => {
      const step = advance(cursor, outcome.speculate ? drafts[i] : [], k);
      proposedNow += step.proposed;
      emittedNow += step.emitted;
      result.accepted += step.accepted;
    });
    const batch = running.length;
    const plain = cost.baseMs + cost.perSeqMs * batch;
    const used = k > 0 ? proposedNow / (batch * k) : 0;
    const stepMs = outcome.speculate ? plain * (1 + (verifyCostAt(cost.verifyCost, batch) - 1) * used) : plain;
    result.engineSteps++;
    result.timeMs += stepMs;
    result.emitted += emittedNow;
    result.proposed += proposedNow;
    if (batch <= tailBatch) tailMs += stepMs;
    if (outcome.speculate) {
      result.speculativeSteps++;
      emittedOnSpeculative += emittedNow;
      requestStepsOnSpeculative += batch;
    }
  }
  result.tailTimeShare = result.timeMs > 0 ? tailMs / result.timeMs : 0;
  result.alSpeculative = requestStepsOnSpeculative > 0 ? emittedOnSpeculative / requestStepsOnSpeculative : 0;
  return result;
}
