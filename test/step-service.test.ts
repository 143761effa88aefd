import { describe, expect, it } from 'vitest';
import { SidecarError } from '../src/core/errors.js';
import { BatchGate, GateReason, type GateConfig, verifyCostAt } from '../src/core/gate.js';
import type { SharedTextSource, TextDelta } from '../src/core/shared-text.js';
import { ItemStatus, MemoryCost, type StepBatch, StepService } from '../src/core/step-service.js';
import { draftLists, PROMPT, recordingGrowthMemory, reserveStepIds, stepBatch, type TestItem } from './helpers.js';

const gate: GateConfig = { mode: 'threshold', threshold: 32, verifyCost: [[1, 1.05], [128, 2.3]], hysteresis: 0.05, smoothing: 0.01, minObservations: 200 };
const limits = { maxK: 8, requestTtlMs: 60_000, maxTokens: 1_000_000, stepCacheSize: 4 };
const prompt = PROMPT;
const batch = (items: TestItem[], extra: Partial<StepBatch> = {}) => stepBatch(items, { engineId: 'engine-a', ...extra });
const draftsOf = draftLists;

const newService = (overrides: Partial<GateConfig> = {}, limitOverrides = {}) => new StepService({ ...limits, ...limitOverrides }, { ...gate, ...overrides });

describe('step service', () => {
  it('opens a request from its full context, appends deltas, and drafts what followed the longest match', () => {
    const service = newService();
    const first = service.step(batch([{ id: 'r', tokens: [...prompt, 1, 2, 3, 4, 1, 2], prompt: 4 }]), 0);
    expect(first.statuses[0]).toBe(ItemStatus.OK);
    expect(draftsOf(first)).toEqual([[3, 4, 1]]);
    const second = service.step(batch([{ id: 'r', start: 10, tokens: [3] }]), 1);
    expect(draftsOf(second)).toEqual([[4, 1, 2]]);
    expect(service.draftEngine.lengthOf('engine-a\u0000r')).toBe(11);
  });

  it('lets siblings (same prompt) draft from each other within one step, whatever their batch order', () => {
    const service = newService();
    const outcome = service.step(
      batch([
        { id: 'b', tokens: [...prompt, 7, 8], prompt: 4 },
        { id: 'a', tokens: [...prompt, 7, 8, 9, 10, 11], prompt: 4 },
      ]),
      0,
    );
    expect(draftsOf(outcome)[0]).toEqual([9, 10, 11]);
  });

  it('treats a delta as idempotent: a resent overlap is skipped, a gap asks for RESYNC', () => {
    const service = newService();
    service.step(batch([{ id: 'r', tokens: [...prompt, 1, 2], prompt: 4 }]), 0);
    const overlap = service.step(batch([{ id: 'r', start: 5, tokens: [2, 3] }]), 0);
    expect(overlap.statuses[0]).toBe(ItemStatus.OK);
    expect(service.draftEngine.lengthOf('engine-a\u0000r')).toBe(7);
    const gap = service.step(batch([{ id: 'r', start: 9, tokens: [5] }]), 0);
    expect(gap.statuses[0]).toBe(ItemStatus.RESYNC);
    expect(gap.errors[0]).toMatchObject({ index: 0, code: 'TOKEN_GAP' });
    expect(service.draftEngine.lengthOf('engine-a\u0000r')).toBe(7);
  });

  it('refuses a step with more requests than limits.maxRequestsPerStep, naming the field, before touching state', () => {
    const service = new StepService({ ...limits, maxRequestsPerStep: 3 }, gate, {});
    const items = Array.from({ length: 4 }, (_, i) => ({ id: `r${i}`, tokens: [...prompt, i], prompt: 4 }));
    expect(() => service.step(batch(items, { engineId: 'fresh' }), 0)).toThrowError(expect.objectContaining({ code: 'INVALID_ARGUMENT', field: 'requests' }));
    expect(service.stats()).toMatchObject({ requests: 0, engines: 0 }); // not even the engine was created
    expect(draftsOf(service.step(batch(items.slice(0, 3)), 0))).toHaveLength(3);
  });

  it('asks for RESYNC when a delta arrives for a request it does not know', () => {
    const outcome = newService().step(batch([{ id: 'ghost', start: 12, tokens: [1] }]), 0);
    expect(outcome.statuses[0]).toBe(ItemStatus.RESYNC);
    expect(outcome.errors[0].code).toBe('UNKNOWN_REQUEST');
    expect(outcome.errors[0].message).toContain('requests[0].req_id');
  });

  it('reports a bad item with a coded error naming the field and leaves the other requests untouched', () => {
    const service = new StepService(limits, gate, { vocabSize: 1000 });
    service.step(batch([{ id: 'good', tokens: [...prompt, 1, 2, 3, 1, 2], prompt: 4 }]), 0);
    const outcome = service.step(
      batch([
        { id: 'bad', tokens: [...prompt, 5000], prompt: 4 },
        { id: 'good', start: 9, tokens: [3] },
        { id: 'good', start: 10, tokens: [1] },
      ]),
      0,
    );
    expect(Array.from(outcome.statuses)).toEqual([ItemStatus.ERROR, ItemStatus.OK, ItemStatus.ERROR]);
    expect(outcome.errors.map((e) => e.code)).toEqual(['TOKEN_OUT_OF_RANGE', 'DUPLICATE_REQUEST']);
    expect(outcome.errors[0].message).toContain('context[4] = 5000');
    expect(service.describe('engine-a', 'bad')).toBeUndefined();
    expect(service.describe('engine-a', 'good')?.length).toBe(10);
  });

  it('rejects call-level problems before applying anything', () => {
    const service = newService();
    const expectCode = (b: StepBatch, code: string, field: string) => {
      try {
        service.step(b, 0);
        expect.unreachable();
      } catch (error) {
        expect(error).toBeInstanceOf(SidecarError);
        expect((error as SidecarError).code).toBe(code);
        expect((error as SidecarError).field).toBe(field);
      }
    };
    expectCode(batch([{ id: 'r', tokens: [...prompt], prompt: 4 }], { k: 9 }), 'K_OUT_OF_RANGE', 'k');
    expectCode({ ...batch([{ id: 'r', tokens: [1, 2], prompt: 2 }]), counts: [5] }, 'INVALID_ARGUMENT', 'tokens');
    expectCode({ ...batch([{ id: 'r', tokens: [1, 2], prompt: 2 }]), starts: [] }, 'INVALID_ARGUMENT', 'starts');
    expectCode(batch([{ id: 'r', tokens: [1, 2], prompt: 2 }], { engineId: '' }), 'INVALID_ARGUMENT', 'engine_id');
    expect(service.stats().requests).toBe(0);
  });

  it('answers a repeated (engine, step) with the identical outcome and applies nothing twice (tensor parallelism)', () => {
    const service = newService();
    const step = batch([{ id: 'r', tokens: [...prompt, 1, 2, 3, 1, 2], prompt: 4 }]);
    const first = service.step(step, 0);
    const again = service.step({ ...step }, 0);
    expect(again).toBe(first);
    expect(service.draftEngine.lengthOf('engine-a\u0000r')).toBe(9);
    expect(service.counters.duplicateSteps).toBe(1);
  });

  it('refuses a repeated step id that carries other requests or tokens (CONFLICTING_STEP), but not another rank\'s full context for the same tokens', () => {
    const service = newService();
    service.step(batch([{ id: 'r', tokens: [...prompt, 1, 2, 3, 1, 2], prompt: 4 }]), 0);
    const next = batch([{ id: 'r', start: 9, tokens: [3] }]);
    const answer = service.step(next, 0);
    // A rank that lost a reply resends the whole context for the same step: the same answer.
    expect(service.step({ ...next, starts: [0], counts: [10], promptLengths: [4], tokens: [...prompt, 1, 2, 3, 1, 2, 3] }, 0)).toBe(answer);
    for (const conflicting of [{ tokens: [4] }, { reqIds: ['other'] }, { starts: [8], tokens: [3] }, { k: 2 }]) {
      expect(() => service.step({ ...next, ...conflicting }, 0)).toThrowError(expect.objectContaining({ code: 'CONFLICTING_STEP', field: 'step_id' }));
    }
    expect(service.draftEngine.lengthOf('engine-a\u0000r')).toBe(10); // nothing applied twice, nothing of the conflicting calls
  });

  it('refuses a step id older than the engine last step once it left the cache', () => {
    const service = newService();
    const base = reserveStepIds(6);
    for (let i = 0n; i < 6n; i++) service.step(batch([], { stepId: base + i }), 0);
    expect(() => service.step(batch([], { stepId: base }), 0)).toThrow(/STALE_STEP/);
    expect(service.step(batch([], { stepId: base + 5n }), 0).stepId).toBe(base + 5n);
  });

  it('keeps engines apart: the same request id on two engines is two requests', () => {
    const service = newService();
    service.step(batch([{ id: 'r', tokens: [...prompt, 1], prompt: 4 }], { engineId: 'e1' }), 0);
    service.step(batch([{ id: 'r', tokens: [...prompt, 1, 2, 3], prompt: 4 }], { engineId: 'e2' }), 0);
    expect(service.describe('e1', 'r')?.length).toBe(5);
    expect(service.describe('e2', 'r')?.length).toBe(7);
  });

  it('gates like VLLM_SPECULATIVE_BATCH_SIZE_THRE but keeps ingesting, so drafts resume without gaps', () => {
    const service = newService({ threshold: 1 });
    const open = service.step(
      batch([
        { id: 'a', tokens: [...prompt, 1, 2, 3, 1], prompt: 4 },
        { id: 'b', tokens: [...prompt, 9], prompt: 4 },
      ]),
      0,
    );
    expect(open.speculate).toBe(false);
    expect(open.reason).toBe(GateReason.ABOVE_THRESHOLD);
    expect(open.drafts.length).toBe(0);
    const tail = service.step(batch([{ id: 'a', start: 8, tokens: [2] }], { finished: ['b'] }), 0);
    expect(tail.speculate).toBe(true);
    expect(tail.reason).toBe(GateReason.BELOW_THRESHOLD);
    expect(draftsOf(tail)).toEqual([[3, 1, 2]]);
  });

  it('never gates prefill steps, and threshold <= 0 disables the gate', () => {
    expect(newService({ threshold: 1 }).step(batch([{ id: 'a', tokens: [1], prompt: 1 }], { numReqs: 500, prefill: true }), 0).reason).toBe(GateReason.PREFILL);
    expect(newService({ threshold: 0 }).step(batch([{ id: 'a', tokens: [1], prompt: 1 }], { numReqs: 500 }), 0).reason).toBe(GateReason.GATE_DISABLED);
  });

  it('scores served drafts against the tokens that came next (accepted per position)', () => {
    const service = newService();
    service.step(batch([{ id: 'r', tokens: [...prompt, 1, 2, 3, 4, 1, 2], prompt: 4 }]), 0); // drafts 3 4 1
    service.step(batch([{ id: 'r', start: 10, tokens: [3, 4, 9] }]), 0); // 2 accepted, then the bonus token
    expect(service.counters.acceptedTokens).toBe(2);
    expect(Array.from(service.counters.acceptedPerPos.subarray(0, 3))).toEqual([1, 1, 0]);
    expect(service.counters.draftTokens).toBe(3); // nothing ever followed 9: no second draft
  });

  it('releases finished requests at once and keeps their group as history', () => {
    const service = newService();
    service.step(batch([{ id: 'r', tokens: [...prompt, 1, 2, 3], prompt: 4 }]), 0);
    service.step(batch([], { finished: ['r'] }), 0);
    expect(service.stats()).toMatchObject({ requests: 0, historyGroups: 1 });
    const next = service.step(batch([{ id: 'r2', tokens: [...prompt, 1], prompt: 4 }]), 0);
    expect(draftsOf(next)).toEqual([[2, 3]]);
  });

  it('evicts requests idle for longer than the ttl; they come back through RESYNC', () => {
    const service = newService({}, { requestTtlMs: 1000 });
    service.step(batch([{ id: 'r', tokens: [...prompt, 1], prompt: 4 }]), 0);
    service.maintain(500);
    expect(service.stats().requests).toBe(1);
    service.maintain(2000);
    expect(service.stats().requests).toBe(0);
    expect(service.counters.evictedIdle).toBe(1);
    expect(service.step(batch([{ id: 'r', start: 5, tokens: [2] }]), 2000).statuses[0]).toBe(ItemStatus.RESYNC);
  });

  it('enforces the token budget: history first (LRU), then the least recently seen live requests', () => {
    const service = newService({}, { maxTokens: 70 });
    const context = (p: number, length: number) => [p, p + 1, ...Array.from({ length }, (_, i) => (i * 7) % 50)];
    service.step(batch([{ id: 'old', tokens: context(1000, 40), prompt: 2 }]), 0);
    service.step(batch([], { finished: ['old'] }), 0);
    service.step(batch([{ id: 'idle', tokens: context(2000, 40), prompt: 2 }]), 1);
    service.step(batch([{ id: 'busy', tokens: context(3000, 40), prompt: 2 }]), 2);
    service.maintain(3);
    const stats = service.stats();
    // The corpus has a budget of its own; this one covers live requests and history.
    expect(stats.tokensIndexed - stats.corpusTokens).toBeLessThanOrEqual(100);
    expect(stats.historyGroups).toBe(0);
    expect(service.describe('engine-a', 'busy')).toBeDefined();
    expect(service.describe('engine-a', 'idle')).toBeUndefined();
    expect(service.counters.evictedForMemory).toBe(1);
  });
});

describe('draft length by batch size', () => {
  it('caps each step at the K of the first listed batch size it fits, the last one beyond, never above the runner\'s k', () => {
    const g = new BatchGate({ ...gate, kByBatch: [[4, 8], [32, 3]] });
    expect([1, 4, 5, 32, 33, 128].map((n) => g.draftLength(n, 8))).toEqual([8, 8, 3, 3, 3, 3]);
    expect(g.draftLength(2, 5)).toBe(5);
    expect(new BatchGate(gate).draftLength(100, 6)).toBe(6); // no table: the runner's k
  });

  it('drafts long in the tail and short in a bigger batch', () => {
    const service = newService({ kByBatch: [[1, 5], [32, 2]] });
    const context = [...prompt, 1, 2, 3, 4, 5, 6, 1];
    const big = service.step(batch([{ id: 'a', tokens: context, prompt: 4 }, { id: 'b', tokens: [...prompt, 9], prompt: 4 }], { k: 5 }), 0);
    expect(draftsOf(big)[0]).toEqual([2, 3]);
    const tail = service.step(batch([{ id: 'a', start: 11, tokens: [2] }], { k: 5, finished: ['b'] }), 0);
    expect(draftsOf(tail)).toEqual([[3, 4, 5, 6, 1]]);
  });
});

describe('adaptive gate', () => {
  const adaptive: GateConfig = { ...gate, mode: 'adaptive', minObservations: 10, smoothing: 0.1, verifyCost: [[1, 1.1], [64, 1.5], [128, 3]] };

  it('uses the threshold rule until it has enough observations', () => {
    const g = new BatchGate(adaptive);
    expect(g.decide(64, false, 3).reason).toBe(GateReason.ABOVE_THRESHOLD);
  });

  it('announces a batch size above which it never speculates only when it is a plain threshold', () => {
    expect(new BatchGate({ ...adaptive, mode: 'threshold', threshold: 32 }).offAbove).toBe(32);
    expect(new BatchGate({ ...adaptive, mode: 'threshold', threshold: 0 }).offAbove).toBe(0); // gate disabled
    expect(new BatchGate(adaptive).offAbove).toBe(0); // acceptance may switch it on at any size
  });

  it('speculates where 1 + E[accepted] beats the verification cost, with hysteresis', () => {
    const g = new BatchGate(adaptive);
    for (let i = 0; i < 20; i++) g.observe(1); // gain 2 per step
    expect(g.decide(64, false, 3)).toEqual({ speculate: true, reason: GateReason.ADAPTIVE_GAIN });
    expect(g.decide(128, false, 3)).toEqual({ speculate: false, reason: GateReason.ADAPTIVE_NO_GAIN });
    // At 85 the gain is 2 / 1.99: inside the hysteresis band, so the gate keeps its last state.
    expect(g.decide(85, false, 3).speculate).toBe(false);
    expect(g.decide(70, false, 3).speculate).toBe(true);
    expect(g.decide(85, false, 3).speculate).toBe(true);
  });

  it('drafts in the shadow while off, so the acceptance it bases its decision on keeps updating', () => {
    const service = new StepService(limits, { ...adaptive, threshold: 1 });
    service.step(batch([{ id: 'a', tokens: [...prompt, 1, 2, 3, 1, 2], prompt: 4 }, { id: 'b', tokens: [...prompt, 7], prompt: 4 }]), 0);
    service.step(batch([{ id: 'a', start: 9, tokens: [9] }, { id: 'b', start: 5, tokens: [8] }]), 0); // a's shadow draft 3 1 2 misses
    expect(service.counters.shadowDrafts).toBeGreaterThan(0);
    expect(service.gateAcceptance('engine-a')!.observations).toBeGreaterThan(0);
    expect(service.counters.draftTokens).toBe(0);
  });

  it('interpolates the verification cost linearly, flat beyond the ends', () => {
    expect(verifyCostAt([[1, 1], [101, 2]], 51)).toBeCloseTo(1.5);
    expect(verifyCostAt([[1, 1], [101, 2]], 500)).toBe(2);
    expect(verifyCostAt([[8, 1.2]], 1)).toBe(1.2);
  });
});

describe('full contexts of requests the sidecar already holds', () => {
  it('ingests only the new tail when a client resends a context it lost the confirmation of', () => {
    const service = newService();
    service.step(batch([{ id: 'r', tokens: [...prompt, 1, 2, 3, 1, 2], prompt: 4 }]), 0);
    const before = service.counters.tokensIngested;
    const resent = service.step(batch([{ id: 'r', tokens: [...prompt, 1, 2, 3, 1, 2, 3], prompt: 4 }]), 0);
    expect(draftsOf(resent)).toEqual([[1, 2, 3]]);
    expect(service.describe('engine-a', 'r')?.length).toBe(10);
    const stats = service.draftEngine.stats();
    expect(stats.tokensIndexed - stats.corpusTokens).toBe(10);
    expect(service.counters.tokensIngested - before).toBe(10); // counted as received, indexed once
  });

  it('starts over when the resent context is shorter or has another prompt length', () => {
    const service = newService();
    service.step(batch([{ id: 'r', tokens: [...prompt, 1, 2, 3, 1, 2], prompt: 4 }]), 0);
    service.step(batch([{ id: 'r', tokens: [...prompt, 7], prompt: 4 }]), 0);
    expect(service.describe('engine-a', 'r')?.length).toBe(5);
    service.step(batch([{ id: 'r', tokens: [...prompt, 7, 8], prompt: 5 }]), 0);
    expect(service.describe('engine-a', 'r')).toMatchObject({ length: 6, promptLength: 5 });
  });
});

describe('long contexts: a bounded amount indexed per step, the rest in a backlog', () => {
  const long = (length: number, seed: number) => Array.from({ length }, (_, i) => ((i * 7919 + seed * 104729) % 997) + 1);
  const budgeted = (perStep: number) => newService({}, { ingestTokensPerStep: perStep });
  const indexed = (service: StepService) => {
    const stats = service.draftEngine.stats();
    return stats.tokensIndexed - stats.corpusTokens;
  };

  it('indexes at most limits.ingestTokensPerStep tokens in a step and no draft for a request until all of it is indexed', () => {
    const service = budgeted(1024);
    const context = long(5000, 1);
    const first = service.step(batch([{ id: 'r', tokens: context, prompt: 100 }]), 0);
    expect(first.statuses[0]).toBe(ItemStatus.OK); // received: the client never sends these tokens again
    expect(draftsOf(first)).toEqual([[]]);
    expect(indexed(service)).toBe(1024);
    expect(service.stats()).toMatchObject({ backlogTokens: 5000 - 1024, backlogRequests: 1 });
    expect(service.describe('engine-a', 'r')?.length).toBe(5000);
    // The next step indexes no more than its budget either: its delta joins the backlog.
    const second = service.step(batch([{ id: 'r', start: 5000, tokens: [context[0]] }]), 0);
    expect(draftsOf(second)).toEqual([[]]);
    expect(indexed(service)).toBe(2048);
    while (service.idleWorkPending) service.doIdleWork();
    expect(indexed(service)).toBe(5001);
    expect(draftsOf(service.step(batch([{ id: 'r', start: 5001, tokens: [context[1]] }]), 0))[0].length).toBeGreaterThan(0);
  });

  it('always indexes a short decode delta of a request without a backlog, whatever the budget left', () => {
    const service = budgeted(1024);
    service.step(batch([{ id: 'a', tokens: [...prompt, 1, 2, 3, 1, 2], prompt: 4 }]), 0);
    const outcome = service.step(batch([{ id: 'big', tokens: long(4000, 2), prompt: 10 }, { id: 'a', start: 9, tokens: [3] }]), 0);
    expect(draftsOf(outcome)).toEqual([[], [1, 2, 3]]);
  });

  it('indexes the backlog between steps, a bounded slice per call (idle work)', () => {
    const service = budgeted(1024);
    service.step(batch([{ id: 'r', tokens: long(6000, 3), prompt: 100 }]), 0);
    let slices = 0;
    while (service.idleWorkPending) {
      const before = indexed(service);
      service.doIdleWork();
      expect(indexed(service) - before).toBeLessThanOrEqual(1024 / 4);
      slices++;
    }
    expect(slices).toBeGreaterThanOrEqual((6000 - 1024) / 256);
    expect(service.stats()).toMatchObject({ backlogTokens: 0, backlogRequests: 0 });
    expect(draftsOf(service.step(batch([{ id: 'r', start: 6000, tokens: [5] }]), 0))[0].length).toBeGreaterThan(0);
  });

  it('takes a context in chunks: the first with its prompt length (may be beyond the chunk) and what remains, then deltas', () => {
    const service = newService();
    const context = [...prompt, 1, 2, 3, 1, 2];
    const first = service.step(batch([{ id: 'r', tokens: context.slice(0, 3), prompt: 4, remaining: 6 }]), 0);
    expect(first.statuses[0]).toBe(ItemStatus.OK);
    expect(service.describe('engine-a', 'r')).toMatchObject({ length: 3, promptLength: 4 });
    const second = service.step(batch([{ id: 'r', start: 3, tokens: context.slice(3, 6), remaining: 3 }]), 0);
    expect(draftsOf(second)).toEqual([[]]); // the client said more is coming
    const last = service.step(batch([{ id: 'r', start: 6, tokens: context.slice(6) }]), 0);
    expect(draftsOf(last)).toEqual([[3, 1, 2]]);
    // The same drafts as from the whole context at once, with its sibling sharing the group.
    const sibling = service.step(batch([{ id: 's', tokens: [...prompt, 1, 2], prompt: 4 }]), 0);
    expect(draftsOf(sibling)).toEqual([[3, 1, 2]]);
  });

  it('refuses a prompt length beyond the tokens sent and those said to remain, naming the field', () => {
    const outcome = newService().step(batch([{ id: 'r', tokens: [1, 2, 3], prompt: 8, remaining: 2 }]), 0);
    expect(outcome.statuses[0]).toBe(ItemStatus.ERROR);
    expect(outcome.errors[0].message).toMatch(/prompt length 8/);
    expect(newService().step(batch([{ id: 'r', tokens: [1, 2, 3], prompt: 8 }]), 0).errors[0].code).toBe('INVALID_ARGUMENT');
  });

  it('keeps what a timed-out call applied: the resent chunk is skipped, the next one continues', () => {
    const service = budgeted(1024);
    const context = long(3000, 4);
    service.step(batch([{ id: 'r', tokens: context.slice(0, 2000), prompt: 50, remaining: 1000 }]), 0); // its reply was lost
    const resent = service.step(batch([{ id: 'r', tokens: context.slice(0, 2000), prompt: 50, remaining: 1000 }]), 0);
    expect(resent.statuses[0]).toBe(ItemStatus.OK);
    expect(service.describe('engine-a', 'r')?.length).toBe(2000);
    service.step(batch([{ id: 'r', start: 2000, tokens: context.slice(2000) }]), 0);
    while (service.idleWorkPending) service.doIdleWork();
    expect(indexed(service)).toBe(3000);
  });

  it('counts the backlog in the token budget and drops it with its request', () => {
    const service = new StepService({ ...limits, maxTokens: 4000, ingestTokensPerStep: 1024 }, gate, { historyTokens: 0 });
    service.step(batch([{ id: 'old', tokens: long(3000, 5), prompt: 10 }]), 0);
    service.step(batch([{ id: 'new', tokens: long(3000, 6), prompt: 10 }]), 1);
    service.maintain(2);
    expect(service.describe('engine-a', 'old')).toBeUndefined(); // the least recently seen went
    expect(service.stats().backlogTokens).toBeLessThanOrEqual(3000);
    service.release('engine-a', ['new']);
    expect(service.stats()).toMatchObject({ backlogTokens: 0, requests: 0 });
    while (service.idleWorkPending) service.doIdleWork();
    expect(service.stats().backlogRequests).toBe(0);
  });

  it('makes a long group room for all its siblings at once, though they open one by one as the backlog reaches them', () => {
    // Eight 6000-token samples of one prompt in one step, with a budget that opens the first only:
    // the others wait in their backlogs. Announced when they arrive, the group's arrays are
    // allocated or grown once for all of them; planned only as each one opens, they would grow
    // again (and be copied whole) as later siblings join.
    const groupArrays = (announcing: boolean) => {
      const service = new StepService({ ...limits, ingestTokensPerStep: 1024 }, gate, { corpusTokens: 0 });
      if (!announcing) service.draftEngine.announce = () => {};
      const { memory, lengths: allocations } = recordingGrowthMemory();
      service.draftEngine.growthMemory = memory;
      const promptTokens = long(100, 9);
      const items = Array.from({ length: 8 }, (_, r) => ({ id: `s${r}`, tokens: [...promptTokens, ...long(5900, r)], prompt: 100 }));
      service.step(batch(items), 0);
      while (service.idleWorkPending) service.doIdleWork();
      expect(indexed(service)).toBe(8 * 6000);
      return allocations.length;
    };
    const announced = groupArrays(true);
    expect(announced).toBeLessThanOrEqual(4); // states and edges at creation, then once more for all the siblings
    expect(groupArrays(false)).toBeGreaterThanOrEqual(announced + 4);
  });

  it('forgets an announced request that goes before it opens: its group is not made room for', () => {
    const service = new StepService({ ...limits, ingestTokensPerStep: 1024 }, gate, { corpusTokens: 0 });
    const { memory, lengths: allocations } = recordingGrowthMemory();
    service.draftEngine.growthMemory = memory;
    const promptTokens = long(100, 9);
    service.step(batch([{ id: 'first', tokens: long(2000, 1), prompt: 100 }, { id: 'gone', tokens: [...promptTokens, ...long(20_000, 2)], prompt: 100 }]), 0);
    service.release('engine-a', ['gone']);
    while (service.idleWorkPending) service.doIdleWork();
    allocations.length = 0;
    service.step(batch([{ id: 'later', tokens: [...promptTokens, ...long(200, 3)], prompt: 100 }]), 1);
    // Sized for its own 300 tokens (a few hundred states), not for the 20,000 announced and gone.
    expect(Math.max(...allocations)).toBeLessThan(20_000);
  });

  it('answers a step within the budget however long the contexts it brings (128 x 32k)', () => {
    const service = new StepService({ ...limits, maxTokens: 8_000_000, ingestTokensPerStep: 8192 }, gate);
    const items = Array.from({ length: 128 }, (_, r) => ({ id: `r${r}`, tokens: long(32768, r), prompt: 1024 }));
    const before = indexed(service);
    service.step(batch(items), 0);
    expect(indexed(service) - before).toBeLessThanOrEqual(8192);
    expect(service.stats().backlogTokens).toBe(128 * 32768 - 8192);
  });
});

describe('the byte budget (limits.maxBytes): every request, group and engine counted, not only tokens', () => {
  it('keeps what it accounts for under maxBytes with many tiny requests, evicting the least recently seen', () => {
    const maxBytes = 64 * 1024 * 1024;
    const service = new StepService({ ...limits, maxTokens: 1e9, maxBytes, maxRequestsPerStep: 4096 }, gate, { historyTokens: 0 });
    for (let s = 0; s < 30; s++) {
      const items = Array.from({ length: 1000 }, (_, i) => ({ id: `tiny-${s}-${i}`, tokens: [s * 1000 + i + 1, 7, 9], prompt: 2 }));
      service.step(batch(items), s);
      // Checked every 4096 new requests: at most that many requests (each well under 8 KB) past it.
      expect(service.stats().accountedBytes).toBeLessThanOrEqual(maxBytes + 4097 * 8192);
    }
    service.maintain(30);
    const stats = service.stats();
    expect(stats.accountedBytes).toBeLessThanOrEqual(maxBytes);
    expect(stats.requests).toBeGreaterThan(0);
    expect(stats.requests).toBeLessThan(30_000); // some were evicted: the token budget alone would keep them all
    expect(service.counters.evictedForMemory).toBe(30_000 - stats.requests);
    expect(service.describe('engine-a', 'tiny-0-0')).toBeUndefined(); // the oldest went first
    expect(service.describe('engine-a', 'tiny-29-999')).toBeDefined();
    expect(stats).toMatchObject({ maxBytes });
  });

  it('counts each request, group and engine by MemoryCost beyond the bytes of its arrays', () => {
    const service = newService();
    service.step(batch([{ id: 'a', tokens: [...prompt, 1], prompt: 4 }, { id: 'b', tokens: [...prompt, 2], prompt: 4 }]), 0);
    const stats = service.stats();
    expect(stats.accountedBytes).toBe(stats.bytes + 2 * MemoryCost.requestBytes + 1 * MemoryCost.groupBytes + MemoryCost.engineBytes);
  });
});

/** Other engines' text as an adapter hands it over: a queue, drained in arrival order. */
class QueuedText implements SharedTextSource {
  readonly deltas: TextDelta[] = [];
  get inboundWaiting(): boolean {
    return this.deltas.length > 0;
  }
  drain(take: (delta: TextDelta) => boolean): void {
    while (this.deltas.length > 0 && take(this.deltas.shift()!));
  }
}

describe('text from other engines (shared text)', () => {
  const sharing = () => {
    const service = new StepService({ ...limits, ingestTokensPerStep: 1024 }, { ...gate, threshold: 0 }, { shareText: true });
    const inbound = new QueuedText();
    service.sharedText = inbound;
    service.step(batch([{ id: 'a', tokens: [...prompt, 1], prompt: 4 }], { stepId: 1n }), 0);
    const [group] = service.draftEngine.takeOutbound().opened;
    // Three requests of another engine, 200 tokens each, the last one's text ending in 1, 2, 3, 4.
    const text = (n: number) => Int32Array.from({ length: 200 }, (_, i) => (i < 196 ? 500 + n * 200 + i : [1, 2, 3, 4][i - 196]));
    for (let n = 0; n < 3; n++) inbound.deltas.push({ group, source: `other/${n}`, at: 0, tokens: text(n), finished: false });
    return { service, inbound };
  };
  const next = { id: 'a', start: 5, tokens: [2] };

  it('applies it between steps, a bounded slice per idle call (a quarter of ingestTokensPerStep), and what is left when a step starts', () => {
    const { service, inbound } = sharing();
    expect(service.idleWorkPending).toBe(true);
    service.doIdleWork();
    expect(inbound.deltas).toHaveLength(1); // two deltas of 200 tokens (and their cost) reach the 256 of a slice
    expect(draftsOf(service.step(batch([next], { stepId: 2n }), 0))).toEqual([[3, 4]]);
    expect(inbound.deltas).toHaveLength(0);
  });

  it('refuses a delta with a token outside its vocabulary and counts it; the other deltas and the step go on', () => {
    const service = new StepService(limits, { ...gate, threshold: 0 }, { shareText: true, vocabSize: 1000 });
    const inbound = new QueuedText();
    service.sharedText = inbound;
    service.step(batch([{ id: 'a', tokens: [...prompt, 1], prompt: 4 }], { stepId: 1n }), 0);
    const [group] = service.draftEngine.takeOutbound().opened;
    inbound.deltas.push({ group, source: 'other/0', at: 0, tokens: Int32Array.of(1, 2, 5000), finished: false });
    inbound.deltas.push({ group, source: 'other/1', at: 0, tokens: Int32Array.of(1, 2, 3), finished: false });
    expect(draftsOf(service.step(batch([next], { stepId: 2n }), 0))).toEqual([[3]]);
    expect(service.counters.remoteRejected).toBe(1);
  });

  it('drafts the same whether idle work applied it or the step did', () => {
    const idle = sharing();
    while (idle.service.idleWorkPending) idle.service.doIdleWork();
    const atStep = sharing();
    expect(draftsOf(idle.service.step(batch([next], { stepId: 2n }), 0))).toEqual(draftsOf(atStep.service.step(batch([next], { stepId: 2n }), 0)));
  });
});
