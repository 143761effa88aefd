"""The shim's side of bench/long-context.ts: one engine whose batch of long requests the sidecar has
never seen (a first step after a restart, or a batch of new long requests), stepped back to back
with the default deadline, one new token per request per step. Reports how long until the sidecar
drafts for (nearly) every request, and how long each step call took on the way (build, send,
wait, unpack: what the runner waits for). Prints one JSON object on the last line.

Text: prompts shared by groups of samples (as in GRPO), outputs drawn from a few hundred 16-token
phrases, so a request's next tokens repeat what it has seen and drafts exist once it is indexed.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python", "src"))

from sam_sidecar.client import FastLaneClient  # noqa: E402
from sam_sidecar.session import DraftSession  # noqa: E402

PHRASE = 16


def contexts(requests, length, prompt, group, extra, seed):
    rng = np.random.default_rng(seed)
    phrases = rng.integers(1, 30_000, size=(256, PHRASE), dtype=np.int32)
    rows = np.zeros((requests, length + extra), dtype=np.int32)
    prompts = rng.integers(1, 30_000, size=((requests + group - 1) // group, prompt), dtype=np.int32)
    for r in range(requests):
        rows[r, :prompt] = prompts[r // group]
        picks = rng.integers(0, len(phrases), size=(length + extra - prompt) // PHRASE + 1)
        rows[r, prompt:] = phrases[picks].ravel()[: length + extra - prompt]
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--context", type=int, default=32_768)
    parser.add_argument("--prompt", type=int, default=1024)
    parser.add_argument("--group", type=int, default=16)
    parser.add_argument("--deadline-ms", type=float, default=5.0)
    parser.add_argument("--limit-s", type=float, default=60.0)
    parser.add_argument("--drafting-share", type=float, default=0.95)
    parser.add_argument("--after-steps", type=int, default=50, help="steps measured once drafting")
    parser.add_argument("--model-ms", type=float, default=0.0, help="the runner's forward pass between steps (0: back to back)")
    args = parser.parse_args()

    extra = 20_000
    rows = contexts(args.requests, args.context, args.prompt, args.group, extra, seed=1)
    ids = [f"long-{r}" for r in range(args.requests)]
    prompts = np.full(args.requests, args.prompt, dtype=np.int64)
    session = DraftSession(3, FastLaneClient(args.socket, deadline_s=args.deadline_ms / 1000), engine_id=f"bench-long-{os.getpid()}")
    step_ms = []
    drafting_at = None
    steps_to_drafting = None
    failed = 0
    started = time.perf_counter()
    step = 0
    while step < extra:
        ends = np.full(args.requests, args.context + step, dtype=np.int64)
        t0 = time.perf_counter()
        result = session.step(ids, rows, ends, prompts, args.requests)
        step_ms.append((time.perf_counter() - t0) * 1000)
        failed += result.source != "sidecar"
        drafted = sum(1 for d in result.drafts if d)
        step += 1
        if drafting_at is None and drafted >= args.drafting_share * args.requests:
            drafting_at = time.perf_counter() - started
            steps_to_drafting = step
        if drafting_at is not None and step >= steps_to_drafting + args.after_steps:
            break
        if time.perf_counter() - started > args.limit_s:
            break
        if args.model_ms > 0:
            time.sleep(args.model_ms / 1000)
    ordered = sorted(step_ms)
    print(
        json.dumps(
            {
                "requests": args.requests,
                "contextTokens": args.context,
                "deadlineMs": args.deadline_ms,
                "modelMs": args.model_ms,
                "maxStepTokens": session.max_step_tokens,
                "timeToDraftingS": None if drafting_at is None else round(drafting_at, 3),
                "stepsToDrafting": steps_to_drafting,
                "steps": step,
                "stepCallMsMax": round(ordered[-1], 2),
                "stepCallMsP99": round(ordered[int(0.99 * (len(ordered) - 1))], 2),
                "stepCallMsP50": round(ordered[len(ordered) // 2], 2),
                "failOpenSteps": failed,
            }
        )
    )


if __name__ == "__main__":
    main()
