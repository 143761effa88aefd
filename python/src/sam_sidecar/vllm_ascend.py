"""vLLM-Ascend integration: the `sam` drafter behind NPUModelRunner.propose_draft_token_ids.

vLLM-Ascend builds its drafter with `vllm_ascend.spec_decode.get_spec_decode_method(method,
vllm_config, device, runner)` and calls `drafter.generate_token_ids(valid_sampled_token_ids,
sampling_metadata, scheduler_output, spec_decode_metadata, ...)` once per step. `patch()` makes that
factory return `AscendSamProposer` for the sam method and routes probability-free drafts through
the lossless rejection sampler (vLLM-Ascend 0.14.0rc1's block-verify rule for K >= 3 is not
distribution-preserving without draft probabilities).
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, Callable

from .proposer import SamProposerCore
from .tensor_parallel import TensorParallelShare

logger = logging.getLogger("sam_sidecar")

# Versions whose sources this integration was written against. Others are refused unless
# SAM_SIDECAR_FORCE_PATCH=1 (the structural checks below still apply).
KNOWN_VERSIONS = ("0.11.0rc0", "0.11.0rc1", "0.11.0", "0.12.0rc1", "0.13.0rc1", "0.14.0rc1")
FACTORY_PARAMETERS = ("method", "vllm_config", "device", "runner")


class AscendSamProposer:
    """Drafter interface of vLLM-Ascend's NPUModelRunner (the shape of its NgramProposer)."""

    def __init__(self, vllm_config, device=None, runner=None, core: SamProposerCore | None = None):
        self.vllm_config = vllm_config
        self.device = device
        self.runner = runner
        self.name = "sam"
        k = vllm_config.speculative_config.num_speculative_tokens
        self.core = core or SamProposerCore(k, tp=TensorParallelShare.from_vllm())

    def load_model(self, *args, **kwargs) -> None:
        """No model: drafts come from the sidecar."""

    def dummy_run(self, *args, **kwargs) -> None:
        """Nothing to warm up."""

    def generate_token_ids(
        self,
        valid_sampled_token_ids,
        sampling_metadata=None,
        scheduler_output=None,
        spec_decode_metadata=None,
        positions=None,
        num_scheduled_tokens=None,
        hidden_states=None,
        attn_metadata=None,
        aux_hidden_states=None,
        *args,
        **kwargs,
    ) -> list:
        finished = getattr(scheduler_output, "finished_req_ids", ()) if scheduler_output is not None else ()
        prefill = bool(getattr(self.runner, "with_prefill", False))
        drafts = self.core.propose(self.runner.input_batch, valid_sampled_token_ids, finished, prefill)
        # The batch-size switch of the seed, decided by the sidecar (or locally when it is unreachable).
        self.runner.speculative_decoding_active = self.core.last.speculate if self.core.last is not None else True
        return drafts


def check_factory(factory: Callable[..., Any]) -> None:
    parameters = tuple(inspect.signature(factory).parameters)[: len(FACTORY_PARAMETERS)]
    if parameters != FACTORY_PARAMETERS:
        raise RuntimeError(f"get_spec_decode_method{parameters} is not the interface this shim knows {FACTORY_PARAMETERS}")


def patch(vllm_ascend_module, is_sam: Callable[[Any], bool]) -> bool:
    """Installs the sam drafter and the lossless sampler into an imported vllm_ascend. Idempotent."""
    import importlib

    spec_decode = importlib.import_module("vllm_ascend.spec_decode")
    original = spec_decode.get_spec_decode_method
    if getattr(original, "_sam_sidecar", False):
        return False
    check_factory(original)

    def get_spec_decode_method(method, vllm_config, device, runner, *args, **kwargs):
        if is_sam(vllm_config):
            return AscendSamProposer(vllm_config, device, runner)
        return original(method, vllm_config, device, runner, *args, **kwargs)

    get_spec_decode_method._sam_sidecar = True  # type: ignore[attr-defined]
    spec_decode.get_spec_decode_method = get_spec_decode_method
    # The runner module imported the factory by name: replace that binding too.
    for module_name in ("vllm_ascend.worker.model_runner_v1", "vllm_ascend.torchair.torchair_model_runner"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if getattr(module, "get_spec_decode_method", None) is original:
            module.get_spec_decode_method = get_spec_decode_method

    from . import rejection_sampler

    rejection_sampler.patch_module(importlib.import_module("vllm_ascend.sample.rejection_sampler"), is_sam_active=lambda: True)
    logger.info("sam-sidecar: vLLM-Ascend %s patched (sam drafter, lossless probability-free rejection sampling)", getattr(vllm_ascend_module, "__version__", "?"))
    return True
