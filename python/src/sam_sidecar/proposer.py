"""The `sam` proposer: reads a vLLM input batch, asks the sidecar once per step for the whole batch,
returns one draft per row (0..K tokens).

It needs only the InputBatch fields both vLLM and vLLM-Ascend have: `req_ids`,
`num_tokens_no_spec` (already includes this step's sampled tokens), `token_ids_cpu`,
`num_prompt_tokens`, and optionally `spec_decode_unsupported_reqs`. The engine-specific classes in
`vllm_ascend.py` and `vllm_upstream.py` adapt it to each runner's drafter interface.
"""
from __future__ import annotations

import os
from typing import Iterable, List, Optional, Sequence

import numpy as np

from .client import FastLaneClient, socket_path_from_env
from .session import DraftSession, StepResult, default_engine_id
from .tensor_parallel import TensorParallelShare

ENV_DEADLINE_MS = "SAM_SIDECAR_DEADLINE_MS"


ENV_GRPC_TARGET = "SAM_SIDECAR_GRPC_TARGET"


def client_from_env():
    """The fast-lane client on SAM_SIDECAR_SOCKET; gRPC instead when SAM_SIDECAR_GRPC_TARGET is set
    (e.g. "sidecar-host:50051" for a sidecar outside the pod; needs grpcio)."""
    deadline_ms = float(os.environ.get(ENV_DEADLINE_MS, "5"))
    target = os.environ.get(ENV_GRPC_TARGET)
    if target:
        from .grpc_client import GrpcStepClient

        return GrpcStepClient(target, deadline_s=deadline_ms / 1000.0)
    return FastLaneClient(socket_path_from_env(), deadline_s=deadline_ms / 1000.0)


class SamProposerCore:
    def __init__(self, k: int, session: Optional[DraftSession] = None, tp: Optional[TensorParallelShare] = None):
        self.k = k
        self.tp = tp
        self.session = session or DraftSession(k, client_from_env())
        if tp is not None:
            # One engine id for all ranks of this engine (the leader's).
            self.session.set_engine_id(tp.agree(self.session.engine_id if tp.is_leader else default_engine_id()))
        self.last: Optional[StepResult] = None

    def propose(
        self,
        input_batch,
        sampled_token_ids: Sequence[Sequence[int]],
        finished_req_ids: Iterable[str] = (),
        prefill: bool = False,
    ) -> List[List[int]]:
        req_ids = list(input_batch.req_ids)
        n = len(req_ids)
        active = [len(sampled_token_ids[i]) > 0 if i < len(sampled_token_ids) else False for i in range(n)]
        unsupported = getattr(input_batch, "spec_decode_unsupported_reqs", ()) or ()
        finished = list(finished_req_ids or ())

        def ask() -> StepResult:
            return self.session.step(
                req_ids,
                input_batch.token_ids_cpu,
                np.asarray(input_batch.num_tokens_no_spec[:n]),
                np.asarray(input_batch.num_prompt_tokens[:n]),
                num_reqs=n,
                finished=finished,
                active=active,
                prefill=prefill,
            )

        result = self.tp.share_drafts(ask, n, self.k) if self.tp is not None else ask()
        self.last = result
        drafts = result.drafts
        if unsupported:
            drafts = [[] if req_ids[i] in unsupported else d for i, d in enumerate(drafts)]
        return drafts


def note_finished_ids_from_update_states(runner_class, drafter_type: type) -> None:
    """Wraps `runner_class._update_states(scheduler_output, ...)` so a drafter of `drafter_type`
    (which has note_finished) sees the finished request ids, where the runner's propose call does
    not pass them."""
    original = runner_class._update_states

    def _update_states(self, scheduler_output, *args, **kwargs):
        if isinstance(getattr(self, "drafter", None), drafter_type):
            self.drafter.note_finished(getattr(scheduler_output, "finished_req_ids", ()))
        return original(self, scheduler_output, *args, **kwargs)

    runner_class._update_states = _update_states
