/**
 * npm run bench:memory-soak — what a sidecar process holds under inputs meant to exhaust it, each
 * on a fresh sidecar with a byte budget (BENCH_MAX_BYTES, default 256 MiB, memory.maxBytes) and a
 * frame-buffer bound (BENCH_MAX_BUFFERED, default 256 MiB, limits.maxBufferedBytes):
 *   - tinyRequests: BENCH_REQUESTS (200k) live 3-token requests, each with its own prompt;
 *   - engineIds: as many steps, each from a new engine id;
 *   - partialFrames: 4 connections each sending 200 MiB of a frame that never completes.
 * Reports the peak RSS of each against budget = maxBytes + maxBufferedBytes + the runtime's own
 * (the RSS of the idle sidecar), and what the sidecar accounted and evicted. Nothing is asserted.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FastLaneClient } from '../src/client/clients.js';
import { startSidecarProcess } from '../src/client/sidecar-process.js';
import type { StepBatch } from '../src/core/step-service.js';

const MAX_BYTES = Number(process.env.BENCH_MAX_BYTES ?? 256 * 2 ** 20);
const MAX_BUFFERED = Number(process.env.BENCH_MAX_BUFFERED ?? 256 * 2 ** 20);
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 200_000);
const PER_STEP = 4000;
const MiB = 2 ** 20;

function rss(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) * 1024 : 0;
}

function tinyBatch(engineId: string, stepId: bigint, first: number, n: number): StepBatch {
  const tokens = new Uint32Array(3 * n);
  for (let j = 0; j < n; j++) tokens.set([first + j + 1, 7, 9], 3 * j);
  return {
    engineId,
    stepId,
    numReqs: n,
    prefill: false,
    k: 3,
    reqIds: Array.from({ length: n }, (_, j) => `tiny-${first + j}`),
    starts: new Uint32Array(n),
    counts: new Uint32Array(n).fill(3),
    promptLengths: new Uint32Array(n).fill(2),
    tokens,
    finished: [],
  };
}

async function tinyRequests(client: FastLaneClient): Promise<void> {
  let step = 0n;
  for (let first = 0; first < REQUESTS; first += PER_STEP) await client.step(tinyBatch('soak', ++step, first, Math.min(PER_STEP, REQUESTS - first)));
}

async function engineIds(client: FastLaneClient): Promise<void> {
  for (let i = 0; i < REQUESTS; i++) await client.step(tinyBatch(`engine-${i}`, 1n, i, 1));
}

/** Four connections, each a frame announcing 256 MiB of which 200 MiB arrive, never the rest. */
async function partialFrames(socket: string): Promise<void> {
  const chunk = Buffer.alloc(MiB, 1);
  const header = Buffer.alloc(12);
  header.writeUInt32LE(256 * MiB, 0);
  header.writeUInt16LE(0x5341, 4);
  header.writeUInt8(1, 6);
  header.writeUInt8(1, 7);
  const senders = [0, 1, 2, 3].map(
    () =>
      new Promise<void>((resolve) => {
        const conn = connect(socket);
        conn.on('error', () => resolve());
        conn.on('close', () => resolve());
        conn.on('connect', async () => {
          conn.write(header);
          for (let i = 0; i < 200 && !conn.destroyed; i++) if (!conn.write(chunk)) await new Promise((r) => conn.once('drain', r));
          setTimeout(() => {
            conn.destroy();
            resolve();
          }, 500);
        });
      }),
  );
  await Promise.all(senders);
}

async function run(name: string, work: (client: FastLaneClient, socket: string) => Promise<void>): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'sam-bench-soak-'));
  const socket = join(dir, 'sidecar.sock');
  const config = join(dir, 'config.json');
  writeFileSync(config, JSON.stringify({ memory: { maxBytes: MAX_BYTES }, limits: { maxBufferedBytes: MAX_BUFFERED, maxMessageBytes: 512 * MiB } }));
  const server = await startSidecarProcess(socket, { SAM_SIDECAR_CONFIG: config, SAM_SIDECAR_HTTP_PORT: '0' });
  const pid = server.child.pid!;
  const idle = rss(pid);
  let peak = idle;
  const sampler = setInterval(() => (peak = Math.max(peak, rss(pid))), 20);
  const client = await FastLaneClient.connect(socket);
  const started = performance.now();
  try {
    await work(client, socket);
    peak = Math.max(peak, rss(pid));
    const budget = MAX_BYTES + MAX_BUFFERED + idle;
    return { name, seconds: Math.round((performance.now() - started) / 100) / 10, idleRssMiB: Math.round(idle / MiB), peakRssMiB: Math.round(peak / MiB), budgetMiB: Math.round(budget / MiB), peakToBudget: Math.round((peak / budget) * 1000) / 1000 };
  } finally {
    clearInterval(sampler);
    await client.close().catch(() => undefined);
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const runs = [await run('tinyRequests', (client) => tinyRequests(client)), await run('engineIds', (client) => engineIds(client)), await run('partialFrames', (_client, socket) => partialFrames(socket))];
process.stdout.write(`${JSON.stringify({ maxBytes: MAX_BYTES, maxBufferedBytes: MAX_BUFFERED, requests: REQUESTS, runs })}\n`);
