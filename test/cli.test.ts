import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { syntheticTraces } from '../src/replay/synthetic.js';
import { OPENSSL, privateCa, REDIS_SERVER, RedisServer } from './redis.js';

const CLI = new URL('../dist/cli.js', import.meta.url).pathname;

describe('command line (built dist/cli.js; `npm test` builds first)', () => {
  it('is built', () => {
    expect(existsSync(CLI), 'run `npm run build` first').toBe(true);
  });

  it('replays a token-id JSONL file and prints one JSON object on the last line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sam-cli-'));
    const traces = join(dir, 'traces.jsonl');
    writeFileSync(traces, syntheticTraces({ groups: 2, samplesPerGroup: 3 }).map((r) => JSON.stringify(r)).join('\n'));
    const plot = join(dir, 'plot.svg');
    const stdout = execFileSync('node', [CLI, 'replay', '--traces', traces, '--k', '3', '--drafter', 'sam', '--siblings', 'live', '--json', '--plot', plot], { encoding: 'utf8' });
    const lines = stdout.trim().split('\n');
    const summary = JSON.parse(lines[lines.length - 1]);
    for (const key of ['al', 'alDrafted', 'steps', 'emitted', 'proposed', 'accepted', 'acceptedPerPos', 'proposeUsP50', 'proposeUsP99']) expect(summary).toHaveProperty(key);
    expect(summary.acceptedPerPos).toHaveLength(3);
    expect(summary.al).toBeGreaterThan(1);
    expect(stdout).toContain('AL (emitted / step)');
    expect(readFileSync(plot, 'utf8')).toMatch(/^<svg[\s\S]*<\/svg>\n$/);
  });

  it('runs on built-in synthetic rollouts when given no input', () => {
    const stdout = execFileSync('node', [CLI, 'replay', '--json', '--quiet'], { encoding: 'utf8' });
    expect(JSON.parse(stdout.trim().split('\n').pop()!).steps).toBeGreaterThan(0);
  });

  it('caps the draft length by batch size when asked (--k-by-batch)', () => {
    const replay = (...extra: string[]) => JSON.parse(execFileSync('node', [CLI, 'replay', '--k', '8', '--json', '--quiet', ...extra], { encoding: 'utf8' }).trim().split('\n').pop()!);
    const full = replay();
    const capped = replay('--k-by-batch', '1:8,64:2');
    expect(capped.proposed).toBeLessThan(full.proposed);
    expect(capped.acceptedPerPos.slice(2).reduce((a: number, b: number) => a + b, 0)).toBeGreaterThan(0); // 8 at one request left
  });

  it('reports every invalid argument at once, naming each flag', () => {
    const run = spawnSync('node', [CLI, 'replay', '--k', '0', '--drafter', 'eagle', '--siblings', 'sometimes', '--k-by-batch', '32:3,8:8'], { encoding: 'utf8' });
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('--k:');
    expect(run.stderr).toContain('--drafter');
    expect(run.stderr).toContain('--siblings');
    expect(run.stderr).toContain('--k-by-batch: batch sizes must increase');
    // Flags that only mean something together are checked once each flag is valid on its own.
    const alone = spawnSync('node', [CLI, 'replay', '--exchange-every', '2'], { encoding: 'utf8' });
    expect(alone.status).toBe(2);
    expect(alone.stderr).toContain('--exchange-every: engines exchange text only through --redis');
  });

  it('names the file, line and field of a bad trace row', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sam-cli-'));
    const traces = join(dir, 'bad.jsonl');
    writeFileSync(traces, '{"prompt":[1],"output":[2]}\n{"prompt":[1],"output":"oops"}\n');
    const run = spawnSync('node', [CLI, 'replay', '--traces', traces], { encoding: 'utf8' });
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/TRACE_INVALID.*output.*bad\.jsonl:2/);
  });

  it('says in one line, without a stack trace, that a trace file cannot be read', () => {
    const run = spawnSync('node', [CLI, 'replay', '--traces', '/nonexistent/rollout.jsonl'], { encoding: 'utf8' });
    expect(run.status).toBe(2);
    expect(run.stderr.trim()).toMatch(/^TRACE_INVALID: .*cannot read \/nonexistent\/rollout\.jsonl: ENOENT$/);
  });

  it('refuses drafting flags with --via: the running sidecar\'s config decides how it drafts', () => {
    const run = spawnSync('node', [CLI, 'replay', '--via', 'uds', '--drafter', 'seed', '--min-match', '2'], { encoding: 'utf8' });
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/INVALID_ARGUMENT.*--drafter, --min-match would not apply/);
  });

  it('replays steps in sequence from several files and reports AL per step, the tail and engines', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sam-cli-'));
    const rows = syntheticTraces({ groups: 3, samplesPerGroup: 4 });
    const [first, second] = [join(dir, 'a.jsonl'), join(dir, 'b.jsonl')];
    writeFileSync(first, rows.filter((_, i) => i % 4 < 2).map((r) => JSON.stringify(r)).join('\n'));
    writeFileSync(second, rows.filter((_, i) => i % 4 >= 2).map((r) => JSON.stringify({ ...r, id: `${r.id}-b` })).join('\n'));
    const stdout = execFileSync('node', [CLI, 'replay', '--traces', first, '--traces', second, '--engines', '2', '--turns', '--json', '--quiet'], { encoding: 'utf8' });
    const summary = JSON.parse(stdout.trim().split('\n').pop()!);
    expect(summary).toMatchObject({ rolloutSteps: 2, engines: 2, turns: true, maxNumSeqs: 128 });
    expect(summary.alPerStep).toHaveLength(2);
    expect(summary.alPerEngine).toHaveLength(2);
    expect(summary.alTail).toBeGreaterThan(1);
  });

  it('runs the demo end to end and explains it: outputs unchanged, AL against the baselines, how often the gate drafted', () => {
    const run = spawnSync('node', [CLI, 'demo', '--limit', '24'], { encoding: 'utf8', timeout: 120_000 });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/outputs unchanged\s+yes/);
    expect(run.stdout).toMatch(/drafting quality\s+AL \d\.\d\d with sam-sidecar, against \d\.\d\d for the seed policy and \d\.\d\d for vLLM's n-gram/);
    expect(run.stdout).toContain('What the figures mean');
    const json = spawnSync('node', [CLI, 'demo', '--limit', '24', '--json'], { encoding: 'utf8', timeout: 120_000 });
    const summary = JSON.parse(json.stdout.trim().split('\n').pop()!);
    expect(summary).toMatchObject({ rows: 24, outputMismatches: 0 });
    expect(summary.inProcessAl.sam).toBeGreaterThan(summary.inProcessAl.seed);
  }, 240_000);

  it('has --help for every command, --version, and one-line errors with exit code 2 for user mistakes', () => {
    for (const command of ['serve', 'replay', 'rollout', 'synth', 'demo']) {
      const help = spawnSync('node', [CLI, command, '--help'], { encoding: 'utf8' });
      expect({ command, status: help.status }).toEqual({ command, status: 0 });
      expect(help.stdout).toContain(`Usage: sam-sidecar ${command}`);
    }
    const version = spawnSync('node', [CLI, '--version'], { encoding: 'utf8' });
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    for (const [args, message] of [
      [['bogus'], /unknown command 'bogus'/],
      [['replay', '--bogus'], /unknown option '--bogus'/],
      [['replay', '--k'], /option '--k <n>' argument missing/],
      [['synth'], /required option '--out <file>' not specified/],
    ] as const) {
      const run = spawnSync('node', [CLI, ...args], { encoding: 'utf8' });
      expect({ args, status: run.status }).toEqual({ args, status: 2 });
      expect(run.stderr).toMatch(message);
      expect(run.stderr).not.toMatch(/\n\s+at /); // no stack trace
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
    }
  });

  it.skipIf(REDIS_SERVER === null || OPENSSL === null)('replays engines that share through a Redis serving TLS only, with its private CA (--redis-tls-ca)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sam-cli-'));
    const traces = join(dir, 'traces.jsonl');
    writeFileSync(traces, syntheticTraces({ groups: 2, samplesPerGroup: 4 }).map((r) => JSON.stringify(r)).join('\n'));
    const tls = privateCa();
    const redis = await RedisServer.start(tls);
    try {
      const replay = (...extra: string[]) => spawnSync('node', [CLI, 'replay', '--traces', traces, '--engines', '2', '--redis', redis.url, '--json', '--quiet', ...extra], { encoding: 'utf8' });
      const shared = replay('--redis-tls-ca', tls.ca);
      expect(shared.status, shared.stderr).toBe(0);
      expect(JSON.parse(shared.stdout.trim().split('\n').pop()!).engines).toBe(2);
      // Without it, the system's CAs: the server's certificate chains to none of them. The error names the URL without its password.
      const untrusted = spawnSync('node', [CLI, 'replay', '--traces', traces, '--engines', '2', '--redis', `rediss://:hunter2@127.0.0.1:${redis.port}`], { encoding: 'utf8' });
      expect(untrusted.status).toBe(2);
      expect(untrusted.stderr).toContain(`cannot reach Redis at rediss://***@127.0.0.1:${redis.port}`);
      expect(untrusted.stderr).not.toContain('hunter2');
      const notPem = replay('--redis-tls-ca', traces);
      expect(notPem.status).toBe(2);
      expect(notPem.stderr).toContain(`--redis-tls-ca: ${traces} holds no PEM certificate`);
      const plain = spawnSync('node', [CLI, 'replay', '--redis', `redis://127.0.0.1:${redis.port}`, '--redis-tls-ca', tls.ca], { encoding: 'utf8' });
      expect(plain.status).toBe(2);
      expect(plain.stderr).toContain('--redis-tls-ca: needs --redis with a rediss:// URL (TLS)');
    } finally {
      await redis.kill();
    }
  }, 60_000);
});
