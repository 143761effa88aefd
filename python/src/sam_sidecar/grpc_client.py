"""Optional gRPC client (grpcio) for the same Step, when the Unix socket is not an option (e.g. the
sidecar in another pod over TCP). It sends fast-lane frames through the FastLane call; the typed
messages (for sidecars without FastLane) are encoded by hand (proto/sam_sidecar.proto), so no
generated stubs or protobuf runtime are needed. Slower than the socket: see the README.
"""
from __future__ import annotations

import os
import struct
import time
from typing import List, Optional, Sequence

import numpy as np

from . import wire
from .client import SidecarUnavailable, reply_to

STEP_METHOD = "/sam_sidecar.v1.Sidecar/Step"
FAST_LANE_METHOD = "/sam_sidecar.v1.Sidecar/FastLane"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _field(number, 2) + _varint(len(payload)) + payload


def _packed(number: int, values: Sequence[int]) -> bytes:
    if len(values) == 0:
        return b""
    return _bytes_field(number, b"".join(_varint(int(v)) for v in values))


def encode_step_request(
    engine_id: str, step_id: int, num_reqs: int, prefill: bool, k: int, deltas, finished: Sequence[str] = (), timing: "Optional[wire.StepTiming]" = None
) -> bytes:
    """deltas: (req_id, start, tokens, prompt_len or None[, remaining]) per request, in batch order."""
    parts = [_bytes_field(1, engine_id.encode()), _field(2, 0) + _varint(step_id), _field(3, 0) + _varint(num_reqs)]
    if prefill:
        parts.append(_field(4, 0) + _varint(1))
    parts.append(_field(5, 0) + _varint(k))
    for req_id, start, tokens, prompt_len, *rest in deltas:
        body = _bytes_field(1, req_id.encode()) + _field(2, 0) + _varint(start) + _packed(3, tokens)
        if prompt_len is not None:
            body += _field(4, 0) + _varint(prompt_len)
        if rest and rest[0]:
            body += _field(5, 0) + _varint(rest[0])
        parts.append(_bytes_field(6, body))
    for req_id in finished:
        parts.append(_bytes_field(7, req_id.encode()))
    if timing is not None:
        body = b"".join(
            _field(number, 0) + _varint(min(max(int(value), 0), 0xFFFFFFFF))
            for number, value in ((1, timing.step_us), (2, timing.step_reqs), (3, timing.verified_slots), (4, 1 if timing.had_prefill else 0))
        )
        parts.append(_bytes_field(8, body))
    return b"".join(parts)


def encode_request(request: "wire.StepRequest") -> bytes:
    """The session's columnar request as a StepRequest message."""
    deltas = []
    at = 0
    tokens = request.tokens.tolist() if hasattr(request.tokens, "tolist") else list(request.tokens)
    counts = request.counts.tolist()
    starts = request.starts.tolist()
    prompts = request.prompt_lens.tolist()
    remaining = [0] * len(counts) if request.remaining is None else request.remaining.tolist()
    for i, req_id in enumerate(request.req_ids):
        deltas.append((req_id.decode(), starts[i], tokens[at : at + counts[i]], None if prompts[i] == wire.NO_PROMPT else prompts[i], remaining[i]))
        at += counts[i]
    return encode_step_request(
        request.engine_id.decode(), request.step_id, request.num_reqs, request.prefill, request.k, deltas, [f.decode() for f in request.finished], request.timing
    )


def _read_varint(data: bytes, at: int):
    result = 0
    shift = 0
    while True:
        byte = data[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, at
        shift += 7


def _fields(data: bytes):
    at = 0
    while at < len(data):
        key, at = _read_varint(data, at)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, at = _read_varint(data, at)
        elif wire_type == 2:
            length, at = _read_varint(data, at)
            value = data[at : at + length]
            at += length
        elif wire_type == 1:
            value = struct.unpack_from("<Q", data, at)[0]
            at += 8
        elif wire_type == 5:
            value = struct.unpack_from("<I", data, at)[0]
            at += 4
        else:
            raise wire.WireError("MALFORMED_FRAME", f"wire type {wire_type}")
        yield number, wire_type, value


def _unpack_varints(data: bytes) -> List[int]:
    out = []
    at = 0
    while at < len(data):
        value, at = _read_varint(data, at)
        out.append(value)
    return out


def decode_step_response(data: bytes) -> wire.StepReply:
    step_id, speculate, reason, off_above = 0, False, 0, 0
    statuses: List[int] = []
    drafts: List[List[int]] = []
    errors = []
    for number, wire_type, value in _fields(data):
        if number == 1:
            step_id = value
        elif number == 2:
            speculate = bool(value)
        elif number == 3:
            reason = value
        elif number == 5:
            off_above = value
        elif number == 4:
            status, tokens, code, message = 0, [], "", ""
            for n2, t2, v2 in _fields(value):
                if n2 == 1:
                    status = v2
                elif n2 == 2:
                    tokens.extend(_unpack_varints(v2) if t2 == 2 else [v2])
                elif n2 == 3:
                    code = v2.decode()
                elif n2 == 4:
                    message = v2.decode()
            if code:
                errors.append({"index": len(statuses), "code": code, "message": message})
            statuses.append(status)
            drafts.append(tokens)
    flat = [t for d in drafts for t in d]
    return wire.StepReply(
        step_id,
        speculate,
        wire.GATE_REASONS[reason] if reason < len(wire.GATE_REASONS) else str(reason),
        np.asarray(statuses, dtype=np.uint8),
        np.asarray([len(d) for d in drafts], dtype=np.uint8),
        np.asarray(flat, dtype=np.int64),
        errors,
        off_above,
    )


class GrpcStepClient:
    """Step over gRPC; `target` like "unix:/run/sam-sidecar/sidecar.sock.grpc" or "host:port".
    The session's requests travel as fast-lane frames in the FastLane call (no message per request
    to build or parse), or as typed Step messages to a sidecar that predates FastLane. The channel
    is made lazily in the process that uses it: grpcio channels must not cross a fork."""

    def __init__(self, target: str, deadline_s: float = 0.01):
        import grpc  # optional dependency

        self._grpc = grpc
        self.target = target
        self.deadline_s = deadline_s
        self._channel = None
        self._pid = -1
        self._call_id = 0
        self.fast_lane = True  # until the sidecar answers UNIMPLEMENTED

    def _methods(self):
        if self._channel is None or self._pid != os.getpid():
            self._channel = self._grpc.insecure_channel(self.target)
            self._pid = os.getpid()
            identity = dict(request_serializer=lambda b: b, response_deserializer=lambda b: b)
            self._step = self._channel.unary_unary(STEP_METHOD, **identity)
            self._fast_lane = self._channel.unary_unary(FAST_LANE_METHOD, **identity)
        return self._step, self._fast_lane

    def step(self, request, deadline_s: Optional[float] = None, deadline: Optional[float] = None) -> wire.StepReply:
        """One Step; `request` is a wire.StepRequest (as the session builds it) or an encoded typed
        StepRequest message. `deadline`: an absolute time.monotonic() the call must end by."""
        timeout = self.deadline_s if deadline_s is None else deadline_s
        if deadline is not None:
            timeout = max(1e-4, min(timeout, deadline - time.monotonic()))
        step, fast_lane = self._methods()
        try:
            if isinstance(request, wire.StepRequest):
                if self.fast_lane:
                    try:
                        return self._step_frame(fast_lane, request, timeout)
                    except self._grpc.RpcError as error:
                        if error.code() != self._grpc.StatusCode.UNIMPLEMENTED:
                            raise
                        self.fast_lane = False
                request = encode_request(request)
            return decode_step_response(step(request, timeout=timeout))
        except self._grpc.RpcError as error:
            metadata = dict(error.trailing_metadata() or ())
            code = metadata.get("sam-error-code")
            if code:
                raise wire.WireError(code, error.details() or "", metadata.get("sam-error-field")) from error
            raise SidecarUnavailable(f"gRPC step failed: {error.code()}") from error

    def _step_frame(self, fast_lane, request: "wire.StepRequest", timeout: float) -> wire.StepReply:
        self._call_id = (self._call_id + 1) & 0xFFFFFFFF
        reply = b""
        for number, wire_type, value in _fields(fast_lane(_bytes_field(1, request.encode(self._call_id)), timeout=timeout)):
            if number == 1 and wire_type == 2:
                reply = bytes(value)
        return wire.decode_reply(reply_to(self._call_id, reply))

    def close(self) -> None:
        if self._channel is not None and self._pid == os.getpid():
            self._channel.close()
        self._channel = None
