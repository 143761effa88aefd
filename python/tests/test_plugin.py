"""The plugin's config rewrite, version checks and patching, against stand-in vLLM-Ascend modules
with the interfaces the shim relies on (vLLM itself is not installable on CI machines)."""
import sys
import types
from types import SimpleNamespace

import pytest

from sam_sidecar import plugin, vllm_ascend


def test_method_sam_runs_through_the_ngram_slot_and_marks_the_processes(monkeypatch):
    monkeypatch.delenv(plugin.ENV_METHOD, raising=False)
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
