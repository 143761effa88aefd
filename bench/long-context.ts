/**
 * npm run bench:long-context — a batch of long requests a sidecar has never seen (new long
 * requests, or every request after a sidecar restart), sent by the Python shim with its default
 * deadline: how long until drafting resumes for (nearly) every request, the slowest step call on
 * the way, and the sidecar's peak RSS. One fresh sidecar per context length and runner step time
 * (BENCH_CONTEXTS, default "32768,200000"; BENCH_MODEL_MS, the forward pass between step calls,
 * default "5,20": a small model's decode step and a typical one; BENCH_REQUESTS, default 128). The
 * gate is off so every step asks for drafts. Beside the client's view, the sidecar's own (its
 * /metrics histograms): how many step calls and idle slices took longer than the deadline, and
 * the bound of the slowest one's bucket, which tells time the sidecar held a call from time the
 * client lost elsewhere. Prints one JSON object on the last line; nothing is asserted.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freeLoopbackPort, histogramBuckets, PYTHON, startSidecarProcess } from '../src/client/sidecar-process.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url)); // dist-bench/bench -> repo root
const CONTEXTS = (process.env.BENCH_CONTEXTS ?? '32768,200000').split(',').map(Number);
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 128);
/** The runner's forward pass between step calls, per run: back to back, and a decode step's typical time. */
const MODEL_MS = (process.env.BENCH_MODEL_MS ?? '5,20').split(',').map(Number);

function rssBytes(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) * 1024 : 0;
}

/**
 * From a Prometheus text exposition: how many observations of a histogram (series matching
 * `labels`) exceeded `overSeconds`, and the upper bound of the bucket holding the slowest one.
 */
function histogramTail(metrics: string, name: string, labels: string, overSeconds: number): { over: number; slowestUpToMs: number | null } {
  const buckets = [...histogramBuckets(metrics, name, labels)].map(([le, count]) => [le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le), count] as const);
  const total = buckets.at(-1)?.[1] ?? 0;
  const within = buckets.filter(([le]) => le <= overSeconds).at(-1)?.[1] ?? 0;
  const slowest = buckets.find(([, count]) => count === total);
  return { over: total - within, slowestUpToMs: slowest === undefined || !Number.isFinite(slowest[0]) ? null : slowest[0] * 1000 };
}

function runClient(args: string[]): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [join(ROOT, 'bench', 'long_context_client.py'), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop()!)) : reject(new Error(`long_context_client.py exited with ${code}`))));
  });
}

async function main(): Promise<void> {
  const runs: Array<Record<string, unknown>> = [];
  for (const context of CONTEXTS) for (const modelMs of MODEL_MS) {
    const dir = mkdtempSync(join(tmpdir(), 'sam-bench-long-'));
    const socket = join(dir, 'sidecar.sock');
    const httpPort = await freeLoopbackPort();
    const server = await startSidecarProcess(socket, { VLLM_SPECULATIVE_BATCH_SIZE_THRE: '0', SAM_SIDECAR_HTTP_PORT: String(httpPort) });
    let peak = 0;
    const pid = server.child.pid!;
    const sampler = setInterval(() => (peak = Math.max(peak, rssBytes(pid))), 50);
    try {
      const result = await runClient(['--socket', socket, '--requests', String(REQUESTS), '--context', String(context), '--model-ms', String(modelMs), '--limit-s', String(Math.max(30, context / 2000))]);
      const metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
      const deadlineS = Number(result.deadlineMs) / 1000;
      const steps = histogramTail(metrics, 'sam_sidecar_step_duration_seconds', 'transport="uds"', deadlineS);
      const slices = histogramTail(metrics, 'sam_sidecar_idle_slice_duration_seconds', '', deadlineS);
      runs.push({
        ...result,
        sidecarPeakRssMiB: Math.round(Math.max(peak, rssBytes(pid)) / 2 ** 20),
        sidecarStepsOverDeadline: steps.over,
        sidecarSlowestStepUpToMs: steps.slowestUpToMs,
        sidecarIdleSlicesOverDeadline: slices.over,
        sidecarSlowestIdleSliceUpToMs: slices.slowestUpToMs,
      });
    } finally {
      clearInterval(sampler);
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }
  process.stdout.write(`${JSON.stringify({ runs })}\n`);
}

await main();
