/**
 * A sidecar in its own process, for tools that drive it from outside (demo, wire benchmark): spawn
 * `serve` with a socket in a private directory, wait until it answers, stop it with SIGTERM.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import { packageRoot } from '../package-root.js';
import { FastLaneClient } from './clients.js';

export interface SidecarProcess {
  readonly child: ChildProcess;
  readonly socket: string;
  stop(): Promise<void>;
}

/**
 * glibc hands the sidecar's large arrays transparent huge pages where the kernel leaves them to
 * madvise (the image sets the same): on a VM a fresh 4 KiB page costs microseconds, and a long
 * context touches gigabytes of them. Read by glibc at exec, so it goes in the child's environment.
 */
export const HUGE_PAGES_TUNABLE = 'glibc.malloc.hugetlb=1';

export const PYTHON = process.env.PYTHON ?? (existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');

export async function startSidecarProcess(socket: string, env: NodeJS.ProcessEnv = {}): Promise<SidecarProcess> {
  const child = spawn(process.execPath, [join(packageRoot(), 'dist', 'cli.js'), 'serve'], {
    env: { GLIBC_TUNABLES: HUGE_PAGES_TUNABLE, ...process.env, SAM_SIDECAR_SOCKET: socket, SAM_SIDECAR_HTTP_PORT: '0', SAM_SIDECAR_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await waitForSidecar(socket, child);
  return {
    child,
    socket,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

export async function waitForSidecar(socket: string, child?: ChildProcess, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child && child.exitCode !== null) throw new Error(`sidecar exited with ${child.exitCode} before it answered on ${socket}`);
    try {
      const client = await FastLaneClient.connect(socket);
      await client.ping();
      await client.close();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  throw new Error(`sidecar did not answer on ${socket} within ${timeoutMs} ms`);
}

/** A loopback TCP port that is free now: for a sidecar's HTTP endpoint, or a server a test starts. */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/**
 * A histogram's cumulative buckets from a Prometheus text exposition (a sidecar's GET /metrics):
 * each upper bound as exposed ("0.005", "+Inf") to the observations at or under it, in the order
 * exposed (ascending), for the series whose labels include `labels` (e.g. 'transport="uds"').
 */
export function histogramBuckets(metrics: string, name: string, labels = ''): Map<string, number> {
  const buckets = new Map<string, number>();
  for (const line of metrics.split('\n')) {
    if (!line.startsWith(`${name}_bucket{`) || !line.includes(labels)) continue;
    const le = /le="([^"]+)"/.exec(line);
    if (le !== null) buckets.set(le[1], Number(line.slice(line.lastIndexOf(' ') + 1)));
  }
  return buckets;
}
