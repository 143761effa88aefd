/**
 * The end-to-end run: a real sidecar process, the real Python shim over the real socket, and a
 * simulated vLLM model runner (python/src/sam_sidecar/sim.py) replaying rollouts: synthetic ones by
 * default, or --traces FILE. Prints the run's report; with --json one JSON object on the last line
 * (al, shimUsP50, shimUsP99, ...). The simulated model is greedy over the recording, so the run
 * also checks that every emitted token equals the recorded one.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PYTHON, startSidecarProcess } from './client/sidecar-process.js';
import { packageRoot } from './package-root.js';
import { DEMO_USAGE } from './usage.js';
import { syntheticTraces } from './replay/synthetic.js';

const PASS_THROUGH = new Set(['--siblings', '--k', '--tp', '--preempt-every', '--limit', '--deadline-ms']);

export async function runDemo(argv: string[]): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'sam-demo-'));
  const forwarded: string[] = [];
  let traces: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--traces') traces = argv[++i];
    else if (arg === '--json') forwarded.push(arg);
    else if (PASS_THROUGH.has(arg) && i + 1 < argv.length) forwarded.push(arg, argv[++i]);
    else if (arg === '--help' || arg === '-h') {
      process.stdout.write(`${DEMO_USAGE}\n`);
      return 0;
    } else {
      process.stderr.write(`unknown argument ${arg}\n${DEMO_USAGE}\n`);
      return 2;
    }
  }
  if (traces === undefined) {
    traces = join(dir, 'synthetic.jsonl');
    writeFileSync(traces, syntheticTraces().map((row) => JSON.stringify(row)).join('\n') + '\n');
    process.stderr.write(`demo: synthetic rollouts (8 prompts x 8 samples) in ${traces}\n`);
  }
  const socket = join(dir, 'sidecar.sock');
  const sidecar = await startSidecarProcess(socket);
  try {
    return await new Promise<number>((resolve, reject) => {
      const child = spawn(PYTHON, ['-m', 'sam_sidecar.sim', '--traces', traces!, '--socket', socket, ...forwarded], {
        env: { ...process.env, PYTHONPATH: [join(packageRoot(), 'python', 'src'), process.env.PYTHONPATH].filter(Boolean).join(':') },
        stdio: 'inherit',
      });
      child.on('error', reject);
      child.on('exit', (code) => resolve(code ?? 1));
    });
  } finally {
    await sidecar.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
