"""Upstream vLLM integration (rows "vLLM 0.11.x-0.14.x" and "vLLM 0.21.x-0.27.x" of support.ROWS).

0.11-0.14, the n-gram slot: `GPUModelRunner.__init__` builds `NgramProposer(vllm_config)` and
`RejectionSampler(self.sampler)`; `propose_draft_token_ids` asserts the drafter is an
`NgramProposer` and calls `drafter.propose(sampled_token_ids, ...)` once per step for the whole
batch (0.11: with req_ids, num_tokens_no_spec, token_ids_cpu, spec_decode_unsupported_reqs; 0.14:
num_tokens_no_spec, token_ids_cpu). The sam drafter replaces it as a subclass of the runner module's
`NgramProposer`.

0.21 on, vLLM's custom_class seam: `__init__` builds the drafter with
`create_custom_proposer(vllm_config)`, which imports the class named in `speculative_config.model`
(SamCustomClassProposer here), builds it from the VllmConfig alone and returns it;
`propose_draft_token_ids` calls `drafter.propose(sampled_token_ids, num_tokens_no_spec,
token_ids_cpu, slot_mappings=...)`. Neither passes request ids, so the patched `__init__` hands the
drafter its runner.

Either way the drafter reads the runner's input batch and identifies requests by id; finished ids
come from the scheduler output in `_update_states`. The function `RejectionSampler.forward` calls
becomes the shim's lossless rule (upstream's own rule is lossless too; one verified rule on every
row), and both are checked at the end of `__init__`.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from . import rejection_sampler
from .proposer import SamProposerCore, note_finished_ids_from_update_states
from .log import logger
from .support import CUSTOM_CLASS_PATH, Row, SamSidecarError, require_standard_verification
from .tensor_parallel import TensorParallelShare


class SamUpstreamProposer:
    def __init__(self, vllm_config, runner=None, core: SamProposerCore | None = None):
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


class SamCustomClassProposer(SamUpstreamProposer):
    """The class vLLM's custom_class seam builds for method 'sam' (vLLM 0.21 on). vLLM constructs it
    from the VllmConfig alone inside `GPUModelRunner.__init__`; the patched `__init__` then hands it
    the runner. Built anywhere the shim has not patched the runner (the plugin not loaded, another
    engine), it refuses: there, neither request ids nor the lossless sampler would be in place."""

    def __init__(self, vllm_config):
        runner_class = getattr(sys.modules.get(RUNNER_MODULE), "GPUModelRunner", None)
        if getattr(runner_class, "_sam_sidecar_slot", None) != "custom_class":
            raise SamSidecarError("RUNNER_MISMATCH", f"{CUSTOM_CLASS_PATH} is built only in a vLLM GPUModelRunner that the sam-sidecar plugin has patched (vLLM 0.21.x-0.27.x with the plugin loaded; VLLM_PLUGINS must not exclude 'sam'). Configure speculative_config.method=sam instead of naming the class")
        super().__init__(vllm_config)

    def propose(self, sampled_token_ids, *args, **kwargs):
        if self.runner is None:  # the runner's __init__ has not finished: no step runs before it does
            raise SamSidecarError("RUNNER_MISMATCH", f"{CUSTOM_CLASS_PATH}.propose was called before the runner was attached")
        return super().propose(sampled_token_ids, *args, **kwargs)


RUNNER_MODULE = "vllm.v1.worker.gpu_model_runner"
assert f"{__name__}.{SamCustomClassProposer.__name__}" == CUSTOM_CLASS_PATH


def patch_runner_module(runner_module, row: Row, is_sam: Callable[[Any], bool], version: str) -> bool:
    """Makes an imported `vllm.v1.worker.gpu_model_runner` build the sam drafter for sam configs, in
    the row's drafter slot. Idempotent."""
    Runner = getattr(runner_module, row.runner_class, None)
    slot_seam = "create_custom_proposer" if row.drafter_slot == "custom_class" else "NgramProposer"
    seam = getattr(runner_module, slot_seam, None)
    sampler_class = getattr(runner_module, row.sampler_class, None)
    if Runner is None or seam is None or sampler_class is None:
        raise SamSidecarError("RUNNER_MISMATCH", f"{row.runner_module} lacks {row.runner_class}, {slot_seam} or {row.sampler_class}: not {row.label}")
    if getattr(Runner, "_sam_sidecar", False):
        return False
    for name in ("__init__", "_update_states", "propose_draft_token_ids"):
        if not hasattr(Runner, name):
            raise SamSidecarError("RUNNER_MISMATCH", f"{row.runner_class}.{name} is missing: not {row.label}")
    original_init = Runner.__init__
    # The n-gram slot asserts isinstance(drafter, NgramProposer): the sam drafter is a subclass.
    ngram_slot_class = type("SamNgramSlotProposer", (SamUpstreamProposer, seam), {}) if row.drafter_slot == "ngram" else None

    def __init__(self, vllm_config, *args, **kwargs):
        original_init(self, vllm_config, *args, **kwargs)
        if not is_sam(vllm_config) or getattr(self, "drafter", None) is None:
            return
        if ngram_slot_class is None:
            if not isinstance(self.drafter, SamCustomClassProposer):
                raise SamSidecarError("RUNNER_MISMATCH", f"method 'sam' runs in vLLM's custom_class slot, but the runner built {type(self.drafter).__name__}")
            spec = vllm_config.speculative_config
            require_standard_verification(lambda name, default: getattr(spec, name, default))
            self.drafter.runner = self
        else:
            if not isinstance(self.drafter, seam):
                raise SamSidecarError("RUNNER_MISMATCH", f"method 'sam' runs in the n-gram slot, but the runner built {type(self.drafter).__name__}")
            self.drafter = ngram_slot_class(vllm_config, self)
        rejection_sampler.install(sampler_class, row.sampler_argument)
        rejection_sampler.require_installed(getattr(self, "rejection_sampler", None), row.label)
        logger.info("sam drafter active: vLLM %s, lossless sampler installed", version)

    Runner.__init__ = __init__
    note_finished_ids_from_update_states(Runner, SamUpstreamProposer)
    Runner._sam_sidecar = True
    Runner._sam_sidecar_slot = row.drafter_slot
    return True
