/**
 * npm run bench:long-context — a batch of long requests a sidecar has never seen (new long
 * requests, or every request after a sidecar restart), sent by the Python shim with its default
 * deadline: how long until drafting resumes for (nearly) every request, the slowest step call on
 * the way, and the sidecar's peak RSS. One fresh sidecar per context length and runner step time
 * (BENCH_CONTEXTS, default "32768,200000"; BENCH_MODEL_MS, the forward pass between step calls,
 * default "5,20": a small model's decode step and a typical one; BENCH_REQUESTS, default 128). The
 * gate is off so every step asks for drafts. Prints one JSON object on the last line; nothing is
 * asserted.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PYTHON, startSidecarProcess } from '../src/client/sidecar-process.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url)); // dist-bench/bench -> repo root
const CONTEXTS = (process.env.BENCH_CONTEXTS ?? '32768,200000').split(',').map(Number);
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 128);
/** The runner's forward pass between step calls, per run: back to back, and a decode step's typical time. */
const MODEL_MS = (process.env.BENCH_MODEL_MS ?? '5,20').split(',').map(Number);

function rssBytes(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) * 1024 : 0;
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
    const server = await startSidecarProcess(socket, { VLLM_SPECULATIVE_BATCH_SIZE_THRE: '0' });
    let peak = 0;
    const pid = server.child.pid!;
    const sampler = setInterval(() => (peak = Math.max(peak, rssBytes(pid))), 50);
    try {
      const result = await runClient(['--socket', socket, '--requests', String(REQUESTS), '--context', String(context), '--model-ms', String(modelMs), '--limit-s', String(Math.max(30, context / 2000))]);
      runs.push({ ...result, sidecarPeakRssMiB: Math.round(Math.max(peak, rssBytes(pid)) / 2 ** 20) });
    } finally {
      clearInterval(sampler);
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }
  process.stdout.write(`${JSON.stringify({ runs })}\n`);
}

await main();
