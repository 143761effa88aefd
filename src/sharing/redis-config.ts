/**
 * The settings of shared text through Redis and their defaults, apart from the client itself so
 * that reading the config loads no Redis client.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';

export interface RedisSharingConfig {
  url: string;
  /** Prefix of every key (one per training job, so jobs never read each other's text). */
  keyPrefix: string;
  /** Password (else from the URL); a Secret in the chart. */
  password?: string;
  /** PEM file of the CA(s) a rediss:// server's certificate must chain to (else the system's). */
  tlsCaFile?: string;
  /** Finished outputs kept per prompt for later steps, and how long. */
  historyOutputsPerPrompt: number;
  historyTtlSeconds: number;
  /**
   * Tokens of history the whole job keeps in Redis (every prompt's list together, one budget per
   * key prefix): past it, the least recently written prompts' history goes first.
   */
  historyMaxTokens: number;
  /** A group's live stream: entries kept (approximately) and how long after its last write. */
  liveMaxEntries: number;
  liveTtlSeconds: number;
  /** A group opened here reads its live stream from this far back. */
  liveWindowSeconds: number;
  /** Bounds: bytes written per flush (and held while Redis does not answer), groups read, tokens waiting for the next step. */
  maxPublishBytes: number;
  maxWatchedGroups: number;
  maxInboxTokens: number;
  /** The server reads other engines' text this often (ms). */
  readIntervalMs: number;
  /**
   * The server publishes what its engine produced this often (ms): steps never pay for it. Each
   * flush sends one delta per request with new text since the last, so a longer interval means
   * fewer, larger deltas and fewer wake-ups landing between steps, at the price of staler text
   * for the other engines (a few decode steps cost little AL: `replay --exchange-every`).
   */
  publishIntervalMs: number;
}

export const REDIS_SHARING_DEFAULTS: Omit<RedisSharingConfig, 'url'> = Object.freeze({
  keyPrefix: 'sam',
  historyOutputsPerPrompt: 64,
  historyTtlSeconds: 24 * 3600,
  historyMaxTokens: 64 * 1024 * 1024,
  liveMaxEntries: 20_000,
  liveTtlSeconds: 3600,
  liveWindowSeconds: 600,
  maxPublishBytes: 8 * 1024 * 1024,
  maxWatchedGroups: 4096,
  maxInboxTokens: 4_000_000,
  readIntervalMs: 20,
  publishIntervalMs: 40,
});

/** A Redis URL as logged and shown: credentials replaced. */
export function redactedUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}

/** A CA file's path, checked as the config is read: readable, and holding a PEM certificate. */
export const CaFilePath = z
  .string()
  .min(1)
  .superRefine((path, ctx) => {
    const problem = certificateFileProblem(path);
    if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
  });

/** Why a CA file cannot serve (unreadable, or no PEM certificate in it), or null. */
function certificateFileProblem(path: string): string | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    return `cannot be read: ${(error as Error).message}`;
  }
  return text.includes('-----BEGIN CERTIFICATE-----') ? null : `${path} holds no PEM certificate`;
}
