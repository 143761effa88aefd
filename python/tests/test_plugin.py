"""The plugin's config rewrite, version checks and patching, against stand-in vLLM-Ascend modules
with the interfaces the shim relies on (vLLM itself is not installable on CI machines)."""
import sys
import types
from types import SimpleNamespace

import pytest

from sam_sidecar import plugin, vllm_ascend


def test_method_sam_runs_through_the_ngram_slot_and_marks_the_processes(monkeypatch):
    monkeypatch.setenv(plugin.ENV_METHOD, "")  # restored (removed) after the test; the rewrite sets it
    rewritten = plugin.rewrite_speculative_config({"method": "sam", "num_speculative_tokens": 3})
    assert rewritten["method"] == "ngram" and rewritten["num_speculative_tokens"] == 3
    assert plugin.is_sam(SimpleNamespace(speculative_config=SimpleNamespace(method="ngram")))
    assert plugin.rewrite_speculative_config({"method": "eagle"}) == {"method": "eagle"}


def test_plain_ngram_stays_ngram_without_the_marker(monkeypatch):
    monkeypatch.delenv(plugin.ENV_METHOD, raising=False)
    assert not plugin.is_sam(SimpleNamespace(speculative_config=SimpleNamespace(method="ngram")))
    assert plugin.is_sam(SimpleNamespace(speculative_config=SimpleNamespace(method="ngram", sam_sidecar=True)))
    assert not plugin.is_sam(SimpleNamespace(speculative_config=None))


@pytest.fixture
def fake_vllm_ascend(monkeypatch):
    """Modules shaped like vLLM-Ascend's: the drafter factory, the runner module that imported it
    by name, and the rejection sampler module."""
    created = []

    def get_spec_decode_method(method, vllm_config, device, runner):
        created.append(method)
        return ("original", method)

    root = types.ModuleType("vllm_ascend")
    root.__version__ = "0.11.0rc0"
    spec_decode = types.ModuleType("vllm_ascend.spec_decode")
    spec_decode.get_spec_decode_method = get_spec_decode_method
    runner_module = types.ModuleType("vllm_ascend.worker.model_runner_v1")
    runner_module.get_spec_decode_method = get_spec_decode_method
    sampler_module = types.ModuleType("vllm_ascend.sample.rejection_sampler")
    sampler_module.rejection_sample = lambda *args: "original sampler"
    for name, module in {
        "vllm_ascend": root,
        "vllm_ascend.spec_decode": spec_decode,
        "vllm_ascend.worker": types.ModuleType("vllm_ascend.worker"),
        "vllm_ascend.worker.model_runner_v1": runner_module,
        "vllm_ascend.sample": types.ModuleType("vllm_ascend.sample"),
        "vllm_ascend.sample.rejection_sampler": sampler_module,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(plugin, "_state", {"config": True, "engine": False})
    return SimpleNamespace(root=root, spec_decode=spec_decode, runner=runner_module, sampler=sampler_module, created=created)


def sam_config(k=3):
    return SimpleNamespace(speculative_config=SimpleNamespace(method="ngram", num_speculative_tokens=k, sam_sidecar=True))


def test_known_vllm_ascend_gets_the_sam_drafter_and_the_lossless_sampler(fake_vllm_ascend):
    plugin.register()
    factory = fake_vllm_ascend.runner.get_spec_decode_method
    assert factory is fake_vllm_ascend.spec_decode.get_spec_decode_method
    runner = SimpleNamespace(input_batch=None)
    drafter = factory("ngram", sam_config(), "npu:0", runner)
    assert isinstance(drafter, vllm_ascend.AscendSamProposer) and drafter.core.k == 3
    plain = SimpleNamespace(speculative_config=SimpleNamespace(method="eagle"))
    assert factory("eagle", plain, "npu:0", runner) == ("original", "eagle")
    # Drafts with probabilities keep the original sampler.
    assert fake_vllm_ascend.sampler.rejection_sample(None, [], 0, None, "probs", None, None, None) == "original sampler"
    # Re-entrant: vLLM calls register() in every process, possibly more than once.
    plugin._state["engine"] = False
    plugin.register()
    assert fake_vllm_ascend.spec_decode.get_spec_decode_method is factory


def test_unknown_versions_are_refused_unless_forced(fake_vllm_ascend, monkeypatch, caplog):
    fake_vllm_ascend.root.__version__ = "9.9.9"
    original = fake_vllm_ascend.spec_decode.get_spec_decode_method
    plugin.register()
    assert fake_vllm_ascend.spec_decode.get_spec_decode_method is original
    assert "not a version this shim knows" in caplog.text
    monkeypatch.setenv(plugin.ENV_FORCE, "1")
    plugin.register()
    assert fake_vllm_ascend.spec_decode.get_spec_decode_method is not original


def test_a_factory_with_another_interface_is_not_patched(fake_vllm_ascend, caplog):
    fake_vllm_ascend.spec_decode.get_spec_decode_method = lambda name, config: None
    plugin.register()  # logs and leaves vLLM-Ascend as it was: it keeps its own n-gram drafter
    assert "registration failed" in caplog.text
    assert fake_vllm_ascend.spec_decode.get_spec_decode_method.__name__ == "<lambda>"


def test_the_drafter_follows_the_runner_input_batch_and_applies_the_gate(sidecar, fake_vllm_ascend, monkeypatch):
    import numpy as np

    monkeypatch.setenv("SAM_SIDECAR_SOCKET", sidecar.socket)
    monkeypatch.setenv("SAM_SIDECAR_DEADLINE_MS", "500")
    plugin.register()
    prompt = [100, 101, 102, 103]
    tokens = np.zeros((4, 64), dtype=np.int32)
    tokens[0, :9] = prompt + [1, 2, 3, 1, 2]
    batch = SimpleNamespace(req_ids=["r"], num_tokens_no_spec=np.array([9, 0, 0, 0]), token_ids_cpu=tokens, num_prompt_tokens=np.array([4, 0, 0, 0]))
    runner = SimpleNamespace(input_batch=batch)
    drafter = fake_vllm_ascend.spec_decode.get_spec_decode_method("ngram", sam_config(), "npu:0", runner)
    scheduler_output = SimpleNamespace(finished_req_ids=set())
    assert drafter.generate_token_ids([[2]], None, scheduler_output) == [[3, 1, 2]]
    assert runner.speculative_decoding_active is True
    # A row with no sampled token this step (partial prefill) gets no draft.
    assert drafter.generate_token_ids([[]], None, scheduler_output) == [[]]


@pytest.fixture
def fake_vllm(monkeypatch):
    """Modules shaped like upstream vLLM's runner: GPUModelRunner with __init__, _update_states and
    propose_draft_token_ids, and the n-gram drafter class the n-gram slot asserts on."""

    class NgramProposer:
        def __init__(self, vllm_config):
            self.vllm_config = vllm_config

    class GPUModelRunner:
        def __init__(self, vllm_config, device=None):
            self.vllm_config = vllm_config
            self.drafter = NgramProposer(vllm_config)
            self.updated = []

        def _update_states(self, scheduler_output):
            self.updated.append(scheduler_output)

        def propose_draft_token_ids(self, sampled_token_ids):
            assert isinstance(self.drafter, NgramProposer)
            return self.drafter.propose(sampled_token_ids, self.input_batch.req_ids, self.input_batch.num_tokens_no_spec, self.input_batch.token_ids_cpu)

    root = types.ModuleType("vllm")
    root.__version__ = "0.11.0"
    runner_module = types.ModuleType("vllm.v1.worker.gpu_model_runner")
    runner_module.GPUModelRunner = GPUModelRunner
    runner_module.NgramProposer = NgramProposer
    monkeypatch.delitem(sys.modules, "vllm_ascend", raising=False)
    monkeypatch.setitem(sys.modules, "vllm_ascend", None)  # not installed: import fails
    for name, module in {
        "vllm": root,
        "vllm.v1": types.ModuleType("vllm.v1"),
        "vllm.v1.worker": types.ModuleType("vllm.v1.worker"),
        "vllm.v1.worker.gpu_model_runner": runner_module,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(plugin, "_state", {"config": True, "engine": False})
    return SimpleNamespace(runner_class=GPUModelRunner, ngram=NgramProposer)


def test_upstream_vllm_runs_sam_through_the_ngram_slot_reading_the_input_batch(sidecar, fake_vllm, monkeypatch):
    import numpy as np

    from sam_sidecar.vllm_upstream import SamUpstreamProposer

    monkeypatch.setenv("SAM_SIDECAR_SOCKET", sidecar.socket)
    monkeypatch.setenv("SAM_SIDECAR_DEADLINE_MS", "500")
    plugin.register()
    runner = fake_vllm.runner_class(sam_config())
    assert isinstance(runner.drafter, SamUpstreamProposer) and isinstance(runner.drafter, fake_vllm.ngram)
    prompt = [100, 101, 102, 103]
    tokens = np.zeros((4, 64), dtype=np.int32)
    tokens[0, :9] = prompt + [1, 2, 3, 1, 2]
    tokens[1, :5] = prompt + [9]
    runner.input_batch = SimpleNamespace(req_ids=["a", "b"], num_tokens_no_spec=np.array([9, 5, 0, 0]), token_ids_cpu=tokens, num_prompt_tokens=np.array([4, 4, 0, 0]))
    assert runner.propose_draft_token_ids([[2], [9]]) == [[3, 1, 2], []]
    # Finished ids reach the sidecar with the next step, taken from the scheduler output.
    runner._update_states(SimpleNamespace(finished_req_ids={"a"}))
    runner.input_batch = SimpleNamespace(req_ids=["b"], num_tokens_no_spec=np.array([6]), token_ids_cpu=tokens[1:], num_prompt_tokens=np.array([4]))
    tokens[1, 5] = 9
    runner.propose_draft_token_ids([[9]])
    assert "a" not in runner.drafter.core.session.confirmed() and runner.updated
    # A runner for another method keeps its own drafter.
    other = fake_vllm.runner_class(SimpleNamespace(speculative_config=SimpleNamespace(method="eagle")))
    assert type(other.drafter) is fake_vllm.ngram
