"""sam-sidecar shim for vLLM / vLLM-Ascend: model-free, lossless speculative decoding drafts from a
suffix-automaton sidecar. Import cost is stdlib + numpy; torch is imported only by the sampler and
the tensor-parallel helper, vLLM only by the integration modules."""

__version__ = "0.1.0"

from .client import FastLaneClient, SidecarUnavailable  # noqa: E402,F401
from .gate import local_decision  # noqa: E402,F401
from .session import DraftSession, StepResult  # noqa: E402,F401
