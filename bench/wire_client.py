"""Python side of `npm run bench:wire`: Step round trips against a running sidecar, measured as the
shim pays them: its session builds each request's delta from the batch's token rows, encodes, round
trips and unpacks the drafts. Prints one JSON object.

  latency:    fast lane (stdlib socket) and gRPC (grpcio), batch B, 1-4 new tokens per request
              from recorded (or synthetic) rollouts: the whole step, its awaited call alone
              (encode, round trip, decode), and an empty PING round trip on the same socket (the
              floor any call pays on this machine)
  throughput: one engine stepping as fast as it can for S seconds (run 4 at once for 4 engines)
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python", "src"))

from sam_sidecar.client import FastLaneClient  # noqa: E402
from sam_sidecar.grpc_client import GrpcStepClient  # noqa: E402
from sam_sidecar.session import DraftSession  # noqa: E402


class Workload:
    """A batch of B running requests stepping through recorded rollouts (token-id JSONL rows:
    prompt, output, group), held the way vLLM's InputBatch holds them: one row of token ids per
    request, its valid length, its prompt length. Each step every request gains 1-4 tokens; a
    request whose output is used up finishes and the next rollout row takes its batch row."""

    def __init__(self, batch, rows, seed):
        self.rng = np.random.default_rng(seed)
        self.rows = rows
        width = max(len(r["prompt"]) + len(r["output"]) for r in rows)
        self.tokens = np.zeros((batch, width), dtype=np.int32)
        self.ends = np.zeros(batch, dtype=np.int64)
        self.totals = np.zeros(batch, dtype=np.int64)
        self.prompt_lens = np.zeros(batch, dtype=np.int64)
        self.req_ids = [""] * batch
        self.next_row = 0
        self.serial = 0
        self.finished = []
        for slot in range(batch):
            self._start(slot)

    def _start(self, slot):
        row = self.rows[self.next_row % len(self.rows)]
        self.next_row += 1
        self.serial += 1
        context = row["prompt"] + row["output"]
        self.tokens[slot, : len(context)] = context
        self.prompt_lens[slot] = len(row["prompt"])
        self.ends[slot] = len(row["prompt"])
        self.totals[slot] = len(context)
        self.req_ids[slot] = f"req-{self.serial}"

    def advance(self):
        """Samples this step's tokens; returns the ids finished since the last step."""
        finished, self.finished = self.finished, []
        for slot in np.flatnonzero(self.ends >= self.totals).tolist():
            self.finished.append(self.req_ids[slot])
            self._start(slot)
        self.ends = np.minimum(self.ends + self.rng.integers(1, 5, size=len(self.ends)), self.totals)
        return finished

    def step(self, session):
        finished = self.advance()
        return session.step(self.req_ids, self.tokens, self.ends, self.prompt_lens, len(self.req_ids), finished)


def load_rows(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(np.ceil(q * len(ordered))) - 1))]


def latency(client, rows, batch, steps, k, seed):
    """Per-step cost of the shim's session (build the deltas, round trip, unpack the drafts), and
    of the call within it (encode, round trip, decode)."""
    session = DraftSession(k, client=client, engine_id=f"bench-{seed}-{os.getpid()}", local_threshold=0, keep_latencies=True)
    work = Workload(batch, rows, seed)
    for _ in range(steps + 1):
        result = work.step(session)
        if result.source != "sidecar":
            raise SystemExit(f"step {session.step_id} failed: the sidecar did not answer")
    stats = session.stats
    return stats.step_us[1:], stats.call_us[1:]  # the first step carries every full context


def ping_latency(client, count):
    """Empty round trips (PING, PONG) on the step's connection and deadline."""
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        if not client.ping(deadline_s=None):
            raise SystemExit("the sidecar did not answer a PING")
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


def throughput(socket_path, rows, batch, seconds, k, engine_index):
    session = DraftSession(k, client=FastLaneClient(socket_path, deadline_s=2.0), engine_id=f"bench-tp-{engine_index}-{os.getpid()}", local_threshold=0)
    work = Workload(batch, rows, seed=10 + engine_index)
    work.step(session)  # the first (full-context) step is not counted
    steps = 0
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        work.step(session)
        steps += 1
    if session.stats.failed_steps:
        raise SystemExit(f"{session.stats.failed_steps} steps failed")
    return steps / (time.perf_counter() - began)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--grpc", default=None, help="gRPC target, e.g. unix:/path.grpc")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rows", required=True, help="token-id JSONL rollouts (node dist/cli.js synth writes some)")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--mode", choices=["latency", "throughput"], default="latency")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--engine-index", type=int, default=0)
    args = parser.parse_args()
    rows = load_rows(args.rows)
    if args.mode == "throughput":
        print(json.dumps({"stepsPerSec": throughput(args.socket, rows, args.batch, args.seconds, args.k, args.engine_index)}))
        return
    client = FastLaneClient(args.socket, deadline_s=1.0)
    fast, fast_call = latency(client, rows, args.batch, args.steps, args.k, seed=1)
    ping = ping_latency(client, args.steps)
    out = {
        "fastLaneUsP50": percentile(fast, 0.5),
        "fastLaneUsP99": percentile(fast, 0.99),
        "fastLaneCallUsP50": percentile(fast_call, 0.5),
        "fastLaneCallUsP99": percentile(fast_call, 0.99),
        "pingUsP50": percentile(ping, 0.5),
        "pingUsP99": percentile(ping, 0.99),
    }
    if args.grpc:
        slow, _ = latency(GrpcStepClient(args.grpc, deadline_s=5.0), rows, args.batch, max(200, args.steps // 4), args.k, seed=2)
        out.update({"grpcUsP50": percentile(slow, 0.5), "grpcUsP99": percentile(slow, 0.99)})
    print(json.dumps({key: round(value, 1) for key, value in out.items()}))


if __name__ == "__main__":
    main()
