/** A real redis-server for the tests that need one: on loopback, a free port, no persistence. */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { freeLoopbackPort } from '../src/client/sidecar-process.js';

export const REDIS_SERVER = (() => {
  const found = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' });
  return found.status === 0 ? found.stdout.trim() : null;
})();

export class RedisServer {
  private process: ChildProcess | null = null;
  private constructor(readonly port: number) {}

  static async start(): Promise<RedisServer> {
    const server = new RedisServer(await freeLoopbackPort());
    await server.restart();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts it again on the same port (after kill), empty. */
  async restart(): Promise<void> {
    this.process = spawn(REDIS_SERVER!, ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    for (let i = 0; i < 100; i++) {
      const ping = spawnSync('redis-cli', ['-p', String(this.port), 'ping'], { encoding: 'utf8' });
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

/** CONFIG SET on the running server (maxmemory and its policy, to make it full). */
/** One redis-cli command's reply, trimmed. */
export function redisCli(port: number, ...args: string[]): string {
  return spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).stdout.trim();
}

export function configSet(port: number, name: string, value: string): void {
  const reply = redisCli(port, 'config', 'set', name, value);
  if (reply !== 'OK') throw new Error(`CONFIG SET ${name} ${value}: ${reply}`);
}
