"""Upstream vLLM integration (row "vLLM 0.11.x-0.14.x" of support.ROWS).

In these releases `GPUModelRunner.__init__` builds `NgramProposer(vllm_config)` for the n-gram slot
and `RejectionSampler(self.sampler)`; `propose_draft_token_ids` asserts the drafter is an
`NgramProposer` and calls `drafter.propose(sampled_token_ids, ...)` once per step for the whole
batch (0.11: with req_ids, num_tokens_no_spec, token_ids_cpu, spec_decode_unsupported_reqs; 0.14:
num_tokens_no_spec, token_ids_cpu). The sam drafter is made a subclass of the runner module's
`NgramProposer` and reads the runner's input batch instead, identifying requests by id; finished
ids come from the scheduler output in `_update_states`. The function `RejectionSampler.forward`
calls becomes the shim's lossless rule (upstream's own rule is lossless too; one verified rule on
every row), and both are checked at the end of `__init__`.
"""
from __future__ import annotations

from typing import Any, Callable

from . import rejection_sampler
from .proposer import SamProposerCore, note_finished_ids_from_update_states
from .log import logger
from .support import Row, SamSidecarError
from .tensor_parallel import TensorParallelShare


class SamUpstreamProposer:
    def __init__(self, vllm_config, runner, core: SamProposerCore | None = None):
        self.vllm_config = vllm_config
        self.runner = runner
        self.k = vllm_config.speculative_config.num_speculative_tokens
        self.core = core or SamProposerCore(self.k, tp=TensorParallelShare.from_vllm())
        self._finished: list = []

    def note_finished(self, finished_req_ids) -> None:
        self._finished.extend(finished_req_ids or ())

    def load_model(self, *args, **kwargs) -> None:
        """No model."""

    def propose(self, sampled_token_ids, *args, **kwargs):
        finished, self._finished = self._finished, []
        return self.core.propose(self.runner.input_batch, sampled_token_ids, finished)


def patch_runner_module(runner_module, row: Row, is_sam: Callable[[Any], bool], version: str) -> bool:
    """Makes an imported `vllm.v1.worker.gpu_model_runner` build the sam drafter for sam configs.
    Idempotent."""
    Runner = getattr(runner_module, row.runner_class, None)
    ngram_class = getattr(runner_module, "NgramProposer", None)
    sampler_class = getattr(runner_module, row.sampler_class, None)
    if Runner is None or ngram_class is None or sampler_class is None:
        raise SamSidecarError("RUNNER_MISMATCH", f"{row.runner_module} lacks {row.runner_class}, NgramProposer or {row.sampler_class}: not {row.label}")
    if getattr(Runner, "_sam_sidecar", False):
        return False
    for name in ("__init__", "_update_states", "propose_draft_token_ids"):
        if not hasattr(Runner, name):
            raise SamSidecarError("RUNNER_MISMATCH", f"{row.runner_class}.{name} is missing: not {row.label}")
    original_init = Runner.__init__
    # The n-gram slot asserts isinstance(drafter, NgramProposer): the sam drafter is a subclass.
    drafter_class = type("SamNgramSlotProposer", (SamUpstreamProposer, ngram_class), {})

    def __init__(self, vllm_config, *args, **kwargs):
        original_init(self, vllm_config, *args, **kwargs)
        if not is_sam(vllm_config) or getattr(self, "drafter", None) is None:
            return
        if not isinstance(self.drafter, ngram_class):
            raise SamSidecarError("RUNNER_MISMATCH", f"method 'sam' runs in the n-gram slot, but the runner built {type(self.drafter).__name__}")
        self.drafter = drafter_class(vllm_config, self)
        rejection_sampler.install(sampler_class, row.sampler_argument)
        rejection_sampler.require_installed(getattr(self, "rejection_sampler", None), row.label)
        logger.info("sam drafter active: vLLM %s, lossless sampler installed", version)

    Runner.__init__ = __init__
    note_finished_ids_from_update_states(Runner, SamUpstreamProposer)
    Runner._sam_sidecar = True
    return True
