import { describe, expect, it } from 'vitest';
import { InProcessBackend } from '../src/replay/in-process.js';
import { RollingBatch } from '../src/replay/rolling-batch.js';
import { replay, type StepBackend, type StepItem } from '../src/replay/simulate.js';
import { syntheticTraces } from '../src/replay/synthetic.js';
import { parseTraceJsonl, type TraceRow } from '../src/replay/traces.js';

/** A backend that proposes a fixed draft and records what it was sent. */
class ScriptedBackend implements StepBackend {
  readonly draftLatenciesUs: number[] = [];
  readonly sent: StepItem[][] = [];
  readonly released: string[] = [];
  constructor(private readonly draftFor: (item: StepItem, held: number[]) => number[]) {}
  private held = new Map<string, number[]>();
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
