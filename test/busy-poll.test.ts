/**
 * The busy poll that keeps the sidecar's event loop awake for a window: after a PING (the shim
 * announcing a step) until that step is answered, and after every step where configured.
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
  it('never polls for a window of 0 (after a step, by default)', async () => {
    const poll = new BusyPoll();
    poll.restart(0);
    poll.extend(0);
    expect(poll.active).toBe(false);
  });

  it('keeps the loop polling for its window, then lets it sleep', async () => {
    const poll = new BusyPoll();
    poll.restart(50_000);
    expect(poll.active).toBe(true);
    await turn();
    expect(poll.active).toBe(true);
    await until(() => !poll.active);
  });

  it('does not starve timers or I/O while polling', async () => {
    const poll = new BusyPoll();
    poll.extend(1_000_000);
    const fired = await new Promise<boolean>((resolve) => setTimeout(() => resolve(true), 10));
    expect(fired).toBe(true);
    expect(poll.active).toBe(true);
    poll.stop();
    await until(() => !poll.active);
  });

  it('extend keeps a longer window; restart replaces it, and restart(0) ends it', async () => {
    const poll = new BusyPoll();
    poll.restart(1_000_000);
    poll.extend(10); // a PING while a long window runs: the long window stays
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(poll.active).toBe(true);
    poll.restart(0); // the announced step was answered and no poll after steps is configured
    await turn();
    await turn();
    expect(poll.active).toBe(false);
  });

  it('stops at shutdown', async () => {
    const poll = new BusyPoll();
    poll.extend(1_000_000);
    poll.stop();
    await turn();
    await turn();
    expect(poll.active).toBe(false);
  });
});
