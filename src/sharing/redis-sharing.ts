/**
 * Shared text through Redis: each sidecar publishes the new tokens of its live requests per prompt
 * group (a Stream per group) and its finished outputs (a capped list per prompt, with a TTL), and
 * reads, for the groups it holds, what the sidecars of other engines publish. Reads land in an
 * inbox the Step service drains in idle slices between steps, and at the start of a step what is
 * left; nothing on a step's path waits on Redis.
 *
 * Redis down, slow, full or restarted: commands fail fast (no offline queue), drafting goes on
 * from local state, one log line says so (and one when it is back), the client reconnects with
 * backoff. Every buffer is bounded: bytes published per flush, watched groups, inbox tokens.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Redis, ReplyError } from 'ioredis';
import type { OutboundText, SharedTextSource, TextDelta } from '../core/shared-text.js';
import { redactedUrl, type RedisSharingConfig } from './redis-config.js';

export { REDIS_SHARING_DEFAULTS, redactedUrl, type RedisSharingConfig } from './redis-config.js';

export interface SharingLog {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
}

export class SharingCounters {
  connected = false;
  publishedTokens = 0;
  publishedBytes = 0;
  publishDropped = 0;
  receivedTokens = 0;
  receivedBytes = 0;
  inboxDropped = 0;
  historyHits = 0;
  historyMisses = 0;
  /** Prompts' history lists this sidecar's flushes removed to keep the job within historyMaxTokens. */
  historyEvicted = 0;
  errors = 0;
  /** Age of the newest live entry read, when read (ms). */
  lagMs = 0;
}

/** Streams read per read call. */
const STREAMS_PER_READ = 256;
/** Live entries scanned per stream per call (the script runs inside Redis: a bound on its time too). */
const ENTRIES_PER_STREAM = 256;
/**
 * Flushes written and not yet answered: past this, Redis is slow (stopped, swapping, a long
 * command) and a flush's text is dropped instead of queued behind the others, so memory held for
 * a stalled Redis stays within this many times maxPublishBytes.
 */
const FLUSHES_IN_FLIGHT_MAX = 2;
/** How long close() waits for writes in flight and the reader before it disconnects. */
const CLOSE_WAIT_MS = 2000;
/** History fetches not yet answered; past this, newly opened groups wait their turn (historyOwed). */
const HISTORY_FETCHES_IN_FLIGHT_MAX = 1024;
/** History lists one flush may evict for the job's token budget (a bound on the script's time). */
const EVICTIONS_PER_FLUSH = 64;
/** Groups whose history this process fetched (LRU-bounded; fetched once per process lifetime). */
const HISTORY_FETCHED_MAX = 65_536;

/**
 * One flush's writes (sent by EVALSHA; ioredis loads the script again after a Redis restart).
 * Each stream entry names its writer ('i'), so the read script leaves a sidecar's own entries in
 * Redis. Finished outputs go to their prompt's capped history list, and the job's history is kept
 * within a token budget: a hash holds the tokens of each prompt's list and their total, a sorted
 * set orders the lists by last write, and the least recently written prompts' lists go first
 * (at most EVICTIONS_PER_FLUSH per call, so the script's time stays bounded; a list that expired on
 * its own leaves the accounts when it reaches the index's oldest end, or when its prompt writes again). Evicted lists are named by the index,
 * not in KEYS: one Redis (with or without replicas), not Redis Cluster, as every flush already
 * writes many groups' keys in one call.
 * KEYS: the groups' live streams, one history list per finished output, the history index and the
 * history token accounts. ARGV: the writer, the streams' approximate length cap and TTL, the
 * history's cap per prompt and TTL, the number of streams, the job's history budget in tokens;
 * then each stream's entry, then each history entry. Returns the lists evicted for the budget.
 */
const PUBLISH_SCRIPT = `
local streams = tonumber(ARGV[6])
local budget = tonumber(ARGV[7])
local index, accounts = KEYS[#KEYS - 1], KEYS[#KEYS]
for i = 1, streams do
  redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[2], '*', 'i', ARGV[1], 'd', ARGV[7 + i])
  redis.call('EXPIRE', KEYS[i], ARGV[3])
end
local function tokens(entry)
  local low, high = string.byte(entry, 1, 2)
  return math.floor((#entry - 2 - low - high * 256) / 4)
end
local keep = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local histories = #KEYS - 2 - streams
for i = streams + 1, streams + histories do
  local key, entry = KEYS[i], ARGV[7 + i]
  local added = tokens(entry)
  if redis.call('RPUSH', key, entry) == 1 then
    -- A new list (the prompt's earlier one expired): what it held has left Redis.
    added = added - tonumber(redis.call('HGET', accounts, key) or '0')
    redis.call('HDEL', accounts, key)
  end
  while redis.call('LLEN', key) > keep do added = added - tokens(redis.call('LPOP', key)) end
  redis.call('HINCRBY', accounts, key, added)
  redis.call('HINCRBY', accounts, 'total', added)
  redis.call('ZADD', index, now, key)
  redis.call('EXPIRE', key, ARGV[5])
end
local evicted = 0
if histories > 0 then
  redis.call('EXPIRE', index, ARGV[5])
  redis.call('EXPIRE', accounts, ARGV[5])
  local total = tonumber(redis.call('HGET', accounts, 'total') or '0')
  for step = 1, ${EVICTIONS_PER_FLUSH} do
    local oldest = redis.call('ZRANGE', index, 0, 0)[1]
    if oldest == nil then break end
    local expired = redis.call('EXISTS', oldest) == 0
    if total <= budget and not expired then break end
    total = total - tonumber(redis.call('HGET', accounts, oldest) or '0')
    if not expired then
      redis.call('DEL', oldest)
      evicted = evicted + 1
    end
    redis.call('ZREM', index, oldest)
    redis.call('HDEL', accounts, oldest)
  end
  redis.call('HSET', accounts, 'total', total)
end
return evicted
`;

/**
 * One poll of the watched streams, leaving out this writer's own entries inside Redis: most of a
 * group's stream is often the reader's own text, and carrying it back cost the reader's event loop
 * more than the text it wanted (docs/results.md). KEYS: the streams. ARGV: this writer, entries per
 * stream, then each stream's last id seen. Per stream with new entries: its index in KEYS, the last
 * id scanned (own entries included, so the cursor moves past them), how many were scanned, and the
 * other writers' entries as XRANGE gives them. Needs Redis 6.2 or later (exclusive ranges).
 */
const READ_SCRIPT = `
local out = {}
for k = 1, #KEYS do
  local entries = redis.call('XRANGE', KEYS[k], '(' .. ARGV[2 + k], '+', 'COUNT', ARGV[2])
  local scanned = #entries
  if scanned > 0 then
    local theirs = {}
    for e = 1, scanned do
      local fields = entries[e][2]
      local own = false
      for f = 1, #fields - 1, 2 do
        if fields[f] == 'i' then own = fields[f + 1] == ARGV[1] end
      end
      if not own then theirs[#theirs + 1] = entries[e] end
    end
    out[#out + 1] = { k, entries[scanned][1], scanned, theirs }
  end
end
return out
`;

const EMPTY_DELTA: TextDelta = Object.freeze({ group: '', source: '', at: 0, tokens: new Int32Array(0), finished: false });

type StreamEntry = [Buffer, Buffer[]];
/** Per stream read: [index in KEYS (1-based), last id scanned, entries scanned, other writers' entries]. */
type ReadReply = Array<[number, Buffer, number, StreamEntry[]]>;

type PublishingRedis = Redis & { samPublish(keyCount: number, ...keysAndArgs: Array<string | number | Buffer>): Promise<number> };
type ReadingRedis = Redis & { samReadBuffer(keyCount: number, ...keysAndArgs: Array<string | number>): Promise<ReadReply> };

export class RedisSharing implements SharedTextSource {
  /** This process's name in what it publishes: sources are `${instance}/${request id}`. */
  readonly instance = randomUUID();
  readonly counters = new SharingCounters();
  private readonly client: PublishingRedis;
  private readonly reader: ReadingRedis;
  /** Text read from other engines, not yet handed over: inbox[inboxHead...]. */
  private inbox: TextDelta[] = [];
  private inboxHead = 0;
  private inboxTokens = 0;
  /** Called when a read brought text (the server schedules idle work to apply it). */
  onArrival: (() => void) | null = null;
  /** Groups read: the last stream id seen, LRU by last opening. */
  private readonly watched = new Map<string, string>();
  private readonly historyFetched = new Set<string>();
  /**
   * Groups opened whose history is still to be fetched (Redis away, or too many fetches waiting),
   * oldest first, each with where its live read starts; read live only once their history is in,
   * as every group is. At most maxWatchedGroups: past that the oldest is read without history.
   */
  private readonly historyOwed = new Map<string, string>();
  /** Sources a group's history already gave (their live entries would repeat it). */
  private readonly fromHistory = new Map<string, Set<string>>();
  /** Writes and history fetches in flight (each leaves the set when it settles). */
  private readonly pending = new Set<Promise<void>>();
  /**
   * This engine's text produced while Redis did not answer (not connected yet, or away), oldest
   * first, at most maxPublishBytes (publishedSize): written at the first flush once it answers,
   * so text from a sidecar's first steps or from a short outage still reaches the others, and
   * what finished meanwhile reaches history. Past the bound, deltas are dropped and counted.
   */
  private held: TextDelta[] = [];
  private heldBytes = 0;
  private closed = false;
  private loop: Promise<void> | null = null;
  private unavailableLogged = false;
  private slowLogged = false;
  private flushesInFlight = 0;
  private historyFetchesInFlight = 0;
  private commandErrorLogged = false;
  private publisher: NodeJS.Timeout | null = null;
  /** What the server hands over to publish (start()); flushed once more at close. */
  private outbound: (() => OutboundText) | null = null;
  private closing: Promise<void> | null = null;

  constructor(
    readonly config: Readonly<RedisSharingConfig>,
    private readonly log: SharingLog | null = null,
  ) {
    const options = {
      lazyConnect: false,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      retryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times, 6), 5000),
      ...(config.password === undefined ? {} : { password: config.password }),
      ...(config.tlsCaFile === undefined ? {} : { tls: reloadedCa(config.tlsCaFile) }),
    };
    this.client = new Redis(config.url, options) as PublishingRedis;
    this.client.defineCommand('samPublish', { lua: PUBLISH_SCRIPT });
    this.reader = new Redis(config.url, options) as ReadingRedis;
    this.reader.defineCommand('samRead', { lua: READ_SCRIPT });
    this.client.on('ready', () => {
      this.counters.connected = true;
      if (this.unavailableLogged) this.log?.info({ url: redactedUrl(config.url) }, 'shared text: Redis is back; sharing resumes');
      this.unavailableLogged = false;
      this.commandErrorLogged = false;
    });
    const down = (error: Error) => {
      this.counters.connected = false;
      if (!this.unavailableLogged) this.log?.warn({ url: redactedUrl(config.url), err: error.message }, 'shared text: Redis unavailable; drafting goes on from local state, reconnecting');
      this.unavailableLogged = true;
    };
    this.client.on('error', down);
    this.reader.on('error', () => {}); // the command connection reports; a reader error retries with it
    this.client.on('close', () => {
      if (this.counters.connected && !this.closed) down(new Error('connection closed'));
    });
    this.client.on('end', () => (this.counters.connected = false));
  }

  private liveKey(group: string): string {
    return `${this.config.keyPrefix}:live:${group}`;
  }

  private historyKey(group: string): string {
    return `${this.config.keyPrefix}:hist:${group}`;
  }

  /** The job's history budget: the index of prompts' lists by last write, and their token accounts. */
  private get historyBudgetKeys(): [string, string] {
    return [`${this.config.keyPrefix}:hist-index`, `${this.config.keyPrefix}:hist-tokens`];
  }

  /**
   * Resolves when both connections answer (writes and reads), or after `timeoutMs` (false then): a
   * replay waits for it, a server does not. The reader is a connection of its own: a read sent
   * before it is ready fails at once (no offline queue).
   */
  ready(timeoutMs = 5000): Promise<boolean> {
    const both = () => this.counters.connected && this.reader.status === 'ready';
    if (both()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const settle = (value: boolean) => {
        clearTimeout(timer);
        this.client.off('ready', check);
        this.reader.off('ready', check);
        resolve(value);
      };
      const check = () => {
        if (both()) settle(true);
      };
      const timer = setTimeout(() => settle(false), timeoutMs);
      this.client.on('ready', check);
      this.reader.on('ready', check);
    });
  }

  get inboundWaiting(): boolean {
    return this.inboxHead < this.inbox.length;
  }

  /** Hands over what arrived, oldest first (idle slices take part of it, a step the rest). */
  drain(take: (delta: TextDelta) => boolean): void {
    const inbox = this.inbox;
    let next = this.inboxHead;
    let more = true;
    while (more && next < inbox.length) {
      const delta = inbox[next];
      inbox[next++] = EMPTY_DELTA; // not held past its hand-over
      this.inboxTokens -= delta.tokens.length;
      more = take(delta);
    }
    if (next === inbox.length) {
      this.inbox = [];
      this.inboxHead = 0;
    } else this.inboxHead = next;
  }

  /**
   * Writes this engine's new text (never awaited by a step): live deltas to their groups' streams,
   * finished outputs to their prompts' history, in one script call, within maxPublishBytes; and starts
   * reading the groups that opened (their history first).
   */
  publish(outbound: OutboundText): void {
    for (const group of outbound.opened) this.open(group);
    this.fetchOwedHistory();
    if (!this.counters.connected) {
      this.hold(outbound.deltas);
      return;
    }
    if (this.flushesInFlight >= FLUSHES_IN_FLIGHT_MAX) {
      this.counters.publishDropped += outbound.deltas.length;
      if (!this.slowLogged) this.log?.warn({ url: redactedUrl(this.config.url), flushesInFlight: this.flushesInFlight }, 'shared text: Redis is slow to answer; this engine\'s text is dropped until it catches up, drafting goes on');
      this.slowLogged = true;
      return;
    }
    let deltas = outbound.deltas;
    if (this.held.length > 0) {
      deltas = [...this.held, ...deltas];
      this.held = [];
      this.heldBytes = 0;
    }
    if (deltas.length === 0) return;
    // One stream entry per group per flush, holding every delta of that group: a few large
    // writes, not one per request.
    const byGroup = new Map<string, TextDelta[]>();
    const bytes = this.withinPublishBytes(deltas, 0, (delta) => {
      const list = byGroup.get(delta.group);
      if (list === undefined) byGroup.set(delta.group, [delta]);
      else list.push(delta);
    });
    // One script call per flush, whatever the number of groups: each group's stream entry and its
    // TTL, and each finished output appended to its prompt's capped history. A command per
    // stream and list cost the event loop more than the text it carried (docs/results.md).
    const keys: string[] = [];
    const payloads: Buffer[] = [];
    const historyKeys: string[] = [];
    const historyEntries: Buffer[] = [];
    for (const [group, deltas] of byGroup) {
      keys.push(this.liveKey(group));
      payloads.push(encodeDeltas(deltas, this.instance));
      for (const delta of deltas) {
        this.counters.publishedTokens += delta.tokens.length;
        if (!delta.finished || delta.output === undefined) continue;
        historyKeys.push(this.historyKey(group));
        historyEntries.push(encodeHistoryEntry(`${this.instance}/${delta.source}`, delta.output));
      }
    }
    const { liveMaxEntries, liveTtlSeconds, historyOutputsPerPrompt, historyTtlSeconds, historyMaxTokens } = this.config;
    const settings = [this.instance, liveMaxEntries, liveTtlSeconds, historyOutputsPerPrompt, historyTtlSeconds, keys.length, historyMaxTokens];
    this.counters.publishedBytes += bytes;
    const written = this.client.samPublish(keys.length + historyKeys.length + 2, ...keys, ...historyKeys, ...this.historyBudgetKeys, ...settings, ...payloads, ...historyEntries);
    this.flushesInFlight++;
    this.track(
      written
        .then((evicted) => {
          this.counters.historyEvicted += evicted;
          if (this.slowLogged) this.log?.info({ url: redactedUrl(this.config.url) }, 'shared text: Redis answers again; sharing resumes');
          this.slowLogged = false;
        })
        .finally(() => this.flushesInFlight--),
    );
  }

  /** Keeps text for when Redis answers, within maxPublishBytes; the rest is dropped and counted. */
  private hold(deltas: readonly TextDelta[]): void {
    this.heldBytes = this.withinPublishBytes(deltas, this.heldBytes, (delta) => this.held.push(delta));
  }

  /**
   * Hands `keep` each delta that still fits within maxPublishBytes after `used` bytes (publishedSize),
   * in order; the others are dropped and counted. Returns the bytes used then.
   */
  private withinPublishBytes(deltas: readonly TextDelta[], used: number, keep: (delta: TextDelta) => void): number {
    let bytes = used;
    for (const delta of deltas) {
      const size = publishedSize(delta);
      if (bytes + size > this.config.maxPublishBytes) {
        this.counters.publishDropped++;
        continue;
      }
      bytes += size;
      keep(delta);
    }
    return bytes;
  }

  /** Every write and history fetch started so far has finished (the replay's step boundary). */
  async settle(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }

  /**
   * One read of every watched group's stream, returning at once. Resolves to whether a stream had
   * more entries than one read takes (read again without waiting).
   */
  async poll(): Promise<boolean> {
    const groups = [...this.watched.keys()];
    let more = false;
    for (let from = 0; from < groups.length; from += STREAMS_PER_READ) {
      const chunk = groups.slice(from, from + STREAMS_PER_READ);
      const keys = chunk.map((group) => this.liveKey(group));
      const ids = chunk.map((group) => this.watched.get(group)!);
      let reply: ReadReply;
      try {
        reply = await this.reader.samReadBuffer(keys.length, ...keys, this.instance, ENTRIES_PER_STREAM, ...ids);
      } catch (error) {
        this.failed(error);
        return false;
      }
      for (const [index, lastId, scanned, entries] of reply) {
        const group = chunk[index - 1];
        if (group === undefined || !this.watched.has(group)) continue;
        for (const [idBuffer, fields] of entries) this.receiveLive(group, idBuffer.toString(), fields);
        this.watched.set(group, lastId.toString());
        if (scanned === ENTRIES_PER_STREAM) more = true;
      }
    }
    return more;
  }

  /**
   * The server's background work: publishes what `outbound` hands over every publishIntervalMs,
   * and reads every readIntervalMs until closed, backing off while Redis is away. Reading on an
   * interval, not blocked until the next entry, bounds the round trips whatever the number of
   * writers: each costs the event loop a system call or two.
   */
  start(outbound: () => OutboundText): void {
    if (this.loop !== null) return;
    this.outbound = outbound;
    this.publisher = setInterval(() => this.publish(outbound()), this.config.publishIntervalMs);
    this.publisher.unref();
    this.loop = (async () => {
      while (!this.closed) {
        if (this.watched.size === 0 || !this.counters.connected) {
          await sleep(this.counters.connected ? this.config.readIntervalMs : 200);
          continue;
        }
        if (!(await this.poll())) await sleep(this.config.readIntervalMs);
      }
    })();
  }

  /**
   * Writes what the server has not flushed yet (outputs that finished just before reach history),
   * waits for the writes and the reader within CLOSE_WAIT_MS, then disconnects, which fails what
   * a Redis that stopped answering still owes: a shutdown never waits on Redis for longer.
   */
  close(): Promise<void> {
    this.closing ??= this.shutDown();
    return this.closing;
  }

  private async shutDown(): Promise<void> {
    this.closed = true;
    if (this.publisher !== null) clearInterval(this.publisher);
    if (this.outbound !== null) this.publish(this.outbound());
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_WAIT_MS)));
    await Promise.race([Promise.all([this.loop, this.settle()]), bound]);
    clearTimeout(timer);
    this.client.disconnect();
    this.reader.disconnect();
  }

  // ------------------------------------------------------------------ internals

  /**
   * A command failed: counted always; an error Redis answered is logged once per connection (a
   * server older than 6.2, or one full to maxmemory, fails every call; a lost connection is logged apart).
   */
  private failed(error: unknown): void {
    this.counters.errors++;
    if (!(error instanceof ReplyError) || this.commandErrorLogged) return;
    this.commandErrorLogged = true;
    const message = error instanceof Error ? error.message : String(error);
    this.log?.warn({ url: redactedUrl(this.config.url), err: message }, 'shared text: a Redis command failed; drafting goes on from local state (sam_sidecar_sharing_errors_total counts each failure)');
  }

  /** A command in flight: its failure is counted, and settle() waits for it. */
  private track(promise: Promise<unknown>): void {
    const tracked: Promise<void> = promise
      .then(
        () => undefined,
        (error) => this.failed(error),
      )
      .finally(() => this.pending.delete(tracked));
    this.pending.add(tracked);
  }

  /**
   * A group became active here: fetch its history once, then read its live stream from
   * liveWindowSeconds back. With Redis away or too many fetches waiting, the fetch waits its turn
   * (historyOwed): a sidecar started before its Redis, or during an outage, still gets the
   * history of the prompts it met meanwhile.
   */
  private open(group: string): void {
    if (this.historyFetched.has(group)) {
      this.watch(group, this.watched.get(group) ?? this.liveReadStart());
      return;
    }
    if (this.historyOwed.has(group)) return;
    this.historyOwed.set(group, this.liveReadStart());
    if (this.historyOwed.size > this.config.maxWatchedGroups) {
      const [oldest, from] = this.historyOwed.entries().next().value!;
      this.historyOwed.delete(oldest);
      this.markHistoryFetched(oldest); // given up: a later fetch would repeat the live text read meanwhile
      this.watch(oldest, from);
    }
  }

  private liveReadStart(): string {
    return `${Date.now() - this.config.liveWindowSeconds * 1000}-0`;
  }

  /** Starts the owed history fetches that Redis and the in-flight bound allow, oldest first. */
  private fetchOwedHistory(): void {
    for (const [group, from] of this.historyOwed) {
      if (!this.counters.connected || this.historyFetchesInFlight >= HISTORY_FETCHES_IN_FLIGHT_MAX) return;
      this.historyOwed.delete(group);
      this.fetchHistory(group, from);
    }
  }

  private markHistoryFetched(group: string): void {
    this.historyFetched.add(group);
    if (this.historyFetched.size > HISTORY_FETCHED_MAX) this.historyFetched.delete(this.historyFetched.values().next().value!);
  }

  private fetchHistory(group: string, from: string): void {
    this.markHistoryFetched(group);
    this.historyFetchesInFlight++;
    const fetched = this.client.lrangeBuffer(this.historyKey(group), 0, -1).finally(() => this.historyFetchesInFlight--);
    this.track(
      fetched.then(
        (entries) => {
          if (entries.length === 0) this.counters.historyMisses++;
          else this.counters.historyHits++;
          const sources = new Set<string>();
          for (const entry of entries) {
            const { source, tokens } = decodeHistoryEntry(entry);
            if (source.startsWith(`${this.instance}/`)) continue;
            sources.add(source);
            this.deliver({ group, source, at: 0, tokens, finished: true }, entry.length);
          }
          if (sources.size > 0) this.fromHistory.set(group, sources);
          this.watch(group, from);
        },
        (error: unknown) => {
          this.watch(group, from);
          throw error; // counted by track()
        },
      ),
    );
  }

  private watch(group: string, from: string): void {
    this.watched.delete(group);
    this.watched.set(group, from);
    if (this.watched.size > this.config.maxWatchedGroups) {
      const oldest = this.watched.keys().next().value!;
      this.watched.delete(oldest);
      this.fromHistory.delete(oldest);
    }
  }

  /** Another writer's stream entry (the read script left this sidecar's own out). */
  private receiveLive(group: string, id: string, fields: Buffer[]): void {
    let packed: Buffer | null = null;
    for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i].toString() === 'd') packed = fields[i + 1];
    if (packed === null) return;
    const own = `${this.instance}/`;
    const seen = this.fromHistory.get(group);
    let lagged = false;
    for (const delta of decodeDeltas(packed, group)) {
      if (delta.source.startsWith(own) || seen?.has(delta.source)) continue;
      if (!lagged) {
        this.counters.lagMs = Math.max(0, Date.now() - Number(id.split('-')[0]));
        lagged = true;
      }
      this.deliver(delta, delta.tokens.byteLength);
    }
  }

  private deliver(delta: TextDelta, bytes: number): void {
    if (this.inboxTokens + delta.tokens.length > this.config.maxInboxTokens) {
      this.counters.inboxDropped++;
      return;
    }
    const wasEmpty = !this.inboundWaiting;
    this.inbox.push(delta);
    this.inboxTokens += delta.tokens.length;
    if (wasEmpty) this.onArrival?.();
    this.counters.receivedTokens += delta.tokens.length;
    this.counters.receivedBytes += bytes;
  }
}

/**
 * TLS options whose CA is read from `file` at every connection, reconnects included: a CA rotated
 * in place (a Secret or trust bundle the kubelet updates under a running pod) is used from the
 * next reconnect on, without a restart. ioredis copies these options into each connection's with
 * Object.assign, which reads the getter then. A file that cannot be read keeps the last good CA.
 */
function reloadedCa(file: string): { readonly ca: Buffer } {
  let last = readFileSync(file); // checked at start (config): readable, a PEM certificate
  return {
    get ca(): Buffer {
      try {
        last = readFileSync(file);
      } catch {
        // keep the last one: a rotation half done, or the file briefly away
      }
      return last;
    },
  };
}

/** What a delta counts toward maxPublishBytes: its tokens, a finished one's whole output, and its framing. */
function publishedSize(delta: TextDelta): number {
  return delta.tokens.byteLength + (delta.output?.byteLength ?? 0) + 64;
}

/**
 * A group's deltas of one flush, as one stream entry: per delta [u16 source bytes][source]
 * [u32 at][u32 tokens][u8 finished][int32 tokens...]; sources are qualified by the instance.
 */
function encodeDeltas(deltas: readonly TextDelta[], instance: string): Buffer {
  const sources = deltas.map((delta) => Buffer.from(`${instance}/${delta.source}`, 'utf8'));
  let size = 0;
  deltas.forEach((delta, i) => (size += 11 + sources[i].length + delta.tokens.byteLength));
  const out = Buffer.alloc(size);
  let o = 0;
  deltas.forEach((delta, i) => {
    o = out.writeUInt16LE(sources[i].length, o);
    o += sources[i].copy(out, o);
    o = out.writeUInt32LE(delta.at, o);
    o = out.writeUInt32LE(delta.tokens.length, o);
    o = out.writeUInt8(delta.finished ? 1 : 0, o);
    o += Buffer.from(delta.tokens.buffer, delta.tokens.byteOffset, delta.tokens.byteLength).copy(out, o);
  });
  return out;
}

/** The deltas of one stream entry; a malformed entry yields what precedes the damage. */
function decodeDeltas(packed: Buffer, group: string): TextDelta[] {
  const deltas: TextDelta[] = [];
  let o = 0;
  while (o + 11 <= packed.length) {
    const sourceBytes = packed.readUInt16LE(o);
    if (o + 11 + sourceBytes > packed.length) break;
    const source = packed.toString('utf8', o + 2, o + 2 + sourceBytes);
    o += 2 + sourceBytes;
    const at = packed.readUInt32LE(o);
    const count = packed.readUInt32LE(o + 4);
    const finished = packed.readUInt8(o + 8) === 1;
    o += 9;
    if (o + 4 * count > packed.length) break;
    deltas.push({ group, source, at, tokens: int32View(packed.subarray(o, o + 4 * count)), finished });
    o += 4 * count;
  }
  return deltas;
}

/** [u16 source bytes][source][int32 tokens...] */
function encodeHistoryEntry(source: string, output: Int32Array): Buffer {
  const name = Buffer.from(source, 'utf8');
  const entry = Buffer.alloc(2 + name.length + output.byteLength);
  entry.writeUInt16LE(name.length, 0);
  name.copy(entry, 2);
  Buffer.from(output.buffer, output.byteOffset, output.byteLength).copy(entry, 2 + name.length);
  return entry;
}

function decodeHistoryEntry(entry: Buffer): { source: string; tokens: Int32Array } {
  const length = entry.readUInt16LE(0);
  const source = entry.toString('utf8', 2, 2 + length);
  return { source, tokens: int32View(entry.subarray(2 + length)) };
}

/**
 * The tokens of a buffer as int32, copied byte for byte (a Redis reply's buffer may not be 4-byte
 * aligned); the writer wrote them the same way, from an Int32Array (little-endian on every
 * platform the sidecar runs on).
 */
function int32View(bytes: Buffer): Int32Array {
  const out = new Int32Array(Math.floor(bytes.length / 4));
  new Uint8Array(out.buffer).set(bytes.subarray(0, out.byteLength));
  return out;
}


const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
