/**
 * The end-to-end run: a real sidecar process on its embedded defaults, the real Python shim over
 * the real socket, and a simulated vLLM model runner (python/src/sam_sidecar/sim.py) running one
 * rollout step: synthetic rollouts by default, or --traces FILE. The simulated model is greedy
 * over the recording, so the run also checks that every emitted token equals the recorded one.
 * Prints a progress line, then a short summary that explains itself, with the same rows replayed
 * in process by the seed policy and vLLM's n-gram proposer for comparison; --json prints one JSON
 * object instead.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PYTHON, startSidecarProcess } from './client/sidecar-process.js';
import { packageRoot } from './package-root.js';
import { InProcessBackend } from './replay/in-process.js';
import { round } from './replay/report.js';
import { replay } from './replay/simulate.js';
import { syntheticTraces } from './replay/synthetic.js';
import { loadTraceFile, type TraceRow } from './replay/traces.js';

/** What the command line hands the demo (its options parsed and checked there). */
export interface DemoOptions {
  traces?: string;
  json: boolean;
  k: number;
  /** Only the first rows (0: all). */
  limit: number;
  /** Options for the simulated runner (python/src/sam_sidecar/sim.py), as flags; --k and --limit among them. */
  simulatorArgs: string[];
}

interface SimSummary {
  rows: number;
  k: number;
  steps: number;
  emitted: number;
  al: number;
  alDrafted: number;
  draftedSteps: number;
  engineSteps: number;
  engineStepsDrafting: number;
  shimUsP50: number;
  shimUsP99: number;
  failedSteps: number;
  resyncs: number;
  outputMismatches: number;
  tp?: number;
}

export async function runDemo(options: DemoOptions): Promise<number> {
  const { json, k, limit, simulatorArgs: forwarded } = options;
  let traces = options.traces;
  const dir = mkdtempSync(join(tmpdir(), 'sam-demo-'));
  try {
    let rows: TraceRow[];
    let source: string;
    if (traces === undefined) {
      rows = syntheticTraces();
      traces = join(dir, 'synthetic.jsonl');
      writeFileSync(traces, rows.map((row) => JSON.stringify(row)).join('\n') + '\n');
      source = 'synthetic GRPO-like rollouts, 8 prompts x 8 samples';
    } else {
      rows = loadTraceFile(traces);
      source = traces;
    }
    if (limit > 0) rows = rows.slice(0, limit);
    if (!json) process.stderr.write(`demo: starting a sidecar (embedded defaults), then the simulated vLLM runner with the Python shim on ${rows.length} rows\n`);
    const socket = join(dir, 'sidecar.sock');
    const sidecar = await startSidecarProcess(socket);
    let summary: SimSummary;
    try {
      summary = await runSimulator(traces, socket, forwarded, !json);
    } finally {
      await sidecar.stop();
    }
    // The same rows in process, drafting at every step, as the baselines draft.
    const inProcess = async (drafter: 'sam' | 'seed' | 'ngram') =>
      (await replay(rows, new InProcessBackend({ drafter, siblings: drafter === 'sam' }), { k, siblings: drafter === 'sam' ? 'live' : 'none' })).al;
    const drafting = { sam: await inProcess('sam'), seed: await inProcess('seed'), ngram: await inProcess('ngram') };
    if (json) {
      process.stdout.write(`${JSON.stringify({ source, ...summary, inProcessAl: { sam: round(drafting.sam, 4), seed: round(drafting.seed, 4), ngram: round(drafting.ngram, 4) } })}\n`);
    } else {
      process.stdout.write(`${humanSummary(source, summary, drafting)}\n`);
    }
    return summary.outputMismatches === 0 ? 0 : 1;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function runSimulator(traces: string, socket: string, forwarded: string[], progress: boolean): Promise<SimSummary> {
  return new Promise<SimSummary>((resolve, reject) => {
    const child = spawn(PYTHON, ['-m', 'sam_sidecar.sim', '--traces', traces, '--socket', socket, '--json', ...(progress ? ['--progress'] : []), ...forwarded], {
      env: { ...process.env, PYTHONPATH: [join(packageRoot(), 'python', 'src'), process.env.PYTHONPATH].filter(Boolean).join(':') },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      const last = stdout.trim().split('\n').pop() ?? '';
      try {
        resolve(JSON.parse(last) as SimSummary);
      } catch {
        reject(new Error(`the simulated runner exited with ${code} without a summary${stdout ? `: ${stdout.slice(-500)}` : ''}`));
      }
    });
  });
}

function humanSummary(source: string, s: SimSummary, drafting: { sam: number; seed: number; ngram: number }): string {
  const f = (value: number, digits = 2) => value.toFixed(digits);
  const share = s.engineSteps > 0 ? (100 * s.engineStepsDrafting) / s.engineSteps : 0;
  return [
    '',
    `sam-sidecar demo: ${s.rows} rows (${source}), K = ${s.k}${s.tp ? `, ${s.tp} tensor-parallel ranks` : ''}`,
    '',
    `  outputs unchanged          ${s.outputMismatches === 0 ? 'yes' : `NO: ${s.outputMismatches} steps emitted other tokens`} (every emitted token checked against the recording)`,
    `  drafting quality           AL ${f(drafting.sam)} with sam-sidecar, against ${f(drafting.seed)} for the seed policy and ${f(drafting.ngram)} for vLLM's n-gram`,
    '                             proposer (the same rows in process, drafting at every step)',
    `  through the sidecar        the default gate drafted in ${f(share, 0)} % of the ${s.engineSteps} engine steps (those with at most 32 running`,
    `                             requests: the long tail); AL ${f(s.alDrafted)} on the request steps that got a draft, ${f(s.al)} over all`,
    `  shim cost per step         p50 ${f(s.shimUsP50 / 1000, 3)} ms, p99 ${f(s.shimUsP99 / 1000, 3)} ms; ${s.failedSteps} steps failed open, ${s.resyncs} resyncs`,
    '',
    'What the figures mean: AL (acceptance length) is the tokens one verification step emits on',
    'average; 1.00 means no speed-up, K + 1 the most. Drafts are verified by lossless rejection',
    "sampling, so they change speed, never tokens. The gate switches drafting off in big batches,",
    'where verifying costs more than it saves; set VLLM_SPECULATIVE_BATCH_SIZE_THRE=0 to draft always,',
    'or gate.mode "calibrated" to learn the crossover from the engine\'s own step times.',
  ].join('\n');
}
