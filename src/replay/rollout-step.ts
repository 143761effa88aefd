/**
 * A rollout step as engines really run it, the one schedule every replay, the rollout simulator
 * and the acceptance figures use:
 *
 * - every trajectory of a step is queued at once (in file order, or shuffled by a seed), spread over
 *   the engines as verl's agent loop spreads them: least requests assigned so far, sticky per
 *   trajectory (its later turns go to the same engine);
 * - each engine admits first come first served up to `maxNumSeqs` running requests, and a finished
 *   request's slot is taken by the next queued one at the following step (continuous batching);
 * - with `turns`, each model segment between environment spans is its own request whose prompt is
 *   the whole conversation so far (verl's tool agent loop); it is queued when the previous turn ends;
 * - steps run in sequence: the next one starts when every request of the previous one is done, and
 *   each engine's backend keeps what it learnt (siblings' outputs, corpus, history).
 *
 * Engines step in lockstep rounds: each round, every engine with work takes one decode step.
 */
import { prng } from './synthetic.js';
import { finishResult, newResult, type ReplayResult, RowCursor, scoreStep, type StepBackend, type StepItem } from './simulate.js';
import type { TraceRow } from './traces.js';

export interface RolloutStepOptions {
  k: number;
  /** vLLM's max_num_seqs: requests running together on one engine. */
  maxNumSeqs: number;
  /** Each model segment between environment spans becomes its own request (multi-turn). */
  turns: boolean;
  /** Shuffles the trajectories of each step with this seed; file order when undefined. */
  seed?: number;
  /** Engine steps with at most this many requests count as the tail. */
  tailBatch: number;
  /** Rows whose outputs only enter the backends (earlier steps known as history): no drafts, not scored. */
  history?: readonly TraceRow[];
  onProgress?: (rowsDone: number, rowsTotal: number) => void;
  /** Called after every engine step (the rollout simulator's cost model and gates). */
  onEngineStep?: (step: EngineStep) => void;
  /** Awaited after every round of engine steps (engines sharing text exchange it here). */
  afterRound?: () => Promise<void> | void;
  /** Between rollout steps: every engine's sidecar restarts (new, empty backends, one per engine). */
  restart?: () => Promise<StepBackend[]>;
}

export interface EngineStep {
  engine: number;
  /** Requests in the step. */
  batch: number;
  proposed: number;
  accepted: number;
  emitted: number;
  /** Tokens the step's requests held when it ran (prompt and output so far). */
  contextTokens: number;
}

export const DEFAULT_MAX_NUM_SEQS = 128;
export const DEFAULT_TAIL_BATCH = 32;

/** One request of a trajectory: the whole row, or one turn of it. */
interface Request {
  cursor: RowCursor;
  trajectory: Trajectory;
}

interface Trajectory {
  row: TraceRow;
  engine: number;
  /** The turns still to run (first one first); one entry, the row itself, without turns. */
  turns: TraceRow[];
}

/**
 * The turns of a multi-turn row: each run of model tokens is one request; its prompt is the row's
 * prompt plus every output token before it (earlier turns and tool responses). Tokens the
 * environment appends after the last model run belong to no request.
 */
export function turnsOf(row: TraceRow): TraceRow[] {
  const turns: TraceRow[] = [];
  let at = 0;
  const spans = [...row.env, [row.output.length, row.output.length] as [number, number]];
  for (const [start, end] of spans) {
    if (start > at) {
      turns.push({ id: `${row.id}#${turns.length}`, group: row.group, prompt: [...row.prompt, ...row.output.slice(0, at)], output: row.output.slice(at, start), env: [] });
    }
    at = end;
  }
  return turns;
}

/** Every row of every step through the engines' backends (one backend per engine), scored. */
export async function replayRolloutSteps(steps: readonly (readonly TraceRow[])[], initialBackends: readonly StepBackend[], options: RolloutStepOptions): Promise<ReplayResult> {
  let backends = initialBackends;
  const { k } = options;
  const engines = backends.length;
  const result = newResult(steps.reduce((n, rows) => n + rows.length, 0), k, 'live', engines, options.tailBatch);
  // verl's balancer: the engine with the fewest requests assigned so far, for the whole run.
  const assigned = new Array<number>(engines).fill(0);
  const leastAssigned = (): number => {
    let best = 0;
    for (let e = 1; e < engines; e++) if (assigned[e] < assigned[best]) best = e;
    assigned[best]++;
    return best;
  };
  if (options.history !== undefined) await preloadHistory(options.history, backends, leastAssigned);
  let rowsDone = 0;
  for (const [index, rows] of steps.entries()) {
    if (index > 0 && options.restart !== undefined) {
      for (const backend of backends) await backend.close?.();
      backends = await options.restart();
    }
    const order = rows.slice();
    if (options.seed !== undefined) shuffle(order, prng(options.seed));
    const queues: Request[][] = backends.map(() => []);
    const heads = new Array<number>(engines).fill(0);
    const running: Request[][] = backends.map(() => []);
    const finished: string[][] = backends.map(() => []);
    for (const row of order) {
      const trajectory: Trajectory = { row, engine: leastAssigned(), turns: options.turns ? turnsOf(row) : [row] };
      if (trajectory.turns.length === 0) {
        rowsDone++;
        continue;
      }
      queues[trajectory.engine].push({ cursor: new RowCursor(trajectory.turns.shift()!), trajectory });
    }
    const before = { steps: result.steps, emitted: result.emitted, proposed: result.proposed, accepted: result.accepted };
    /** A request that is done: released with the engine's next step; its trajectory's next turn queued. */
    const settle = (request: Request, e: number): void => {
      if (request.cursor.stepsTaken > 0) finished[e].push(request.cursor.row.id);
      const next = request.trajectory.turns.shift();
      if (next !== undefined) queues[e].push({ cursor: new RowCursor(next), trajectory: request.trajectory });
      else rowsDone++;
    };
    for (;;) {
      let busy = false;
      for (let e = 0; e < engines; e++) {
        const live = running[e];
        const queue = queues[e];
        while (live.length < options.maxNumSeqs && heads[e] < queue.length) {
          const request = queue[heads[e]++];
          request.cursor.skipEnvironment(); // an output may open with a tool response
          if (!request.cursor.done) live.push(request);
          else settle(request, e);
        }
        if (live.length === 0) {
          if (finished[e].length > 0) await backends[e].step([], finished[e].splice(0), k);
          continue;
        }
        busy = true;
        const items: StepItem[] = live.map(({ cursor }) => cursor.nextItem());
        const drafts = await backends[e].step(items, finished[e].splice(0), k);
        let contextTokens = 0;
        for (const request of live) contextTokens += request.cursor.held;
        const step: EngineStep = { engine: e, batch: live.length, proposed: 0, accepted: 0, emitted: 0, contextTokens };
        for (let i = 0; i < live.length; i++) {
          const scored = scoreStep(live[i].cursor, drafts[i], k, live.length, e, result);
          step.proposed += scored.proposed;
          step.accepted += scored.accepted;
          step.emitted += scored.emitted;
        }
        result.engineSteps++;
        options.onEngineStep?.(step);
        let kept = 0;
        for (const request of live) {
          request.cursor.skipEnvironment();
          if (!request.cursor.done) live[kept++] = request;
          else settle(request, e);
        }
        live.length = kept;
      }
      options.onProgress?.(rowsDone, result.rows);
      if (!busy) break;
      await options.afterRound?.();
    }
    result.perStep.push({ steps: result.steps - before.steps, emitted: result.emitted - before.emitted, proposed: result.proposed - before.proposed, accepted: result.accepted - before.accepted });
  }
  for (const backend of backends) await backend.close?.();
  return finishResult(result, backends);
}

/** Finished outputs of earlier steps enter the engines (as their trajectories were spread) without drafting. */
export async function preloadHistory(rows: readonly TraceRow[], backends: readonly StepBackend[], engineFor: () => number): Promise<void> {
  for (const row of rows) {
    const backend = backends[engineFor()];
    const id = `history:${row.id}`;
    await backend.step([{ id, start: 0, tokens: [...row.prompt, ...row.output], promptLength: row.prompt.length }], [], 0);
    await backend.step([], [id], 0);
  }
}

function shuffle<T>(items: T[], random: () => number): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
}
