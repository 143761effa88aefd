"""The shim through real vLLM-Ascend modules on real vLLM and a live sidecar, on CPU. There is no NPU,
so NPUModelRunner.__init__ cannot run: its drafter and sampler are built by its own _get_drafter on
an instance made without __init__, as __init__ does (`self.drafter = self._get_drafter()`, then
`self.rejection_sampler = RejectionSampler(self.sampler)`, from 0.20 `AscendRejectionSampler`: the
row's sampler class)."""
import inspect
import sys
from types import SimpleNamespace

import numpy as np
import torch

from common import engine_args, report_sampler, run_on_cpu
from sam_sidecar import metrics, plugin, rejection_sampler, support
from sam_sidecar import vllm_ascend as sam_ascend

row, version = support.detect()
print("CHECK detect:", row.label, version)
plugin.register()
print("CHECK runner module imported by register():", "vllm_ascend.worker.model_runner_v1" in sys.modules)
config = engine_args().create_engine_config()
print("CHECK speculative config:", config.speculative_config.method, "marked sam:", getattr(config.speculative_config, "sam_sidecar", None))
import vllm.v1.sample.rejection_sampler as vllm_sampler_module
import vllm_ascend.sample.rejection_sampler as ascend_sampler_module
import vllm_ascend.worker.model_runner_v1 as runner_module  # as the engine imports it: worker patches first

print("CHECK after the runner's import, vLLM's sampler module calls vLLM-Ascend's function:", vllm_sampler_module.rejection_sample is ascend_sampler_module.rejection_sample)
ascend_own_rule = ascend_sampler_module.rejection_sample  # before the shim installs its rule
print("CHECK the runner module's factory is the shim's:", getattr(runner_module.get_spec_decode_method, "_sam_sidecar", False))
run_on_cpu()
from vllm.v1.sample.sampler import Sampler

# What NPUPlatform.check_and_update_config does on an NPU (the CPU platform ran here instead); every
# tag has it (vllm_ascend/ascend_config.py:180 at v0.11.0rc0, :359 at v0.14.0rc1, :913 at v0.23.0).
from vllm_ascend.ascend_config import init_ascend_config

init_ascend_config(config)

SamplerClass = getattr(runner_module, row.sampler_class)  # the class the runner builds in this release
print("CHECK before the drafter is built, the function it calls is the shim's:", rejection_sampler.installed(SamplerClass))
report_sampler("vLLM-Ascend's own verification of probability-free drafts (what method ngram gets)", SamplerClass(Sampler()))
runner = object.__new__(runner_module.NPUModelRunner)
runner.vllm_config, runner.speculative_config, runner.device = config, config.speculative_config, torch.device("cpu")
runner.drafter = runner._get_drafter()
runner.rejection_sampler = SamplerClass(Sampler())
called = SamplerClass.forward.__globals__["rejection_sample"]
print("CHECK drafter:", type(runner.drafter).__name__)
print(f"CHECK the function {SamplerClass.__module__.split('.')[0]}'s {row.sampler_class}.forward calls is the shim's:", rejection_sampler.installed(SamplerClass), "wrapping vLLM-Ascend's:", getattr(called, "__wrapped__", None) is ascend_own_rule)
sam_ascend.check_runner(row, runner)
print("CHECK the runner's end-of-__init__ check passes")
# Two samples of one prompt: "sibling" has generated 9 8 7 6 5, "r0" has just sampled 9; the sidecar
# drafts r0 from its sibling (vLLM-Ascend's n-gram drafter would find no earlier 9 in r0).
tokens = np.zeros((4, 64), dtype=np.int32)
tokens[0, :9] = [100, 101, 102, 103, 9, 8, 7, 6, 5]
tokens[1, :5] = [100, 101, 102, 103, 9]
runner.input_batch = SimpleNamespace(req_ids=["sibling", "r0"], num_tokens_no_spec=np.array([9, 5, 0, 0]), token_ids_cpu=tokens, num_prompt_tokens=np.array([4, 4, 0, 0]), spec_decode_unsupported_reqs=set())
propose = runner_module.NPUModelRunner.propose_draft_token_ids
arguments = {name: None for name, parameter in inspect.signature(propose).parameters.items() if name != "self" and parameter.default is inspect.Parameter.empty}
arguments.update(valid_sampled_token_ids=[[5], [9]], scheduler_output=SimpleNamespace(finished_req_ids=set(), num_spec_tokens_to_schedule=3), num_scheduled_tokens=2)
drafts = propose(runner, **arguments)
print("CHECK drafts from the real NPUModelRunner.propose_draft_token_ids (sibling, r0):", drafts, "steps counted:", metrics.value("steps"))
report_sampler("the same forward with sam", runner.rejection_sampler, metrics)
