"""The shim's counters, in the Prometheus client every vLLM image has, so that vLLM's own /metrics
endpoint serves them beside `vllm:spec_decode_*` and a user can tell sam from any fallback.

The counters live in the worker process that runs the model runner. vLLM's API server exports
other processes' metrics through prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR);
without it they are in the worker's default registry only. Without prometheus_client they are
plain integers.
"""
from __future__ import annotations

import threading
from typing import Dict

COUNTERS = {
    "steps": "decode steps the sam drafter was asked for drafts",
    "drafted_steps": "steps whose reply carried at least one draft",
    "draft_tokens": "draft tokens handed to the runner",
    "fail_opens": "steps answered with no drafts because the sidecar call failed (fail open: lossless)",
    "deadline_misses": "fail-opens because the sidecar did not answer within SAM_SIDECAR_DEADLINE_MS",
    "resyncs": "requests whose full context was resent after the sidecar lost it",
    "refusals": "engine starts refused because the installed vLLM / vLLM-Ascend is not supported",
    "lossless_verifications": "rejection-sampling calls on probability-free drafts verified by the shim's lossless rule",
}
PREFIX = "sam_sidecar_shim_"

_lock = threading.Lock()
_counters: Dict[str, object] = {}
_values: Dict[str, int] = {name: 0 for name in COUNTERS}


def _counter(name: str):
    with _lock:
        if name not in _counters:
            try:
                from prometheus_client import Counter

                _counters[name] = Counter(PREFIX + name, COUNTERS[name])
            except ImportError:
                _counters[name] = None
            except ValueError:  # already registered in this process's registry (a re-imported module)
                from prometheus_client import REGISTRY

                _counters[name] = REGISTRY._names_to_collectors.get(PREFIX + name + "_total")  # type: ignore[attr-defined]
        return _counters[name]


def register() -> None:
    """Creates every counter now (importing prometheus_client takes tens of milliseconds), so the
    first decode step does not pay for it."""
    for name in COUNTERS:
        _counter(name)


def inc(name: str, amount: int = 1) -> None:
    if amount <= 0:
        return
    _values[name] += amount
    counter = _counter(name)
    if counter is not None:
        counter.inc(amount)


def value(name: str) -> int:
    """This process's count since start (also without prometheus_client)."""
    return _values[name]
