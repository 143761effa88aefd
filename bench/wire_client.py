"""Python side of `npm run bench:wire`: Step round trips against a running sidecar, measured the way
the shim pays them (build the frame, round trip, unpack the drafts). Prints one JSON object.

  latency:    fast lane (stdlib socket) and gRPC (grpcio), batch B, 1-4 new tokens per request
              from recorded (or synthetic) rollouts
  throughput: one engine stepping as fast as it can for S seconds (run 4 at once for 4 engines)
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python", "src"))

from sam_sidecar import wire  # noqa: E402
from sam_sidecar.client import FastLaneClient  # noqa: E402
from sam_sidecar.grpc_client import GrpcStepClient, encode_step_request  # noqa: E402


class Workload:
    """A batch of B running requests stepping through recorded rollouts (token-id JSONL rows:
    prompt, output, group), 1-4 new tokens per request per step. A request whose output is used up
    finishes and the next row takes its place with its full context, as in a rollout."""

    def __init__(self, batch, rows, seed):
        self.rng = np.random.default_rng(seed)
        self.rows = rows
        self.batch = batch
        self.next_row = 0
        self.serial = 0
        self.slots = [self._start() for _ in range(batch)]
        self.finished = []

    def _start(self):
        row = self.rows[self.next_row % len(self.rows)]
        self.next_row += 1
        self.serial += 1
        return {"id": f"req-{self.serial}", "row": row, "held": 0, "at": 0, "new": True}

    def next_step(self):
        """(ids, starts, counts, prompt_lens, tokens, finished ids) of the next step."""
        ids, starts, counts, prompts, flat = [], [], [], [], []
        finished, self.finished = self.finished, []
        for i, slot in enumerate(self.slots):
            row = slot["row"]
            if slot["new"]:
                tokens = row["prompt"]
                slot["new"] = False
                prompts.append(len(row["prompt"]))
                starts.append(0)
            else:
                take = int(self.rng.integers(1, 5))
                tokens = row["output"][slot["at"] : slot["at"] + take]
                slot["at"] += len(tokens)
                prompts.append(wire.NO_PROMPT)
                starts.append(slot["held"])
            ids.append(slot["id"])
            counts.append(len(tokens))
            flat.extend(tokens)
            slot["held"] += len(tokens)
            if slot["at"] >= len(row["output"]):
                self.finished.append(slot["id"])
                self.slots[i] = self._start()
        return ids, starts, counts, prompts, flat, finished


def load_rows(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(np.ceil(q * len(ordered))) - 1))]


def fast_lane_step(client, engine, step_id, k, batch, step):
    ids, starts, counts, prompts, flat, finished = step
    call_id = client.next_call_id()
    frame = wire.encode_step(
        call_id, engine, step_id, batch, False, k, [r.encode() for r in ids], np.array(starts), np.array(counts), np.array(prompts), np.array(flat), [r.encode() for r in finished]
    )
    reply = wire.decode_reply(client.call(frame, call_id))
    return reply.draft_lists()


def fast_lane_latency(socket_path, rows, batch, steps, k):
    client = FastLaneClient(socket_path, deadline_s=1.0)
    work = Workload(batch, rows, seed=1)
    engine = f"bench-fl-{os.getpid()}".encode()
    samples = []
    for step_id in range(1, steps + 2):
        step = work.next_step()
        began = time.perf_counter()
        fast_lane_step(client, engine, step_id, k, batch, step)
        if step_id > 1:  # the first step carries every full context
            samples.append((time.perf_counter() - began) * 1e6)
    return samples


def grpc_latency(target, rows, batch, steps, k):
    client = GrpcStepClient(target, deadline_s=5.0)
    work = Workload(batch, rows, seed=2)
    engine = f"bench-grpc-{os.getpid()}"
    samples = []
    for step_id in range(1, steps + 2):
        ids, starts, counts, prompts, flat, finished = work.next_step()
        began = time.perf_counter()
        deltas = []
        at = 0
        for i in range(batch):
            deltas.append((ids[i], starts[i], flat[at : at + counts[i]], None if prompts[i] == wire.NO_PROMPT else prompts[i]))
            at += counts[i]
        reply = client.step(encode_step_request(engine, step_id, batch, False, k, deltas, finished))
        reply.draft_lists()
        if step_id > 1:
            samples.append((time.perf_counter() - began) * 1e6)
    client.close()
    return samples


def throughput(socket_path, rows, batch, seconds, k, engine_index):
    client = FastLaneClient(socket_path, deadline_s=2.0)
    work = Workload(batch, rows, seed=10 + engine_index)
    engine = f"bench-tp-{engine_index}-{os.getpid()}".encode()
    steps = 0
    began = None
    step_id = 0
    while True:
        step_id += 1
        fast_lane_step(client, engine, step_id, k, batch, work.next_step())
        if began is None:
            began = time.perf_counter()  # the first (full-context) step is not counted
            continue
        steps += 1
        if time.perf_counter() - began >= seconds:
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
    fast = fast_lane_latency(args.socket, rows, args.batch, args.steps, args.k)
    out = {"fastLaneUsP50": percentile(fast, 0.5), "fastLaneUsP99": percentile(fast, 0.99)}
    if args.grpc:
        slow = grpc_latency(args.grpc, rows, args.batch, max(200, args.steps // 4), args.k)
        out.update({"grpcUsP50": percentile(slow, 0.5), "grpcUsP99": percentile(slow, 0.99)})
    print(json.dumps({key: round(value, 1) for key, value in out.items()}))


if __name__ == "__main__":
    main()
