"""The plain patch (for deployments that do not load vLLM plugins) applies to the drafter factory of
each vLLM-Ascend release it names, and a runner built with the sam marker then drafts through the
sidecar and verifies with the lossless sampler."""
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest

from contracts import standins
from sam_sidecar import plugin, rejection_sampler, vllm_ascend
from test_engine_contracts import CHI_SQUARE_5_DOF_AT_0_1_PERCENT, first_token_check

PATCH = os.path.join(os.path.dirname(__file__), "..", "src", "sam_sidecar", "patches", "vllm-ascend-sam.patch")


@pytest.mark.skipif(shutil.which("git") is None, reason="git is needed to apply the patch")
@pytest.mark.parametrize("tag", ["v0.11.0rc0", "v0.12.0rc1", "v0.14.0rc1", "v0.18.0", "v0.23.0"])
def test_patch_applies_and_installs_the_sam_drafter_and_the_lossless_sampler(tag, tmp_path, monkeypatch):
    root = standins.write_vllm_ascend(tmp_path / "site", tag)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "apply", "--check", os.path.abspath(PATCH)], cwd=root, check=True)
    subprocess.run(["git", "apply", os.path.abspath(PATCH)], cwd=root, check=True)
    standins.forget_engine_modules()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv(plugin.ENV_METHOD, plugin.METHOD)
    monkeypatch.delenv(plugin.ENV_DISABLE, raising=False)
    try:
        import vllm_ascend.worker.model_runner_v1 as runner_module
        from vllm.engine.arg_utils import EngineArgs

        config = SimpleNamespace(speculative_config=EngineArgs({"method": "ngram", "num_speculative_tokens": 3}).create_speculative_config())
        runner = runner_module.NPUModelRunner(config)
        assert isinstance(runner.drafter, vllm_ascend.AscendSamProposer)
        assert rejection_sampler.installed(type(runner.rejection_sampler))
        share, chi_square = first_token_check(runner.rejection_sampler)
        assert abs(share - 0.5) < 0.015 and chi_square < CHI_SQUARE_5_DOF_AT_0_1_PERCENT
    finally:
        standins.forget_engine_modules()


def test_patch_refuses_a_file_it_does_not_know(tmp_path):
    target = tmp_path / "vllm_ascend" / "spec_decode"
    target.mkdir(parents=True)
    (target / "__init__.py").write_text("def get_spec_decode_method(name, config):\n    pass\n")
    check = subprocess.run(["git", "apply", "--check", os.path.abspath(PATCH)], cwd=tmp_path, capture_output=True)
    assert check.returncode != 0
