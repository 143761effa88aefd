"""Tensor parallelism: every TP rank must use the same drafts and the same gate decision in a step,
also when the sidecar call times out (ranks that disagree hang the job). The leader rank calls the
sidecar and shares the outcome over the group's CPU (gloo) process group, so a timeout on the
leader is a timeout for all.

Without a group (e.g. external launchers that give none), every rank calls the sidecar with the same
(engine_id, step_id) and the sidecar answers identically; a timeout on one rank only can then still
make ranks disagree, so give the shim the group whenever there is one.
"""
from __future__ import annotations

from typing import Callable, Optional, TypeVar

T = TypeVar("T")

SOURCES = ("sidecar", "local")


class TensorParallelShare:
    def __init__(self, group, leader_global_rank: int, is_leader: bool):
        import torch.distributed as dist

        self._dist = dist
        self.group = group
        self.leader = leader_global_rank
        self.is_leader = is_leader

    @classmethod
    def from_vllm(cls) -> Optional["TensorParallelShare"]:
        """The TP group of the current vLLM worker, or None when TP is 1 or there is no group."""
        try:
            from vllm.distributed.parallel_state import get_tp_group
        except ImportError:
            return None
        try:
            tp = get_tp_group()
        except (AssertionError, RuntimeError):
            return None
        if tp.world_size <= 1:
            return None
        return cls(tp.cpu_group, tp.ranks[0], tp.rank_in_group == 0)

    def run(self, leader_work: Callable[[], T]) -> T:
        """Runs `leader_work` on the leader and returns its result on every rank."""
        box = [leader_work() if self.is_leader else None]
        self._dist.broadcast_object_list(box, src=self.leader, group=self.group)
        return box[0]

    def share_drafts(self, leader_work: Callable[[], "StepResult"], n_rows: int, k: int) -> "StepResult":
        """The leader's step result on every rank, as one fixed-size int32 tensor broadcast (no
        pickling, no size exchange: every rank knows the batch size and K)."""
        import torch

        from .session import StepResult
        from .wire import GATE_REASONS

        width = k + 1
        packed = torch.zeros(3 + n_rows * width, dtype=torch.int32)
        if self.is_leader:
            result = leader_work()
            packed[0] = int(result.speculate)
            packed[1] = GATE_REASONS.index(result.reason) if result.reason in GATE_REASONS else len(GATE_REASONS)
            packed[2] = SOURCES.index(result.source)
            rows = packed[3:].view(n_rows, width) if n_rows else packed[3:3]
            for i, draft in enumerate(result.drafts):
                if draft:
                    draft = draft[:k]
                    rows[i, 0] = len(draft)
                    rows[i, 1 : 1 + len(draft)] = torch.tensor(draft, dtype=torch.int32)
        self._dist.broadcast(packed, src=self.leader, group=self.group)
        if self.is_leader:
            return result
        values = packed.tolist()
        drafts = []
        for i in range(n_rows):
            base = 3 + i * width
            drafts.append(values[base + 1 : base + 1 + values[base]])
        reason = GATE_REASONS[values[1]] if values[1] < len(GATE_REASONS) else "unknown"
        return StepResult(drafts, bool(values[0]), reason, SOURCES[values[2]])

    def agree(self, value: T) -> T:
        """The leader's value on every rank (e.g. the engine id, chosen once)."""
        return self.run(lambda: value)
