"""The plain patch applies to a factory module of the shape it was written against, and the patched
factory returns the sam drafter."""
import os
import shutil
import subprocess
import sys
import types

import pytest

PATCH = os.path.join(os.path.dirname(__file__), "..", "src", "sam_sidecar", "patches", "vllm-ascend-sam.patch")
FACTORY_LINE = 27


def factory_module_source():
    header = [f"# line {i}" for i in range(1, FACTORY_LINE - 1)] + [""]
    body = [
        "def get_spec_decode_method(method, vllm_config, device, runner):",
        '    if method == "ngram":',
        '        return "ngram drafter"',
        '    raise ValueError(f"unknown method {method}")',
    ]
    return "\n".join(header + body) + "\n"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is needed to apply the patch")
def test_patch_applies_and_installs_the_sam_drafter(tmp_path, monkeypatch):
    target = tmp_path / "vllm_ascend" / "spec_decode"
    target.mkdir(parents=True)
    (tmp_path / "vllm_ascend" / "__init__.py").write_text("")
    (target / "__init__.py").write_text(factory_module_source())
    subprocess.run(["git", "apply", "--check", os.path.abspath(PATCH)], cwd=tmp_path, check=True)
    subprocess.run(["git", "apply", os.path.abspath(PATCH)], cwd=tmp_path, check=True)

    sampler = types.ModuleType("vllm_ascend.sample.rejection_sampler")
    sampler.rejection_sample = lambda *args: "original"
    monkeypatch.setitem(sys.modules, "vllm_ascend", types.ModuleType("vllm_ascend"))
    monkeypatch.setitem(sys.modules, "vllm_ascend.sample", types.ModuleType("vllm_ascend.sample"))
    monkeypatch.setitem(sys.modules, "vllm_ascend.sample.rejection_sampler", sampler)
    namespace = {}
    exec(compile((target / "__init__.py").read_text(), "patched", "exec"), namespace)
    config = types.SimpleNamespace(speculative_config=types.SimpleNamespace(method="ngram", num_speculative_tokens=3, sam_sidecar=True))
    drafter = namespace["get_spec_decode_method"]("ngram", config, "npu:0", types.SimpleNamespace())
    assert type(drafter).__name__ == "AscendSamProposer"
    assert getattr(sampler.rejection_sample, "_sam_sidecar", False)
    plain = types.SimpleNamespace(speculative_config=types.SimpleNamespace(method="ngram"))
    assert namespace["get_spec_decode_method"]("ngram", plain, "npu:0", None) == "ngram drafter"


def test_patch_refuses_a_file_it_does_not_know(tmp_path):
    target = tmp_path / "vllm_ascend" / "spec_decode"
    target.mkdir(parents=True)
    (target / "__init__.py").write_text("def get_spec_decode_method(name, config):\n    pass\n")
    check = subprocess.run(["git", "apply", "--check", os.path.abspath(PATCH)], cwd=tmp_path, capture_output=True)
    assert check.returncode != 0
