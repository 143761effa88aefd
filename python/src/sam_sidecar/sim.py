"""A simulated model runner: replays recorded rollouts through the real shim, the real socket and a
real sidecar, with the InputBatch behaviours of vLLM's runner, and reports AL and the shim's cost.

- Rows: requests live in rows of `token_ids_cpu`; when requests finish the batch is condensed
  (the last rows move into the holes), so a request's row changes while its id does not.
- Preemption (optional): a running request leaves the batch for some steps and comes back with the
  same id in a new row, its tokens refilled.
- Finished ids reach the proposer through the scheduler output of the next step.
- Tensor parallelism (optional): N ranks as N processes in a gloo group; the leader asks the
  sidecar and broadcasts, and every rank checks it emitted exactly the same tokens.
- The "model" is greedy over the recorded output: target distributions are one-hot on the recorded
  token, and the emitted tokens come out of the real rejection sampler, so a bad draft can only
  cost speed. The run fails if any emitted token differs from the recording.

Semantics match `node dist/cli.js replay` (src/replay/simulate.ts): AL = emitted model tokens per
step, drafts never reach into environment spans (their tokens join the next delta without a step).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .client import FastLaneClient
from .proposer import SamProposerCore
from .session import DraftSession


@dataclass
class Row:
    id: str
    group: str
    prompt: List[int]
    output: List[int]
    env: List[List[int]]


def load_rows(path: str) -> List[Row]:
    rows = []
    with open(path) as handle:
        for line in handle:
            if line.strip():
                r = json.loads(line)
                rows.append(Row(str(r["id"]), str(r.get("group", r["id"])), r["prompt"], r["output"], r.get("env", [])))
    return rows


class Sequence:
    """One request's progress through its recorded output."""

    def __init__(self, row: Row):
        self.row = row
        self.position = 0
        self.tokens = list(row.prompt)  # everything the engine holds for it
        self.steps = 0
        self.emitted_ok = True

    @property
    def done(self) -> bool:
        return self.position >= len(self.row.output)

    def skip_environment(self) -> None:
        for start, end in self.row.env:
            if start <= self.position < end:
                self.tokens.extend(self.row.output[self.position : end])
                self.position = end

    def run_end(self) -> int:
        for start, _ in self.row.env:
            if start > self.position:
                return start
        return len(self.row.output)


class InputBatch:
    """The fields of vLLM's InputBatch the proposer reads, with condense and preemption."""

    def __init__(self, max_rows: int, max_len: int):
        self.token_ids_cpu = np.zeros((max_rows, max_len), dtype=np.int32)
        self.num_tokens_no_spec = np.zeros(max_rows, dtype=np.int32)
        self.num_prompt_tokens = np.zeros(max_rows, dtype=np.int32)
        self.req_ids: List[str] = []
        self.spec_decode_unsupported_reqs: set = set()

    def add(self, seq: Sequence) -> None:
        row = len(self.req_ids)
        self.req_ids.append(seq.row.id)
        self.write(row, seq)
        self.num_prompt_tokens[row] = len(seq.row.prompt)

    def write(self, row: int, seq: Sequence, start: int = 0) -> None:
        """Writes seq.tokens[start:] into the row (the runner appends sampled tokens the same way)."""
        n = len(seq.tokens)
        if n > self.token_ids_cpu.shape[1]:
            grown = np.zeros((self.token_ids_cpu.shape[0], max(n, 2 * self.token_ids_cpu.shape[1])), dtype=np.int32)
            grown[:, : self.token_ids_cpu.shape[1]] = self.token_ids_cpu
            self.token_ids_cpu = grown
        self.token_ids_cpu[row, start:n] = seq.tokens[start:]
        self.num_tokens_no_spec[row] = n

    def remove(self, req_ids: set) -> None:
        """Removes requests and condenses: the last rows move into the holes (as vLLM does)."""
        holes = sorted(i for i, r in enumerate(self.req_ids) if r in req_ids)
        for hole in holes:
            self.req_ids[hole] = None  # type: ignore[call-overload]
        for hole in holes:
            while self.req_ids and self.req_ids[-1] is None:
                self.req_ids.pop()
            last = len(self.req_ids) - 1
            if hole >= last:
                continue
            self.req_ids[hole] = self.req_ids[last]
            self.token_ids_cpu[hole] = self.token_ids_cpu[last]
            self.num_tokens_no_spec[hole] = self.num_tokens_no_spec[last]
            self.num_prompt_tokens[hole] = self.num_prompt_tokens[last]
            self.req_ids.pop()
        while self.req_ids and self.req_ids[-1] is None:
            self.req_ids.pop()


@dataclass
class SimResult:
    rows: int = 0
    steps: int = 0
    emitted: int = 0
    proposed: int = 0
    accepted: int = 0
    mismatches: int = 0
    drafted_steps: int = 0  # request steps that got a draft
    emitted_drafted: int = 0
    engine_steps: int = 0
    engine_steps_drafting: int = 0  # engine steps in which the sidecar's gate let drafts through
    failed_steps: int = 0
    resyncs: int = 0
    max_propose_ms: float = 0.0
    propose_us: List[float] = field(default_factory=list)
    outputs: Dict[str, List[int]] = field(default_factory=dict)

    def summary(self, k: int) -> dict:
        us = sorted(self.propose_us)

        def pct(q):
            return round(us[min(len(us) - 1, max(0, int(np.ceil(q * len(us))) - 1))], 1) if us else 0.0

        return {
            "rows": self.rows,
            "k": k,
            "steps": self.steps,
            "emitted": self.emitted,
            "al": round(self.emitted / self.steps, 4) if self.steps else 0.0,
            "proposed": self.proposed,
            "accepted": self.accepted,
            "draftedSteps": self.drafted_steps,
            "alDrafted": round(self.emitted_drafted / self.drafted_steps, 4) if self.drafted_steps else 0.0,
            "engineSteps": self.engine_steps,
            "engineStepsDrafting": self.engine_steps_drafting,
            "shimUsP50": pct(0.5),
            "shimUsP99": pct(0.99),
            "maxProposeMs": round(self.max_propose_ms, 3),
            "failedSteps": self.failed_steps,
            "resyncs": self.resyncs,
            "outputMismatches": self.mismatches,
        }


def greedy_sample(drafts: List[List[int]], seqs: List[Sequence], limits: List[int]):
    """The rejection sampler on a greedy target that is one-hot on the recorded tokens. The vocabulary
    is remapped per position to {0: the recorded token, 1: anything else}; the sampler's own rule
    decides what is emitted."""
    import torch

    from .rejection_sampler import rejection_sample_point_mass

    counts = [min(len(d), limit) for d, limit in zip(drafts, limits)]
    flat = []
    for d, seq, n in zip(drafts, seqs, counts):
        for j in range(n):
            flat.append(0 if d[j] == seq.row.output[seq.position + j] else 1)
    total = len(flat)
    target = torch.zeros((total, 2), dtype=torch.float32)
    target[:, 0] = 1.0
    cu = torch.tensor(np.cumsum(counts) if counts else [], dtype=torch.long)
    out = rejection_sample_point_mass(
        torch.tensor(flat, dtype=torch.long),
        counts,
        max(counts) if counts else 0,
        cu,
        target,
        torch.zeros((len(seqs), 1), dtype=torch.long),
        is_greedy=torch.ones(len(seqs), dtype=torch.bool),
    )
    emitted = []
    for i, seq in enumerate(seqs):
        local = [t for t in out[i].tolist() if t != -1]
        # Map back: 0 is the recorded token at that position; a 1 would be a wrong token.
        tokens = [seq.row.output[seq.position + j] if t == 0 else -1 for j, t in enumerate(local)]
        emitted.append((tokens, counts[i]))
    return emitted


class Runner:
    def __init__(self, proposer: SamProposerCore, k: int, max_rows: int, preempt_every: int = 0, preempt_steps: int = 3, seed: int = 0, on_step=None):
        self.proposer = proposer
        self.k = k
        self.batch = InputBatch(max_rows, 4096)
        self.preempt_every = preempt_every
        self.preempt_steps = preempt_steps
        self.rng = random.Random(seed)
        self.on_step = on_step
        self.result = SimResult()
        self.global_step = 0
        self.progress = None  # called with (rows done, rows) after each engine step
        self.total_rows = 0

    def run_group(self, rows: List[Row], max_num_seqs: Optional[int] = None) -> None:
        """Runs rows as an engine runs a rollout step: all queued at once, first come first served up
        to max_num_seqs running (all of them when None), a finished request's slot taken by the next
        queued one at the following step."""
        seqs: Dict[str, Sequence] = {r.id: Sequence(r) for r in rows}
        queue = [seqs[r.id] for r in rows]
        limit = len(queue) if max_num_seqs is None else max_num_seqs
        running: Dict[str, Sequence] = {}
        preempted: Dict[str, int] = {}  # id -> step it comes back
        finished_pending: List[str] = []
        next_row = 0
        while running or preempted or next_row < len(queue):
            self.global_step += 1
            for req_id, back in list(preempted.items()):
                if back <= self.global_step:
                    del preempted[req_id]
                    running[req_id] = seqs[req_id]
                    self.batch.add(seqs[req_id])
            if self.preempt_every and self.global_step % self.preempt_every == 0 and len(running) > 1:
                victim = self.rng.choice(sorted(running))
                del running[victim]
                preempted[victim] = self.global_step + self.preempt_steps
                self.batch.remove({victim})
            for seq in running.values():
                seq.skip_environment()
            done = [req_id for req_id, seq in running.items() if seq.done]
            for req_id in done:
                self.result.outputs[req_id] = seqs[req_id].tokens[len(seqs[req_id].row.prompt) :]
                del running[req_id]
                finished_pending.append(req_id)
            if done:
                self.batch.remove(set(done))
            # Freed slots are taken by the next queued requests (continuous batching).
            while len(running) + len(preempted) < limit and next_row < len(queue):
                seq = queue[next_row]
                next_row += 1
                seq.skip_environment()
                if seq.done:  # nothing for the model to generate
                    self.result.outputs[seq.row.id] = seq.tokens[len(seq.row.prompt) :]
                    continue
                running[seq.row.id] = seq
                self.batch.add(seq)
            if not running:
                continue
            # Every row's tokens so far are in the batch (this step's sampled tokens included).
            for row, req_id in enumerate(self.batch.req_ids):
                self.batch.write(row, running[req_id], int(self.batch.num_tokens_no_spec[row]))
            sampled = [[1]] * len(self.batch.req_ids)  # every row produced a token last step
            finished, finished_pending = finished_pending, []
            started = time.perf_counter()
            drafts = self.proposer.propose(self.batch, sampled, finished)
            elapsed = time.perf_counter() - started
            self.result.propose_us.append(elapsed * 1e6)
            self.result.max_propose_ms = max(self.result.max_propose_ms, elapsed * 1e3)
            if self.on_step is not None:
                self.on_step(self.global_step)
            self.result.engine_steps += 1
            if any(drafts):
                self.result.engine_steps_drafting += 1
            if self.progress is not None:
                self.progress(len(self.result.outputs), self.total_rows)
            seqs_in_rows = [running[req_id] for req_id in self.batch.req_ids]
            limits = [max(0, min(self.k, seq.run_end() - seq.position - 1)) for seq in seqs_in_rows]
            for (tokens, proposed), seq in zip(greedy_sample(drafts, seqs_in_rows, limits), seqs_in_rows):
                expected = seq.row.output[seq.position : seq.position + len(tokens)]
                if tokens != expected:
                    self.result.mismatches += 1
                self.result.steps += 1
                self.result.emitted += len(tokens)
                self.result.proposed += proposed
                self.result.accepted += len(tokens) - 1 if len(tokens) - 1 <= proposed else proposed
                if proposed > 0:
                    self.result.drafted_steps += 1
                    self.result.emitted_drafted += len(tokens)
                seq.tokens.extend(tokens)
                seq.position += len(tokens)
                seq.steps += 1
        self._flush(finished_pending)

    def run(self, rows: List[Row], siblings: str, max_num_seqs: int = 128) -> SimResult:
        """`live` and `none`: one rollout step (replay's schedule; whether requests share is the
        sidecar's drafting config). `finished`: the shared data's reference order, each group's rows
        one by one, shortest output first."""
        self.total_rows = len(rows)
        if siblings == "finished":
            groups: Dict[str, List[Row]] = {}
            for row in rows:
                groups.setdefault(row.group, []).append(row)
            for group in groups.values():
                for row in sorted(group, key=lambda r: len(r.output)):
                    self.run_group([row])
        else:
            self.run_group(rows, max_num_seqs)
        self.result.rows = len(rows)
        session = self.proposer.session
        self.result.failed_steps = session.stats.failed_steps
        self.result.resyncs = session.stats.resyncs
        return self.result

    def _flush(self, finished: List[str]) -> None:
        """Releases the requests that finished last (a step with an empty batch), as the replay does."""
        if finished:
            self.proposer.propose(InputBatch(1, 1), [], finished)


def _tp_main(rank: int, world: int, port: int, args_json: str, out_path: str) -> None:
    import torch.distributed as dist

    from .tensor_parallel import TensorParallelShare

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    args = argparse.Namespace(**json.loads(args_json))
    tp = TensorParallelShare(dist.group.WORLD, 0, rank == 0)
    result, summary = _run(args, tp)
    with open(f"{out_path}.rank{rank}", "w") as handle:
        json.dump({"summary": summary, "outputs": result.outputs, "sessionSteps": result.steps}, handle)
    dist.destroy_process_group()


def _run(args, tp=None):
    rows = load_rows(args.traces)
    if args.limit:
        rows = rows[: args.limit]
    client = FastLaneClient(args.socket, deadline_s=args.deadline_ms / 1000.0, backoff_initial_s=0.01, backoff_max_s=0.2)
    session = DraftSession(args.k, client, engine_id=args.engine_id)
    proposer = SamProposerCore(args.k, session=session, tp=tp)
    runner = Runner(proposer, args.k, min(len(rows), args.max_num_seqs) + 1, args.preempt_every, seed=args.seed)
    if getattr(args, "progress", False):
        runner.progress = _progress_line()
    result = runner.run(rows, args.siblings, args.max_num_seqs)
    if runner.progress is not None:
        runner.progress(len(result.outputs), len(rows))
        sys.stderr.write("\n")
    return result, result.summary(args.k)


def _progress_line():
    """A progress line on stderr, redrawn at most every half second."""
    last = [0.0]

    def draw(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5 and done < total:
            return
        last[0] = now
        sys.stderr.write(f"\rsimulated runner: {done} of {total} requests done")
        sys.stderr.flush()

    return draw


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="sam-sidecar-sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", required=True, help="token-id JSONL rollouts")
    parser.add_argument("--socket", default=None, help="sidecar fast-lane socket (default SAM_SIDECAR_SOCKET)")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--siblings", choices=["none", "finished", "live"], default="live")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--max-num-seqs", type=int, default=128, help="requests running together (vLLM max_num_seqs)")
    parser.add_argument("--deadline-ms", type=float, default=float(os.environ.get("SAM_SIDECAR_DEADLINE_MS", "50")))
    parser.add_argument("--preempt-every", type=int, default=0, help="preempt a running request every N steps (0: never)")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel ranks, as processes in a gloo group")
    parser.add_argument("--engine-id", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    parser.add_argument("--progress", action="store_true", help="a progress line on stderr")
    parser.add_argument("--outputs", default=None, help="write every request's emitted tokens (JSON) here")
    args = parser.parse_args(argv)
    if args.socket is None:
        from .client import socket_path_from_env

        args.socket = socket_path_from_env()
    if args.engine_id is None:
        args.engine_id = f"sim-{os.getpid()}-{int(time.time() * 1000)}"

    if args.tp > 1:
        import socket as pysocket
        import tempfile

        import torch.multiprocessing as mp

        with pysocket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        out = os.path.join(tempfile.mkdtemp(prefix="sam-sim-tp-"), "result")
        mp.start_processes(_tp_main, args=(args.tp, port, json.dumps(vars(args)), out), nprocs=args.tp, start_method="spawn")
        ranks = [json.load(open(f"{out}.rank{r}")) for r in range(args.tp)]
        summary = dict(ranks[0]["summary"])
        summary["tp"] = args.tp
        summary["ranksAgree"] = all(r["outputs"] == ranks[0]["outputs"] and r["summary"]["al"] == summary["al"] for r in ranks)
        outputs = ranks[0]["outputs"]
    else:
        result, summary = _run(args)
        outputs = result.outputs
    if args.outputs:
        with open(args.outputs, "w") as handle:
            json.dump(outputs, handle)
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>18}: {value}")
    return 1 if summary["outputMismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
