"""SAM_SIDECAR_DISABLE=1, and a vLLM-Ascend version outside the matrix, through real vLLM's
EngineArgs.create_engine_config."""
import os

from common import engine_args
from sam_sidecar import plugin
from sam_sidecar.support import SamSidecarError

plugin.register()
try:
    config = engine_args().create_engine_config()
    print("CHECK SAM_SIDECAR_DISABLE=" + os.environ.get("SAM_SIDECAR_DISABLE", ""), "speculative_config:", config.speculative_config)
except SamSidecarError as error:
    print("CHECK refused:", error.code, str(error))
