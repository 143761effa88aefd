import pytest

from sam_sidecar.gate import local_decision, threshold_from_env


def test_switch_is_off_strictly_above_the_threshold():
    assert local_decision(32, False, 32) == (True, "below_threshold")
    assert local_decision(33, False, 32) == (False, "above_threshold")


def test_prefill_steps_are_never_gated_and_non_positive_thresholds_disable_the_switch():
    assert local_decision(500, True, 32) == (True, "prefill")
    assert local_decision(500, False, 0) == (True, "gate_disabled")
    assert local_decision(500, False, -1) == (True, "gate_disabled")


def test_threshold_comes_from_vllm_speculative_batch_size_thre(monkeypatch):
    monkeypatch.delenv("VLLM_SPECULATIVE_BATCH_SIZE_THRE", raising=False)
    assert threshold_from_env() == 32
    monkeypatch.setenv("VLLM_SPECULATIVE_BATCH_SIZE_THRE", "8")
    assert local_decision(9, False) == (False, "above_threshold")
    monkeypatch.setenv("VLLM_SPECULATIVE_BATCH_SIZE_THRE", "eight")
    with pytest.raises(ValueError, match="VLLM_SPECULATIVE_BATCH_SIZE_THRE"):
        threshold_from_env()
