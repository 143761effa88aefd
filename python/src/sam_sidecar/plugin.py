"""vLLM general plugin (entry point `vllm.general_plugins` -> `sam = sam_sidecar.plugin:register`).

vLLM calls `register()` in every process it starts (API server, engine core, each worker), so it is
re-entrant and cheap: it reads versions from package metadata and imports nothing of the engine's.
It makes `speculative_config.method = "sam"` work, or refuses it:
- the config: on a supported release (support.ROWS) "sam" runs through the drafter slot of its row
  (vLLM's n-gram slot, or from vLLM 0.21 its `custom_class` seam naming the shim's proposer class;
  no draft model, probability-free drafts either way), marked so the runners know it is sam. On any
  other release the engine does not start: one error names the versions and the fix. With
  SAM_SIDECAR_DISABLE=1, "sam" becomes no speculation at all, which is lossless on every release.
- the runner: once the engine imports its model runner module, the runner class is patched to
  build the sam drafter and to verify its drafts with the shim's lossless sampler, and checks both
  at the end of its __init__ (vllm_ascend.py, vllm_upstream.py). A sam config on a release the shim
  does not support stops the runner there too, so probability-free drafts never reach another rule.

verl: +actor_rollout_ref.rollout.engine_kwargs.vllm.speculative_config.method=sam
      +actor_rollout_ref.rollout.engine_kwargs.vllm.speculative_config.num_speculative_tokens=3
"""
from __future__ import annotations

import importlib
import os
from typing import Any

from . import after_import, metrics, support
from .log import logger
from .support import SamSidecarError

METHOD = "sam"
ENV_METHOD = "SAM_SIDECAR_METHOD"  # set by the config patch, inherited by worker processes
ENV_DISABLE = "SAM_SIDECAR_DISABLE"
# The n-gram slot validates lookup bounds that sam does not use: any consistent pair passes.
NGRAM_SLOT_LOOKUP = {"prompt_lookup_min": 1, "prompt_lookup_max": 1}

_state = {"config": False, "runner": False}


def disabled() -> bool:
    return os.environ.get(ENV_DISABLE) == "1"


def is_sam(vllm_config: Any) -> bool:
    if disabled():
        return False
    spec = getattr(vllm_config, "speculative_config", None)
    if spec is None:
        return False
    if getattr(spec, "sam_sidecar", False):
        return True
    method = getattr(spec, "method", None)
    if method == "custom_class":
        return getattr(spec, "model", None) == support.CUSTOM_CLASS_PATH
    return method == "ngram" and os.environ.get(ENV_METHOD) == METHOD


def rewrite_speculative_config(spec: Any, drafter_slot: str = "ngram") -> Any:
    """{"method": "sam", ...} -> the config of the row's drafter slot, marked as sam: vLLM's n-gram
    slot, or its custom_class seam naming the shim's proposer class. Anything else unchanged."""
    if not isinstance(spec, dict) or spec.get("method") != METHOD:
        return spec
    os.environ[ENV_METHOD] = METHOD
    replaced = (*NGRAM_SLOT_LOOKUP, "model") if drafter_slot == "custom_class" else tuple(NGRAM_SLOT_LOOKUP)
    ignored = sorted(key for key in replaced if key in spec)
    if ignored:
        logger.info("sam-sidecar: %s have no meaning for method 'sam' and are ignored", ", ".join(ignored))
    kept = {key: value for key, value in spec.items() if key not in replaced}
    if drafter_slot == "custom_class":
        return dict(kept, method="custom_class", model=support.CUSTOM_CLASS_PATH)
    return dict(kept, method="ngram", **NGRAM_SLOT_LOOKUP)


def refuse(error: SamSidecarError) -> SamSidecarError:
    metrics.inc("refusals")
    logger.error("sam-sidecar: %s", error)
    return error


def _patch_config() -> None:
    if _state["config"]:
        return
    try:
        arg_utils = importlib.import_module("vllm.engine.arg_utils")
    except ImportError:
        return
    EngineArgs = arg_utils.EngineArgs
    original = getattr(EngineArgs, "create_speculative_config", None)
    if original is None or getattr(original, "_sam_sidecar", False):
        _state["config"] = original is not None
        return

    def create_speculative_config(self, *args, **kwargs):
        requested = self.speculative_config
        if not (isinstance(requested, dict) and requested.get("method") == METHOD):
            return original(self, *args, **kwargs)
        if disabled():
            logger.warning("sam-sidecar: %s=1: method 'sam' runs without speculative decoding", ENV_DISABLE)
            replacement = None
        else:
            try:
                row, version = support.detect()
                support.require_standard_verification(requested.get)
            except SamSidecarError as error:
                raise refuse(error) from None
            logger.info("sam-sidecar: method 'sam' on %s %s (%s): drafts from the sidecar, lossless verification", "vLLM-Ascend" if row.engine == "vllm-ascend" else "vLLM", version, row.label)
            replacement = rewrite_speculative_config(requested, row.drafter_slot)
        self.speculative_config = replacement
        try:
            config = original(self, *args, **kwargs)
        finally:
            self.speculative_config = requested
        if replacement is not None and config is not None:
            try:
                object.__setattr__(config, "sam_sidecar", True)
            except (AttributeError, TypeError):
                pass  # the environment marker still identifies sam
        return config

    create_speculative_config._sam_sidecar = True  # type: ignore[attr-defined]
    EngineArgs.create_speculative_config = create_speculative_config
    _state["config"] = True


def _refusing_runner(runner_module, runner_class_name: str, error: SamSidecarError) -> None:
    """An unsupported release: a runner built for a sam config stops with `error`."""
    runner_class = getattr(runner_module, runner_class_name, None)
    if runner_class is None or getattr(runner_class, "_sam_sidecar", False):
        return
    original_init = runner_class.__init__

    def __init__(self, vllm_config, *args, **kwargs):
        if is_sam(vllm_config):
            raise refuse(error)
        original_init(self, vllm_config, *args, **kwargs)

    runner_class.__init__ = __init__
    runner_class._sam_sidecar = True


def _watch_runner() -> None:
    if _state["runner"]:
        return
    _state["runner"] = True
    ascend = support.installed_version("vllm-ascend") is not None
    module_name, class_name = ("vllm_ascend.worker.model_runner_v1", "NPUModelRunner") if ascend else ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner")
    try:
        row, version = support.detect()
    except SamSidecarError as error:
        refusal = error  # `error` is unbound after the except block; the callback runs later
        after_import.when_imported(module_name, lambda module: _refusing_runner(module, class_name, refusal))
        return
    integration = importlib.import_module(f"{__package__}.{'vllm_ascend' if row.engine == 'vllm-ascend' else 'vllm_upstream'}")

    def patch(module) -> None:
        try:
            integration.patch_runner_module(module, row, is_sam, version)
        except SamSidecarError as error:
            _refusing_runner(module, row.runner_class, error)

    after_import.when_imported(row.runner_module, patch)


def register() -> None:
    try:
        _patch_config()
        if not disabled():
            _watch_runner()
    except Exception:  # a plugin bug must not take down engines that do not ask for sam
        logger.exception("sam-sidecar: plugin registration failed; method 'sam' is unavailable in this process")
