"""The shim's logger: a child of vLLM's "vllm" logger, which vLLM configures with its handler, so the
shim's lines appear in the engine's log with vLLM's format and level."""
import logging

logger = logging.getLogger("vllm.sam_sidecar")
