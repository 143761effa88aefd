/**
 * The container image definition, checked without a Docker engine: what it copies exists, it runs
 * as non-root under tini, the entrypoint is valid shell, and the shim bundle it ships is importable
 * with its vLLM plugin entry point.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { tmpdir as osTmpdir } from 'node:os';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..');
const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

describe('container image', () => {
  it('copies only files that exist in the repository', () => {
    const sources = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) => m[1].trim().split(/\s+/));
    expect(sources.length).toBeGreaterThan(5);
    for (const source of sources) expect(existsSync(join(ROOT, source)), source).toBe(true);
  });

  it('runs as a non-root user with tini as PID 1, and exposes the socket directory as a volume', () => {
    const users = [...dockerfile.matchAll(/^USER (\S+)$/gm)].map((m) => m[1]);
    expect(users.at(-1)).toBe('1000:1000');
    expect(dockerfile).toMatch(/^ENTRYPOINT \["\/usr\/bin\/tini", "--", /m);
    expect(dockerfile).toMatch(/^VOLUME \["\/run\/sam-sidecar"\]$/m);
    expect(dockerfile).toMatch(/SAM_SIDECAR_HTTP_HOST=0\.0\.0\.0/);
  });

  it('has an entrypoint that is valid POSIX shell', () => {
    expect(spawnSync('sh', ['-n', join(ROOT, 'docker', 'entrypoint.sh')]).status).toBe(0);
  });

  it('ships the Python shim as a PYTHONPATH bundle whose vllm.general_plugins entry point resolves', () => {
    const bundle = mkdtempSync(join(tmpdir(), 'sam-shim-'));
    execFileSync('sh', [join(ROOT, 'docker', 'shim-bundle.sh'), join(ROOT, 'python'), bundle]);
    const probe = [
      'from importlib.metadata import entry_points',
      'eps = entry_points()',
      "group = eps.select(group='vllm.general_plugins') if hasattr(eps, 'select') else eps.get('vllm.general_plugins', [])",
      "print(','.join(f'{e.name}={e.value}' for e in group))",
      'e = list(group)[0]; assert callable(e.load())',
    ].join('\n');
    const out = execFileSync(PYTHON, ['-c', probe], { env: { ...process.env, PYTHONPATH: bundle }, cwd: bundle, encoding: 'utf8' });
    expect(out.trim()).toBe('sam=sam_sidecar.plugin:register');
  });
});

const GO_ENV = { ...process.env, GO111MODULE: 'off', GOPATH: '/usr/share/gocode', GOCACHE: join(osTmpdir(), 'sam-sidecar-gocache') };
const hasYaml = spawnSync('go', ['list', 'gopkg.in/yaml.v3'], { env: GO_ENV, stdio: 'ignore' }).status === 0;

describe.skipIf(!hasYaml)('compose trial (docker/compose.yaml)', () => {
  const compose = JSON.parse(
    execFileSync('go', ['run', 'main.go', '--yaml-json', join(ROOT, 'docker', 'compose.yaml')], { cwd: join(ROOT, 'helm', 'tests', 'render'), env: GO_ENV, encoding: 'utf8' }),
  );

  it('builds from files that exist and runs every container as the non-root user', () => {
    for (const service of Object.values<any>(compose.services)) {
      if (service.build) expect(existsSync(join(ROOT, 'docker', service.build.context, service.build.dockerfile))).toBe(true);
    }
    expect(compose.services.runner.user).toBe('1000:1000');
    expect(compose.services.sidecar.read_only).toBe(true);
  });

  it('shares the socket volume between the sidecar and the runner, which waits for the sidecar to be healthy', () => {
    const mountOf = (service: any) => service.volumes.find((v: string) => v.startsWith('socket:'));
    expect(mountOf(compose.services.sidecar)).toBe('socket:/run/sam-sidecar');
    expect(mountOf(compose.services.runner)).toBe('socket:/run/sam-sidecar');
    expect(compose.services.runner.depends_on.sidecar.condition).toBe('service_healthy');
    expect(compose.services.runner.command).toContain('/run/sam-sidecar/sidecar.sock');
    expect(compose.volumes.socket.driver_opts.o).toContain('uid=1000');
  });
});
