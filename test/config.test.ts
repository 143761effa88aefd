import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SidecarError } from '../src/core/errors.js';
import { loadConfig } from '../src/server/config.js';

describe('configuration', () => {
  it('starts from embedded defaults (the seed switch: threshold 32) and freezes the result', () => {
    const config = loadConfig({ env: {}, file: null });
    expect(config.gate).toMatchObject({ mode: 'threshold', threshold: 32 });
    expect(config.http).toEqual({ host: '127.0.0.1', port: 8479, jsonStep: true });
    expect(config.grpc.socket).toBe(`${config.socket}.grpc`);
    expect(Object.isFrozen(config.gate)).toBe(true);
  });

  it('reads the file, then lets env variables override it (VLLM_SPECULATIVE_BATCH_SIZE_THRE included)', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'sam-config-')), 'c.json');
    writeFileSync(file, JSON.stringify({ gate: { threshold: 8 }, http: { port: 9000 }, socket: '/run/x.sock' }));
    const config = loadConfig({ file, env: { VLLM_SPECULATIVE_BATCH_SIZE_THRE: '64', SAM_SIDECAR_SOCKET: '/run/y.sock' } });
    expect(config.gate.threshold).toBe(64);
    expect(config.http.port).toBe(9000);
    expect(config.socket).toBe('/run/y.sock');
  });

  it('does not poll between steps unless asked to (SAM_SIDECAR_BUSY_POLL_US)', () => {
    expect(loadConfig({ env: {}, file: null }).busyPollUs).toBe(0);
    expect(loadConfig({ env: { SAM_SIDECAR_BUSY_POLL_US: '2000' }, file: null }).busyPollUs).toBe(2000);
  });

  it('polls for 1 ms after a PING, the shim announcing a step (SAM_SIDECAR_WAKE_POLL_US; 0 turns it off)', () => {
    expect(loadConfig({ env: {}, file: null }).wakePollUs).toBe(1000);
    expect(loadConfig({ env: { SAM_SIDECAR_WAKE_POLL_US: '0' }, file: null }).wakePollUs).toBe(0);
  });

  it('keeps a corpus of finished requests within its own budget (SAM_SIDECAR_CORPUS_TOKENS; 0 turns it off)', () => {
    expect(loadConfig({ env: {}, file: null }).memory.corpusTokens).toBe(4_000_000);
    expect(loadConfig({ env: { SAM_SIDECAR_CORPUS_TOKENS: '0' }, file: null }).memory.corpusTokens).toBe(0);
  });

  it('honours the config file named by SAM_SIDECAR_CONFIG', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'sam-config-')), 'c.json');
    writeFileSync(file, JSON.stringify({ drafting: { drafter: 'ngram' } }));
    expect(loadConfig({ env: { SAM_SIDECAR_CONFIG: file } }).drafting.drafter).toBe('ngram');
  });

  it('reports every problem at once, each naming its setting', () => {
    let error: unknown;
    try {
      loadConfig({
        env: { SAM_SIDECAR_HTTP_PORT: 'eighty', SAM_SIDECAR_GATE_MODE: 'sometimes' },
        file: null,
        overrides: { busyPollUs: -1, limits: { maxK: 0 }, memory: { maxTokens: 10, historyTokens: 20 }, gate: { kByBatch: [[32, 3], [8, 8]] }, typo: true },
      });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(SidecarError);
    const message = (error as SidecarError).message;
    expect((error as SidecarError).code).toBe('CONFIG_INVALID');
    for (const fragment of ['busyPollUs', 'SAM_SIDECAR_HTTP_PORT', 'gate.mode', 'gate.kByBatch', 'limits.maxK', 'memory.historyTokens', 'typo']) expect(message).toContain(fragment);
  });

  it('checks a Redis CA file at start: it must hold a PEM certificate and go with a rediss:// url', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sam-config-'));
    const ca = join(dir, 'ca.pem');
    writeFileSync(ca, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
    const notPem = join(dir, 'ca.txt');
    writeFileSync(notPem, 'not a certificate');
    const problem = (redis: Record<string, unknown>, env: NodeJS.ProcessEnv = {}) => {
      try {
        loadConfig({ env, file: null, overrides: { sharing: { redis } } });
        return null;
      } catch (error) {
        return (error as SidecarError).message;
      }
    };
    expect(problem({ url: 'rediss://redis:6380', tlsCaFile: ca })).toBeNull();
    expect(problem({ url: 'rediss://redis:6380' }, { SAM_SIDECAR_REDIS_TLS_CA_FILE: ca })).toBeNull();
    expect(problem({ url: 'redis://redis:6379', tlsCaFile: ca })).toMatch(/sharing\.redis\.tlsCaFile: needs a rediss:\/\/ url/);
    expect(problem({ url: 'rediss://redis:6380', tlsCaFile: join(dir, 'missing.pem') })).toMatch(/sharing\.redis\.tlsCaFile: cannot be read/);
    expect(problem({ url: 'rediss://redis:6380', tlsCaFile: notPem })).toMatch(/sharing\.redis\.tlsCaFile: .* holds no PEM certificate/);
  });

  it('rejects a misspelt setting at any depth, naming its path, with the other problems', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'sam-config-')), 'c.json');
    writeFileSync(file, JSON.stringify({ gate: { treshold: 4 }, http: { prot: 1 }, log: { levle: 'debug' }, memory: { maxTokens: 0 } }));
    let error: unknown;
    try {
      loadConfig({ file, env: {} });
    } catch (e) {
      error = e;
    }
    expect((error as SidecarError).code).toBe('CONFIG_INVALID');
    const message = (error as SidecarError).message;
    for (const fragment of ['gate', 'treshold', 'http', 'prot', 'log', 'levle', 'memory.maxTokens']) expect(message).toContain(fragment);
  });
});
