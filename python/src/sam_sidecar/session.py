"""One engine's conversation with the sidecar: which tokens of each request it has confirmed, the
delta of every request in the batch, one call per step, RESYNC, and failing open.

Identity is the request id, never the batch row: rows move between steps (condense), and a
preempted request leaves the batch and comes back with the same id.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Set

import numpy as np

from . import metrics, wire
from .client import FastLaneClient, RateLimitedLog, SidecarUnavailable
from .gate import local_decision
from .log import logger


MAX_PENDING_RELEASES = 4096  # finished ids kept for the next successful step
# Tokens one step sends beyond short deltas: a long context (a new request, a RESYNC, every request
# after a sidecar restart) goes in chunks of this over several steps, so building, sending and
# serving a step stay within the deadline at any context length (512 KiB of tokens, built in about
# 0.1 ms). Fewer make a resync send-bound: 128 x 200k tokens take 200 steps at
# this size, and at 65,536 a 20 ms runner step alone made that 9 s. SAM_SIDECAR_MAX_STEP_TOKENS.
DEFAULT_MAX_STEP_TOKENS = 131_072
ALWAYS_SENT = 64  # a delta this short (a decode step's tokens) always goes whole


@dataclass
class StepResult:
    drafts: List[List[int]]
    speculate: bool
    reason: str
    source: str  # "sidecar" or "local" (sidecar unreachable: the local batch-size rule decided)


@dataclass
class SessionStats:
    steps: int = 0
    failed_steps: int = 0
    resyncs: int = 0
    item_errors: int = 0
    drafted_rows: int = 0
    draft_tokens: int = 0
    step_us: List[float] = field(default_factory=list)  # whole step: build, round trip, unpack
    call_us: List[float] = field(default_factory=list)  # its awaited call: encode, round trip, decode


def default_engine_id() -> str:
    """Unique per engine lifetime. Tensor-parallel ranks must agree: share it over the TP group
    (see tensor_parallel.py) or set SAM_SIDECAR_ENGINE_ID identically on every rank."""
    return os.environ.get("SAM_SIDECAR_ENGINE_ID") or f"{os.uname().nodename}-{uuid.uuid4().hex[:12]}"


@dataclass
class _Batch:
    """A batch as sent: request ids, their encodings and frame columns, and each row's end (what
    the sidecar holds once the step is confirmed). The last confirmed batch that covered every row
    is kept as the steady batch: decode steps usually repeat it row for row, and then the step is
    built from these arrays with no per-request Python work (its ids are not in _confirmed)."""

    ids: List[str]
    encoded: List[bytes]
    id_lengths: np.ndarray  # u16 per request
    id_text: bytes  # the encoded ids, concatenated
    ends: np.ndarray


@dataclass
class _SentStep:
    """What a step sent, for applying its reply: now, or at the next step when it was not awaited."""

    batch: _Batch
    everyone: bool
    built_on: Optional[_Batch]  # the steady batch it was built from, if any
    call_id: int = 0
    step_id: int = 0
    late: bool = False  # its reply missed the deadline (the step failed open); applied when it comes


# A gap between two step calls longer than this is a pause, not a decode step.
MAX_STEP_SECONDS = 10.0


class DraftSession:
    def __init__(
        self,
        k: int,
        client: Optional[FastLaneClient] = None,
        engine_id: Optional[str] = None,
        local_threshold: Optional[int] = None,
        keep_latencies: bool = False,
        max_step_tokens: Optional[int] = None,
    ):
        self.k = k
        metrics.register()
        self.max_step_tokens = max(ALWAYS_SENT, int(os.environ.get("SAM_SIDECAR_MAX_STEP_TOKENS", DEFAULT_MAX_STEP_TOKENS) if max_step_tokens is None else max_step_tokens))
        self.client = client or FastLaneClient()
        self.set_engine_id(engine_id or default_engine_id())
        self.local_threshold = local_threshold
        self.step_id = 0
        self.stats = SessionStats()
        self.keep_latencies = keep_latencies
        self._confirmed: Dict[str, int] = {}  # tokens the sidecar holds, per request id
        self._steady: Optional[_Batch] = None
        # The sidecar's announced bound (replies' off_above): bigger decode steps get no drafts, so
        # they are sent without waiting; their reply is applied at the start of the next step.
        self._off_above = 0
        self._unawaited: Optional[_SentStep] = None
        self._refused: Set[str] = set()  # requests the sidecar rejected as invalid: not resent
        self._finished_pending: List[str] = []
        self._log = RateLimitedLog()
        # The runner's clock: when the last step call started, and the draft tokens it returned
        # (verified by the step that runs before the next call).
        self._last_started: Optional[float] = None
        self._last_draft_tokens = 0

    def set_engine_id(self, engine_id: str) -> None:
        self._base_engine_id = engine_id
        self._epoch = 0
        self._use_engine_id(engine_id)

    def _use_engine_id(self, engine_id: str) -> None:
        self.engine_id = engine_id
        self._engine_bytes = engine_id.encode()

    def _start_new_epoch(self) -> None:
        """The sidecar has seen later steps of this engine id than ours (another client with the
        same id, or a poisoned step id): go on as a new engine, "<id>~<epoch>", with fresh step ids.
        The sidecar knows nothing of it, so every request is resent in full next step."""
        self._epoch += 1
        self._use_engine_id(f"{self._base_engine_id}~{self._epoch}")
        self.step_id = 0
        self._confirmed.clear()
        self._steady = None
        self._unawaited = None
        logger.warning("sam-sidecar: the sidecar has seen later steps of this engine id; continuing as engine %s (full contexts resent)", self.engine_id)

    def step(
        self,
        req_ids: Sequence[str],
        token_rows: np.ndarray,
        ends: np.ndarray,
        prompt_lens: np.ndarray,
        num_reqs: int,
        finished: Iterable[str] = (),
        active: Optional[Sequence[bool]] = None,
        prefill: bool = False,
    ) -> StepResult:
        """Drafts for rows 0..len(req_ids)-1 of `token_rows` (row i holds request req_ids[i], its
        first ends[i] tokens valid, the first prompt_lens[i] of them the prompt). Rows with
        active[i] false (no sampled token this step) are neither sent nor drafted. A decode step
        bigger than the sidecar's announced bound returns at once with no drafts: its tokens are
        sent, and its reply is applied at the start of the next step."""
        started = time.perf_counter()
        # One deadline for the whole step: a late reply read first, the build, the send, the wait.
        deadline = time.monotonic() + getattr(self.client, "deadline_s", 1.0)
        timing = self._timing_of_last_step(started, num_reqs, prefill)
        self.step_id += 1
        if not self._sent_unawaited(num_reqs, prefill) and hasattr(self.client, "wake"):
            self.client.wake()  # the sidecar wakes while this step is built
        self._apply_unawaited(deadline)
        n_rows = len(req_ids)
        steady = self._steady
        if steady is not None and not finished and req_ids == steady.ids:
            held = steady.ends  # the batch of the last step, row for row: no per-request lookups
        else:
            self._settle()
            steady = None
            held = self._held(req_ids, finished)
        ends_all = np.asarray(ends[:n_rows], dtype=np.int64)
        # Rows to send: those that sampled a token (usually all: no array then), minus refused ones.
        include = None if active is None or all(active) else np.asarray(active, dtype=bool)
        if self._refused:
            accepted = np.fromiter((r not in self._refused for r in req_ids), dtype=bool, count=n_rows)
            include = accepted if include is None else include & accepted
        everyone = include is None or bool(include.all())
        rows = np.arange(n_rows) if everyone else np.flatnonzero(include)
        start_arr = held[rows]
        end_arr = ends_all[rows]
        # Unknown, or the engine holds fewer tokens than we confirmed (recomputed): full context.
        full = (start_arr < 0) | (start_arr > end_arr)
        start_arr[full] = 0
        row_prompts = np.asarray(prompt_lens[:n_rows], dtype=np.int64)[rows]
        prompt_arr = np.where(full, row_prompts, wire.NO_PROMPT)
        # What the sidecar holds once this step is confirmed: everything, or the chunks sent so far.
        sent_end, remaining = chunked(start_arr, end_arr, self.max_step_tokens, row_prompts)
        tokens = gather_spans(token_rows, rows, start_arr, sent_end)
        included_ids = list(req_ids) if everyone else [req_ids[row] for row in rows.tolist()]
        if steady is not None and everyone:
            ids, id_lengths, id_text = steady.encoded, steady.id_lengths, steady.id_text
        else:
            ids = [r.encode() for r in included_ids]
            id_lengths, id_text = wire.encode_ids(ids)
        finished_now = [r.encode() for r in self._finished_pending]

        request = wire.StepRequest(
            self._engine_bytes, self.step_id, num_reqs, prefill, self.k, ids, start_arr, sent_end - start_arr, prompt_arr, tokens, finished_now, id_lengths, id_text, timing, remaining
        )
        sent = _SentStep(_Batch(included_ids, ids, id_lengths, id_text, sent_end), everyone, steady, step_id=self.step_id)
        unawaited = self._sent_unawaited(num_reqs, prefill)  # the bound as the last reply announced it
        try:
            if unawaited:
                sent.call_id = self.client.next_call_id()
                self.client.send(request.encode(sent.call_id, getattr(self.client, "frame_buffer", None)), sent.call_id, deadline)
                self._unawaited = sent
                self._record(started)
                return StepResult([[] for _ in range(n_rows)], False, "above_threshold", "sidecar")
            call_started = time.perf_counter()
            reply = wire.check_reply(self.client.step(request, deadline=deadline), self.step_id, len(ids), self.k)
            if self.keep_latencies:
                self.stats.call_us.append((time.perf_counter() - call_started) * 1e6)
        except (SidecarUnavailable, wire.WireError) as error:
            if getattr(error, "reply_pending", False):
                # Late, not lost: its reply is applied at the next step, as an unawaited step's is,
                # so what this step sent (a chunk of a long context) is confirmed, not sent again.
                sent.call_id = getattr(self.client, "last_call_id", 0)
                sent.late = True
                self._unawaited = sent
            return self._fail_open(error, n_rows, num_reqs, prefill, started)
        self._apply_reply(sent, reply)
        drafts: List[List[int]]
        if not reply.speculate:
            drafts = [[] for _ in range(n_rows)]
        else:
            per_item = reply.draft_lists()
            if everyone:
                drafts = per_item
            else:
                drafts = [[] for _ in range(n_rows)]
                for j, row in enumerate(rows.tolist()):
                    drafts[row] = per_item[j]
            lengths = reply.draft_lengths
            drafted_rows = int(np.count_nonzero(lengths))
            draft_tokens = int(lengths.sum())
            self._last_draft_tokens = draft_tokens
            self.stats.drafted_rows += drafted_rows
            self.stats.draft_tokens += draft_tokens
            if drafted_rows:
                metrics.inc("drafted_steps")
                metrics.inc("draft_tokens", draft_tokens)
        self._record(started)
        return StepResult(drafts, reply.speculate, reply.reason, "sidecar")

    def _timing_of_last_step(self, started: float, num_reqs: int, prefill: bool) -> Optional[wire.StepTiming]:
        """The step the runner ran since the last call: its wall time (start to start of the calls),
        batch, and the draft tokens it verified (those the last call returned). None for the first
        call and after a pause longer than any decode step (between rollout steps, a weight sync)."""
        last, self._last_started = self._last_started, started
        verified, self._last_draft_tokens = self._last_draft_tokens, 0
        if last is None or started - last > MAX_STEP_SECONDS:
            return None
        return wire.StepTiming(int((started - last) * 1e6), num_reqs, verified, prefill)

    def _sent_unawaited(self, num_reqs: int, prefill: bool) -> bool:
        return self._off_above > 0 and not prefill and num_reqs > self._off_above and hasattr(self.client, "send")

    def _fail_open(self, error: Exception, n_rows: int, num_reqs: int, prefill: bool, started: float) -> StepResult:
        # Nothing is confirmed: a steady batch keeps the lengths of its last confirmed step.
        self.stats.failed_steps += 1
        if isinstance(error, wire.WireError) and error.code == "STALE_STEP":
            self._start_new_epoch()
        metrics.inc("fail_opens")
        if getattr(error, "deadline_missed", False):
            metrics.inc("deadline_misses")
        self._log.warning("step", "sam-sidecar: no drafts this step (fail open): %s", error)
        speculate, reason = local_decision(num_reqs, prefill, self.local_threshold)
        self._record(started)
        return StepResult([[] for _ in range(n_rows)], speculate, reason, "local")

    def _apply_reply(self, sent: _SentStep, reply: "wire.StepReply") -> None:
        """What the sidecar now holds after a step: confirmed lengths, RESYNCs, refusals."""
        self._finished_pending.clear()
        self._off_above = reply.off_above
        batch = sent.batch
        if sent.everyone and not reply.statuses.any():
            if sent.built_on is not None and sent.built_on is self._steady:
                sent.built_on.ends = batch.ends
            else:
                self._settle()
                self._steady = batch
        else:
            self._settle()
            self._apply_statuses(batch.ids, reply.statuses.tolist(), batch.ends.tolist(), reply.errors)

    def _apply_unawaited(self, deadline: float) -> None:
        """Reads and applies the reply of the last step when it was sent without waiting (or came
        too late), by the current step's deadline."""
        sent, self._unawaited = self._unawaited, None
        if sent is None:
            return
        try:
            reply = wire.check_reply(wire.decode_reply(self.client.receive(sent.call_id, deadline=deadline)), sent.step_id, len(sent.batch.ids), self.k)
        except (SidecarUnavailable, wire.WireError) as error:
            # That step already got its answer (no drafts); what it sent is simply not confirmed.
            if not sent.late:
                self.stats.failed_steps += 1
            self._log.warning("step", "sam-sidecar: a step sent without waiting failed: %s", error)
            return
        self._apply_reply(sent, reply)

    def confirmed(self) -> Dict[str, int]:
        """Tokens the sidecar has confirmed holding, per request id (introspection and tests)."""
        self._settle()
        return dict(self._confirmed)

    def _settle(self) -> None:
        """Moves a steady batch's confirmed lengths into the per-id map (the batch changed)."""
        steady, self._steady = self._steady, None
        if steady is not None:
            self._confirmed.update(zip(steady.ids, steady.ends.tolist()))

    def _held(self, req_ids: Sequence[str], finished: Iterable[str]) -> np.ndarray:
        """Tokens the sidecar holds per row (-1: unknown), after forgetting finished requests."""
        confirmed = self._confirmed
        pending = self._finished_pending
        for req_id in finished:
            # Also when no step confirmed it: a call that timed out may still have been applied.
            # Releasing an id the sidecar does not hold is a no-op.
            confirmed.pop(req_id, None)
            pending.append(req_id)
            self._refused.discard(req_id)
        if len(pending) > MAX_PENDING_RELEASES:
            # The sidecar has been unreachable for a long time: it evicts idle requests by itself.
            del pending[: len(pending) - MAX_PENDING_RELEASES]
        return np.fromiter((confirmed.get(r, -1) for r in req_ids), dtype=np.int64, count=len(req_ids))

    def _apply_statuses(self, ids: List[str], statuses: List[int], ends: List[int], errors: List[dict]) -> None:
        """The uncommon path: some requests need RESYNC or were refused."""
        confirmed = self._confirmed
        for req_id, status, end in zip(ids, statuses, ends):
            if status == wire.STATUS_OK:
                confirmed[req_id] = end
            elif status == wire.STATUS_RESYNC:
                confirmed.pop(req_id, None)
                self.stats.resyncs += 1
                metrics.inc("resyncs")
            else:
                confirmed.pop(req_id, None)
                self._refused.add(req_id)
                self.stats.item_errors += 1
        refused = [e for e in errors if statuses[e["index"]] == wire.STATUS_ERROR]
        if refused:
            self._log.warning("item", "sam-sidecar refused requests: %s", refused[:3])

    def _record(self, started: float) -> None:
        self.stats.steps += 1
        metrics.inc("steps")
        if self.keep_latencies:
            self.stats.step_us.append((time.perf_counter() - started) * 1e6)


def chunked(starts: np.ndarray, ends: np.ndarray, budget: int, prompt_ends: Optional[np.ndarray] = None):
    """Where each row's tokens sent this step end, and what remains of each (None if nothing does):
    short deltas whole; then what is left of every long row's prompt (up to `prompt_ends`), so the
    sidecar meets every new request and its sibling group at once and can size the group for
    all of them; then the rest in row order, while `budget` tokens last."""
    need = ends - starts
    if int(need.sum()) <= budget:
        return ends, None
    short = need <= ALWAYS_SENT
    left = max(0, budget - int(need[short].sum()))
    long_need = np.where(short, 0, need)
    send = np.zeros_like(need)
    if prompt_ends is not None:
        send = _in_row_order(np.clip(prompt_ends - starts, 0, long_need), left)
        left -= int(send.sum())
    send = send + _in_row_order(long_need - send, left)
    send = np.where(short, need, send)
    sent_end = starts + send
    return sent_end, ends - sent_end


def _in_row_order(wanted: np.ndarray, budget: int) -> np.ndarray:
    """As much of each row's `wanted` tokens as `budget` covers, first rows first."""
    before = np.cumsum(wanted) - wanted
    return np.clip(budget - before, 0, wanted)


def gather_spans(token_rows: np.ndarray, rows: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """token_rows[rows[i], starts[i]:ends[i]] for every i, concatenated, without a Python loop."""
    counts = ends - starts
    total = int(counts.sum()) if len(counts) else 0
    if total == 0:
        return np.zeros(0, dtype=np.uint32)
    if total > 64 * len(counts):
        # Long spans (full contexts, chunks): one contiguous copy per row beats index arrays as long as the tokens.
        return np.concatenate([token_rows[row, start:end] for row, start, end in zip(rows.tolist(), starts.tolist(), ends.tolist())])
    first = np.cumsum(counts) - counts
    columns = np.arange(total, dtype=np.int64) + np.repeat(starts - first, counts)
    return token_rows[np.repeat(rows, counts), columns]
