"""The simulated vLLM runner through the real shim, socket and sidecar."""
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from conftest import CLI, REPO, SidecarProcess

from sam_sidecar.client import FastLaneClient
from sam_sidecar.proposer import SamProposerCore
from sam_sidecar.session import DraftSession
from sam_sidecar.sim import Runner, load_rows

NODE = shutil.which("node") or "node"


@pytest.fixture
def sidecar(socket_dir):
    """A sidecar that drafts at every batch size, as the in-process replay does (its default gate
    would stop drafting above 32 requests, and a rollout step runs 128)."""
    if not os.path.exists(CLI):
        pytest.skip("dist/cli.js is missing: run `npm run build` (npm test does)")
    # Every step indexes all it brings, as in process: drafts then depend on the steps alone, not on
    # how much of a backlog idle time happened to index.
    env = {"VLLM_SPECULATIVE_BATCH_SIZE_THRE": "0", "SAM_SIDECAR_INGEST_TOKENS_PER_STEP": str(1 << 30)}
    process = SidecarProcess(os.path.join(socket_dir, "sidecar.sock"), env=env).start()
    yield process
    process.stop()


def in_process_replay(traces):
    out = subprocess.run([NODE, CLI, "replay", "--traces", traces, "--k", "3", "--siblings", "live", "--json", "--quiet"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_sim(socket, traces, deadline_ms=2000.0, on_step=None, preempt_every=0):
    # A deadline no loaded machine reaches: a missed one gives its step no drafts, which keeps the
    # tokens but changes AL, and these runs compare AL with the in-process replay exactly.
    rows = load_rows(traces)
    client = FastLaneClient(socket, deadline_s=deadline_ms / 1000.0, backoff_initial_s=0.01, backoff_max_s=0.1)
    proposer = SamProposerCore(3, session=DraftSession(3, client, engine_id=f"e2e-{time.monotonic_ns()}"))
    runner = Runner(proposer, 3, max_rows=min(len(rows), 128) + 1, preempt_every=preempt_every, on_step=on_step)
    return runner.run(rows, "live"), proposer


def test_same_al_as_the_in_process_replay_with_every_emitted_token_as_recorded(sidecar, synthetic_traces):
    result, _ = run_sim(sidecar.socket, synthetic_traces)
    reference = in_process_replay(synthetic_traces)
    summary = result.summary(3)
    assert summary["outputMismatches"] == 0
    assert (summary["al"], summary["steps"], summary["emitted"]) == (reference["al"], reference["steps"], reference["emitted"])


def test_preemption_and_condensed_rows_never_change_the_output(sidecar, synthetic_traces):
    result, proposer = run_sim(sidecar.socket, synthetic_traces, preempt_every=5)
    assert result.mismatches == 0
    assert result.summary(3)["al"] > 1.5
    assert proposer.session.stats.resyncs == 0  # a preempted request comes back with its history


def test_sidecar_killed_halfway_and_restarted(sidecar, synthetic_traces):
    baseline, _ = run_sim(sidecar.socket, synthetic_traces)
    total_steps = baseline.summary(3)["steps"]
    deadline_ms = 20.0
    events = SimpleNamespace(killed_at=None, restarted_at=None, drafted_after=[])
    proposer_box = {}

    def restart():
        sidecar.start(wait=True)
        events.restarted_at = proposer_box["runner"].global_step

    def on_step(step):
        runner = proposer_box["runner"]
        if events.killed_at is None and runner.result.steps >= total_steps // 2:
            sidecar.kill9()
            events.killed_at = step
            threading.Thread(target=restart, daemon=True).start()
        elif events.killed_at is not None:
            # A model step takes milliseconds: the restart happens mid-run. Slower steps while the
            # sidecar is down, so the rest of the run outlasts a restart on a loaded machine.
            time.sleep(0.005 if events.restarted_at is not None else 0.02)
            if events.restarted_at is not None:
                last = runner.proposer.last
                events.drafted_after.append((step, any(last.drafts) if last is not None else False))

    rows = load_rows(synthetic_traces)
    client = FastLaneClient(sidecar.socket, deadline_s=deadline_ms / 1000.0, backoff_initial_s=0.01, backoff_max_s=0.05)
    proposer = SamProposerCore(3, session=DraftSession(3, client, engine_id="e2e-kill"))
    runner = Runner(proposer, 3, max_rows=min(len(rows), 128) + 1, on_step=on_step)
    proposer_box["runner"] = runner
    result = runner.run(rows, "live")

    assert events.killed_at is not None and events.restarted_at is not None
    # Identical output: drafts change speed, never tokens.
    assert result.mismatches == 0 and result.outputs == baseline.outputs
    # No step waited longer than the deadline (plus scheduling slack).
    assert result.max_propose_ms < deadline_ms + 30
    assert proposer.session.stats.failed_steps > 0
    # Drafting resumed within a few steps of the restart: the reconnect backoff (at most 50 ms here,
    # 10 steps of 5 ms) plus one RESYNC step for the requests the new sidecar does not know.
    first_draft = next(step for step, drafted in events.drafted_after if drafted)
    assert first_draft - events.restarted_at <= 15


def test_two_tensor_parallel_ranks_in_a_gloo_group_agree_and_step_the_sidecar_once(sidecar, synthetic_traces):
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "python", "src"))
    out = subprocess.run(
        [sys.executable, "-m", "sam_sidecar.sim", "--traces", synthetic_traces, "--socket", sidecar.socket, "--tp", "2", "--deadline-ms", "2000", "--json"],
        check=True, capture_output=True, text=True, env=env, timeout=300,
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["tp"] == 2 and summary["ranksAgree"] is True and summary["outputMismatches"] == 0
    assert summary["al"] == in_process_replay(synthetic_traces)["al"]
    stats = sidecar.stats()
    assert stats["duplicateSteps"] == 0  # only the leader asked; the other rank got the broadcast


SHARED_GRPO = os.path.join(REPO, "..", "shared", "data", "traces", "grpo-gsm8k-step2.jsonl")


def test_shared_grpo_trace_gives_exactly_the_in_process_al(sidecar):
    if not os.path.exists(SHARED_GRPO):
        import pytest

        pytest.skip(f"shared traces absent ({SHARED_GRPO})")
    result, _ = run_sim(sidecar.socket, SHARED_GRPO)
    summary = result.summary(3)
    reference = in_process_replay(SHARED_GRPO)
    assert summary["outputMismatches"] == 0
    assert (summary["al"], summary["steps"]) == (reference["al"], reference["steps"])
