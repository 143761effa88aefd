"""The shim's conversation with a real sidecar: deltas by request id, RESYNC, release, fail open."""
import os
import socket
import threading
import time

import numpy as np
import pytest

from sam_sidecar import client as client_module
from sam_sidecar import wire
from sam_sidecar.client import FastLaneClient
from sam_sidecar.session import DEFAULT_MAX_STEP_TOKENS, DraftSession, chunked, gather_spans

PROMPT = [100, 101, 102, 103]


class Batch:
    """Rows of token ids the way vLLM's InputBatch holds them."""

    def __init__(self, contexts):
        self.req_ids = list(contexts)
        width = max(len(c) for c in contexts.values()) + 64
        self.tokens = np.zeros((len(contexts) + 4, width), dtype=np.int32)
        self.ends = np.zeros(len(contexts) + 4, dtype=np.int32)
        self.prompts = np.full(len(contexts) + 4, len(PROMPT), dtype=np.int32)
        for row, req_id in enumerate(self.req_ids):
            self.set_row(row, contexts[req_id])

    def set_row(self, row, context):
        self.tokens[row, : len(context)] = context
        self.ends[row] = len(context)

    def step(self, session, finished=(), num_reqs=None):
        return session.step(self.req_ids, self.tokens, self.ends, self.prompts, num_reqs or len(self.req_ids), finished)


def unix_listener(path, backlog=1):
    """A listening Unix socket at `path`: a stand-in sidecar that answers as each test needs."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(backlog)
    return server


def session_for(sidecar, k=3, **kwargs):
    return DraftSession(k, FastLaneClient(sidecar.socket, deadline_s=0.5), engine_id=f"test-{time.monotonic_ns()}", **kwargs)


def test_gather_spans_reads_each_rows_new_tokens_without_a_loop():
    rows = np.arange(20, dtype=np.int32).reshape(4, 5)
    out = gather_spans(rows, np.array([2, 0]), np.array([1, 3]), np.array([4, 5]))
    assert out.tolist() == [11, 12, 13, 3, 4]


def test_first_step_sends_full_contexts_then_only_new_tokens(sidecar):
    session = session_for(sidecar)
    batch = Batch({"a": PROMPT + [1, 2, 3, 1, 2], "b": PROMPT + [7]})
    first = batch.step(session)
    assert first.source == "sidecar" and first.speculate
    assert first.drafts[0] == [3, 1, 2]
    batch.set_row(0, PROMPT + [1, 2, 3, 1, 2, 3])
    second = batch.step(session)
    assert second.drafts[0] == [1, 2, 3]
    assert session.confirmed() == {"a": 10, "b": 5}


def test_identity_is_the_request_id_not_the_row(sidecar):
    session = session_for(sidecar)
    batch = Batch({"a": PROMPT + [1, 2, 3, 1, 2], "b": PROMPT + [5, 6, 5]})
    batch.step(session)
    # The batch is condensed: b moves to row 0, a to row 1, each with one more token.
    swapped = Batch({"b": PROMPT + [5, 6, 5, 6], "a": PROMPT + [1, 2, 3, 1, 2, 3]})
    result = swapped.step(session)
    assert result.drafts == [[5, 6, 5], [1, 2, 3]]


def test_a_batch_repeated_row_for_row_sends_only_each_requests_new_tokens(sidecar):
    session = session_for(sidecar)
    sent = []
    step = session.client.step
    session.client.step = lambda request, **kw: sent.append(request) or step(request, **kw)
    batch = Batch({"a": PROMPT + [1, 2, 3, 1, 2], "b": PROMPT + [7]})
    batch.step(session)
    for extra in ([3, 1], [2]):
        batch.set_row(0, list(batch.tokens[0, : batch.ends[0]]) + extra)
        batch.set_row(1, list(batch.tokens[1, : batch.ends[1]]) + [8])
        # As the proposer calls it: which rows sampled a token this step.
        result = session.step(batch.req_ids, batch.tokens, batch.ends, batch.prompts, 2, (), [True, True])
    assert [r.starts.tolist() for r in sent[1:]] == [[9, 5], [11, 6]]
    assert [r.counts.tolist() for r in sent[1:]] == [[2, 1], [1, 1]]
    assert all((r.prompt_lens == wire.NO_PROMPT).all() for r in sent[1:])
    assert sent[2].req_ids is sent[1].req_ids  # the ids were encoded once, then reused
    assert result.drafts[0] == [3, 1, 2] and session.confirmed() == {"a": 12, "b": 7}


def test_a_preempted_request_comes_back_with_its_id_and_continues(sidecar):
    session = session_for(sidecar)
    Batch({"a": PROMPT + [1, 2, 3, 1], "b": PROMPT + [9]}).step(session)
    Batch({"b": PROMPT + [9, 9]}).step(session)  # a is preempted for a step
    back = Batch({"b": PROMPT + [9, 9, 9], "a": PROMPT + [1, 2, 3, 1, 2]}).step(session)
    assert back.drafts[1] == [3, 1, 2]
    assert session.stats.resyncs == 0


def test_finished_requests_are_released_and_their_output_drafts_for_siblings(sidecar):
    session = session_for(sidecar)
    Batch({"a": PROMPT + [1, 2, 3, 4, 5]}).step(session)
    result = Batch({"b": PROMPT + [1, 2]}).step(session, finished=["a"])
    assert result.drafts == [[3, 4, 5]]
    assert "a" not in session.confirmed()


def test_a_request_that_finished_before_any_step_was_confirmed_is_still_released(sidecar):
    session = session_for(sidecar)
    sent = []
    step = session.client.step
    session.client.step = lambda request, **kw: sent.append(request) or step(request, **kw)
    sidecar.kill9()
    Batch({"a": PROMPT + [1, 2]}).step(session)  # fails open; the sidecar may or may not have it
    sidecar.start()
    time.sleep(session.client.backoff_max_s)
    Batch({"b": PROMPT + [5]}).step(session, finished=["a"])
    assert sent[-1].finished == [b"a"]


def test_after_a_sidecar_restart_requests_resync_and_drafting_resumes(sidecar):
    session = session_for(sidecar)
    context = PROMPT + [1, 2, 3, 1, 2]
    Batch({"a": context}).step(session)
    sidecar.kill9()
    failed = Batch({"a": context + [3]}).step(session)
    assert failed.source == "local" and failed.drafts == [[]]
    sidecar.start()
    time.sleep(session.client.backoff_max_s)
    resync = Batch({"a": context + [3, 1]}).step(session)
    assert resync.source == "sidecar" and resync.drafts == [[]]
    assert session.stats.resyncs == 1
    again = Batch({"a": context + [3, 1, 2]}).step(session)
    assert again.drafts == [[3, 1, 2]]


def test_a_request_the_sidecar_rejects_is_reported_once_and_not_resent(sidecar):
    session = session_for(sidecar)
    batch = Batch({"bad": PROMPT + [2**21], "good": PROMPT + [1, 2, 1]})
    first = batch.step(session)
    assert first.drafts[1] == [2, 1, 2]
    assert session.stats.item_errors == 1
    batch.step(session)
    assert session.stats.item_errors == 1
    assert "bad" in session._refused


def test_gate_decision_comes_from_the_sidecar(sidecar):
    session = session_for(sidecar)
    result = Batch({"a": PROMPT + [1, 2, 1]}).step(session, num_reqs=64)
    assert (result.speculate, result.reason, result.source) == (False, "above_threshold", "sidecar")
    assert result.drafts == [[]]


def test_steps_above_the_announced_bound_are_not_awaited_and_their_reply_is_applied_next_step(sidecar):
    session = session_for(sidecar)
    receiving = []
    receive = session.client.receive
    session.client.receive = lambda call_id, deadline_s=None, deadline=None: receiving.append(session.step_id) or receive(call_id, deadline_s, deadline)
    batch = Batch({"a": PROMPT + [1, 2, 3, 1, 2], "b": PROMPT + [7]})
    assert batch.step(session, num_reqs=64).reason == "above_threshold"  # the reply announces 32
    batch.set_row(0, PROMPT + [1, 2, 3, 1, 2, 3])
    second = batch.step(session, num_reqs=64)
    assert (second.drafts, second.speculate, second.source) == ([[], []], False, "sidecar")
    assert receiving == [1]  # step 2 did not wait for its reply
    batch.set_row(0, PROMPT + [1, 2, 3, 1, 2, 3, 1])
    third = batch.step(session)  # below the bound: step 2's reply first, then this one's
    assert receiving == [1, 3, 3]
    assert third.drafts[0] == [2, 3, 1] and session.confirmed() == {"a": 11, "b": 5}


def test_a_resync_in_a_reply_that_was_not_awaited_is_honoured(sidecar):
    session = session_for(sidecar)
    batch = Batch({"a": PROMPT + [1, 2, 3, 1, 2], "b": PROMPT + [7]})
    batch.step(session, num_reqs=64)
    batch.set_row(0, PROMPT + [1, 2, 3, 1, 2, 3])
    batch.step(session, num_reqs=64)  # not awaited
    # Another call on the connection reads that reply ahead and keeps it; the sidecar forgets a.
    assert session.client.release(session.engine_id.encode(), [b"a"]) == 1
    batch.set_row(0, PROMPT + [1, 2, 3, 1, 2, 3, 1])
    assert batch.step(session).drafts[0] == []  # a: RESYNC
    assert session.stats.resyncs == 1
    batch.set_row(0, PROMPT + [1, 2, 3, 1, 2, 3, 1, 2])
    assert batch.step(session).drafts[0] == [3, 1, 2]  # its full context went with this step


def test_no_sidecar_means_no_drafts_at_once_and_the_local_switch(socket_dir, monkeypatch):
    monkeypatch.setenv("VLLM_SPECULATIVE_BATCH_SIZE_THRE", "4")
    session = DraftSession(3, FastLaneClient(os.path.join(socket_dir, "absent.sock"), deadline_s=0.005))
    started = time.perf_counter()
    result = Batch({"a": PROMPT + [1, 2, 1]}).step(session, num_reqs=8)
    assert time.perf_counter() - started < 0.05
    assert (result.drafts, result.speculate, result.reason, result.source) == ([[]], False, "above_threshold", "local")
    # While backing off, calls do not even try to connect.
    connects = session.client.connects
    Batch({"a": PROMPT + [1, 2, 1, 2]}).step(session)
    assert session.client.connects == connects and session.stats.failed_steps == 2


def test_a_sidecar_that_does_not_answer_costs_one_deadline_then_fails_open(socket_dir):
    path = os.path.join(socket_dir, "silent.sock")
    server = unix_listener(path)
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    session = DraftSession(3, FastLaneClient(path, deadline_s=0.02))
    started = time.perf_counter()
    result = Batch({"a": PROMPT + [1, 2, 1]}).step(session)
    waited = time.perf_counter() - started
    assert result.source == "local" and result.drafts == [[]]
    assert 0.015 <= waited < 0.1
    server.close()


def test_the_connection_is_not_shared_across_fork(sidecar):
    client = FastLaneClient(sidecar.socket, deadline_s=0.5)
    assert client.ping()
    parent_socket = client._sock
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must connect afresh, and its close must not touch the parent's socket
        ok = client.ping() and client._sock is not parent_socket
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert client._sock is parent_socket and client.ping()


def test_wire_frames_round_trip_against_the_sidecar(sidecar):
    client = FastLaneClient(sidecar.socket, deadline_s=0.5)
    call_id = client.next_call_id()
    frame = wire.encode_step(call_id, b"raw", 1, 1, False, 99, [b"x"], np.array([0]), np.array([1]), np.array([1]), np.array([5]))
    try:
        wire.decode_reply(client.call(frame, call_id))
        raise AssertionError("k = 99 must be refused")
    except wire.WireError as error:
        assert error.code == "K_OUT_OF_RANGE" and error.field == "k"


def test_each_awaited_step_is_announced_by_a_ping_whose_pong_is_skipped(sidecar):
    woken = session_for(sidecar)
    plain = DraftSession(3, FastLaneClient(sidecar.socket, deadline_s=0.5, wake=False), engine_id=f"plain-{time.monotonic_ns()}")
    pings = []
    send = woken.client.wake
    woken.client.wake = lambda: (pings.append(1), send())
    contexts = {"a": PROMPT + [1, 2, 3, 1, 2], "b": PROMPT + [7, 8, 7]}
    woken_batch, plain_batch = Batch(contexts), Batch(contexts)
    for step in range(6):
        if step:
            for batch in (woken_batch, plain_batch):
                batch.set_row(0, PROMPT + [1, 2, 3] * (2 + step))
                batch.set_row(1, PROMPT + [7, 8] * (2 + step))
        first, second = woken_batch.step(woken), plain_batch.step(plain)
        assert first.source == second.source == "sidecar"
        assert first.drafts == second.drafts  # the same drafts, with or without the announcement
    assert len(pings) == 6 and woken.client.connects == 1 and not woken.client._wakes


def test_frames_read_together_are_split_and_none_is_lost(socket_dir):
    """A wake's PONG and the next reply may come in one read: the bytes past the first frame stay
    for the next one."""
    path = os.path.join(socket_dir, "two-frames.sock")
    server = unix_listener(path)

    def answer_pings_two_at_a_time():
        conn, _ = server.accept()
        frames = []
        while True:
            data = conn.recv(4096)
            if not data:
                return
            for at in range(0, len(data), wire.HEADER_BYTES):
                frames.append(wire.parse_header(data[at : at + wire.HEADER_BYTES])[1])
            if len(frames) >= 2:
                conn.sendall(b"".join(wire.HEADER.pack(8, wire.MAGIC, wire.VERSION, wire.KIND_PONG, call_id) for call_id in frames))
                frames = []

    threading.Thread(target=answer_pings_two_at_a_time, daemon=True).start()
    client = FastLaneClient(path, deadline_s=1.0)
    client._connection()
    for _ in range(3):
        client.wake()
        assert client.ping(deadline_s=1.0)  # its PONG came in the same read as the wake's
        assert not client._wakes and client._buffered == 0
    server.close()


class ShortReplyClient:
    """A client whose sidecar answers with the wrong shape: one draft whatever the batch size."""

    def step(self, request, deadline=None):
        return wire.StepReply(request.step_id, True, "below_threshold", np.zeros(1, dtype=np.uint8), np.array([3], dtype=np.uint8), np.array([7, 7, 7]))


class WrongStepClient:
    def step(self, request, deadline=None):
        n = len(request.req_ids)
        return wire.StepReply(request.step_id + 1, True, "below_threshold", np.zeros(n, dtype=np.uint8), np.zeros(n, dtype=np.uint8), np.zeros(0, dtype=np.int64))


def test_a_reply_that_does_not_answer_the_rows_sent_fails_open_instead_of_misplacing_drafts():
    batch = Batch({f"r{i}": PROMPT + [1, 2, 3] for i in range(4)})
    for client in (ShortReplyClient(), WrongStepClient()):
        session = DraftSession(3, client, engine_id="shape-test")
        result = batch.step(session)
        assert result.drafts == [[], [], [], []] and result.source == "local"
        assert session.stats.failed_steps == 1
        assert session.confirmed() == {}  # nothing is taken as held by the sidecar


def test_a_poisoned_step_id_costs_one_step_then_drafting_resumes_under_a_new_epoch(sidecar):
    batch = Batch({"a": PROMPT + [1, 2, 3, 1, 2]})
    session = session_for(sidecar)
    assert batch.step(session).drafts == [[3, 1, 2]]
    # Another client with the same engine id sends the largest step id there is.
    poison = DraftSession(3, FastLaneClient(sidecar.socket, deadline_s=0.5), engine_id=session.engine_id)
    poison.step_id = 2**64 - 2
    Batch({"x": PROMPT + [9]}).step(poison)
    failed = batch.step(session)  # STALE_STEP: this step fails open
    assert failed.drafts == [[]] and failed.source == "local"
    batch.set_row(0, PROMPT + [1, 2, 3, 1, 2, 3])
    resumed = batch.step(session)
    assert resumed.source == "sidecar" and resumed.drafts == [[1, 2, 3]]
    assert session.engine_id.endswith("~1")


def test_each_step_reports_the_runners_timing_of_the_step_before_and_a_calibrated_sidecar_learns_from_it(socket_dir):
    import json
    import urllib.request

    from conftest import SidecarProcess

    sidecar = SidecarProcess(os.path.join(socket_dir, "calibrated.sock"), env={"SAM_SIDECAR_GATE_MODE": "calibrated"}).start()
    try:
        session = session_for(sidecar)
        sent = []
        original = session.client.step

        def recording_step(request, *args, **kwargs):
            sent.append(request.timing)
            return original(request, *args, **kwargs)

        session.client.step = recording_step
        batch = Batch({"a": PROMPT + [1, 2, 3, 1, 2], "b": PROMPT + [7, 8, 7]})
        first = batch.step(session)
        time.sleep(0.02)  # the runner's forward pass
        batch.set_row(0, PROMPT + [1, 2, 3, 1, 2, 3])
        batch.step(session)
        for i in range(8):
            batch.set_row(1, PROMPT + [7, 8, 7] + [8, 7] * (i + 1))
            batch.step(session)
        # The first call has no step before it; the second reports the ~20 ms between the two calls,
        # its batch, and the draft tokens the first call returned (which that step verified).
        assert sent[0] is None
        timing = sent[1]
        assert 20_000 <= timing.step_us < 2_000_000
        assert (timing.step_reqs, timing.verified_slots, timing.had_prefill) == (2, sum(len(d) for d in first.drafts), False)
        with urllib.request.urlopen(f"http://127.0.0.1:{sidecar.http_port}/v1/gates", timeout=5) as response:
            gates = json.loads(response.read())["gates"]
        [gate] = [g for g in gates if g["engine"] == session.engine_id]
        assert gate["mode"] == "calibrated"
        assert sum(p["plainSamples"] + p["draftSamples"] for p in gate["curve"]) == 9
    finally:
        sidecar.stop()


def test_the_shim_sends_nothing_to_a_socket_another_user_listens_on(socket_dir):
    """Anyone who creates the socket path first would receive every step's tokens: the client checks
    the listener's uid (SO_PEERCRED) and fails open instead."""
    import pytest

    from sam_sidecar.client import SidecarUnavailable

    if os.getuid() != 0 or not hasattr(socket, "SO_PEERCRED"):
        pytest.skip("staging a listener of another user needs root (and Linux peer credentials)")
    path = os.path.join(socket_dir, "squatted.sock")
    os.chmod(socket_dir, 0o777)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # a squatter running as nobody
        try:
            os.setgid(65534)
            os.setuid(65534)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(path)
            # Room for all three connections below: it accepts only the first, maybe after the others came.
            listener.listen(8)
            os.write(write_end, b"x")
            listener.accept()
            time.sleep(2)
        finally:
            os._exit(0)
    try:
        os.read(read_end, 1)
        client = FastLaneClient(path, deadline_s=0.2)
        assert client.ping() is False  # the step path fails open
        with pytest.raises(SidecarUnavailable, match="runs as uid 65534"):
            FastLaneClient(path, deadline_s=0.2)._connection()
        # The same listener passes once its uid is declared the sidecar's.
        os.environ["SAM_SIDECAR_PEER_UID"] = "65534"
        try:
            assert FastLaneClient(path, deadline_s=0.2)._connection() is not None
        finally:
            del os.environ["SAM_SIDECAR_PEER_UID"]
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)


def test_a_step_sends_short_deltas_whole_and_long_contexts_in_chunks_within_the_budget():
    starts = np.array([0, 10, 0, 5])
    ends = np.array([500, 12, 300, 6])
    sent_end, remaining = chunked(starts, ends, 200)
    # The two short deltas (3 tokens) first; the rest of the budget to the long rows in row order.
    assert sent_end.tolist() == [197, 12, 0, 6]
    assert remaining.tolist() == [303, 0, 300, 0]
    assert chunked(starts, ends, 10_000) == (ends, None)


def test_every_new_request_s_prompt_goes_before_any_request_s_long_text():
    # Three new 1000-token contexts with 100-token prompts, a budget of 500: all three prompts
    # (so the sidecar meets every request and its group at once), then text in row order.
    starts = np.array([0, 0, 0])
    ends = np.array([1000, 1000, 1000])
    sent_end, remaining = chunked(starts, ends, 500, prompt_ends=np.array([100, 100, 100]))
    assert sent_end.tolist() == [300, 100, 100]
    assert remaining.tolist() == [700, 900, 900]
    # Budget short of the prompts: prompts in row order; a request with its prompt confirmed gets none first.
    sent_end, _ = chunked(np.array([0, 0, 150]), ends, 150, prompt_ends=np.array([100, 100, 100]))
    assert sent_end.tolist() == [100, 50, 150]


def test_a_long_context_goes_in_chunks_confirmed_as_they_land_and_drafts_once_all_of_it_is_there(sidecar):
    session = session_for(sidecar, max_step_tokens=100)
    sent = []
    step = session.client.step
    session.client.step = lambda request, **kw: sent.append(request) or step(request, **kw)
    long_context = PROMPT + [1, 2, 3, 4, 5] * 70  # 354 tokens
    batch = Batch({"long": long_context, "short": PROMPT + [7, 8, 7]})
    drafts = []
    for _ in range(5):
        drafts.append(batch.step(session).drafts)
        assert len(sent[-1].tokens) <= 100
    # The short request drafts at once; the long one once its last chunk has landed (step 4).
    assert all(d[1] for d in drafts)
    assert [d[0] for d in drafts[:3]] == [[], [], []]
    assert drafts[3][0] == [1, 2, 3] and drafts[4][0] == [1, 2, 3]
    assert [r.starts.tolist()[0] for r in sent[:4]] == [0, 93, 193, 293]
    assert sent[0].prompt_lens.tolist()[0] == len(PROMPT) and sent[0].remaining.tolist() == [354 - 93, 0]
    assert session.confirmed()["long"] == 354


class DelayingProxy:
    """Forwards a client's frames to the sidecar and its replies back, holding the replies of the
    calls numbered in `late` (by step frame order) for `delay_s`."""

    def __init__(self, target, path, late, delay_s):
        self.server = unix_listener(path)
        self.target, self.late, self.delay_s = target, set(late), delay_s
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        client, _ = self.server.accept()
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(self.target)
        threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
        replies = 0
        buffered = b""
        while True:
            data = upstream.recv(1 << 16)
            if not data:
                return
            buffered += data
            while len(buffered) >= 4 and len(buffered) >= 4 + int.from_bytes(buffered[:4], "little"):
                size = 4 + int.from_bytes(buffered[:4], "little")
                frame, buffered = buffered[:size], buffered[size:]
                if wire.parse_header(frame)[0] == wire.KIND_STEP_REPLY:
                    replies += 1
                    if replies in self.late:
                        time.sleep(self.delay_s)
                client.sendall(frame)

    @staticmethod
    def _pump(source, sink):
        while True:
            data = source.recv(1 << 16)
            if not data:
                return
            sink.sendall(data)


def test_a_reply_that_misses_the_deadline_is_applied_at_the_next_step_so_nothing_is_sent_twice(sidecar, socket_dir):
    path = os.path.join(socket_dir, "slow.sock")
    DelayingProxy(sidecar.socket, path, late={1}, delay_s=0.1)
    session = DraftSession(3, FastLaneClient(path, deadline_s=0.03), engine_id=f"late-{time.monotonic_ns()}", max_step_tokens=100)
    sent = []
    step = session.client.step
    session.client.step = lambda request, **kw: sent.append(request) or step(request, **kw)
    context = PROMPT + [1, 2, 3, 4, 5] * 40  # 204 tokens: two chunks and a rest
    batch = Batch({"long": context})
    started = time.perf_counter()
    first = batch.step(session)
    assert first.source == "local" and time.perf_counter() - started < 0.09  # bounded by the deadline, not the delay
    time.sleep(0.15)  # the runner's next forward pass; the late reply lands meanwhile
    second = batch.step(session)
    assert second.source == "sidecar"
    # The first chunk was confirmed by its late reply: the second step goes on from it, on the same connection.
    assert [r.starts.tolist()[0] for r in sent] == [0, 100]
    assert session.client.connects == 1
    batch.step(session)
    assert session.confirmed()["long"] == len(context)


def test_a_large_frame_the_sidecar_reads_slowly_is_abandoned_at_the_deadline(socket_dir):
    # A reader that keeps draining, a little at a time: no single write ever waits a whole kernel
    # timeout, so only the step's own deadline can end the send.
    path = os.path.join(socket_dir, "slow.sock")
    server = unix_listener(path)

    def drain_slowly():
        conn, _ = server.accept()
        try:
            while conn.recv(16 << 10):
                time.sleep(0.002)
        except OSError:
            pass

    threading.Thread(target=drain_slowly, daemon=True).start()
    session = DraftSession(3, FastLaneClient(path, deadline_s=0.02), max_step_tokens=4_000_000)
    rows = np.zeros((1, 2_000_000), dtype=np.int32)  # 8 MB: about a second at this reader's pace
    started = time.perf_counter()
    result = session.step(["big"], rows, np.array([2_000_000]), np.array([4]), 1)
    assert result.source == "local"
    assert time.perf_counter() - started < 0.3
    server.close()


def test_a_default_chunk_goes_into_the_kernel_buffer_while_the_sidecar_is_busy(socket_dir):
    # A sidecar that reads nothing for now (busy indexing, or collecting garbage): a step of the
    # default chunk size is still sent whole, where a frame past the default buffer (208 KiB)
    # would wait for it and be cut off by the deadline, costing the connection.
    with open("/proc/sys/net/core/wmem_max") as f:
        if int(f.read()) < client_module.SEND_BUFFER_BYTES:
            pytest.skip("net.core.wmem_max caps the send buffer below what the shim asks for")
    path = os.path.join(socket_dir, "busy.sock")
    server = unix_listener(path)
    accepted = []  # the connection stays open, unread
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    client = FastLaneClient(path, deadline_s=0.02)
    frame = bytes(4 * DEFAULT_MAX_STEP_TOKENS + 4096)
    client.send(frame, client.next_call_id(), time.monotonic() + 0.02)  # no SidecarUnavailable
    assert client.connects == 1
    server.close()


def test_a_hung_sidecar_is_reconnected_to_ever_less_often(socket_dir):
    # A stopped sidecar's kernel still accepts connections; nothing ever answers. Each connection
    # costs full deadlines (three late replies, then the drop), so the backoff between them must
    # keep growing until a reply comes, not start over at every connect.
    path = os.path.join(socket_dir, "hung.sock")
    server = unix_listener(path, 64)
    held = []

    def accept_forever():
        try:
            while True:
                held.append(server.accept())
        except OSError:
            pass

    threading.Thread(target=accept_forever, daemon=True).start()
    session = DraftSession(3, FastLaneClient(path, deadline_s=0.005, backoff_initial_s=0.01, backoff_max_s=0.32))
    rows = np.arange(1, 9, dtype=np.int32).reshape(1, 8)
    until = time.monotonic() + 1.5
    while time.monotonic() < until:
        assert session.step(["r"], rows, np.array([8]), np.array([4]), 1).source == "local"
        time.sleep(0.001)
    # Backoffs of 10, 20, 40, ... 320 ms: about 9 connections in 1.5 s (about 50 if each reset it).
    assert session.client.connects <= 15
    server.close()


def test_a_large_frame_the_sidecar_does_not_read_is_abandoned_at_the_deadline(socket_dir):
    path = os.path.join(socket_dir, "deaf.sock")
    server = unix_listener(path)
    threading.Thread(target=lambda: server.accept() and time.sleep(5), daemon=True).start()
    session = DraftSession(3, FastLaneClient(path, deadline_s=0.02), max_step_tokens=4_000_000)
    rows = np.zeros((1, 2_000_000), dtype=np.int32)  # an 8 MB frame: far more than a socket buffer
    started = time.perf_counter()
    result = session.step(["big"], rows, np.array([2_000_000]), np.array([4]), 1)
    assert result.source == "local"
    assert time.perf_counter() - started < 0.2  # one deadline (and the frame's build), not one per write
    server.close()
