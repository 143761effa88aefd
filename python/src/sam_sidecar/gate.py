"""The batch-size switch, as the seed had it: speculation off when more than
VLLM_SPECULATIVE_BATCH_SIZE_THRE requests run (default 32; <= 0 disables the switch), never off in
a prefill step. The sidecar makes this decision (and can make an adaptive one); this local copy
decides only while the sidecar is unreachable.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

ENV_THRESHOLD = "VLLM_SPECULATIVE_BATCH_SIZE_THRE"
DEFAULT_THRESHOLD = 32


def threshold_from_env() -> int:
    raw = os.environ.get(ENV_THRESHOLD, "").strip()
    if not raw:
        return DEFAULT_THRESHOLD
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{ENV_THRESHOLD} must be an integer, got {raw!r}") from None


def local_decision(num_reqs: int, prefill: bool, threshold: Optional[int] = None) -> Tuple[bool, str]:
    threshold = threshold_from_env() if threshold is None else threshold
    if prefill:
        return True, "prefill"
    if threshold <= 0:
        return True, "gate_disabled"
    if num_reqs > threshold:
        return False, "above_threshold"
    return True, "below_threshold"
