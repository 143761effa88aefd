"""vLLM-Ascend integration (rows "vLLM-Ascend 0.11.x-0.12.x", "0.13.x-0.14.x", "0.15.x-0.19.x" and
"0.20.x-0.23.x" of support.ROWS).

In these releases `NPUModelRunner` builds its drafter by calling the name `get_spec_decode_method`
from its own module's globals (imported from `vllm_ascend.spec_decode`), in `__init__` (0.11) or
`_get_drafter` (0.12 on), with `(method, vllm_config, device, runner)`. For the n-gram slot it calls
`drafter.generate_token_ids(valid_sampled_token_ids, sampling_metadata, scheduler_output, ...)` once
per step (to 0.15), or, from 0.16, dispatches on the drafter's class (`isinstance(self.drafter,
(AscendNgramProposer, ...))`) and calls `drafter.propose(valid_sampled_token_ids)`; the sam drafter
is then a subclass of the runner module's `AscendNgramProposer`, and finished ids come from the
scheduler output in `_update_states`. Its rejection sampler is `AscendRejectionSampler` (0.11-0.12)
or vLLM's `RejectionSampler` (0.13 on), whose forward calls the module-level `rejection_sample` that
vLLM-Ascend's worker patch (`vllm_ascend.patch.worker.patch_rejection_sampler`) replaced with its
own; from 0.13.0rc2 to 0.17.0rc1 that function verifies K >= 3 with block verification, which is
biased without draft probabilities. From 0.15 it takes processed logits instead of probabilities.
From 0.20 the runner builds `AscendRejectionSampler` again, whose forward calls the `rejection_sample`
of its own module with the processed logits, or (logits, None) for an all-greedy batch; block
verification without draft probabilities is back from 0.21 behind `enable_block_verify`. 0.23 calls
`propose(valid_sampled_token_ids)` on vLLM 0.23.0 and `propose(num_spec_tokens_to_schedule,
valid_sampled_token_ids, ...)` on any other vLLM.

`patch_runner_module` runs right after the engine imports the runner module (after vLLM-Ascend's
worker patches). For a sam config the drafter becomes `AscendSamProposer` and the function the
sampler's forward calls becomes the shim's lossless rule; at the end of the runner's `__init__` both
are checked, and a runner without them does not start.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from . import rejection_sampler
from .log import logger
from .proposer import SamProposerCore, note_finished_ids_from_update_states
from .support import DISABLE_HINT, Row, SamSidecarError
from .tensor_parallel import TensorParallelShare

FACTORY_PARAMETERS = ("method", "vllm_config", "device", "runner")


class AscendSamProposer:
    """Drafter interface of vLLM-Ascend's NPUModelRunner for the n-gram slot (0.11-0.23)."""

    def __init__(self, vllm_config, device=None, runner=None, core: SamProposerCore | None = None):
        self.vllm_config = vllm_config
        self.device = device
        self.runner = runner
        self.name = "sam"
        self._noted_finished: list = []
        k = vllm_config.speculative_config.num_speculative_tokens
        self.core = core or SamProposerCore(k, tp=TensorParallelShare.from_vllm())

    def load_model(self, *args, **kwargs) -> None:
        """No model: drafts come from the sidecar."""

    def dummy_run(self, *args, **kwargs) -> None:
        """Nothing to warm up."""

    def note_finished(self, finished_req_ids) -> None:
        """Finished ids seen by the runner's _update_states, for the next propose()."""
        self._noted_finished = [*self._noted_finished, *(finished_req_ids or ())]

    def generate_token_ids(self, valid_sampled_token_ids, sampling_metadata=None, scheduler_output=None, *args, **kwargs) -> list:
        """To 0.15: the scheduler output comes with the call and names the finished requests."""
        self._noted_finished = []
        finished = getattr(scheduler_output, "finished_req_ids", ()) if scheduler_output is not None else ()
        return self._propose(valid_sampled_token_ids, finished)

    def propose(self, *args, **kwargs) -> list:
        """From 0.16: only the sampled tokens come; finished ids were noted in _update_states.
        vLLM-Ascend 0.23 on a vLLM other than 0.23.0 passes the step's number of draft tokens first
        (num_spec_tokens_to_schedule, at most K), then the sampled tokens: drafts are cut to it."""
        finished, self._noted_finished = self._noted_finished, []
        if args and isinstance(args[0], int) and not isinstance(args[0], bool):
            limit, sampled = args[0], args[1] if len(args) > 1 else kwargs["sampled_token_ids"]
            return [draft[: max(0, limit)] for draft in self._propose(sampled, finished)]
        sampled = args[0] if args else kwargs.get("valid_sampled_token_ids", kwargs.get("sampled_token_ids"))
        return self._propose(sampled, finished)

    def _propose(self, valid_sampled_token_ids, finished) -> list:
        prefill = bool(getattr(self.runner, "with_prefill", False))
        return self.core.propose(self.runner.input_batch, valid_sampled_token_ids, finished, prefill)


def check_factory(factory: Callable[..., Any]) -> None:
    parameters = tuple(inspect.signature(factory).parameters)[: len(FACTORY_PARAMETERS)]
    if parameters != FACTORY_PARAMETERS:
        raise SamSidecarError("RUNNER_MISMATCH", f"get_spec_decode_method{parameters} is not the interface this shim knows {FACTORY_PARAMETERS}")


def drafter_class(runner_module) -> type:
    """AscendSamProposer, made a subclass of the runner module's AscendNgramProposer where the
    runner dispatches on that class (0.16 on)."""
    base = getattr(runner_module, "AscendNgramProposer", None)
    if base is None:
        return AscendSamProposer
    cached = getattr(runner_module, "_sam_sidecar_drafter_class", None)
    if cached is None:
        cached = type("AscendSamNgramSlotProposer", (AscendSamProposer, base), {})
        runner_module._sam_sidecar_drafter_class = cached
    return cached


def check_whole_vocabulary_sampling(row: Row) -> None:
    """vLLM-Ascend 0.20 on: with `enable_reduce_sample` (experimental, off by default) the sampler
    gets each shard's logits (greedy) or the gathered top candidates, which the shim's rule cannot
    verify from; sam then refuses to start rather than verify from a part of the vocabulary."""
    if row.sampler_argument != "target_logits_or_tuple":
        return
    import importlib

    try:
        config = importlib.import_module("vllm_ascend.ascend_config").get_ascend_config()
    except Exception as error:  # no config module or not initialised: the seam is not the one recorded
        raise SamSidecarError("RUNNER_MISMATCH", f"cannot read vLLM-Ascend's additional_config ({error}): not {row.label}") from None
    if bool(getattr(config, "enable_reduce_sample", False)):
        raise SamSidecarError("UNSUPPORTED_OPTION", f"method 'sam' cannot verify losslessly with additional_config enable_reduce_sample on {row.label} (the sampler sees only part of the vocabulary). Fix: turn enable_reduce_sample off, or {DISABLE_HINT}")


def build_drafter(row: Row, runner_module, vllm_config, device, runner) -> AscendSamProposer:
    """The sam drafter, after making the runner's sampler lossless for probability-free drafts."""
    check_whole_vocabulary_sampling(row)
    sampler_class = getattr(runner_module, row.sampler_class, None)
    if sampler_class is None:
        raise SamSidecarError("RUNNER_MISMATCH", f"{row.runner_module} has no {row.sampler_class}: not {row.label}")
    rejection_sampler.install(sampler_class, row.sampler_argument)
    return drafter_class(runner_module)(vllm_config, device, runner)


def check_runner(row: Row, runner) -> None:
    """After the runner's __init__: the drafter is sam's and its sampler's function is lossless."""
    drafter = getattr(runner, "drafter", None)
    if drafter is None:
        return  # not the last pipeline stage: this rank neither drafts nor verifies
    if not isinstance(drafter, AscendSamProposer):
        raise SamSidecarError("RUNNER_MISMATCH", f"method 'sam' asked for, but the runner built {type(drafter).__name__}: {row.label} did not call the drafter factory the shim patched")
    rejection_sampler.require_installed(getattr(runner, "rejection_sampler", None), row.label)


def patch_runner_module(runner_module, row: Row, is_sam: Callable[[Any], bool], version: str) -> bool:
    """Installs the sam drafter into an imported `vllm_ascend.worker.model_runner_v1`. Idempotent."""
    original = getattr(runner_module, "get_spec_decode_method", None)
    runner_class = getattr(runner_module, row.runner_class, None)
    if original is None or runner_class is None:
        raise SamSidecarError("RUNNER_MISMATCH", f"{row.runner_module} has no get_spec_decode_method / {row.runner_class}: not {row.label}")
    if getattr(original, "_sam_sidecar", False):
        return False
    check_factory(original)

    def get_spec_decode_method(method, vllm_config, device, runner, *args, **kwargs):
        if is_sam(vllm_config):
            return build_drafter(row, runner_module, vllm_config, device, runner)
        return original(method, vllm_config, device, runner, *args, **kwargs)

    get_spec_decode_method._sam_sidecar = True  # type: ignore[attr-defined]
    runner_module.get_spec_decode_method = get_spec_decode_method

    original_init = runner_class.__init__

    def __init__(self, vllm_config, *args, **kwargs):
        original_init(self, vllm_config, *args, **kwargs)
        if is_sam(vllm_config):
            check_runner(row, self)
            logger.info("sam drafter active: vLLM-Ascend %s, lossless sampler installed", version)

    runner_class.__init__ = __init__
    if hasattr(runner_class, "_update_states"):
        note_finished_ids_from_update_states(runner_class, AscendSamProposer)
    return True


def drafter_for_patched_factory(vllm_config, device, runner) -> AscendSamProposer:
    """The entry of the plain patch (patches/vllm-ascend-sam.patch), for deployments without
    plugins: the same version check, sampler installation and drafter as the plugin's path."""
    from . import plugin, support

    row, version = support.detect()
    if row.engine != "vllm-ascend":
        raise plugin.refuse(SamSidecarError("UNSUPPORTED_VERSION", f"the vLLM-Ascend patch runs on vLLM-Ascend, found {row.label}"))
    import importlib

    drafter = build_drafter(row, importlib.import_module(row.runner_module), vllm_config, device, runner)
    logger.info("sam drafter active: vLLM-Ascend %s, lossless sampler installed", version)
    return drafter
