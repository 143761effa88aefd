/** A real redis-server for the tests that need one: on loopback, a free port, no persistence. */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freeLoopbackPort } from '../src/client/sidecar-process.js';

/** Where a program is on PATH, or null. */
function commandPath(name: string): string | null {
  const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  return found.status === 0 ? found.stdout.trim() : null;
}

export const REDIS_SERVER = commandPath('redis-server');
export const OPENSSL = commandPath('openssl');

/** A private CA (as a cluster's cert-manager issues) and a certificate for 127.0.0.1 it signed, in a new directory. */
export interface PrivateCa {
  ca: string;
  cert: string;
  key: string;
}

export function privateCa(): PrivateCa {
  const dir = mkdtempSync(join(tmpdir(), 'sam-redis-tls-'));
  const file = (name: string) => join(dir, name);
  writeFileSync(file('san.cnf'), 'subjectAltName=IP:127.0.0.1\n');
  const steps = [
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '2', '-subj', '/CN=sam-test-ca'],
    ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', file('server.key'), '-out', file('server.csr'), '-subj', '/CN=127.0.0.1'],
    ['x509', '-req', '-in', file('server.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial', '-out', file('server.pem'), '-days', '2', '-extfile', file('san.cnf')],
  ];
  for (const args of steps) {
    const run = spawnSync(OPENSSL!, args, { encoding: 'utf8' });
    if (run.status !== 0) throw new Error(`openssl ${args[0]}: ${run.stderr}`);
  }
  return { ca: file('ca.pem'), cert: file('server.pem'), key: file('server.key') };
}

export class RedisServer {
  private process: ChildProcess | null = null;
  private constructor(
    readonly port: number,
    /** Serves TLS only, with this certificate. */
    readonly tls: PrivateCa | null,
  ) {}

  static async start(tls: PrivateCa | null = null): Promise<RedisServer> {
    const server = new RedisServer(await freeLoopbackPort(), tls);
    await server.restart();
    return server;
  }

  get url(): string {
    return `${this.tls === null ? 'redis' : 'rediss'}://127.0.0.1:${this.port}`;
  }

  /** Starts it again on the same port (after kill), empty. */
  async restart(): Promise<void> {
    const tls = this.tls;
    const listen = tls === null ? ['--port', String(this.port)] : ['--port', '0', '--tls-port', String(this.port), '--tls-cert-file', tls.cert, '--tls-key-file', tls.key, '--tls-ca-cert-file', tls.ca, '--tls-auth-clients', 'no'];
    this.process = spawn(REDIS_SERVER!, [...listen, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    const cli = tls === null ? ['-p', String(this.port)] : ['--tls', '--cacert', tls.ca, '-p', String(this.port)];
    for (let i = 0; i < 100; i++) {
      const ping = spawnSync('redis-cli', [...cli, 'ping'], { encoding: 'utf8' });
      if (ping.stdout?.trim() === 'PONG') return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`redis-server did not come up on port ${this.port}`);
  }

  /** SIGSTOP: connections stay open and nothing answers, as a Redis swapping or stuck in a long command. */
  pause(): void {
    this.process?.kill('SIGSTOP');
  }

  resume(): void {
    this.process?.kill('SIGCONT');
  }

  /** SIGKILL: gone at once, as a crashed or evicted Redis pod is. */
  async kill(): Promise<void> {
    const process = this.process;
    if (process === null) return;
    this.process = null;
    await new Promise<void>((resolve) => {
      process.once('exit', () => resolve());
      process.kill('SIGKILL');
    });
  }
}

/** Calls per command so far (INFO commandstats), by lower-case name; commands a script ran count too. */
export function commandCalls(port: number): Record<string, number> {
  const info = spawnSync('redis-cli', ['-p', String(port), 'info', 'commandstats'], { encoding: 'utf8' }).stdout;
  const calls: Record<string, number> = {};
  for (const match of info.matchAll(/^cmdstat_([a-z|]+):calls=(\d+)/gm)) calls[match[1]] = Number(match[2]);
  return calls;
}

/** Bytes the server has written to its clients so far (INFO stats), replies of every connection together. */
export function netOutputBytes(port: number): number {
  const info = spawnSync('redis-cli', ['-p', String(port), 'info', 'stats'], { encoding: 'utf8' }).stdout;
  return Number(/^total_net_output_bytes:(\d+)/m.exec(info)![1]);
}

/** One redis-cli command's reply, trimmed. */
export function redisCli(port: number, ...args: string[]): string {
  return spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).stdout.trim();
}

/** CONFIG SET on the running server (maxmemory and its policy, to make it full). */
export function configSet(port: number, name: string, value: string): void {
  const reply = redisCli(port, 'config', 'set', name, value);
  if (reply !== 'OK') throw new Error(`CONFIG SET ${name} ${value}: ${reply}`);
}
