/**
 * The busy poll that keeps the sidecar's event loop awake between decode steps (opt-in).
 */
import { describe, expect, it } from 'vitest';
import { BusyPoll } from '../src/server/busy-poll.js';

const turn = () => new Promise((resolve) => setImmediate(resolve));

async function until(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not reached');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('busy poll', () => {
  it('never polls with a window of 0 (the default)', async () => {
    const poll = new BusyPoll(0);
    poll.extend();
    expect(poll.active).toBe(false);
  });

  it('keeps the loop polling for its window after a step, then lets it sleep', async () => {
    const poll = new BusyPoll(50_000);
    poll.extend();
    expect(poll.active).toBe(true);
    await turn();
    expect(poll.active).toBe(true);
    await until(() => !poll.active);
  });

  it('does not starve timers or I/O while polling', async () => {
    const poll = new BusyPoll(1_000_000);
    poll.extend();
    const fired = await new Promise<boolean>((resolve) => setTimeout(() => resolve(true), 10));
    expect(fired).toBe(true);
    expect(poll.active).toBe(true);
    poll.stop();
    await until(() => !poll.active);
  });

  it('restarts its window on every step, and stops at shutdown', async () => {
    const poll = new BusyPoll(1_000_000);
    poll.extend();
    poll.extend(); // a second step while polling: one poll loop, a later end
    poll.stop();
    await turn();
    await turn();
    expect(poll.active).toBe(false);
  });
});
