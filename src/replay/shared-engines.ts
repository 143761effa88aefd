/**
 * Engines of a replay that share only through Redis: each in-process backend's Step service gets
 * its own RedisSharing (its own connections and instance id, as a sidecar per engine pod would),
 * and after every round of engine steps (or every `exchangeEvery` rounds) each publishes what it
 * produced, then reads what the others did. Text therefore arrives one step late, as a deployed
 * sidecar's would at best, or up to `exchangeEvery` steps late (a deployment's publish and read
 * intervals against its decode step time).
 */
import { randomUUID } from 'node:crypto';
import { redactedUrl, type RedisSharingConfig, RedisSharing, REDIS_SHARING_DEFAULTS, type SharingCounters } from '../sharing/redis-sharing.js';
import { sidecarError } from '../core/errors.js';
import type { InProcessBackend } from './in-process.js';
import { replayRolloutSteps, type RolloutStepOptions } from './rollout-step.js';
import type { ReplayResult } from './simulate.js';
import type { TraceRow } from './traces.js';

export interface SharedEngines {
  afterRound(): Promise<void>;
  readonly backends: readonly InProcessBackend[];
  readonly sharings: readonly RedisSharing[];
  /** Fresh engines in place of these (restarted sidecars, with new instance ids), sharing the same keys. */
  restart(fresh: readonly InProcessBackend[]): Promise<void>;
  close(): Promise<void>;
}

/** Where the engines' Redis is: its URL, and the CA a rediss:// server's certificate chains to. */
export type RedisConnection = Pick<RedisSharingConfig, 'url' | 'tlsCaFile'>;

/** `keyPrefix`: a fresh one per run unless given (a given one lets a later run find this one's history). */
export async function shareThroughRedis(initial: readonly InProcessBackend[], redis: RedisConnection, keyPrefix = `sam-replay-${randomUUID()}`): Promise<SharedEngines> {
  let backends = initial;
  let sharings: RedisSharing[] = [];
  const attach = async () => {
    sharings = backends.map((backend) => {
      const sharing = new RedisSharing({ ...REDIS_SHARING_DEFAULTS, ...redis, keyPrefix });
      backend.service.sharedText = sharing;
      return sharing;
    });
    const connected = await Promise.all(sharings.map((sharing) => sharing.ready()));
    if (!connected.every(Boolean)) {
      await Promise.all(sharings.map((sharing) => sharing.close()));
      throw sidecarError('INVALID_ARGUMENT', `cannot reach Redis at ${redactedUrl(redis.url)}`, 'redis');
    }
  };
  await attach();
  return {
    get backends() {
      return backends;
    },
    get sharings() {
      return sharings;
    },
    async restart(fresh) {
      await Promise.all(sharings.map((sharing) => sharing.close()));
      backends = fresh;
      await attach();
    },
    async afterRound() {
      backends.forEach((backend, i) => sharings[i].publish(backend.service.draftEngine.takeOutbound()));
      await Promise.all(sharings.map((sharing) => sharing.settle()));
      await Promise.all(sharings.map((sharing) => sharing.poll()));
    },
    async close() {
      await Promise.all(sharings.map((sharing) => sharing.close()));
    },
  };
}

/**
 * Rollout steps over engines that share only through Redis: `engines()` makes one fresh set of
 * in-process engines (text sharing on), called again for every restart when `restartBetweenSteps`.
 * Returns the result and the last set's sharing counters.
 */
export async function replayThroughRedis(
  steps: readonly (readonly TraceRow[])[],
  engines: () => InProcessBackend[],
  redis: RedisConnection,
  options: Omit<RolloutStepOptions, 'afterRound' | 'restart'> & { restartBetweenSteps?: boolean; keyPrefix?: string; exchangeEvery?: number },
): Promise<{ result: ReplayResult; counters: SharingCounters[] }> {
  const shared = await shareThroughRedis(engines(), redis, options.keyPrefix);
  const restart = async () => {
    const fresh = engines();
    await shared.restart(fresh);
    return fresh;
  };
  try {
    const every = options.exchangeEvery ?? 1;
    let round = 0;
    const afterRound = () => (++round % every === 0 ? shared.afterRound() : undefined);
    const result = await replayRolloutSteps(steps, shared.backends, { ...options, afterRound, restart: options.restartBetweenSteps === true ? restart : undefined });
    return { result, counters: shared.sharings.map((sharing) => sharing.counters) };
  } finally {
    await shared.close();
  }
}
