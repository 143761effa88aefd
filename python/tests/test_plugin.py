"""The plugin's config rewrite and its sam marker. Patching on each supported release, refusals and
the disable switch: test_engine_contracts.py."""
from types import SimpleNamespace

from sam_sidecar import plugin


def test_method_sam_runs_through_the_ngram_slot_and_marks_the_processes(monkeypatch):
    monkeypatch.setenv(plugin.ENV_METHOD, "")  # restored (removed) after the test; the rewrite sets it
    rewritten = plugin.rewrite_speculative_config({"method": "sam", "num_speculative_tokens": 3})
    assert rewritten["method"] == "ngram" and rewritten["num_speculative_tokens"] == 3
    assert rewritten["prompt_lookup_min"] <= rewritten["prompt_lookup_max"]
    assert plugin.is_sam(SimpleNamespace(speculative_config=SimpleNamespace(method="ngram")))
    assert plugin.rewrite_speculative_config({"method": "eagle"}) == {"method": "eagle"}


def test_plain_ngram_stays_ngram_without_the_marker(monkeypatch):
    monkeypatch.delenv(plugin.ENV_METHOD, raising=False)
    assert not plugin.is_sam(SimpleNamespace(speculative_config=SimpleNamespace(method="ngram")))
    assert plugin.is_sam(SimpleNamespace(speculative_config=SimpleNamespace(method="ngram", sam_sidecar=True)))
    assert not plugin.is_sam(SimpleNamespace(speculative_config=None))


def test_the_disable_switch_unmarks_sam(monkeypatch):
    monkeypatch.setenv(plugin.ENV_DISABLE, "1")
    assert not plugin.is_sam(SimpleNamespace(speculative_config=SimpleNamespace(method="ngram", sam_sidecar=True)))
