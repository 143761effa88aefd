"""Fast-lane frames (proto/fast-lane.md), the Python side. Stdlib plus numpy, no per-item packing:
every column is one array copied as bytes.

Frame: u32 length of what follows, then u16 magic 0x5341, u8 version, u8 kind, u32 call id.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

MAGIC = 0x5341
VERSION = 1

KIND_STEP = 1
KIND_STEP_REPLY = 2
KIND_RELEASE = 3
KIND_RELEASE_REPLY = 4
KIND_ERROR_REPLY = 5
KIND_PING = 6
KIND_PONG = 7

NO_PROMPT = 0xFFFFFFFF

STATUS_OK = 0
STATUS_RESYNC = 1
STATUS_ERROR = 2

GATE_REASONS = (
    "below_threshold",
    "above_threshold",
    "prefill",
    "gate_disabled",
    "adaptive_gain",
    "adaptive_no_gain",
    "k_zero",
    "calibrated_gain",
    "calibrated_no_gain",
    "explore_drafts",
    "explore_plain",
)

HEADER = struct.Struct("<IHBBI")  # length, magic, version, kind, call id
STEP_FIXED = struct.Struct("<QIHBBIIIHH")  # step id, num_reqs, k, flags, 0, n, n_finished, n_tokens, engine bytes, 0
REPLY_FIXED = struct.Struct("<QBBHIIII")  # step id, speculate, reason, 0, n, n_draft_tokens, error bytes, off_above
STEP_TIMING = struct.Struct("<IIII")  # step_us, step_reqs, verified_slots, flags (bit 0: had prefill)
FLAG_PREFILL = 1
FLAG_TIMING = 2  # a STEP_TIMING block follows the fixed part
FLAG_REMAINING = 4  # a u32 remaining[n] column follows prompt_lens (a long context sent in chunks)
HEADER_BYTES = HEADER.size  # 12, length prefix included


class WireError(Exception):
    """An error reply from the sidecar (a code of its error catalogue) or a malformed reply."""

    def __init__(self, code: str, message: str, field_name: Optional[str] = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.field = field_name


@dataclass
class StepReply:
    step_id: int
    speculate: bool
    reason: str
    statuses: np.ndarray  # uint8 per item
    draft_lengths: np.ndarray  # uint8 per item
    drafts: np.ndarray  # int64 token ids, concatenated
    errors: List[dict] = field(default_factory=list)
    off_above: int = 0  # decode steps with more requests never speculate on this sidecar (0: no bound)

    def draft_lists(self) -> List[List[int]]:
        flat = self.drafts.tolist()
        out: List[List[int]] = []
        at = 0
        for length in self.draft_lengths.tolist():
            out.append(flat[at : at + length])
            at += length
        return out


@dataclass
class StepRequest:
    """One step of one engine, columnar (what every transport encodes)."""

    engine_id: bytes
    step_id: int
    num_reqs: int
    prefill: bool
    k: int
    req_ids: Sequence[bytes]
    starts: np.ndarray
    counts: np.ndarray
    prompt_lens: np.ndarray  # NO_PROMPT for a delta
    tokens: np.ndarray
    finished: Sequence[bytes] = ()
    # encode_ids(req_ids), when the caller keeps it across steps
    req_id_lengths: Optional[np.ndarray] = None
    req_id_text: Optional[bytes] = None
    # The runner's timing of the step it just ran (the calibrated gate learns from it)
    timing: Optional["StepTiming"] = None
    # Tokens of each request still to be sent in later steps (a long context in chunks); None: all 0
    remaining: Optional[np.ndarray] = None

    def encode(self, call_id: int, into: Optional["FrameBuffer"] = None):
        return encode_step(
            call_id,
            self.engine_id,
            self.step_id,
            self.num_reqs,
            self.prefill,
            self.k,
            self.req_ids,
            self.starts,
            self.counts,
            self.prompt_lens,
            self.tokens,
            self.finished,
            self.req_id_lengths,
            self.req_id_text,
            self.timing,
            self.remaining,
            into,
        )


@dataclass(frozen=True)
class StepTiming:
    """A decode step as the runner timed it: the one that ran just before the call carrying it."""

    step_us: int  # wall time, microseconds (0: unknown)
    step_reqs: int  # requests it ran
    verified_slots: int  # draft tokens it verified (0: a plain decode step)
    had_prefill: bool  # it also ran prefill tokens (left out of the cost model)


def _u32(value: int) -> int:
    return min(max(int(value), 0), 0xFFFFFFFF)


def encode_ids(ids: Sequence[bytes]) -> Tuple[np.ndarray, bytes]:
    """(u16 lengths, concatenation) of encoded ids, the two columns a frame carries them in."""
    return np.fromiter(map(len, ids), dtype="<u2", count=len(ids)), b"".join(ids)


def encode_step(
    call_id: int,
    engine_id: bytes,
    step_id: int,
    num_reqs: int,
    prefill: bool,
    k: int,
    req_ids: Sequence[bytes],
    starts: np.ndarray,
    counts: np.ndarray,
    prompt_lens: np.ndarray,
    tokens: np.ndarray,
    finished: Sequence[bytes] = (),
    req_id_lengths: Optional[np.ndarray] = None,
    req_id_text: Optional[bytes] = None,
    timing: Optional[StepTiming] = None,
    remaining: Optional[np.ndarray] = None,
    into: Optional["FrameBuffer"] = None,
):
    """One STEP frame. starts/counts/prompt_lens (and remaining, if any is above 0): one entry per
    item; tokens: all items' tokens. req_id_lengths/req_id_text: encode_ids(req_ids), if the caller
    has it already. Written into `into` when given (a memoryview of it is returned), else bytes."""
    n = len(req_ids)
    if req_id_lengths is None or req_id_text is None:
        req_id_lengths, req_id_text = encode_ids(req_ids)
    finished_lengths, finished_text = encode_ids(finished)
    text_bytes = len(engine_id) + len(req_id_text) + len(finished_text)
    # Only when needed: a sidecar that predates the column refuses the flag bit.
    with_remaining = remaining is not None and bool(np.any(remaining))
    flags = (FLAG_PREFILL if prefill else 0) | (0 if timing is None else FLAG_TIMING) | (FLAG_REMAINING if with_remaining else 0)
    columns = (starts, counts, prompt_lens, remaining) if with_remaining else (starts, counts, prompt_lens)
    at = HEADER_BYTES + STEP_FIXED.size
    before_tokens = at + (0 if timing is None else STEP_TIMING.size) + 4 * n * len(columns) + 2 * n + 2 * len(finished) + text_bytes
    tokens_at = before_tokens + (-before_tokens) % 4
    n_tokens = len(tokens)
    size = tokens_at + 4 * n_tokens
    out = into.take(size) if into is not None else memoryview(bytearray(size))
    HEADER.pack_into(out, 0, size - 4, MAGIC, VERSION, KIND_STEP, call_id)
    STEP_FIXED.pack_into(out, HEADER_BYTES, step_id, num_reqs, k, flags, 0, n, len(finished), n_tokens, len(engine_id), 0)
    if timing is not None:
        STEP_TIMING.pack_into(out, at, _u32(timing.step_us), _u32(timing.step_reqs), _u32(timing.verified_slots), 1 if timing.had_prefill else 0)
        at += STEP_TIMING.size
    for column in columns:
        np.frombuffer(out, dtype="<u4", count=n, offset=at)[:] = column
        at += 4 * n
    for part in (req_id_lengths.tobytes(), finished_lengths.tobytes(), engine_id, req_id_text, finished_text):
        out[at : at + len(part)] = part
        at += len(part)
    out[at:tokens_at] = bytes(tokens_at - at)  # padding (a reused buffer holds old bytes)
    if n_tokens:
        np.frombuffer(out, dtype="<u4", count=n_tokens, offset=tokens_at)[:] = tokens
    return out if into is not None else out.obj


class FrameBuffer:
    """Reused for every step frame of a connection: a large frame (a long context's chunk) then
    costs one copy of its tokens, not fresh pages and several copies per step."""

    def __init__(self) -> None:
        self._data = bytearray(0)

    def take(self, size: int) -> memoryview:
        if len(self._data) < size:
            self._data = bytearray(max(size, 2 * len(self._data)))  # replaced, never resized: views may be alive
        return memoryview(self._data)[:size]


def encode_release(call_id: int, engine_id: bytes, req_ids: Sequence[bytes]) -> bytes:
    lengths, text = encode_ids(req_ids)
    body = struct.pack("<IH", len(req_ids), len(engine_id)) + lengths.tobytes() + engine_id + text
    return HEADER.pack(len(body) + 8, MAGIC, VERSION, KIND_RELEASE, call_id) + body


def encode_ping(call_id: int) -> bytes:
    return HEADER.pack(8, MAGIC, VERSION, KIND_PING, call_id)


def parse_header(frame: bytes) -> tuple:
    """(kind, call id) of a complete frame (length prefix included)."""
    if len(frame) < HEADER_BYTES:
        raise WireError("MALFORMED_FRAME", f"reply of {len(frame)} bytes is shorter than a header")
    _length, magic, version, kind, call_id = HEADER.unpack_from(frame, 0)
    if magic != MAGIC or version != VERSION:
        raise WireError("UNSUPPORTED_VERSION", f"reply magic 0x{magic:x} version {version}")
    return kind, call_id


def decode_reply(frame: bytes) -> StepReply:
    kind, _ = parse_header(frame)
    if kind == KIND_ERROR_REPLY:
        raise_error(frame)
    if kind != KIND_STEP_REPLY:
        raise WireError("MALFORMED_FRAME", f"expected a step reply, got kind {kind}")
    step_id, speculate, reason, _, n, total, error_bytes, off_above = REPLY_FIXED.unpack_from(frame, HEADER_BYTES)
    at = HEADER_BYTES + REPLY_FIXED.size
    statuses = np.frombuffer(frame, dtype=np.uint8, count=n, offset=at)
    lengths = np.frombuffer(frame, dtype=np.uint8, count=n, offset=at + n)
    at = (at + 2 * n + 3) & ~3
    drafts = np.frombuffer(frame, dtype="<u4", count=total, offset=at).astype(np.int64)
    at += 4 * total
    errors = json.loads(frame[at : at + error_bytes]) if error_bytes else []
    reason_name = GATE_REASONS[reason] if reason < len(GATE_REASONS) else str(reason)
    return StepReply(step_id, speculate == 1, reason_name, statuses, lengths, drafts, errors, off_above)


def check_reply(reply: StepReply, step_id: int, items: int, k: int) -> StepReply:
    """A reply answers the step that was sent: its step id, one status and one draft of at most k
    tokens per item sent. Anything else is refused (the step fails open) rather than handing the
    runner drafts for the wrong rows."""
    if reply.step_id != step_id:
        raise WireError("MALFORMED_FRAME", f"reply for step {reply.step_id}, sent step {step_id}")
    if reply.statuses.size != items or reply.draft_lengths.size != items:
        raise WireError("MALFORMED_FRAME", f"reply has {reply.draft_lengths.size} drafts and {reply.statuses.size} statuses for {items} requests sent")
    if items and int(reply.draft_lengths.max()) > k:
        raise WireError("MALFORMED_FRAME", f"reply has a draft of {int(reply.draft_lengths.max())} tokens, more than k = {k}")
    return reply


def raise_error(frame: bytes) -> None:
    payload = json.loads(frame[HEADER_BYTES:])
    raise WireError(payload.get("code", "INTERNAL"), payload.get("message", ""), payload.get("field"))
