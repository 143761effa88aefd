"""Which vLLM and vLLM-Ascend releases the shim supports, and how it finds out which one is installed.

One row per integration path. A row names the seams the shim uses in that release line: the runner
module and class, the rejection sampler class the runner builds and the name of the argument the
sampling function receives (the engine decides the integration: vllm_ascend.py or vllm_upstream.py). The seams are checked again at run time
(`vllm_ascend.py`, `vllm_upstream.py`): a version picks a row, the live modules must then match it,
and anything that does not match refuses `method: sam` instead of degrading verification.

Versions come from the installed distribution's metadata (`importlib.metadata`), falling back to
the `_version.py` that setuptools-scm writes at build time. No release of vLLM-Ascend defines a
`__version__` attribute on its package, so the shim never reads one.

The recorded facts behind each row (file:line per tag) are in python/tests/contracts/; the script
scripts/check-vllm-contracts.py re-checks them against fetched source trees.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from typing import Optional, Tuple

from packaging.version import InvalidVersion, Version

# The proposer class vLLM's custom_class seam imports for method 'sam' (rows with drafter_slot
# "custom_class"); defined in vllm_upstream.py.
CUSTOM_CLASS_PATH = "sam_sidecar.vllm_upstream.SamCustomClassProposer"
DISABLE_HINT = "set SAM_SIDECAR_DISABLE=1 to run without speculation, or remove speculative_config.method=sam"


class SamSidecarError(RuntimeError):
    """A coded error of the shim. Raised at engine start: vLLM stops with this message."""

    def __init__(self, code: str, message: str):
        super().__init__(f"[{code}] {message}")
        self.code = code


# Verification settings of vLLM's speculative config other than the standard rule: "synthetic"
# accepts at configured rates (a benchmark mode, not the target distribution), "block" is block
# verification.
STANDARD_VERIFICATION = "standard"
SYNTHETIC_SETTINGS = ("synthetic_acceptance_rates", "synthetic_acceptance_length")


def require_standard_verification(setting) -> None:
    """sam's drafts are verified by the standard rule only. `setting(name, default)` reads one
    speculative config field: the user's dict's `get` at config time, vLLM's SpeculativeConfig in
    the runner."""
    method = setting("rejection_sample_method", STANDARD_VERIFICATION)
    given = sorted(name for name in SYNTHETIC_SETTINGS if setting(name, None) is not None)
    if method != STANDARD_VERIFICATION or given:
        named = f"rejection_sample_method={method!r}" if method != STANDARD_VERIFICATION else ", ".join(given)
        raise SamSidecarError("UNSUPPORTED_OPTION", f"method 'sam' is verified with the standard (lossless) rule only, but speculative_config sets {named}. Fix: remove it, or {DISABLE_HINT}")


@dataclass(frozen=True)
class Row:
    """One supported release line. `minimum` is included, `below` excluded (PEP 440 order, so
    pre-releases and dev builds of a line sort inside it)."""

    engine: str  # distribution: "vllm-ascend" or "vllm"
    label: str
    minimum: str
    below: str
    runner_module: str
    runner_class: str
    sampler_class: str  # the rejection sampler class, as the runner module names it
    sampler_argument: str  # the sampling function's sixth parameter: "target_probs"; "target_logits" (processed logits, softmax still to apply); "target_logits_or_tuple" (those logits, or (logits, vocabulary indices or None))
    # vLLM-Ascend rows: the vLLM releases that line was built on. Its runner calls vLLM's code
    # (the sampler's forward, from 0.13), so the pair is checked too.
    vllm_minimum: Optional[str] = None
    vllm_below: Optional[str] = None
    # Where the sam drafter sits: "ngram", the n-gram slot (the runner builds vLLM's or vLLM-Ascend's
    # n-gram drafter, which the shim replaces), or "custom_class", vLLM's seam for a proposer class
    # named in speculative_config.model (vLLM 0.21 on).
    drafter_slot: str = "ngram"

    def covers(self, version: Version) -> bool:
        return Version(self.minimum) <= version < Version(self.below)

    def covers_vllm(self, version: Version) -> bool:
        return self.vllm_minimum is None or Version(self.vllm_minimum) <= version < Version(self.vllm_below)


ROWS: Tuple[Row, ...] = (
    Row(
        engine="vllm-ascend",
        label="vLLM-Ascend 0.11.x-0.12.x",
        minimum="0.11.0rc0",
        below="0.13.0rc1",
        runner_module="vllm_ascend.worker.model_runner_v1",
        runner_class="NPUModelRunner",
        sampler_class="AscendRejectionSampler",
        sampler_argument="target_probs",
        vllm_minimum="0.11.0rc1",
        vllm_below="0.13.0rc1",
    ),
    Row(
        engine="vllm-ascend",
        label="vLLM-Ascend 0.13.x-0.14.x",
        minimum="0.13.0rc1",
        below="0.15.0rc1",
        runner_module="vllm_ascend.worker.model_runner_v1",
        runner_class="NPUModelRunner",
        sampler_class="RejectionSampler",
        sampler_argument="target_probs",
        vllm_minimum="0.13.0rc1",
        vllm_below="0.15.0rc1",
    ),
    Row(
        engine="vllm-ascend",
        label="vLLM-Ascend 0.15.x-0.19.x",
        minimum="0.15.0rc1",
        below="0.20.0rc1",
        runner_module="vllm_ascend.worker.model_runner_v1",
        runner_class="NPUModelRunner",
        sampler_class="RejectionSampler",
        sampler_argument="target_logits",
        vllm_minimum="0.15.0rc1",
        vllm_below="0.20.0rc1",
    ),
    Row(
        engine="vllm-ascend",
        label="vLLM-Ascend 0.20.x-0.23.x",
        minimum="0.20.0rc1",
        below="0.24.0rc1",
        runner_module="vllm_ascend.worker.model_runner_v1",
        runner_class="NPUModelRunner",
        sampler_class="AscendRejectionSampler",
        sampler_argument="target_logits_or_tuple",
        vllm_minimum="0.20.0rc1",
        vllm_below="0.24.0rc1",
    ),
    Row(
        engine="vllm",
        label="vLLM 0.11.x-0.14.x",
        minimum="0.11.0",
        below="0.15.0",
        runner_module="vllm.v1.worker.gpu_model_runner",
        runner_class="GPUModelRunner",
        sampler_class="RejectionSampler",
        sampler_argument="target_probs",
    ),
    Row(
        engine="vllm",
        label="vLLM 0.21.x-0.27.x",
        minimum="0.21.0",
        below="0.28.0",
        runner_module="vllm.v1.worker.gpu_model_runner",
        runner_class="GPUModelRunner",
        sampler_class="RejectionSampler",
        sampler_argument="target_logits",
        drafter_slot="custom_class",
    ),
)

_MODULES = {"vllm-ascend": "vllm_ascend", "vllm": "vllm"}


def installed_version(engine: str) -> Optional[str]:
    """The installed version of `engine` ("vllm" or "vllm-ascend"), or None when it is absent.
    Metadata first; then the build-time `_version.py` (source checkouts on PYTHONPATH)."""
    for name in (engine, engine.replace("-", "_")):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    module = _MODULES[engine]
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return str(importlib.import_module(f"{module}._version").__version__)
    except Exception:  # no generated version file: installed, version unknown
        return "unknown"


def supported_rows_text() -> str:
    return "; ".join(f"{row.label} (>= {row.minimum}, < {row.below})" for row in ROWS)


def _parse(name: str, version: Optional[str]) -> Version:
    try:
        return Version(version or "")
    except InvalidVersion:
        raise SamSidecarError("UNKNOWN_VERSION", f"method 'sam': the installed {name} version {version!r} cannot be read, so the shim cannot tell which integration is lossless. Supported: {supported_rows_text()}. Fix: install a supported release, or {DISABLE_HINT}") from None


def select(engine: str, version: Optional[str], vllm_version: Optional[str] = None) -> Row:
    """The row for `engine` at `version` (for vLLM-Ascend, also on `vllm_version`), or a
    SamSidecarError naming the versions and the fix."""
    name = "vLLM-Ascend" if engine == "vllm-ascend" else "vLLM"
    parsed = _parse(name, version)
    for row in ROWS:
        if row.engine == engine and row.covers(parsed):
            if row.vllm_minimum is not None and not row.covers_vllm(_parse("vLLM", vllm_version)):
                raise SamSidecarError("UNSUPPORTED_VERSION", f"method 'sam': {name} {version} runs on vLLM >= {row.vllm_minimum}, < {row.vllm_below}, but vLLM {vllm_version} is installed; that pair is untested and its sampler arguments may differ. Fix: install the vLLM release this {name} was built on, or {DISABLE_HINT}")
            return row
    raise SamSidecarError("UNSUPPORTED_VERSION", f"method 'sam' is not supported on {name} {version}: the shim has no tested, lossless integration for it. Supported: {supported_rows_text()}. Fix: use a supported release, or {DISABLE_HINT}")


def detect() -> Tuple[Row, str]:
    """The row of the engine that owns the model runner here, with its version: vLLM-Ascend when
    it is installed (it is a platform plugin and runs its own runner), else vLLM."""
    ascend = installed_version("vllm-ascend")
    vllm = installed_version("vllm")
    if ascend is not None:
        return select("vllm-ascend", ascend, vllm), ascend
    if vllm is None:
        raise SamSidecarError("NO_ENGINE", "method 'sam': neither vLLM nor vLLM-Ascend is installed in this Python environment")
    return select("vllm", vllm), vllm
