/**
 * Sharing siblings' text and history across engines and restarts through a real Redis
 * (redis-server on loopback; skipped, with a message, where it is not installed).
 */
import { copyFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UNGATED } from '../src/core/gate.js';
import { StepService } from '../src/core/step-service.js';
import { type RedisSharingConfig, RedisSharing, REDIS_SHARING_DEFAULTS, type SharingLog } from '../src/sharing/redis-sharing.js';
import { draftLists, PROMPT, stepBatch } from './helpers.js';
import { commandCalls, configSet, netOutputBytes, OPENSSL, privateCa, REDIS_SERVER, RedisServer, redisCli } from './redis.js';

if (REDIS_SERVER === null) console.warn('sharing tests skipped: no redis-server (apt-get install redis-server)');

const limits = { maxK: 8, requestTtlMs: Number.POSITIVE_INFINITY, maxTokens: Number.MAX_SAFE_INTEGER, stepCacheSize: 4 };

/** One engine's sidecar core with its own Redis connections, as a sidecar per engine pod. */
async function engine(url: string, keyPrefix: string, log: SharingLog | null = null, settings: Partial<RedisSharingConfig> = {}) {
  const service = new StepService(limits, UNGATED, { shareText: true });
  const sharing = new RedisSharing({ ...REDIS_SHARING_DEFAULTS, url, keyPrefix, ...settings }, log);
  service.sharedText = sharing;
  expect(await sharing.ready()).toBe(true);
  let stepId = 0n;
  return {
    service,
    sharing,
    step(items: Parameters<typeof stepBatch>[0], finished: string[] = []) {
      return draftLists(service.step(stepBatch(items, { engineId: 'e', stepId: ++stepId, finished }), 0));
    },
    /** What the sidecar does after each reply, then what its reader does meanwhile. */
    async exchange() {
      sharing.publish(service.draftEngine.takeOutbound());
      await sharing.settle();
      await sharing.poll();
    },
  };
}

describe.skipIf(REDIS_SERVER === null)('shared text through Redis', () => {
  let redis: RedisServer;
  let prefix = 0;
  const nextPrefix = () => `test-${process.pid}-${++prefix}`;
  beforeAll(async () => {
    redis = await RedisServer.start();
  });
  afterAll(async () => {
    await redis.kill();
  });

  it('a request on one engine drafts what its sibling on another engine wrote, one step later', async () => {
    const key = nextPrefix();
    const a = await engine(redis.url, key);
    const b = await engine(redis.url, key);
    a.step([{ id: 'a', tokens: [...PROMPT, 1, 2, 3, 4, 5, 6], prompt: 4 }]);
    await a.exchange();
    expect(b.step([{ id: 'b', tokens: [...PROMPT, 1, 2], prompt: 4 }])).toEqual([[]]); // its group opens here
    await b.exchange(); // subscribes to the group's stream and reads a's text
    await b.exchange();
    expect(b.step([{ id: 'b', start: 6, tokens: [3] }])).toEqual([[4, 5, 6]]);
    expect(b.sharing.counters.receivedTokens).toBe(6);
    await Promise.all([a.sharing.close(), b.sharing.close()]);
  });

  it('skips the entries it wrote itself in the streams it reads: only other engines\' text arrives', async () => {
    const key = nextPrefix();
    const a = await engine(redis.url, key);
    const b = await engine(redis.url, key);
    a.step([{ id: 'a', tokens: [...PROMPT, 1, 2, 3], prompt: 4 }]);
    b.step([{ id: 'b', tokens: [...PROMPT, 5, 6], prompt: 4 }]);
    for (let round = 0; round < 3; round++) await Promise.all([a.exchange(), b.exchange()]);
    // Each reads the group's stream, which holds both writers' entries: it takes in the other's
    // text (the tokens after the prompt) and none of its own.
    expect(a.sharing.counters.receivedTokens).toBe(2);
    expect(b.sharing.counters.receivedTokens).toBe(3);
    await Promise.all([a.sharing.close(), b.sharing.close()]);
  });

  it('its own entries stay in Redis: a read carries back only other writers\' text, and moves past its own', async () => {
    const key = nextPrefix();
    const a = await engine(redis.url, key);
    const b = await engine(redis.url, key);
    const long = Array.from({ length: 20_000 }, (_, i) => 10 + (i % 997));
    a.step([{ id: 'a', tokens: [...PROMPT, ...long], prompt: 4 }]);
    await a.exchange(); // opens the group: a reads its stream from now on
    a.step([{ id: 'a', start: 4 + long.length, tokens: long }]); // 80 KB more in a's own entries
    a.sharing.publish(a.service.draftEngine.takeOutbound());
    await a.sharing.settle();
    const before = netOutputBytes(redis.port);
    expect(await a.sharing.poll()).toBe(false);
    expect(netOutputBytes(redis.port) - before).toBeLessThan(4_096); // the reply, not the 80 KB
    b.step([{ id: 'b', tokens: [...PROMPT, 1, 2], prompt: 4 }]);
    await b.exchange();
    await a.sharing.poll();
    expect(a.sharing.counters.receivedTokens).toBe(2); // b's entry, after a's own
    await Promise.all([a.sharing.close(), b.sharing.close()]);
  });

  it('a flush is one call to Redis however many groups it writes, and lands again after Redis restarted empty (its scripts gone)', async () => {
    const key = nextPrefix();
    const a = await engine(redis.url, key);
    const prompts = [PROMPT, [7, 7, 7, 7], [8, 8, 8, 8]];
    a.step(prompts.map((prompt, i) => ({ id: `a${i}`, tokens: [...prompt, 1, 2, 3], prompt: 4 })));
    const before = commandCalls(redis.port);
    a.sharing.publish(a.service.draftEngine.takeOutbound());
    await a.sharing.settle();
    const after = commandCalls(redis.port);
    expect((after.evalsha ?? 0) + (after.eval ?? 0) - (before.evalsha ?? 0) - (before.eval ?? 0)).toBe(1);
    expect((after.xadd ?? 0) - (before.xadd ?? 0)).toBe(3); // one entry per group, inside that call
    await redis.kill();
    // Until a has seen the connection drop, ready() would answer from before the restart.
    for (let i = 0; i < 100 && a.sharing.counters.connected; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    await redis.restart();
    expect(await a.sharing.ready(10_000)).toBe(true);
    const b = await engine(redis.url, key);
    b.step([{ id: 'b', tokens: [...PROMPT, 1], prompt: 4 }]);
    await b.exchange(); // b reads the group from now on
    a.step([{ id: 'a0', start: 7, tokens: [4, 5] }]);
    await a.exchange();
    await b.exchange();
    expect(b.sharing.counters.receivedTokens).toBe(2); // a's tokens after the restart, through the reloaded script
    await Promise.all([a.sharing.close(), b.sharing.close()]);
  });

  it('a restarted sidecar drafts from outputs finished before it started, for the prompts it meets again', async () => {
    const key = nextPrefix();
    const before = await engine(redis.url, key);
    before.step([{ id: 'old', tokens: [...PROMPT, 7, 8, 9, 10, 11], prompt: 4 }]);
    before.step([], ['old']);
    await before.exchange();
    await before.sharing.close();
    const restarted = await engine(redis.url, key); // a new process: nothing local
    restarted.step([{ id: 'new', tokens: [...PROMPT, 7], prompt: 4 }]);
    await restarted.exchange(); // the prompt is new here: its history is fetched
    expect(restarted.sharing.counters.historyHits).toBe(1);
    expect(restarted.step([{ id: 'new', start: 5, tokens: [8] }])).toEqual([[9, 10, 11]]);
    await restarted.sharing.close();
  });

  it('a sidecar whose Redis was unreachable when it met a prompt fetches that prompt\'s history once Redis is there', async () => {
    const key = nextPrefix();
    await redis.kill();
    const service = new StepService(limits, UNGATED, { shareText: true });
    const sharing = new RedisSharing({ ...REDIS_SHARING_DEFAULTS, url: redis.url, keyPrefix: key }, null);
    service.sharedText = sharing;
    try {
      const step = (stepId: bigint, items: Parameters<typeof stepBatch>[0]) => draftLists(service.step(stepBatch(items, { engineId: 'e', stepId }), 0));
      step(1n, [{ id: 'new', tokens: [...PROMPT, 7], prompt: 4 }]); // the prompt is met while Redis is away
      sharing.publish(service.draftEngine.takeOutbound());
      await redis.restart();
      const earlier = await engine(redis.url, key); // another engine finished an output of that prompt
      earlier.step([{ id: 'old', tokens: [...PROMPT, 7, 8, 9, 10, 11], prompt: 4 }]);
      earlier.step([], ['old']);
      await earlier.exchange();
      await earlier.sharing.close();
      expect(await sharing.ready(10_000)).toBe(true);
      sharing.publish(service.draftEngine.takeOutbound());
      await sharing.settle();
      expect(sharing.counters.historyHits).toBe(1);
      expect(step(2n, [{ id: 'new', start: 5, tokens: [8] }])).toEqual([[9, 10, 11]]);
    } finally {
      await sharing.close();
    }
  }, 30_000);

  it('text a sidecar produced before its Redis answered reaches the other engines once it does; beyond maxPublishBytes it is dropped and counted', async () => {
    const key = nextPrefix();
    await redis.kill();
    const service = new StepService(limits, UNGATED, { shareText: true });
    // Room for the first request's delta (6 tokens: 24 bytes and 64 of framing), not for the second's.
    const sharing = new RedisSharing({ ...REDIS_SHARING_DEFAULTS, url: redis.url, keyPrefix: key, maxPublishBytes: 100 }, null);
    service.sharedText = sharing;
    try {
      service.step(stepBatch([{ id: 'early', tokens: [...PROMPT, 1, 2, 3, 4, 5, 6], prompt: 4 }], { engineId: 'e', stepId: 1n }), 0);
      sharing.publish(service.draftEngine.takeOutbound()); // Redis not there yet: held
      service.step(stepBatch([{ id: 'other', tokens: [...PROMPT, 9, 9, 9], prompt: 4 }], { engineId: 'e', stepId: 2n }), 0);
      sharing.publish(service.draftEngine.takeOutbound()); // past the bound: dropped
      expect(sharing.counters.publishDropped).toBe(1);
      await redis.restart();
      expect(await sharing.ready(10_000)).toBe(true);
      sharing.publish(service.draftEngine.takeOutbound());
      await sharing.settle();
      expect(sharing.counters.publishedTokens).toBe(6);
      const later = await engine(redis.url, key);
      later.step([{ id: 'late', tokens: [...PROMPT, 1, 2], prompt: 4 }]);
      await later.exchange(); // opens the group: reads its live stream from the window's start
      await later.sharing.poll();
      expect(later.step([{ id: 'late', start: 6, tokens: [] }])).toEqual([[3, 4, 5]]);
      await later.sharing.close();
    } finally {
      await sharing.close();
    }
  }, 30_000);

  it('a prompt met while 1024 history fetches wait on a slow Redis gets its history when they are answered', async () => {
    const key = nextPrefix();
    const last = [9000, 2, 3, 4];
    const earlier = await engine(redis.url, key); // another engine finished an output of the last prompt
    earlier.step([{ id: 'old', tokens: [...last, 7, 8, 9, 10, 11], prompt: 4 }]);
    earlier.step([], ['old']);
    await earlier.exchange();
    await earlier.sharing.close();
    const a = await engine(redis.url, key);
    redis.pause();
    try {
      for (let from = 0; from < 1024; from += 256) {
        a.step(Array.from({ length: 256 }, (_, i) => ({ id: `r${from + i}`, tokens: [1000 + from + i, 2, 3, 4], prompt: 4 })));
      }
      a.step([{ id: 'last', tokens: [...last, 7], prompt: 4 }]);
      a.sharing.publish(a.service.draftEngine.takeOutbound()); // 1024 fetches wait for Redis; the last prompt's waits its turn
    } finally {
      redis.resume();
    }
    await a.sharing.settle();
    expect(a.sharing.counters.historyMisses).toBe(1024);
    a.sharing.publish(a.service.draftEngine.takeOutbound());
    await a.sharing.settle();
    expect(a.sharing.counters.historyHits).toBe(1);
    expect(a.step([{ id: 'last', start: 5, tokens: [8] }])).toEqual([[9, 10, 11]]);
    await a.sharing.close();
  }, 30_000);

  it('keeps the job\'s history in Redis within historyMaxTokens: the least recently written prompts\' history goes first', async () => {
    const key = nextPrefix();
    const a = await engine(redis.url, key, null, { historyMaxTokens: 100 });
    const prompts = [0, 1, 2, 3, 4].map((p) => [20 + p, 30 + p, 40 + p, 50 + p]);
    const output = Array.from({ length: 30 }, (_, i) => 100 + i);
    for (const [i, prompt] of prompts.entries()) {
      a.step([{ id: `r${i}`, tokens: [...prompt, ...output], prompt: 4 }]);
      a.step([], [`r${i}`]);
      await a.exchange(); // one flush per prompt: each later than the one before
    }
    // Five outputs of 30 tokens against 100: the two written first are gone, the last three held.
    const lists = redisCli(redis.port, '--scan', '--pattern', `${key}:hist:*`).split('\n').filter(Boolean);
    expect(lists).toHaveLength(3);
    expect(redisCli(redis.port, 'hget', `${key}:hist-tokens`, 'total')).toBe('90');
    expect(a.sharing.counters.historyEvicted).toBe(2);
    await a.sharing.close();
    const fresh = await engine(redis.url, key);
    fresh.step([{ id: 'old', tokens: [...prompts[0], 100], prompt: 4 }]);
    fresh.step([{ id: 'new', tokens: [...prompts[4], 100], prompt: 4 }]);
    await fresh.exchange();
    expect([fresh.sharing.counters.historyHits, fresh.sharing.counters.historyMisses]).toEqual([1, 1]);
    expect(fresh.step([{ id: 'new', start: 5, tokens: [101] }])).toEqual([[102, 103, 104]]);
    await fresh.sharing.close();
  });

  it('a history list that expired on its own leaves the budget\'s accounts: at a later flush, or when its prompt writes again', async () => {
    const key = nextPrefix();
    const a = await engine(redis.url, key);
    const finish = async (i: number) => {
      a.step([{ id: `r${i}`, tokens: [60 + i, 70 + i, 80 + i, 90 + i, ...Array.from({ length: 30 }, (_, t) => 100 + t)], prompt: 4 }]);
      a.step([], [`r${i}`]);
      await a.exchange();
    };
    await finish(0);
    await finish(1);
    const [first] = redisCli(redis.port, 'zrange', `${key}:hist-index`, '0', '0').split('\n');
    redisCli(redis.port, 'del', first); // as its TTL would
    await finish(2);
    expect(redisCli(redis.port, 'hget', `${key}:hist-tokens`, 'total')).toBe('60');
    expect(redisCli(redis.port, 'zcard', `${key}:hist-index`)).toBe('2');
    // A prompt whose list expired writes again: its new list counts, the old one no more.
    const [second] = redisCli(redis.port, 'zrange', `${key}:hist-index`, '0', '0').split('\n');
    redisCli(redis.port, 'del', second);
    await finish(1);
    expect(redisCli(redis.port, 'hget', `${key}:hist-tokens`, 'total')).toBe('60');
    expect(a.sharing.counters.historyEvicted).toBe(0); // nothing held was removed
    await a.sharing.close();
  });

  it('every rank of an engine gets the same answer for a step, whatever arrives between their calls', async () => {
    const key = nextPrefix();
    const a = await engine(redis.url, key);
    const b = await engine(redis.url, key);
    b.step([{ id: 'b', tokens: [...PROMPT, 1], prompt: 4 }]);
    await b.exchange();
    const batch = stepBatch([{ id: 'b', start: 5, tokens: [2] }], { engineId: 'e', stepId: 2n });
    const first = b.service.step(batch, 0);
    a.step([{ id: 'a', tokens: [...PROMPT, 1, 2, 3, 4], prompt: 4 }]);
    await a.exchange();
    await b.exchange(); // a's text is in b's inbox now
    expect(b.service.step(batch, 0)).toBe(first); // the repeated step: the first answer, nothing applied
    await Promise.all([a.sharing.close(), b.sharing.close()]);
  });

  it('Redis slow (stopped with its connections open): two flushes wait for it at most, later text is dropped and counted, one log line says so; sharing resumes when it answers', async () => {
    const key = nextPrefix();
    const lines: string[] = [];
    const a = await engine(redis.url, key, { info: (_fields, message) => lines.push(`info ${message}`), warn: (_fields, message) => lines.push(`warn ${message}`) });
    const b = await engine(redis.url, key);
    a.step([{ id: 'a', tokens: [...PROMPT, 1, 2], prompt: 4 }]);
    await a.exchange();
    redis.pause();
    try {
      for (let i = 0; i < 5; i++) {
        const started = process.hrtime.bigint();
        expect(a.step([{ id: 'a', start: 6 + i, tokens: [10 + i] }])).toHaveLength(1);
        a.sharing.publish(a.service.draftEngine.takeOutbound()); // what the server's timer does
        expect(Number(process.hrtime.bigint() - started) / 1e6).toBeLessThan(1000);
      }
      expect(a.sharing.counters.publishDropped).toBe(3); // two flushes of one delta wait; three are dropped
      expect(lines.filter((line) => line.includes('slow'))).toHaveLength(1);
    } finally {
      redis.resume();
    }
    await a.sharing.settle();
    b.step([{ id: 'b', tokens: [...PROMPT, 1], prompt: 4 }]);
    await b.exchange(); // b reads the group from now on
    a.step([{ id: 'a', start: 11, tokens: [20, 21] }]);
    await a.exchange();
    await b.exchange();
    expect(b.sharing.counters.receivedTokens).toBeGreaterThanOrEqual(2);
    expect(lines.some((line) => line.startsWith('info') && line.includes('answers again'))).toBe(true);
    await Promise.all([a.sharing.close(), b.sharing.close()]);
  });

  it('a closing sidecar writes what it had not flushed yet: an output finished just before reaches the history others fetch', async () => {
    const key = nextPrefix();
    const a = await engine(redis.url, key, null, { publishIntervalMs: 60_000 }); // no flush before the close
    a.sharing.start(() => a.service.draftEngine.takeOutbound());
    a.step([{ id: 'old', tokens: [...PROMPT, 7, 8, 9, 10, 11], prompt: 4 }]);
    a.step([], ['old']);
    await a.sharing.close();
    const b = await engine(redis.url, key);
    b.step([{ id: 'new', tokens: [...PROMPT, 7, 8], prompt: 4 }]);
    await b.exchange();
    expect(b.sharing.counters.historyHits).toBe(1);
    expect(b.step([{ id: 'new', start: 6, tokens: [] }])).toEqual([[9, 10, 11]]);
    await b.sharing.close();
  });

  it('closes within its bound while Redis is stopped with its connections open (a write and a read unanswered)', async () => {
    const key = nextPrefix();
    const a = await engine(redis.url, key);
    a.sharing.start(() => a.service.draftEngine.takeOutbound());
    a.step([{ id: 'a', tokens: [...PROMPT, 1, 2, 3], prompt: 4 }]);
    redis.pause();
    try {
      a.sharing.publish(a.service.draftEngine.takeOutbound());
      const started = Date.now();
      await a.sharing.close();
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      redis.resume();
    }
  }, 30_000);

  it('Redis killed mid-run: steps go on from local state without waiting, one log line says so, and sharing resumes once it is back', async () => {
    const key = nextPrefix();
    const lines: string[] = [];
    const a = await engine(redis.url, key, { info: (_fields, message) => lines.push(`info ${message}`), warn: (_fields, message) => lines.push(`warn ${message}`) });
    a.step([{ id: 'a', tokens: [...PROMPT, 1, 2, 3, 1, 2], prompt: 4 }]);
    await a.exchange();
    await redis.kill();
    let length = 9;
    for (let i = 0; i < 20; i++) {
      const started = process.hrtime.bigint();
      const drafts = a.step([{ id: 'a', start: length, tokens: [3] }]);
      length++;
      await a.exchange(); // fails fast: no offline queue
      expect(Number(process.hrtime.bigint() - started) / 1e6).toBeLessThan(1000);
      expect(drafts[0].length).toBeGreaterThan(0); // drafting from its own text
    }
    for (let i = 0; i < 60 && a.sharing.counters.connected; i++) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(a.sharing.counters.connected).toBe(false);
    await redis.restart();
    expect(await a.sharing.ready(10_000)).toBe(true);
    const published = a.sharing.counters.publishedTokens;
    a.step([{ id: 'a', start: length, tokens: [1] }]);
    await a.exchange();
    expect(a.sharing.counters.publishedTokens).toBeGreaterThan(published);
    expect(lines.filter((line) => line.startsWith('warn'))).toHaveLength(1);
    expect(lines.filter((line) => line.includes('is back'))).toHaveLength(1);
    await a.sharing.close();
  }, 30_000);

  it('Redis full (maxmemory, noeviction): writes fail, one log line says so, drafts go on from local state', async () => {
    const key = nextPrefix();
    const lines: string[] = [];
    const a = await engine(redis.url, key, { info: (_fields, message) => lines.push(`info ${message}`), warn: (_fields, message) => lines.push(`warn ${message}`) });
    configSet(redis.port, 'maxmemory-policy', 'noeviction');
    configSet(redis.port, 'maxmemory', '1');
    try {
      let length = 9;
      a.step([{ id: 'a', tokens: [...PROMPT, 1, 2, 3, 1, 2], prompt: 4 }]);
      for (let i = 0; i < 5; i++) {
        await a.exchange();
        expect(a.step([{ id: 'a', start: length++, tokens: [3] }])[0].length).toBeGreaterThan(0);
      }
      await a.exchange();
      expect(a.sharing.counters.errors).toBeGreaterThanOrEqual(5);
      expect(a.sharing.counters.connected).toBe(true);
      expect(lines).toEqual([expect.stringMatching(/^warn shared text: a Redis command failed/)]);
    } finally {
      configSet(redis.port, 'maxmemory', '0');
      await a.sharing.close();
    }
  });
});

if (REDIS_SERVER !== null && OPENSSL === null) console.warn('TLS sharing test skipped: no openssl (apt-get install openssl)');

describe.skipIf(REDIS_SERVER === null || OPENSSL === null)('shared text through a Redis that serves TLS only (rediss://)', () => {
  it('with the private CA its certificate chains to (tlsCaFile), engines share; without it, nothing connects and one line says why', async () => {
    const tls = privateCa();
    const redis = await RedisServer.start(tls);
    try {
      const key = `tls-${process.pid}`;
      const a = await engine(redis.url, key, null, { tlsCaFile: tls.ca });
      const lines: string[] = [];
      const log: SharingLog = { info: (_fields, message) => lines.push(`info ${message}`), warn: (fields, message) => lines.push(`warn ${message} ${String(fields.err)}`) };
      const b = await engine(redis.url, key, log, { tlsCaFile: tls.ca });
      a.step([{ id: 'a', tokens: [...PROMPT, 1, 2, 3, 4, 5, 6], prompt: 4 }]);
      await a.exchange();
      b.step([{ id: 'b', tokens: [...PROMPT, 1, 2], prompt: 4 }]);
      await b.exchange();
      await b.exchange();
      expect(b.step([{ id: 'b', start: 6, tokens: [3] }])).toEqual([[4, 5, 6]]);
      await Promise.all([a.sharing.close(), b.sharing.close()]);
      await new Promise((resolve) => setTimeout(resolve, 100)); // the connections' close events
      expect(lines).toEqual([]); // a deliberate close is no outage
      // The system's CAs do not know this one: the certificate is refused, drafting stays local.
      const untrusting = new RedisSharing({ ...REDIS_SHARING_DEFAULTS, url: redis.url, keyPrefix: key }, log);
      expect(await untrusting.ready(1500)).toBe(false);
      await untrusting.close();
      expect(lines).toEqual([expect.stringMatching(/^warn shared text: Redis unavailable.*certificate/)]);
    } finally {
      await redis.kill();
    }
  }, 30_000);

  it('a CA rotated in its file while the sidecar runs (with the server\'s certificate) is used from the next reconnect on, without a restart', async () => {
    const tls = privateCa();
    const redis = await RedisServer.start(tls);
    const sharing = new RedisSharing({ ...REDIS_SHARING_DEFAULTS, url: redis.url, keyPrefix: `tls-rotated-${process.pid}`, tlsCaFile: tls.ca }, null);
    try {
      expect(await sharing.ready(5000)).toBe(true);
      await redis.kill();
      // A new CA and a server certificate it signed, written over the old files, as a Secret update.
      const rotated = privateCa();
      for (const part of ['ca', 'cert', 'key'] as const) copyFileSync(rotated[part], tls[part]);
      await redis.restart();
      for (let i = 0; i < 100 && !sharing.counters.connected; i++) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(sharing.counters.connected).toBe(true);
    } finally {
      await sharing.close();
      await redis.kill();
    }
  }, 30_000);
});

describe.skipIf(REDIS_SERVER === null)('sidecars sharing through Redis (sharing.redis.url)', () => {
  it('two sidecars of one job share siblings over their own connections; one whose Redis is unreachable starts and drafts locally', async () => {
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { FastLaneClient } = await import('../src/client/clients.js');
    const { loadConfig } = await import('../src/server/config.js');
    const { startSidecar } = await import('../src/server/sidecar.js');
    const redis = await RedisServer.start();
    const sidecars: Array<Awaited<ReturnType<typeof startSidecar>>> = [];
    const clients: Array<InstanceType<typeof FastLaneClient>> = [];
    try {
      const launch = async (url: string) => {
        const socket = join(mkdtempSync(join(tmpdir(), 'sam-share-')), 's.sock');
        const config = loadConfig({ env: {}, file: null, overrides: { socket, http: { port: 0 }, log: { level: 'silent' }, shutdown: { drainMs: 0 }, warmUpSteps: 0, gate: { threshold: 0 }, sharing: { redis: { url, keyPrefix: `job-${process.pid}` } } } });
        const sidecar = await startSidecar(config);
        sidecars.push(sidecar);
        const client = await FastLaneClient.connect(socket);
        clients.push(client);
        return client;
      };
      const a = await launch(redis.url);
      const b = await launch(redis.url);
      await a.step(stepBatch([{ id: 'a', tokens: [...PROMPT, 1, 2, 3, 4, 5, 6], prompt: 4 }], { engineId: 'engine-a', stepId: 1n }));
      await b.step(stepBatch([{ id: 'b', tokens: [...PROMPT, 1, 2], prompt: 4 }], { engineId: 'engine-b', stepId: 1n }));
      // B's background reader picks a's text up within a few of its read intervals.
      let drafts: number[][] = [[]];
      for (let step = 2n; step < 100n && drafts[0].length === 0; step++) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        drafts = draftLists(await b.step(stepBatch([{ id: 'b', start: 6, tokens: [] }], { engineId: 'engine-b', stepId: step })));
      }
      expect(drafts).toEqual([[3, 4, 5]]);
      const metrics = await (await fetch(`${sidecars[1].http.address}/metrics`)).text();
      expect(metrics).toMatch(/sam_sidecar_sharing_connected 1/);
      expect(metrics).toMatch(/sam_sidecar_sharing_received_tokens_total [1-9]/);
      // Nobody listens on this port: the sidecar starts all the same and drafts from its own text.
      await redis.kill();
      const alone = await launch(redis.url);
      const own = await alone.step(stepBatch([{ id: 'x', tokens: [...PROMPT, 1, 2, 3, 1, 2], prompt: 4 }], { engineId: 'engine-x', stepId: 1n }));
      expect(draftLists(own)).toEqual([[3, 1, 2]]);
    } finally {
      for (const client of clients) await client.close();
      for (const sidecar of sidecars) await sidecar.close();
      await redis.kill();
    }
  }, 30_000);
});
