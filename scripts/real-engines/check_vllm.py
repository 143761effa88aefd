"""The shim through real vLLM modules and a live sidecar, on CPU. Entry points: the plugin's
register(), EngineArgs.create_engine_config, GPUModelRunner.__init__ and propose_draft_token_ids,
RejectionSampler.forward."""
import inspect
import sys
from types import SimpleNamespace

import torch

from common import engine_args, report_sampler, run_on_cpu
from sam_sidecar import metrics, plugin, rejection_sampler, support

row, version = support.detect()
print("CHECK detect:", row.label, version)
plugin.register()
print("CHECK runner module imported by register():", "vllm.v1.worker.gpu_model_runner" in sys.modules)
config = engine_args().create_engine_config()
print("CHECK speculative config:", config.speculative_config.method, config.speculative_config.num_speculative_tokens, "marked sam:", getattr(config.speculative_config, "sam_sidecar", None))
run_on_cpu()
from vllm.config import set_current_vllm_config
from vllm.distributed import ensure_model_parallel_initialized, init_distributed_environment
from vllm.sampling_params import SamplingParams
from vllm.v1.worker.cpu_model_runner import CPUModelRunner, _torch_cuda_wrapper
from vllm.v1.worker.gpu_input_batch import CachedRequestState
from vllm.v1.worker.gpu_model_runner import GPUModelRunner


class CPURunnerWithSpecDecode(CPUModelRunner):
    """vLLM's CPU runner (its device overrides) minus its one assert that spec decode is off:
    GPUModelRunner.__init__ itself runs, as on a GPU."""

    def __init__(self, vllm_config, device):
        with _torch_cuda_wrapper():
            GPUModelRunner.__init__(self, vllm_config, device)


with set_current_vllm_config(config):
    init_distributed_environment(world_size=1, rank=0, distributed_init_method="tcp://127.0.0.1:29555", local_rank=0, backend="gloo")
    ensure_model_parallel_initialized(1, 1)
    runner = CPURunnerWithSpecDecode(config, torch.device("cpu"))
    print("CHECK drafter:", type(runner.drafter).__name__, "subclass of", [c.__name__ for c in type(runner.drafter).__mro__[1:3]])
    print("CHECK the function RejectionSampler.forward calls is the shim's:", rejection_sampler.installed(type(runner.rejection_sampler)))
    # Two samples of one prompt: "sibling" has generated 9 8 7 6 5, "r0" has just sampled 9. vLLM's
    # own n-gram drafter finds no earlier 9 in r0 and drafts nothing; the sidecar drafts r0 from its
    # sibling: 8 7 6.
    prompt = [100, 101, 102, 103]
    for req_id, output in (("sibling", [9, 8, 7, 6, 5]), ("r0", [9])):
        state = CachedRequestState(req_id=req_id, prompt_token_ids=prompt, mm_features=[], sampling_params=SamplingParams(temperature=1.0), generator=None, block_ids=([0],), num_computed_tokens=len(prompt) + len(output) - 1, output_token_ids=list(output))
        runner.requests[req_id] = state
        runner.input_batch.add_request(state)
    runner.input_batch.refresh_metadata()
    scheduler_output = SimpleNamespace(finished_req_ids=set(), total_num_scheduled_tokens=2, num_spec_tokens_to_schedule=3)
    # vLLM 0.21 on also takes the KV slot mappings (the custom_class drafter gets them; sam does not use them).
    extra = {"slot_mappings": None} if "slot_mappings" in inspect.signature(runner.propose_draft_token_ids).parameters else {}
    drafts = runner.propose_draft_token_ids(scheduler_output, [[5], [9]], runner.input_batch.sampling_metadata, None, None, None, None, None, **extra)
    print("CHECK drafts from the real propose_draft_token_ids (sibling, r0):", drafts, "steps counted:", metrics.value("steps"))
    report_sampler("real RejectionSampler.forward with sam", runner.rejection_sampler, metrics)
