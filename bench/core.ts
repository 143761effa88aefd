/**
 * Core benchmark: ingest throughput, per-request draft latency, memory per token, and the per-step
 * cost of a 128-request batch at 1k vs 32k tokens of context (through the Step service the sidecar
 * runs), for the default policy and the
 * n-gram baseline. Uses the shared GRPO trace when ../shared/data is present (real token
 * statistics), synthetic rollouts otherwise. Prints one JSON object on the last line.
 */
import { existsSync } from 'node:fs';
import { SuffixAutomaton } from '../src/core/automaton.js';
import { DraftEngine, type DrafterKind } from '../src/core/engine.js';
import { UNGATED } from '../src/core/gate.js';
import { NO_PROMPT, type StepBatch, StepService } from '../src/core/step-service.js';
import { InProcessBackend } from '../src/replay/in-process.js';
import { round } from '../src/replay/report.js';
import { replayRolloutSteps } from '../src/replay/rollout-step.js';
import { percentile } from '../src/replay/simulate.js';
import { syntheticTraces } from '../src/replay/synthetic.js';
import { loadTraceFile, type TraceRow } from '../src/replay/traces.js';

const SHARED_TRACE = new URL('../../../shared/data/traces/grpo-gsm8k-step2.jsonl', import.meta.url).pathname;
const SHARED_SINGLE_TRACE = new URL('../../../shared/data/traces/math-l5-Qwen2.5-7B-Instruct.jsonl', import.meta.url).pathname;
const K = 3;
const BATCH = 128;

/** One sample per prompt (no siblings): the shared MATH answers, or synthetic prompts with one sample each. */
function loadSingleRows(): { rows: TraceRow[]; source: string } {
  if (existsSync(SHARED_SINGLE_TRACE)) return { rows: loadTraceFile(SHARED_SINGLE_TRACE), source: 'math-l5-Qwen2.5-7B-Instruct.jsonl' };
  return { rows: syntheticTraces({ groups: 300, samplesPerGroup: 1, outputTokens: 600 }), source: 'synthetic, one sample per prompt' };
}

function loadRows(): { rows: TraceRow[]; source: string } {
  if (existsSync(SHARED_TRACE)) return { rows: loadTraceFile(SHARED_TRACE), source: 'grpo-gsm8k-step2.jsonl' };
  return { rows: syntheticTraces({ groups: 64, samplesPerGroup: 16, outputTokens: 370 }), source: 'synthetic' };
}

const nowNs = () => process.hrtime.bigint();
const median = (values: number[]) => percentile(Float64Array.from(values).sort(), 0.5);

/** One long token stream built from the rows (outputs back to back), at least `length` long. */
function stream(rows: TraceRow[], length: number, offset: number): Int32Array {
  const out = new Int32Array(length);
  let n = 0;
  for (let r = offset; n < length; r = (r + 1) % rows.length) {
    const tokens = rows[r].output;
    for (let i = 0; i < tokens.length && n < length; i++) out[n++] = tokens[i];
  }
  return out;
}

function ingestBench(rows: TraceRow[]) {
  // Raw automaton: every row's prompt + output, one automaton per row, repeated for stable timing.
  const sequences = rows.map((row) => Int32Array.from([...row.prompt, ...row.output]));
  const total = sequences.reduce((sum, s) => sum + s.length, 0);
  const rates: number[] = [];
  for (let round = 0; round < 5; round++) {
    const started = nowNs();
    for (const tokens of sequences) {
      const sam = new SuffixAutomaton();
      const cursor = sam.openCursor();
      for (let i = 0; i < tokens.length; i++) sam.append(cursor, tokens[i]);
    }
    rates.push(total / (Number(nowNs() - started) / 1e9));
  }
  // Memory: one automaton over a long single sequence (capacity, i.e. with growth slack).
  const long = stream(rows, 1 << 20, 0);
  const sam = new SuffixAutomaton();
  const cursor = sam.openCursor();
  for (let i = 0; i < long.length; i++) sam.append(cursor, long[i]);
  const bytesCapacity = sam.byteSize() / long.length;
  sam.compact();
  return {
    ingestTokensPerSec: Math.round(median(rates)),
    bytesPerTokenSingle: round(bytesCapacity, 2),
    bytesPerTokenCompacted: round(sam.byteSize() / long.length, 2),
    statesPerToken: round(sam.size / long.length, 3),
    edgesPerToken: round(sam.edges / long.length, 3),
  };
}

/** Replays the rows live by group through an engine, timing each draft call. */
function draftBench(rows: TraceRow[], drafter: DrafterKind) {
  const engine = new DraftEngine({ drafter });
  const latencies: number[] = [];
  const out = new Int32Array(K);
  const groups = new Map<string, TraceRow[]>();
  for (const row of rows) groups.set(row.group, [...(groups.get(row.group) ?? []), row]);
  let ingested = 0;
  let peakBytesPerToken = 0;
  for (const members of groups.values()) {
    members.forEach((row) => engine.open(row.id, row.prompt, row.prompt.length));
    ingested += members.reduce((sum, row) => sum + row.prompt.length, 0);
    const longest = Math.max(...members.map((row) => row.output.length));
    for (let i = 0; i < longest; i++) {
      for (const row of members) {
        if (i >= row.output.length) continue;
        engine.append(row.id, row.output, i, i + 1);
        ingested++;
        const started = nowNs();
        engine.draft(row.id, K, out, 0);
        latencies.push(Number(nowNs() - started) / 1000);
      }
    }
    const stats = engine.stats();
    peakBytesPerToken = Math.max(peakBytesPerToken, stats.bytes / Math.max(1, stats.tokensIndexed));
    members.forEach((row) => engine.release(row.id));
  }
  const sorted = Float64Array.from(latencies).sort();
  return { draftUsP50: round(percentile(sorted, 0.5), 3), draftUsP99: round(percentile(sorted, 0.99), 3), bytesPerToken: round(peakBytesPerToken, 2), ingested };
}

/**
 * Memory per indexed token as the sidecar holds a rollout step: every row through the rollout-step
 * schedule (128 running, the default drafting options: siblings, history, the corpus), the Step
 * service's byte count over the tokens its automata index, at the step where it holds the most.
 */
async function memoryBench(rows: TraceRow[]) {
  const backend = new InProcessBackend({});
  let peak = { bytes: 0, tokens: 1 };
  await replayRolloutSteps([rows], [backend], {
    k: K,
    maxNumSeqs: BATCH,
    turns: false,
    tailBatch: 32,
    onEngineStep: () => {
      const stats = backend.service.stats();
      if (stats.bytes > peak.bytes) peak = { bytes: stats.bytes, tokens: stats.tokensIndexed };
    },
  });
  return round(peak.bytes / peak.tokens, 2);
}

/**
 * A batch of 128 requests with `context` tokens each, held by the Step service the sidecar runs
 * (ungated, no siblings), ready to step: each step brings one new token per request, and the
 * service ingests them all, then drafts K for each.
 */
function stepFixture(rows: TraceRow[], drafter: DrafterKind, context: number) {
  const service = new StepService({ maxK: K, requestTtlMs: Number.POSITIVE_INFINITY, maxTokens: Number.MAX_SAFE_INTEGER, stepCacheSize: 1 }, UNGATED, { drafter, siblings: false });
  const streams = Array.from({ length: BATCH }, (_, r) => stream(rows, context + 256, r * 7));
  const reqIds = streams.map((_, r) => `r${r}`);
  let stepId = 0n;
  const batch = (starts: Uint32Array, counts: Uint32Array, promptLengths: Uint32Array, tokens: Uint32Array): StepBatch => ({
    engineId: 'bench',
    stepId: ++stepId,
    numReqs: BATCH,
    prefill: false,
    k: K,
    reqIds,
    starts,
    counts,
    promptLengths,
    tokens,
    finished: [],
  });
  const contexts = new Uint32Array(BATCH * context);
  streams.forEach((tokens, r) => contexts.set(tokens.subarray(0, context), r * context));
  service.step(batch(new Uint32Array(BATCH), new Uint32Array(BATCH).fill(context), new Uint32Array(BATCH).fill(64), contexts), 0);
  const starts = new Uint32Array(BATCH);
  const ones = new Uint32Array(BATCH).fill(1);
  const deltas = new Uint32Array(BATCH).fill(NO_PROMPT);
  const tokens = new Uint32Array(BATCH);
  let at = context;
  /** One decode step; returns us. */
  return () => {
    starts.fill(at);
    for (let r = 0; r < BATCH; r++) tokens[r] = streams[r][at];
    const next = batch(starts, ones, deltas, tokens);
    const started = nowNs();
    service.step(next, 0);
    at++;
    return Number(nowNs() - started) / 1000;
  };
}

/** Per-step cost at 1k and 32k context, stepped alternately so machine noise hits both alike. */
function stepCosts(rows: TraceRow[], drafter: DrafterKind, steps: number) {
  const small = stepFixture(rows, drafter, 1024);
  const large = stepFixture(rows, drafter, 32768);
  const smallCosts: number[] = [];
  const largeCosts: number[] = [];
  for (let i = 0; i < steps; i++) {
    const a = small();
    const b = large();
    if (i >= 10) {
      smallCosts.push(a);
      largeCosts.push(b);
    }
  }
  const us1k = median(smallCosts);
  const us32k = median(largeCosts);
  return { stepUs1k: round(us1k, 1), stepUs32k: round(us32k, 1), stepCostRatio32kTo1k: round(us32k / us1k, 3) };
}

async function main(): Promise<void> {
  const { rows, source } = loadRows();
  const single = loadSingleRows();
  const ingest = ingestBench(rows);
  const memory = { bytesPerTokenGrouped: await memoryBench(rows), bytesPerTokenSingleSample: await memoryBench(single.rows), singleSampleSource: single.source };
  const sam = draftBench(rows, 'sam');
  const ngram = draftBench(rows, 'ngram');
  const samSteps = stepCosts(rows, 'sam', 210);
  const ngramSteps = stepCosts(rows, 'ngram', 40);
  const result = {
    source,
    node: process.version,
    ...ingest,
    draftUsP50: sam.draftUsP50,
    draftUsP99: sam.draftUsP99,
    bytesPerToken: sam.bytesPerToken,
    ...memory,
    ...samSteps,
    ngram: {
      draftUsP50: ngram.draftUsP50,
      draftUsP99: ngram.draftUsP99,
      bytesPerToken: ngram.bytesPerToken,
      ...ngramSteps,
    },
  };
  for (const [key, value] of Object.entries(result)) if (typeof value !== 'object') process.stderr.write(`${key.padEnd(24)} ${value}\n`);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

await main();
