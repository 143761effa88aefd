import { describe, expect, it } from 'vitest';
import { InProcessBackend } from '../src/replay/in-process.js';
import { RollingBatch } from '../src/replay/rolling-batch.js';
import { replayRolloutSteps, turnsOf } from '../src/replay/rollout-step.js';
import { replay, type StepBackend, type StepItem } from '../src/replay/simulate.js';
import { syntheticTraces } from '../src/replay/synthetic.js';
import { parseTraceJsonl, splitSteps, type TraceRow } from '../src/replay/traces.js';

/** A backend that proposes a fixed draft and records what it was sent. */
class ScriptedBackend implements StepBackend {
  readonly draftLatenciesUs: number[] = [];
  readonly sent: StepItem[][] = [];
  readonly released: string[] = [];
  constructor(private readonly draftFor: (item: StepItem, held: number[]) => number[]) {}
  private held = new Map<string, number[]>();
  /** The steps that carried requests (not the release-only calls at the end). */
  get steps(): StepItem[][] {
    return this.sent.filter((items) => items.length > 0);
  }
  step(items: StepItem[], finished: string[], k: number): Int32Array[] {
    this.sent.push(items.map((i) => ({ ...i, tokens: [...i.tokens] })));
    this.released.push(...finished);
    return items.map((item) => {
      const held = item.promptLength !== undefined ? [] : this.held.get(item.id)!;
      expect(held.length).toBe(item.start);
      held.push(...item.tokens);
      this.held.set(item.id, held);
      return Int32Array.from(this.draftFor(item, held).slice(0, k));
    });
  }
}

const row = (output: number[], env: Array<[number, number]> = []): TraceRow => ({ id: 'r', group: 'g', prompt: [1, 2], output, env });

describe('replay semantics', () => {
  it('with a perfect drafter emits K+1 tokens per step', async () => {
    const output = Array.from({ length: 12 }, (_, i) => 10 + i);
    const backend = new ScriptedBackend((_item, held) => output.slice(held.length - 2, held.length - 2 + 3));
    const result = await replay([row(output)], backend, { k: 3, siblings: 'none' });
    expect(result.steps).toBe(3);
    expect(result.emitted).toBe(12);
    expect(result.al).toBe(4);
    expect(result.acceptedPerPos).toEqual([3, 3, 3]);
  });

  it('with no drafts emits one token per step (AL 1)', async () => {
    const backend = new ScriptedBackend(() => []);
    const result = await replay([row([5, 6, 7, 8])], backend, { k: 3, siblings: 'none' });
    expect(result).toMatchObject({ steps: 4, emitted: 4, al: 1, draftedSteps: 0, alDrafted: 0 });
  });

  it('never accepts into an environment span and appends env tokens without a step', async () => {
    const output = [10, 11, 12, 13, 14, 15, 16, 17];
    const env: Array<[number, number]> = [[3, 6]];
    const backend = new ScriptedBackend((_item, held) => output.slice(held.length - 2, held.length - 2 + 3));
    const result = await replay([row(output, env)], backend, { k: 3, siblings: 'none' });
    // Step 1 at 0: run [0,3) allows 3 accepted, emits 3. Env [3,6) appended. Step 2 at 6: 2 left.
    expect(result.steps).toBe(2);
    expect(result.emitted).toBe(5);
    const second = backend.sent[1][0];
    expect(second.tokens).toEqual([10, 11, 12, 13, 14, 15]);
    expect(second.start).toBe(2);
  });

  it('sends the prompt on first sight and releases every row when it ends', async () => {
    const backend = new ScriptedBackend(() => []);
    const rows = [row([5, 6]), { ...row([7]), id: 'r2' }];
    await replay(rows, backend, { k: 2, siblings: 'live' });
    expect(backend.sent[0].map((i) => i.promptLength)).toEqual([2, 2]);
    expect(backend.released.sort()).toEqual(['r', 'r2']);
  });

  it('orders finished-mode siblings by increasing output length', async () => {
    const backend = new ScriptedBackend(() => []);
    const rows = [{ ...row([1, 1, 1]), id: 'long' }, { ...row([1]), id: 'short' }];
    await replay(rows, backend, { k: 2, siblings: 'finished' });
    expect(backend.sent[0][0].id).toBe('short');
  });

  it('gains from siblings on synthetic rollouts: live and finished beat none', async () => {
    const rows = syntheticTraces({ groups: 4, samplesPerGroup: 6 });
    const run = async (siblings: 'none' | 'finished' | 'live') =>
      (await replay(rows, new InProcessBackend({ drafter: 'sam', siblings: siblings !== 'none' }), { k: 3, siblings })).al;
    const none = await run('none');
    expect(await run('live')).toBeGreaterThan(none);
    expect(await run('finished')).toBeGreaterThan(none);
  });

  it('parses token-id JSONL and names the line and field of a bad row', () => {
    const good = parseTraceJsonl('{"id":"a","group":"g","prompt":[1],"output":[2,3],"env":[[1,2]]}\n', 'x.jsonl');
    expect(good[0].env).toEqual([[1, 2]]);
    expect(() => parseTraceJsonl('{"prompt":[1],"output":[2],"env":[[1,5]]}', 'x.jsonl')).toThrowError(/x\.jsonl:1.*env/);
    expect(() => parseTraceJsonl('{"prompt":"no","output":[]}', 'y.jsonl')).toThrowError(expect.objectContaining({ code: 'TRACE_INVALID', field: 'prompt' }));
  });
});

const named = (id: string, output: number[], extra: Partial<TraceRow> = {}): TraceRow => ({ ...row(output), id, ...extra });
const schedule = { k: 2, maxNumSeqs: 128, turns: false, tailBatch: 32 };

describe('the rollout step (the schedule of every replay)', () => {
  it('queues every row at once and admits first come first served up to max_num_seqs; a finished slot is refilled at the next step', async () => {
    const backend = new ScriptedBackend(() => []);
    const rows = [named('a', [1]), named('b', [1, 1, 1]), named('c', [1, 1])];
    await replayRolloutSteps([rows], [backend], { ...schedule, maxNumSeqs: 2 });
    const ids = backend.steps.map((items) => items.map((i) => i.id));
    expect(ids).toEqual([['a', 'b'], ['b', 'c'], ['b', 'c']]);
    // a's release rides with the step that admits c.
    expect(backend.released.slice(0, 1)).toEqual(['a']);
  });

  it('counts the tail: request steps taken in engine steps of at most tailBatch requests', async () => {
    const rows = [named('a', [1]), named('b', [1, 1, 1])];
    const result = await replayRolloutSteps([rows], [new ScriptedBackend(() => [])], { ...schedule, tailBatch: 1 });
    expect({ steps: result.steps, engineSteps: result.engineSteps, tail: result.tail.steps }).toEqual({ steps: 4, engineSteps: 3, tail: 2 });
  });

  it('spreads trajectories over engines as verl does (fewest assigned first), each engine its own backend', async () => {
    const backends = [new ScriptedBackend(() => []), new ScriptedBackend(() => [])];
    const rows = ['a', 'b', 'c'].map((id) => named(id, [1]));
    const result = await replayRolloutSteps([rows], backends, schedule);
    expect(backends.map((b) => b.sent[0].map((i) => i.id))).toEqual([['a', 'c'], ['b']]);
    expect(result.perEngine.map((t) => t.steps)).toEqual([2, 1]);
  });

  it('with turns, each model segment is a request whose prompt is the conversation so far, queued when the previous turn ends', () => {
    const multi: TraceRow = { id: 't', group: 'g', prompt: [1, 2], output: [10, 11, 90, 91, 12, 13], env: [[2, 4]] };
    expect(turnsOf(multi)).toEqual([
      { id: 't#0', group: 'g', prompt: [1, 2], output: [10, 11], env: [] },
      { id: 't#1', group: 'g', prompt: [1, 2, 10, 11, 90, 91], output: [12, 13], env: [] },
    ]);
    // A row that ends with a tool response has no request after it; one that starts with one folds it into the prompt.
    expect(turnsOf({ ...multi, output: [90, 10], env: [[0, 1]] })).toEqual([{ id: 't#0', group: 'g', prompt: [1, 2, 90], output: [10], env: [] }]);
  });

  it('runs turns through the schedule: the next turn starts with its whole prompt after the previous one is released', async () => {
    const backend = new ScriptedBackend(() => []);
    const multi: TraceRow = { id: 't', group: 'g', prompt: [1, 2], output: [10, 90, 12], env: [[1, 2]] };
    const result = await replayRolloutSteps([[multi]], [backend], { ...schedule, turns: true });
    expect(backend.steps.map((items) => items.map((i) => [i.id, i.tokens, i.promptLength]))).toEqual([[['t#0', [1, 2], 2]], [['t#1', [1, 2, 10, 90], 4]]]);
    expect(backend.released[0]).toBe('t#0');
    expect({ steps: result.steps, emitted: result.emitted }).toEqual({ steps: 2, emitted: 2 });
  });

  it('runs steps in sequence (the next starts when the previous is done) and reports each', async () => {
    const backend = new ScriptedBackend(() => []);
    const steps = splitSteps([named('a', [1, 1], { step: '1' }), named('b', [1], { step: '2' }), named('c', [1], { step: '1' })]);
    expect(steps.map((rows) => rows.map((r) => r.id))).toEqual([['a', 'c'], ['b']]);
    const result = await replayRolloutSteps(steps, [backend], schedule);
    expect(backend.steps.map((items) => items.map((i) => i.id))).toEqual([['a', 'c'], ['a'], ['b']]);
    expect(result.perStep.map((t) => t.steps)).toEqual([3, 1]);
  });

  it('orders a step by a seed, the same order for the same seed', async () => {
    const rows = Array.from({ length: 20 }, (_, i) => named(`r${i}`, [1]));
    const firstIds = async (seed?: number) => {
      const backend = new ScriptedBackend(() => []);
      await replayRolloutSteps([rows], [backend], { ...schedule, seed });
      return backend.sent[0].map((i) => i.id);
    };
    expect(await firstIds()).toEqual(rows.map((r) => r.id));
    expect(await firstIds(7)).toEqual(await firstIds(7));
    expect(await firstIds(7)).not.toEqual(await firstIds(8));
  });
});

describe('rolling batch (warm-up and wire-bench workload)', () => {
  it('sends each prompt, then 1-4 output tokens a step, and replaces a finished request with the next row', () => {
    const rows: TraceRow[] = [
      { id: 'x', group: 'g', prompt: [1, 2], output: [3, 4, 5], env: [] },
      { id: 'y', group: 'g', prompt: [1, 2], output: [6], env: [] },
    ];
    const work = new RollingBatch(rows, 1, 'r');
    const first = work.next('e', 1, 3);
    expect({ ids: first.reqIds, tokens: Array.from(first.tokens), prompt: first.promptLengths[0] }).toEqual({ ids: ['r0'], tokens: [1, 2], prompt: 2 });
    const sent: number[] = [];
    let step = 2;
    let batch = work.next('e', step, 3);
    while (batch.reqIds[0] === 'r0') {
      expect(batch.starts[0]).toBe(2 + sent.length);
      expect(batch.tokens.length).toBeGreaterThanOrEqual(1);
      expect(batch.tokens.length).toBeLessThanOrEqual(4);
      sent.push(...Array.from(batch.tokens));
      batch = work.next('e', ++step, 3);
    }
    expect(sent).toEqual([3, 4, 5]);
    // The next row starts with its prompt, and the finished id rides with that step.
    expect({ ids: batch.reqIds, finished: batch.finished, start: batch.starts[0], tokens: Array.from(batch.tokens) }).toEqual({ ids: ['r1'], finished: ['r0'], start: 0, tokens: [1, 2] });
  });
});
