/**
 * npm run bench:compaction — what shrinking a retired group costs the steps around it.
 *   - slices: one group's automaton (BENCH_TOKENS, default "274000,1000000" tokens, random) is
 *     compacted in the slices the server's idle work uses, its new arrays allocated on the spot
 *     (heap) or prepared by the worker thread (worker), side by side. A slice's time is the
 *     longest a step arriving during it waits.
 *   - server: a sidecar process; one client steps a small request back to back (one new token per
 *     step, the next step sent when the reply is in): half a second while nothing else happens,
 *     then half a second from the step that retires a long group (BENCH_SERVER_TOKENS, default
 *     274000) while the group is shrunk; BENCH_ROUNDS (default 5) groups, one after another. Step
 *     round trips in both windows, and the server's own timing of the idle slices after retires.
 * Prints one JSON object; nothing is asserted.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { FastLaneClient, GrpcClient } from '../src/client/clients.js';
import { freeLoopbackPort, histogramBuckets, startSidecarProcess } from '../src/client/sidecar-process.js';
import { SuffixAutomaton } from '../src/core/automaton.js';
import type { StepBatch } from '../src/core/step-service.js';
import { type ArraySupply, HEAP_ARRAYS } from '../src/core/typed.js';
import { PrefaultedArrays } from '../src/server/prefaulted-arrays.js';

const TOKENS = (process.env.BENCH_TOKENS ?? '274000,1000000').split(',').map(Number);
const SERVER_TOKENS = Number(process.env.BENCH_SERVER_TOKENS ?? 274_000);
/** What one idle slice copies in the server (COMPACTION_ELEMENTS_PER_SLICE). */
const SLICE_ELEMENTS = 1 << 15;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
/** Steps after a retire are timed this long: the 274k-token group's compaction takes about 50 ms in process. */
const WINDOW_MS = 500;
const CHUNK_TOKENS = 100_000;
const NO_PROMPT = 0xffffffff;

function xorshift(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

function randomText(length: number, seed: number): Uint32Array {
  const next = xorshift(seed);
  const text = new Uint32Array(length);
  for (let i = 0; i < length; i++) text[i] = 1 + (next() % 30_000);
  return text;
}

function summary(ms: number[]): { count: number; p50: number; p99: number; max: number } {
  const sorted = [...ms].sort((a, b) => a - b);
  const at = (q: number) => Number(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))].toFixed(3));
  return { count: sorted.length, p50: at(0.5), p99: at(0.99), max: Number(sorted[sorted.length - 1].toFixed(3)) };
}

/** One group compacted slice by slice; waits (not timed as a slice) while the supply prepares an array. */
async function compactInSlices(tokens: number, supply: ArraySupply, whenReady: () => Promise<void>) {
  const automaton = new SuffixAutomaton({ initialTokens: 1024 });
  const cursor = automaton.openCursor();
  const text = randomText(tokens, 1);
  for (let i = 0; i < tokens; i++) automaton.append(cursor, text[i]);
  const slices: number[] = [];
  const slow: Array<[number, number]> = []; // [start, end] of slices over 1 ms
  const collections: Array<[number, number]> = [];
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) collections.push([entry.startTime, entry.startTime + entry.duration]);
  });
  observer.observe({ entryTypes: ['gc'] });
  const started = performance.now();
  for (;;) {
    const t = performance.now();
    const done = automaton.compactSome(SLICE_ELEMENTS, supply);
    const end = performance.now();
    slices.push(end - t);
    if (end - t > 1) slow.push([t, end]);
    if (done) break;
    if (supply.awaiting) await whenReady();
  }
  const wallMs = Number((performance.now() - started).toFixed(1));
  await new Promise((resolve) => setTimeout(resolve, 10)); // gc entries are delivered asynchronously
  observer.disconnect();
  // A slow slice during which V8 collected garbage waited for the collector, not for the copy.
  const withGc = slow.filter(([from, to]) => collections.some(([gcFrom, gcTo]) => gcFrom < to && gcTo > from)).length;
  return { tokens, ...summary(slices), over1ms: slow.length, over1msDuringGc: withGc, wallMs };
}

async function slicesBench() {
  const results = [];
  const worker = new PrefaultedArrays();
  const whenReady = () => new Promise<void>((resolve) => (worker.onReady = resolve));
  try {
    for (const tokens of TOKENS) {
      results.push({ arrays: 'heap', ...(await compactInSlices(tokens, HEAP_ARRAYS, whenReady)) });
      results.push({ arrays: 'worker', ...(await compactInSlices(tokens, worker, whenReady)) });
    }
  } finally {
    await worker.close();
  }
  return results;
}

/** sam_sidecar_idle_slice_duration_seconds: slices so far at or under each bucket's bound (le -> count). */
async function idleSliceBuckets(port: number): Promise<Map<string, number>> {
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return histogramBuckets(metrics, 'sam_sidecar_idle_slice_duration_seconds');
}

function batch(stepId: bigint, id: string, start: number, tokens: Uint32Array, promptLength: number, finished: string[] = []): StepBatch {
  const rows = tokens.length > 0 ? 1 : 0;
  return {
    engineId: 'bench',
    stepId,
    numReqs: rows,
    prefill: false,
    k: 3,
    reqIds: rows ? [id] : [],
    starts: Uint32Array.from(rows ? [start] : []),
    counts: Uint32Array.from(rows ? [tokens.length] : []),
    promptLengths: Uint32Array.from(rows ? [promptLength] : []),
    tokens,
    finished,
  };
}

async function serverBench() {
  const dir = mkdtempSync(join(tmpdir(), 'sam-bench-compaction-'));
  const socket = join(dir, 'sidecar.sock');
  const port = await freeLoopbackPort();
  const server = await startSidecarProcess(socket, { SAM_SIDECAR_HTTP_PORT: String(port) });
  const client = await FastLaneClient.connect(socket);
  const grpc = new GrpcClient(`unix:${socket}.grpc`);
  let stepId = 1n;
  try {
    // The small request: its own prompt, one token per step.
    const small = randomText(ROUNDS * 100_000 + 64, 3);
    let length = 32;
    await client.step(batch(stepId++, 'small', 0, small.subarray(0, length), 16));
    const stepSmall = async (finished: string[] = []): Promise<number> => {
      const t = performance.now();
      await client.step(batch(stepId++, 'small', length, small.subarray(length, length + 1), NO_PROMPT, finished));
      length++;
      return performance.now() - t;
    };
    const baseline: number[] = [];
    const during: number[] = [];
    const shrunk: number[] = [];
    const idleSlices: Record<string, number> = {};
    for (let round = 0; round < ROUNDS; round++) {
      // A long request of its own prompt, in chunks, then until the sidecar has indexed all of it.
      const id = `long-${round}`;
      const long = randomText(SERVER_TOKENS, 100 + round);
      for (let at = 0; at < long.length; at += CHUNK_TOKENS) {
        const chunk = long.subarray(at, Math.min(long.length, at + CHUNK_TOKENS));
        await client.step(batch(stepId++, id, at, chunk, at === 0 ? 64 : NO_PROMPT));
      }
      while ((await grpc.stats()).backlogTokens > 0) await new Promise((resolve) => setTimeout(resolve, 20));
      // As long a window just before, with nothing retiring: the same number of chances at the VM's noise.
      const quiet = performance.now();
      while (performance.now() - quiet < WINDOW_MS) baseline.push(await stepSmall());
      const before = (await grpc.stats()).bytes;
      const slicesBefore = await idleSliceBuckets(port);
      // From the step that retires the group, for WINDOW_MS: its compaction is idle work in that time.
      const retired = performance.now();
      during.push(await stepSmall([id]));
      while (performance.now() - retired < WINDOW_MS) during.push(await stepSmall());
      shrunk.push(before - (await grpc.stats()).bytes);
      // The server's own timing of the idle slices in the window (compaction, and the small request's corpus text).
      const slicesAfter = await idleSliceBuckets(port);
      for (const [le, count] of slicesAfter) idleSlices[`upTo${le}s`] = (idleSlices[`upTo${le}s`] ?? 0) + count - (slicesBefore.get(le) ?? 0);
    }
    return { groupTokens: SERVER_TOKENS, rounds: ROUNDS, windowMs: WINDOW_MS, shrunkMiB: shrunk.map((bytes) => Number((bytes / 2 ** 20).toFixed(1))), baseline: summary(baseline), duringCompaction: summary(during), idleSlicesDuringCompaction: idleSlices };
  } finally {
    await client.close();
    await grpc.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const slices = await slicesBench();
const server = await serverBench();
process.stdout.write(`${JSON.stringify({ sliceElements: SLICE_ELEMENTS, hugePages: process.env.GLIBC_TUNABLES ?? '', slices, server })}\n`);
