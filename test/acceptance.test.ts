/**
 * Acceptance on the shared traces (../shared/data). Skipped, with a message, on a clone without
 * them: the rest of the suite generates its own data.
 */
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InProcessBackend } from '../src/replay/in-process.js';
import { replayRolloutSteps } from '../src/replay/rollout-step.js';
import { replayThroughRedis } from '../src/replay/shared-engines.js';
import { replay, type SiblingMode } from '../src/replay/simulate.js';
import { loadTraceFile, type TraceRow } from '../src/replay/traces.js';
import { REDIS_SERVER, RedisServer } from './redis.js';

const DATA = new URL('../../shared/data/traces/', import.meta.url).pathname;
const available = existsSync(DATA);
if (!available) console.warn(`acceptance tests skipped: no shared traces at ${DATA}`);

/** AL of the rollout-step replay (live and none: every row queued at once, 128 running), K = 3. */
const al = async (file: string, drafter: 'seed' | 'sam', siblings: SiblingMode, options: { turns?: boolean } = {}) =>
  (await replay(loadTraceFile(DATA + file), new InProcessBackend({ drafter, siblings: siblings !== 'none' }), { k: 3, siblings, ...options })).al;

/** A group's samples split in two rollout steps: the first half, then the second. */
function twoSteps(rows: TraceRow[]): [TraceRow[], TraceRow[]] {
  const seen = new Map<string, number>();
  const steps: [TraceRow[], TraceRow[]] = [[], []];
  const sizes = new Map<string, number>();
  for (const row of rows) sizes.set(row.group, (sizes.get(row.group) ?? 0) + 1);
  for (const row of rows) {
    const index = seen.get(row.group) ?? 0;
    seen.set(row.group, index + 1);
    steps[index < sizes.get(row.group)! / 2 ? 0 : 1].push(row);
  }
  return steps;
}

describe.skipIf(!available)('acceptance on shared traces (K=3, the rollout-step replay)', () => {
  it('seed policy reproduces the independent reference AL', async () => {
    expect(Math.abs((await al('grpo-gsm8k-step2.jsonl', 'seed', 'none')) - 1.575)).toBeLessThanOrEqual(0.01);
    expect(Math.abs((await al('math-l5-Qwen2.5-7B-Instruct.jsonl', 'seed', 'none')) - 1.681)).toBeLessThanOrEqual(0.01);
    expect(Math.abs((await al('qwq-32b-agentic.jsonl', 'seed', 'none')) - 1.258)).toBeLessThanOrEqual(0.01);
  });

  it('default policy reaches the single-request bar on MATH (>= 1.74)', async () => {
    expect(await al('math-l5-Qwen2.5-7B-Instruct.jsonl', 'sam', 'none')).toBeGreaterThanOrEqual(1.74);
  });

  it('default policy on the GRPO step with live sharing (>= 2.08), and as many per-turn requests at least as well (within 0.005)', async () => {
    const whole = await al('grpo-gsm8k-step2.jsonl', 'sam', 'live');
    expect(whole).toBeGreaterThanOrEqual(2.08);
    expect(await al('grpo-gsm8k-step2.jsonl', 'sam', 'live', { turns: true })).toBeGreaterThanOrEqual(whole - 0.005);
  });

  it('default policy on MATH 7B, one sample per prompt, drafting across prompts through the corpus (>= 1.94)', async () => {
    expect(await al('math-l5-Qwen2.5-7B-Instruct.jsonl', 'sam', 'live')).toBeGreaterThanOrEqual(1.94);
  });

  it('history: a GRPO step whose prompts ran in the previous step gains at least 0.15 AL from it', async () => {
    const [first, second] = twoSteps(loadTraceFile(DATA + 'grpo-gsm8k-step2.jsonl'));
    const schedule = { k: 3, maxNumSeqs: 128, turns: false, tailBatch: 32 };
    const alone = await replayRolloutSteps([second], [new InProcessBackend({})], schedule);
    const after = await replayRolloutSteps([first, second], [new InProcessBackend({})], schedule);
    const secondAfter = after.perStep[1].emitted / after.perStep[1].steps;
    expect(secondAfter - alone.al).toBeGreaterThanOrEqual(0.15);
  });

  it('default policy is never below the seed policy on any shared file', async () => {
    for (const file of ['grpo-gsm8k-step2.jsonl', 'math-l5-Qwen2.5-7B-Instruct.jsonl', 'math-l5-Qwen2.5-32B-Instruct.jsonl', 'qwq-32b-agentic.jsonl']) {
      const seed = await al(file, 'seed', 'none');
      for (const siblings of ['none', 'finished', 'live'] as const) expect(await al(file, 'sam', siblings)).toBeGreaterThanOrEqual(seed);
      expect(await al(file, 'sam', 'live', { turns: true })).toBeGreaterThanOrEqual(seed);
    }
  });
});

describe.skipIf(!available || REDIS_SERVER === null)('engines sharing through a real Redis (shared traces, K = 3, 128 running per engine)', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await RedisServer.start();
  });
  afterAll(async () => {
    await redis?.kill();
  });
  const schedule = { k: 3, maxNumSeqs: 128, turns: false, tailBatch: 32 };
  const overEngines = async (steps: TraceRow[][], engines: number, restartBetweenSteps = false) =>
    (await replayThroughRedis(steps, () => Array.from({ length: engines }, () => new InProcessBackend({ shareText: true })), { url: redis.url }, { ...schedule, restartBetweenSteps })).result;
  const oneEngine = async (steps: TraceRow[][], maxNumSeqs = 128) => replayRolloutSteps(steps, [new InProcessBackend({})], { ...schedule, maxNumSeqs });
  const secondStepAl = (result: { perStep: { emitted: number; steps: number }[] }) => result.perStep[1].emitted / result.perStep[1].steps;

  it('the GRPO step over 4 engines is within 0.03 of one engine; over 8, within 0.015 of one sidecar running all 1024 requests at once (all that sharing could give)', async () => {
    const rows = loadTraceFile(DATA + 'grpo-gsm8k-step2.jsonl');
    expect((await oneEngine([rows])).al - (await overEngines([rows], 4)).al).toBeLessThanOrEqual(0.03);
    // Eight engines of 128 run the whole step at once: no later wave drafts from earlier outputs,
    // on any number of engines. What sharing must give is what one sidecar seeing everything gives.
    expect((await oneEngine([rows], 1024)).al - (await overEngines([rows], 8)).al).toBeLessThanOrEqual(0.015);
  }, 300_000);

  it('a step whose prompts ran in the step before, on 4 engines all restarted in between: within 0.03 of one engine that kept everything', async () => {
    const steps = twoSteps(loadTraceFile(DATA + 'grpo-gsm8k-step2.jsonl'));
    expect(secondStepAl(await oneEngine(steps)) - secondStepAl(await overEngines(steps, 4, true))).toBeLessThanOrEqual(0.03);
  }, 300_000);
});

describe.skipIf(!available)('the calibrated gate on shared traces, under true cost models it never sees (10 % noise)', () => {
  for (const file of ['grpo-gsm8k-step2.jsonl', 'math-l5-Qwen2.5-7B-Instruct.jsonl']) {
    it(`${file}: within 2 % of the best fixed threshold chosen in hindsight, never more than 1 % slower than no speculation`, async () => {
      const { compareGates, costModel } = await import('../src/replay/rollout.js');
      const { DEFAULT_VERIFY_COST } = await import('../src/core/gate.js');
      const rows = loadTraceFile(DATA + file);
      const gate = { mode: 'threshold' as const, threshold: 32, verifyCost: DEFAULT_VERIFY_COST, hysteresis: 0.05, smoothing: 0.01, minObservations: 200 };
      for (const shape of ['flat', 'steep', 'context', 'table'] as const) {
        const shapeOptions = { baseMs: 25, perSeqMs: 0.1, verifyCost: DEFAULT_VERIFY_COST, k: 3, noise: 0.1, seed: 1 };
        const comparison = await compareGates(rows, () => costModel(shape, shapeOptions), { k: 3, maxNumSeqs: 128 }, gate);
        expect(comparison.calibrated.timeMs / comparison.bestThreshold.timeMs, shape).toBeLessThanOrEqual(1.02);
        expect(comparison.calibrated.timeMs / comparison.noSpeculation.timeMs, shape).toBeLessThanOrEqual(1.01);
      }
    }, 300_000);
  }
});

describe.skipIf(!available)('the same drafts through a running sidecar (shared traces)', () => {
  it('replay --via uds gives the in-process AL on the GRPO trace with live siblings', async () => {
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { FastLaneClient } = await import('../src/client/clients.js');
    const { WireBackend } = await import('../src/replay/wire.js');
    const { loadConfig } = await import('../src/server/config.js');
    const { startSidecar } = await import('../src/server/sidecar.js');
    const socket = join(mkdtempSync(join(tmpdir(), 'sam-accept-')), 'sidecar.sock');
    const sidecar = await startSidecar(loadConfig({ env: {}, file: null, overrides: { socket, http: { port: 0 }, log: { level: 'silent' }, shutdown: { drainMs: 0 }, gate: { threshold: 0 }, limits: { ingestTokensPerStep: 1 << 30 } } }));
    try {
      // Every step indexes all it brings (no backlog), as in process: then drafts depend on the steps alone.
      const rows = loadTraceFile(DATA + 'grpo-gsm8k-step2.jsonl');
      const wire = await replay(rows, new WireBackend(await FastLaneClient.connect(socket)), { k: 3, siblings: 'live' });
      const inProcess = await replay(rows, new InProcessBackend({}), { k: 3, siblings: 'live' });
      expect({ al: wire.al, steps: wire.steps }).toEqual({ al: inProcess.al, steps: inProcess.steps });
    } finally {
      await sidecar.close();
    }
  }, 180_000);
});
