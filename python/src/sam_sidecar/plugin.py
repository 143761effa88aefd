"""vLLM general plugin (entry point `vllm.general_plugins` -> `sam = sam_sidecar.plugin:register`).

vLLM calls `register()` in every process it starts (engine core, each worker), so it is
re-entrant and cheap. It makes `speculative_config.method = "sam"` work:
- the config: "sam" is run through vLLM's n-gram slot (no draft model, probability-free drafts),
  marked so the runners know it is sam;
- the runner: vLLM-Ascend's drafter factory (or upstream vLLM's GPUModelRunner) gets the sam
  drafter, and vLLM-Ascend's rejection sampler the lossless rule for probability-free drafts.
Versions outside the known lists are refused (SAM_SIDECAR_FORCE_PATCH=1 overrides); when a patch is
refused or fails, vLLM keeps its n-gram drafter, which is lossless too, and the log says why.

verl: +actor_rollout_ref.rollout.engine_kwargs.vllm.speculative_config.method=sam
      +actor_rollout_ref.rollout.engine_kwargs.vllm.speculative_config.num_speculative_tokens=3
"""
from __future__ import annotations

import importlib
import logging
import os
from typing import Any

logger = logging.getLogger("sam_sidecar")

METHOD = "sam"
ENV_METHOD = "SAM_SIDECAR_METHOD"  # set by the config patch, inherited by worker processes
ENV_DISABLE = "SAM_SIDECAR_DISABLE"
ENV_FORCE = "SAM_SIDECAR_FORCE_PATCH"

_state = {"config": False, "engine": False}


def is_sam(vllm_config: Any) -> bool:
    spec = getattr(vllm_config, "speculative_config", None)
    if spec is None:
        return False
    return bool(getattr(spec, "sam_sidecar", False)) or (getattr(spec, "method", None) == "ngram" and os.environ.get(ENV_METHOD) == METHOD)


def rewrite_speculative_config(spec: Any) -> Any:
    """{"method": "sam", ...} -> the n-gram slot's config, marked as sam; anything else unchanged."""
    if not isinstance(spec, dict) or spec.get("method") != METHOD:
        return spec
    os.environ[ENV_METHOD] = METHOD
    rewritten = dict(spec, method="ngram")
    # The n-gram slot needs lookup bounds; the sidecar ignores them.
    rewritten.setdefault("prompt_lookup_max", 5)
    rewritten.setdefault("prompt_lookup_min", 2)
    return rewritten


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
        sam = isinstance(requested, dict) and requested.get("method") == METHOD
        if sam:
            self.speculative_config = rewrite_speculative_config(requested)
        try:
            config = original(self, *args, **kwargs)
        finally:
            if sam:
                self.speculative_config = requested
        if sam and config is not None:
            try:
                object.__setattr__(config, "sam_sidecar", True)
            except (AttributeError, TypeError):
                pass  # the environment marker still identifies sam
        return config

    create_speculative_config._sam_sidecar = True  # type: ignore[attr-defined]
    EngineArgs.create_speculative_config = create_speculative_config
    _state["config"] = True


def _known(version: str, known) -> bool:
    return any(version == v or (v.endswith(".") and version.startswith(v)) for v in known)


def _try_patch(engine_name: str, module_name: str, integration_name: str, known_attribute: str) -> bool:
    """Patches one engine if it is installed and its version is known (or forced). Returns
    whether the engine is installed (then no other engine is tried)."""
    try:
        engine = importlib.import_module(module_name)
    except ImportError:
        return False
    integration = importlib.import_module(f"{__package__}.{integration_name}")
    known = getattr(integration, known_attribute)
    version = getattr(engine, "__version__", "unknown")
    if not (_known(version, known) or os.environ.get(ENV_FORCE) == "1"):
        logger.error("sam-sidecar: %s %s is not a version this shim knows %s; not patching (set %s=1 to try)", engine_name, version, known, ENV_FORCE)
        return True
    integration.patch(engine, is_sam)
    _state["engine"] = True
    return True


def _patch_engine() -> None:
    if _state["engine"]:
        return
    # vLLM-Ascend is a platform plugin on top of vLLM: when it is there, it owns the runner.
    if not _try_patch("vLLM-Ascend", "vllm_ascend", "vllm_ascend", "KNOWN_VERSIONS"):
        _try_patch("vLLM", "vllm", "vllm_upstream", "KNOWN_VERSIONS_PREFIXES")


def register() -> None:
    if os.environ.get(ENV_DISABLE) == "1":
        return
    try:
        _patch_config()
        _patch_engine()
    except Exception:  # never take vLLM down: without the patch it runs its own n-gram drafter
        logger.exception("sam-sidecar: plugin registration failed; vLLM continues without the sam drafter")
