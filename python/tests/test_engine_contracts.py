"""The shim on every row of its support matrix, through stand-ins written from each release's recorded
contract (tests/contracts/), and its refusals everywhere else.

For each supported release: `method: sam` reaches the runner as sam's drafts, the function the
runner's rejection sampler really calls is the lossless one (a chi-square test at K = 3 that the
release's own rule fails where it uses block verification), SAM_SIDECAR_DISABLE=1 gives an engine
without speculation, and an unsupported or unreadable version stops the engine with one error.
"""
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from contracts import standins
from sam_sidecar import after_import, metrics, plugin, support
from sam_sidecar.support import SamSidecarError

SUPPORTED_ASCEND = sorted(standins.ASCEND)
SUPPORTED_VLLM = sorted(line for line, entry in standins.VLLM.items() if entry["vllm_row"])
PROMPT = [100, 101, 102, 103]


@pytest.fixture
def engine(tmp_path, monkeypatch):
    """Installs a stand-in tree: engine("ascend", tag, ...) or engine("vllm", line, ...)."""
    monkeypatch.delenv(plugin.ENV_METHOD, raising=False)
    monkeypatch.delenv(plugin.ENV_DISABLE, raising=False)
    monkeypatch.setattr(plugin, "_state", {"config": False, "runner": False})
    monkeypatch.setattr(after_import, "_pending", {})

    def install(kind, name, **versions):
        root = tmp_path / "site"
        if kind == "ascend":
            standins.write_vllm_ascend(root, name, **versions)
        else:
            standins.write_vllm(root, name, **versions)
        standins.forget_engine_modules()
        monkeypatch.syspath_prepend(str(root))
        return root

    yield install
    standins.forget_engine_modules()
    sys.meta_path[:] = [finder for finder in sys.meta_path if finder is not after_import._finder]


def registered_against_a_live_sidecar(engine, sidecar, monkeypatch, kind, name, runner_module):
    """Installs a stand-in tree, points the shim at the sidecar, registers the plugin (which must
    not import the runner module) and returns a config for method 'sam'."""
    engine(kind, name)
    monkeypatch.setenv("SAM_SIDECAR_SOCKET", sidecar.socket)
    monkeypatch.setenv("SAM_SIDECAR_DEADLINE_MS", "500")
    plugin.register()
    assert runner_module not in sys.modules
    return sam_config()


def sam_config(k=3):
    from vllm.engine.arg_utils import EngineArgs

    config = EngineArgs({"method": "sam", "num_speculative_tokens": k}).create_speculative_config()
    return SimpleNamespace(speculative_config=config)


def input_batch():
    tokens = np.zeros((4, 64), dtype=np.int32)
    tokens[0, :9] = PROMPT + [1, 2, 3, 1, 2]
    return SimpleNamespace(req_ids=["r"], num_tokens_no_spec=np.array([9, 0, 0, 0]), token_ids_cpu=tokens, num_prompt_tokens=np.array([4, 0, 0, 0]), spec_decode_unsupported_reqs=set())


def first_token_check(sampler, trials=20000, k=3, vocab=6, seed=0):
    """Draws `trials` first emitted tokens at K = k through `sampler` (the runner's rejection
    sampler object, called as that release's runner calls it) with p(draft) = 0.5 at every
    position. Returns (share of first tokens equal to the draft, chi-square over the vocabulary)."""
    import inspect

    torch.manual_seed(seed)
    p = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.05, 0.05], dtype=torch.float64)
    per_request = torch.arange(trials) * (k + 1)
    metadata = SimpleNamespace(
        draft_token_ids=torch.zeros(trials * k, dtype=torch.long),
        num_draft_tokens=[k] * trials,
        max_spec_len=k,
        cu_num_draft_tokens=torch.arange(1, trials + 1, dtype=torch.int32) * k,
        target_logits_indices=(per_request.unsqueeze(1) + torch.arange(k)).reshape(-1),
        bonus_logits_indices=per_request + k,
    )
    sampling = SimpleNamespace(all_greedy=False, all_random=True, temperature=None, generators={})
    if len(inspect.signature(type(sampler).forward).parameters) == 6:  # self + 5: the runner samples the bonus
        bonus = torch.multinomial(p, trials, replacement=True).reshape(trials, 1)
        out = sampler(metadata, None, p.log().repeat(trials * k, 1), bonus, sampling)
    else:
        out = sampler(metadata, None, p.log().repeat(trials * (k + 1), 1), sampling).sampled_token_ids
    first = out[:, 0].to(torch.long)
    counts = torch.bincount(first, minlength=vocab).to(torch.float64)
    expected = p * trials
    return float(counts[0] / trials), float(((counts - expected) ** 2 / expected).sum())


CHI_SQUARE_5_DOF_AT_0_1_PERCENT = 20.52


@pytest.mark.parametrize("tag", SUPPORTED_ASCEND)
def test_each_supported_vllm_ascend_release_drafts_with_sam_and_verifies_losslessly(tag, engine, sidecar, monkeypatch, caplog):
    config = registered_against_a_live_sidecar(engine, sidecar, monkeypatch, "ascend", tag, "vllm_ascend.worker.model_runner_v1")
    import vllm_ascend.worker.model_runner_v1 as runner_module

    verified_before = metrics.value("lossless_verifications")
    with caplog.at_level("INFO", logger="vllm.sam_sidecar"):
        runner = runner_module.NPUModelRunner(config)
    assert f"sam drafter active: vLLM-Ascend {tag.lstrip('v')}, lossless sampler installed" in caplog.text
    runner.input_batch = input_batch()
    steps = metrics.value("steps")
    drafts = runner.propose_draft_token_ids([[2]], None, SimpleNamespace(finished_req_ids=set()), None)
    assert drafts == [[3, 1, 2]]  # the sidecar's continuation, not vLLM-Ascend's own n-gram drafter
    assert metrics.value("steps") == steps + 1
    share, chi_square = first_token_check(runner.rejection_sampler)
    assert abs(share - 0.5) < 0.015 and chi_square < CHI_SQUARE_5_DOF_AT_0_1_PERCENT
    assert metrics.value("lossless_verifications") == verified_before + 1
    # Finished ids reach the next step: with the call (to 0.15) or through _update_states (0.16 on).
    runner._update_states(SimpleNamespace(finished_req_ids={"r"}))
    assert runner.finished_seen == ["r"]
    if standins.ASCEND[tag]["dispatch"] in ("class", "class-by-vllm-version"):
        assert runner.drafter._noted_finished == ["r"]


def test_vllm_ascend_0_23_on_another_vllm_passes_the_steps_draft_count_and_drafts_are_cut_to_it(engine, sidecar, monkeypatch):
    engine("ascend", "v0.23.0", vllm_version="0.23.1")
    monkeypatch.setenv("SAM_SIDECAR_SOCKET", sidecar.socket)
    monkeypatch.setenv("SAM_SIDECAR_DEADLINE_MS", "500")
    plugin.register()
    import vllm_ascend.worker.model_runner_v1 as runner_module

    runner = runner_module.NPUModelRunner(sam_config())
    runner.input_batch = input_batch()
    scheduler_output = SimpleNamespace(finished_req_ids=set(), num_spec_tokens_to_schedule=2)
    assert runner.propose_draft_token_ids([[2]], None, scheduler_output, None) == [[3, 1]]


def test_vocabulary_parallel_sampling_refuses_sam_on_vllm_ascend_0_20_on(engine):
    engine("ascend", "v0.23.0")
    plugin.register()
    config = sam_config()
    import vllm_ascend.ascend_config
    import vllm_ascend.worker.model_runner_v1 as runner_module

    vllm_ascend.ascend_config.get_ascend_config().enable_reduce_sample = True
    with pytest.raises(SamSidecarError) as refused:
        runner_module.NPUModelRunner(config)
    assert refused.value.code == "UNSUPPORTED_OPTION" and "enable_reduce_sample" in str(refused.value)


def test_an_all_greedy_batch_on_vllm_ascend_0_20_on_is_verified_from_its_logits_and_no_indices(engine):
    engine("ascend", "v0.23.0")
    plugin.register()
    import vllm_ascend.worker.model_runner_v1 as runner_module

    runner = runner_module.NPUModelRunner(sam_config())
    k, trials = 3, 4
    logits = torch.tensor([[0.0, 3.0, 1.0, 0.5]], dtype=torch.float64).repeat(trials * (k + 1), 1)
    per_request = torch.arange(trials) * (k + 1)
    metadata = SimpleNamespace(
        draft_token_ids=torch.tensor([1, 1, 2] * trials),  # the argmax twice, then not
        num_draft_tokens=[k] * trials,
        max_spec_len=k,
        cu_num_draft_tokens=torch.arange(1, trials + 1, dtype=torch.int32) * k,
        target_logits_indices=(per_request.unsqueeze(1) + torch.arange(k)).reshape(-1),
        bonus_logits_indices=per_request + k,
    )
    greedy = SimpleNamespace(all_greedy=True, all_random=False, temperature=torch.full((trials,), -1.0), generators={})
    out = runner.rejection_sampler(metadata, None, logits, greedy).sampled_token_ids
    assert out[:, :3].tolist() == [[1, 1, 1]] * trials  # two accepted, the third replaced by the argmax
    from sam_sidecar import rejection_sampler

    with pytest.raises(SamSidecarError, match="enable_reduce_sample"):
        rejection_sampler._full_vocabulary_logits((logits, torch.zeros_like(logits, dtype=torch.long)))


@pytest.mark.parametrize("tag", [t for t in SUPPORTED_ASCEND if standins.ASCEND[t]["block_verify"]])
def test_the_lossless_check_fails_on_the_releases_own_rule_which_other_methods_keep(tag, engine):
    engine("ascend", tag)
    plugin.register()
    from vllm.engine.arg_utils import EngineArgs

    plain = SimpleNamespace(speculative_config=EngineArgs({"method": "ngram", "num_speculative_tokens": 3}).create_speculative_config())
    import vllm_ascend.worker.model_runner_v1 as runner_module

    runner = runner_module.NPUModelRunner(plain)
    assert type(runner.drafter).__name__ in ("NgramProposer", "AscendNgramProposer")  # its own drafter
    share, chi_square = first_token_check(runner.rejection_sampler)
    assert share > 0.7 and chi_square > CHI_SQUARE_5_DOF_AT_0_1_PERCENT  # block verification's bias


@pytest.mark.parametrize("line", SUPPORTED_VLLM)
def test_each_supported_vllm_release_drafts_with_sam_in_its_drafter_slot(line, engine, sidecar, monkeypatch, caplog):
    config = registered_against_a_live_sidecar(engine, sidecar, monkeypatch, "vllm", line, "vllm.v1.worker.gpu_model_runner")
    from vllm.v1.worker import gpu_model_runner

    with caplog.at_level("INFO", logger="vllm.sam_sidecar"):
        runner = gpu_model_runner.GPUModelRunner(config)
    assert f"sam drafter active: vLLM {line}.0, lossless sampler installed" in caplog.text
    runner.input_batch = input_batch()
    assert runner.propose_draft_token_ids(None, [[2]]) == [[3, 1, 2]]
    share, chi_square = first_token_check(runner.rejection_sampler)
    assert abs(share - 0.5) < 0.015 and chi_square < CHI_SQUARE_5_DOF_AT_0_1_PERCENT
    runner._update_states(SimpleNamespace(finished_req_ids={"r"}))
    assert runner.finished_seen == ["r"] and runner.drafter._finished == ["r"]


CUSTOM_CLASS_LINES = [line for line in SUPPORTED_VLLM if standins.VLLM[line]["drafter_slot"] == "custom_class"]


@pytest.mark.parametrize("line", CUSTOM_CLASS_LINES)
def test_from_vllm_0_21_sam_runs_through_the_custom_class_seam_naming_the_shims_class(line, engine):
    engine("vllm", line)
    plugin.register()
    from vllm.engine.arg_utils import EngineArgs

    config = EngineArgs({"method": "sam", "num_speculative_tokens": 3, "prompt_lookup_max": 4, "model": "x.Y"}).create_speculative_config()
    assert (config.method, config.model) == ("custom_class", support.CUSTOM_CLASS_PATH)
    assert plugin.is_sam(SimpleNamespace(speculative_config=config))


@pytest.mark.parametrize("setting", [{"rejection_sample_method": "synthetic", "synthetic_acceptance_length": 2.0}, {"rejection_sample_method": "block"}, {"synthetic_acceptance_rates": [0.5, 0.5, 0.5]}])
def test_a_verification_other_than_the_standard_rule_refuses_sam(setting, engine):
    engine("vllm", CUSTOM_CLASS_LINES[-1])
    plugin.register()
    from vllm.engine.arg_utils import EngineArgs

    with pytest.raises(SamSidecarError) as refused:
        EngineArgs({"method": "sam", "num_speculative_tokens": 3, **setting}).create_speculative_config()
    assert refused.value.code == "UNSUPPORTED_OPTION" and "standard" in str(refused.value)


def test_the_shims_class_named_by_hand_where_the_plugin_did_not_patch_the_runner_refuses_to_build(engine):
    engine("vllm", CUSTOM_CLASS_LINES[0])  # no plugin.register(): VLLM_PLUGINS left it out
    from vllm.engine.arg_utils import EngineArgs
    from vllm.v1.worker import gpu_model_runner

    config = EngineArgs({"method": "custom_class", "model": support.CUSTOM_CLASS_PATH, "num_speculative_tokens": 3}).create_speculative_config()
    with pytest.raises(RuntimeError, match="RUNNER_MISMATCH.*plugin"):
        gpu_model_runner.GPUModelRunner(SimpleNamespace(speculative_config=config))


def test_the_shims_class_named_by_hand_with_another_verification_refuses_at_the_runner(engine):
    engine("vllm", CUSTOM_CLASS_LINES[0])
    plugin.register()
    from vllm.engine.arg_utils import EngineArgs
    from vllm.v1.worker import gpu_model_runner

    config = EngineArgs({"method": "custom_class", "model": support.CUSTOM_CLASS_PATH, "num_speculative_tokens": 3, "rejection_sample_method": "block"}).create_speculative_config()
    with pytest.raises(SamSidecarError) as refused:
        gpu_model_runner.GPUModelRunner(SimpleNamespace(speculative_config=config))
    assert refused.value.code == "UNSUPPORTED_OPTION"


@pytest.mark.parametrize("kind,name", [("ascend", t) for t in SUPPORTED_ASCEND] + [("vllm", v) for v in SUPPORTED_VLLM])
def test_the_disable_switch_runs_sam_configs_without_speculation(kind, name, engine, monkeypatch, caplog):
    engine(kind, name)
    monkeypatch.setenv(plugin.ENV_DISABLE, "1")
    plugin.register()
    config = sam_config()
    assert config.speculative_config is None and "runs without speculative decoding" in caplog.text
    if kind == "ascend":
        import vllm_ascend.worker.model_runner_v1 as runner_module

        runner = runner_module.NPUModelRunner(config)
    else:
        from vllm.v1.worker import gpu_model_runner

        runner = gpu_model_runner.GPUModelRunner(config)
    assert runner.drafter is None


@pytest.mark.parametrize("version", standins.UNSUPPORTED_ASCEND)
def test_unsupported_vllm_ascend_releases_refuse_sam_with_one_clear_error(version, engine, monkeypatch):
    engine("ascend", "v0.14.0rc1", version=version)
    refusals = metrics.value("refusals")
    plugin.register()
    with pytest.raises(SamSidecarError) as refused:
        sam_config()
    assert refused.value.code == "UNSUPPORTED_VERSION"
    assert f"vLLM-Ascend {version}" in str(refused.value) and "SAM_SIDECAR_DISABLE=1" in str(refused.value)
    assert metrics.value("refusals") == refusals + 1
    # A runner reached with a sam marker by another route (the plain patch's environment marker)
    # stops too: its probability-free drafts never meet the release's own sampler.
    from vllm.engine.arg_utils import EngineArgs

    monkeypatch.setenv(plugin.ENV_METHOD, plugin.METHOD)
    marked = SimpleNamespace(speculative_config=EngineArgs({"method": "ngram", "num_speculative_tokens": 3}).create_speculative_config())
    import vllm_ascend.worker.model_runner_v1 as runner_module

    with pytest.raises(SamSidecarError):
        runner_module.NPUModelRunner(marked)


@pytest.mark.parametrize("version", standins.UNSUPPORTED_VLLM)
def test_unsupported_vllm_releases_refuse_sam(version, engine):
    engine("vllm", "0.14", version=version)
    plugin.register()
    with pytest.raises(SamSidecarError, match=f"vLLM {version}"):
        sam_config()


def test_a_vllm_ascend_on_a_vllm_it_was_not_built_on_is_refused(engine):
    engine("ascend", "v0.14.0rc1", vllm_version="0.15.0")
    plugin.register()
    with pytest.raises(SamSidecarError, match="vLLM 0.15.0 is installed"):
        sam_config()


def test_a_version_that_cannot_be_read_is_refused(engine):
    engine("ascend", "v0.14.0rc1", version="not-a-version")
    plugin.register()
    with pytest.raises(SamSidecarError) as refused:
        sam_config()
    assert refused.value.code == "UNKNOWN_VERSION"


def test_the_version_comes_from_metadata_not_a_package_attribute(engine):
    engine("ascend", "v0.14.0rc1")
    import vllm_ascend

    from sam_sidecar import support

    assert not hasattr(vllm_ascend, "__version__")
    assert support.installed_version("vllm-ascend") == "0.14.0rc1"
    assert support.detect()[0].label == "vLLM-Ascend 0.13.x-0.14.x"


def test_lookup_bounds_given_for_sam_are_ignored_not_validated(engine):
    engine("ascend", "v0.14.0rc1")
    plugin.register()
    from vllm.engine.arg_utils import EngineArgs

    config = EngineArgs({"method": "sam", "num_speculative_tokens": 3, "prompt_lookup_min": 6}).create_speculative_config()
    assert config.method == "ngram" and config.prompt_lookup_min <= config.prompt_lookup_max


def test_the_readme_matrix_names_every_supported_row_and_every_recorded_tag_is_in_one():
    import os

    from sam_sidecar import support

    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
    for row in support.ROWS:
        assert f"| {row.label}" in readme, row.label
    for tag, entry in standins.ASCEND.items():
        assert support.select("vllm-ascend", tag.lstrip("v"), entry["vllm"]).engine == "vllm-ascend"
    for line in SUPPORTED_VLLM:
        assert support.select("vllm", f"{line}.0").engine == "vllm"
