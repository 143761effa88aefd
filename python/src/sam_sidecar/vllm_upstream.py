"""Upstream vLLM integration (GPUModelRunner).

vLLM's custom proposer class mechanism hands a proposer row-aligned arrays without request ids, and
its suffix-decoding slot, which does see the input batch, needs arctic-inference at config time. So
the plugin runs `sam` through the n-gram slot (no model, probability-free drafts, same scheduling)
and replaces the runner's drafter: `SamUpstreamProposer.propose` ignores the n-gram arguments and
reads the runner's input batch, identifying requests by id. Finished ids are taken from the
scheduler output when the runner updates its states. Upstream's rejection sampler already handles
probability-free drafts with the lossless rule, so it is left alone.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any, Callable

from .proposer import SamProposerCore
from .tensor_parallel import TensorParallelShare

logger = logging.getLogger("sam_sidecar")

KNOWN_VERSIONS_PREFIXES = ("0.10.", "0.11.", "0.12.", "0.13.", "0.14.")


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


def patch(vllm_module, is_sam: Callable[[Any], bool]) -> bool:
    """Makes GPUModelRunner use SamUpstreamProposer when the config asks for sam. Idempotent."""
    runner_module = importlib.import_module("vllm.v1.worker.gpu_model_runner")
    Runner = runner_module.GPUModelRunner
    if getattr(Runner, "_sam_sidecar", False):
        return False
    for name in ("__init__", "_update_states", "propose_draft_token_ids"):
        if not hasattr(Runner, name):
            raise RuntimeError(f"GPUModelRunner.{name} is missing: not a vLLM this shim knows")
    original_init = Runner.__init__
    original_update = Runner._update_states

    # The n-gram slot asserts isinstance(drafter, NgramProposer): the sam drafter is made a subclass.
    ngram_class = getattr(runner_module, "NgramProposer", None)
    drafter_class = type("SamNgramSlotProposer", (SamUpstreamProposer, ngram_class), {}) if ngram_class is not None else SamUpstreamProposer

    def __init__(self, vllm_config, *args, **kwargs):
        original_init(self, vllm_config, *args, **kwargs)
        if is_sam(vllm_config):
            self.drafter = drafter_class(vllm_config, self)

    def _update_states(self, scheduler_output, *args, **kwargs):
        if isinstance(getattr(self, "drafter", None), SamUpstreamProposer):
            self.drafter.note_finished(scheduler_output.finished_req_ids)
        return original_update(self, scheduler_output, *args, **kwargs)

    Runner.__init__ = __init__
    Runner._update_states = _update_states
    Runner._sam_sidecar = True
    # Upstream's rejection sampler already treats probability-free drafts losslessly: left as is.
    logger.info("sam-sidecar: vLLM %s patched (sam drafter in the n-gram slot)", getattr(vllm_module, "__version__", "?"))
    return True
