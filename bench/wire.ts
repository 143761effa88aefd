/**
 * npm run bench:wire — Step round trips through a real sidecar process, batch 128, 1-4 new tokens
 * per request per step from synthetic GRPO-like rollouts (8 prompts x 16 samples; requests that
 * finish are replaced, as in a rollout). Measured from Python (the shim's stdlib fast-lane client
 * and grpcio) and from Node (this repo's clients), plus the sustained steps/s of one server with
 * 4 engines stepping at once (4 Python processes). Prints one JSON object on the last line.
 *
 * Python numbers are the shim's per-step cost (its session builds the deltas from token rows, round
 * trips and unpacks: fastLaneUs*, grpcUs*), the awaited call within it (encode, round trip, decode:
 * fastLaneCallUs*) and an empty PING round trip on the same connection (pingUs*, the floor every
 * call pays here); Node numbers a prepared batch's round trip. Numbers are reported, never gated:
 * machines are shared and noisy.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FastLaneClient, GrpcClient, type StepClient } from '../src/client/clients.js';
import { PYTHON, startSidecarProcess } from '../src/client/sidecar-process.js';
import { RollingBatch } from '../src/replay/rolling-batch.js';
import { percentile } from '../src/replay/simulate.js';
import { syntheticTraces } from '../src/replay/synthetic.js';
import type { TraceRow } from '../src/replay/traces.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url)); // dist-bench/bench -> repo root
const BATCH = Number(process.env.BENCH_BATCH ?? 128);
const STEPS = Number(process.env.BENCH_STEPS ?? 2000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);

async function nodeLatency(client: StepClient, rows: TraceRow[], steps: number, engineId: string): Promise<number[]> {
  const work = new RollingBatch(rows, BATCH, 'node-req-'); // the workload of bench/wire_client.py
  const samples: number[] = [];
  for (let step = 1; step <= steps + 1; step++) {
    const batch = work.next(engineId, step, 3);
    const started = process.hrtime.bigint();
    await client.step(batch);
    if (step > 1) samples.push(Number(process.hrtime.bigint() - started) / 1000);
  }
  return samples.sort((a, b) => a - b);
}

function runPython(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [join(ROOT, 'bench', 'wire_client.py'), ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`${PYTHON} wire_client.py exited with ${code}`));
      resolve(JSON.parse(out.trim().split('\n').pop()!));
    });
  });
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'sam-bench-wire-'));
  const socket = join(dir, 'sidecar.sock');
  const rowsFile = join(dir, 'rows.jsonl');
  const rows = syntheticTraces({ groups: 8, samplesPerGroup: 16 });
  writeFileSync(rowsFile, rows.map((row) => JSON.stringify(row)).join('\n') + '\n');
  // Gate off (threshold 0): every step drafts, the costlier case (the default gate would not
  // speculate at batch 128).
  const server = await startSidecarProcess(socket, { VLLM_SPECULATIVE_BATCH_SIZE_THRE: '0' });
  try {
    const hasPython = spawnSync(PYTHON, ['-c', 'import numpy'], { stdio: 'ignore' }).status === 0;
    const hasGrpcio = hasPython && spawnSync(PYTHON, ['-c', 'import grpc'], { stdio: 'ignore' }).status === 0;
    const python = hasPython
      ? await runPython(['--socket', socket, '--rows', rowsFile, '--batch', String(BATCH), '--steps', String(STEPS), ...(hasGrpcio ? ['--grpc', `unix:${socket}.grpc`] : [])])
      : {};

    const fast = await FastLaneClient.connect(socket);
    const nodeFast = await nodeLatency(fast, rows, STEPS, 'bench-node-fast');
    await fast.close();
    const grpc = new GrpcClient(`unix:${socket}.grpc`);
    const nodeGrpc = await nodeLatency(grpc, rows, Math.max(200, STEPS >> 2), 'bench-node-grpc');
    await grpc.close();

    let stepsPerSec4Engines = 0;
    if (hasPython) {
      // Four engines on a 2-core machine: the clients' polls yield the CPU, so the server still gets it.
      const engines = await Promise.all(
        [0, 1, 2, 3].map((i) =>
          runPython(['--socket', socket, '--rows', rowsFile, '--batch', String(BATCH), '--mode', 'throughput', '--seconds', String(SECONDS), '--engine-index', String(i)]),
        ),
      );
      stepsPerSec4Engines = engines.reduce((sum, e) => sum + e.stepsPerSec, 0);
    }
    const round1 = (x: number) => Math.round(x * 10) / 10;
    const result = {
      batch: BATCH,
      gate: 'off: every step drafts',
      steps: STEPS,
      python: hasPython ? PYTHON : null,
      ...python,
      nodeFastLaneUsP50: round1(percentile(nodeFast, 0.5)),
      nodeFastLaneUsP99: round1(percentile(nodeFast, 0.99)),
      nodeGrpcUsP50: round1(percentile(nodeGrpc, 0.5)),
      nodeGrpcUsP99: round1(percentile(nodeGrpc, 0.99)),
      stepsPerSec4Engines: Math.round(stepsPerSec4Engines),
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
