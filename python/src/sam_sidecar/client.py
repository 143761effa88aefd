"""Stdlib fast-lane client: one Unix-socket connection per process, made lazily (vLLM forks workers
and a socket must not cross a fork), a deadline per call, reconnect with exponential backoff.

It raises on failure; `session.DraftSession` turns failures into "no drafts this step" (fail open).
"""
from __future__ import annotations

import math
import os
import select
import socket
import struct
import time
from collections import deque
from typing import Optional, Tuple

from . import wire

from .log import logger

DEFAULT_SOCKET = os.path.join(os.environ.get("TMPDIR", "/tmp"), "sam-sidecar", "sidecar.sock")


def peer_problem(sock: socket.socket) -> Optional[str]:
    """Why the process listening on this socket is not to be sent steps, or None. The socket's
    peer (SO_PEERCRED) must run as this user, as root, or as SAM_SIDECAR_PEER_UID (the sidecar's
    user where it differs, e.g. another container of the pod): anyone else who could create the
    socket path first would otherwise receive every step's tokens."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None  # not Linux: no peer credentials to check
    try:
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except OSError:
        return None
    allowed = {os.getuid(), 0}
    expected = os.environ.get("SAM_SIDECAR_PEER_UID", "")
    if expected.isdigit():
        allowed.add(int(expected))
    if uid in allowed:
        return None
    return f"the process listening there runs as uid {uid}, not this user ({os.getuid()}), root or SAM_SIDECAR_PEER_UID"


def socket_path_from_env() -> str:
    return os.environ.get("SAM_SIDECAR_SOCKET", DEFAULT_SOCKET)


_yield_cpu = getattr(os, "sched_yield", lambda: None)

# Replies that missed their deadline in a row before the connection is taken for hung: dropped,
# with a backoff, so a stopped sidecar does not cost a full deadline at every step.
MAX_LATE_REPLIES = 3
# Kernel send buffer asked for: twice a default step chunk (131,072 tokens, 512 KiB) and its header.
SEND_BUFFER_BYTES = 2 << 20


class SidecarUnavailable(Exception):
    """No connection (refused, missing socket, backing off) or the call missed its deadline."""

    def __init__(self, message: str, deadline_missed: bool = False, reply_pending: bool = False):
        super().__init__(message)
        self.deadline_missed = deadline_missed
        # The call missed its deadline on a healthy connection: its reply may still come, and
        # receive(call_id) reads it later (the session applies it at its next step).
        self.reply_pending = reply_pending


def call_failed(error: BaseException, deadline_s: float) -> SidecarUnavailable:
    """The error a failed call raises: a kernel timeout (EAGAIN on a socket with SO_RCVTIMEO /
    SO_SNDTIMEO) is said as the deadline it is, not as the errno."""
    if isinstance(error, SidecarUnavailable):
        return SidecarUnavailable(f"step call failed: {error}", deadline_missed=error.deadline_missed)
    if isinstance(error, (socket.timeout, BlockingIOError, TimeoutError)):
        return SidecarUnavailable(f"deadline {deadline_s * 1000:g} ms exceeded", deadline_missed=True)
    return SidecarUnavailable(f"step call failed: {error!r}")


def reply_to(call_id: int, reply: bytes) -> bytes:
    """The reply frame, checked to answer call `call_id` (any transport carrying fast-lane frames)."""
    _kind, reply_id = wire.parse_header(reply)
    if reply_id != call_id:
        raise SidecarUnavailable(f"reply for call {reply_id}, expected {call_id}")
    return reply


class FastLaneClient:
    def __init__(
        self,
        socket_path: Optional[str] = None,
        deadline_s: float = 0.005,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 2.0,
        connect_timeout_s: float = 0.05,
        spin_s: Optional[float] = None,
        wake: Optional[bool] = None,
    ):
        self.socket_path = socket_path or socket_path_from_env()
        # wake(): a PING as a step starts, so the sidecar is awake when the step arrives.
        self.wakes_enabled = os.environ.get("SAM_SIDECAR_WAKE", "1") != "0" if wake is None else wake
        # Poll for the reply this long before blocking: a blocked thread's (v)CPU may idle, and
        # waking it costs tens of microseconds per call, at times a millisecond on a VM; the runner
        # has nothing else to do meanwhile. Each empty poll yields the CPU, so threads that share
        # it (the sidecar itself on a small machine) are not starved.
        self.spin_s = float(os.environ.get("SAM_SIDECAR_SPIN_US", "2000")) / 1e6 if spin_s is None else spin_s
        self.deadline_s = deadline_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.connect_timeout_s = connect_timeout_s
        self._sock: Optional[socket.socket] = None
        self._pid = -1
        self._call_id = 0
        self._retry_at = 0.0
        self._backoff = backoff_initial_s
        self.connects = 0
        self._buffer = bytearray(1 << 16)
        self._unread: Optional[int] = None  # call id of a sent frame whose reply is still unread
        self._read_ahead: Optional[Tuple[int, bytes]] = None  # a reply read before its receive()
        self._wakes: deque = deque()  # call ids of wake PINGs whose PONG is still to be skipped
        self._buffered = 0  # bytes of the next frame(s) already read into _buffer
        self._kernel_timeout_s = deadline_s  # what SO_RCVTIMEO / SO_SNDTIMEO are set to now
        self.frame_buffer = wire.FrameBuffer()  # step frames are encoded into it (one call at a time)
        self.last_call_id = 0  # of the last step()
        self._late_replies = 0  # consecutive calls whose reply missed its deadline
        self._answered = False  # a reply came on the current connection
        self._dropped_unanswered = False  # the last connection was dropped before any reply

    # ------------------------------------------------------------------ connection

    def _connection(self) -> socket.socket:
        if self._sock is not None and self._pid == os.getpid():
            return self._sock
        if self._pid != os.getpid():
            # Inherited across a fork: never use the parent's socket, never close it for the parent.
            self._drop_connection_state()
            self._retry_at = 0.0
        now = time.monotonic()
        if now < self._retry_at:
            raise SidecarUnavailable(f"backing off for {self._retry_at - now:.3f}s after a failure")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.connect_timeout_s)
            sock.connect(self.socket_path)
        except OSError as error:
            sock.close()
            self._fail()
            raise SidecarUnavailable(f"cannot connect to {self.socket_path}: {error}") from error
        problem = peer_problem(sock)
        if problem is not None:
            sock.close()
            self._fail()
            raise SidecarUnavailable(f"refusing {self.socket_path}: {problem}")
        # Blocking socket with kernel-side timeouts: one syscall per send or receive, where a
        # Python-level timeout would add a poll() to each.
        sock.settimeout(None)
        self._set_kernel_timeout(sock, self.deadline_s)
        try:
            # Room for a whole chunk of a long context in the kernel (the kernel caps it at
            # net.core.wmem_max): a send then completes while the sidecar is busy for a moment,
            # where a frame larger than the default buffer waits for it to read, and one the
            # deadline cuts off costs the connection.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        except OSError:
            pass
        self._sock = sock
        self._pid = os.getpid()
        # A new connection starts the backoff over, unless the last one was dropped without a
        # single reply: a hung sidecar's kernel still accepts connections, and each would cost
        # full deadlines again. Then only a reply starts it over.
        if not self._dropped_unanswered:
            self._backoff = self.backoff_initial_s
        self._answered = False
        self.connects += 1
        return sock

    def _set_kernel_timeout(self, sock: socket.socket, seconds: float) -> None:
        seconds = max(seconds, 1e-4)
        self._kernel_timeout_s = seconds
        timeval = struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)

    def _fail(self) -> None:
        """Drops the connection (a late reply must never be read as the next call's) and backs off."""
        self._dropped_unanswered = self._sock is not None and not self._answered
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._drop_connection_state()
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.backoff_max_s)

    def close(self) -> None:
        if self._sock is not None and self._pid == os.getpid():
            self._sock.close()
        self._drop_connection_state()

    def _drop_connection_state(self) -> None:
        """Forgets the socket and what was on its way on it: unread replies, skipped PONGs, bytes
        read past a frame are gone with the connection."""
        self._sock = None
        self._unread = self._read_ahead = None
        self._wakes.clear()
        self._buffered = 0

    # ------------------------------------------------------------------ calls

    def next_call_id(self) -> int:
        self._call_id = (self._call_id + 1) & 0xFFFFFFFF
        return self._call_id

    def call(self, frame: bytes, call_id: int, deadline_s: Optional[float] = None, deadline: Optional[float] = None) -> bytes:
        """Sends one frame and returns the reply frame, both within the one deadline (deadline_s
        from now, or the absolute time.monotonic() `deadline` of the step it is part of)."""
        if deadline is None:
            deadline = time.monotonic() + (self.deadline_s if deadline_s is None else deadline_s)
        self.send(frame, call_id, deadline)
        return self.receive(call_id, deadline_s, deadline)

    def wake(self) -> None:
        """Tells the sidecar a step is coming: an empty PING, sent without waiting, whose PONG the
        next read skips. A sidecar that slept between steps wakes while the step is being built
        (waking costs tens of microseconds on a VM) and polls until the step arrives. Best effort:
        no connection is made for it, and a failure is left for the step's own send to meet."""
        sock = self._sock
        if not self.wakes_enabled or sock is None or self._pid != os.getpid() or len(self._wakes) >= 4:
            return
        call_id = self.next_call_id()
        ping = wire.encode_ping(call_id)
        try:
            # Never waits on a full socket buffer (a busy sidecar): then there is no wake this time.
            sent = sock.send(ping, socket.MSG_DONTWAIT)
            if sent < len(ping):
                sock.sendall(ping[sent:])  # rare: the frame must go whole once begun
        except BlockingIOError:
            return
        except OSError:
            self._fail()
            return
        self._wakes.append(call_id)

    def send(self, frame: bytes, call_id: int, deadline: Optional[float] = None) -> None:
        """Sends a frame without waiting for its reply; receive(call_id) returns it later. Replies
        come in order, so a reply still unread is read first and kept for its receive(). All of
        it by `deadline` (time.monotonic(); default: the client's deadline from now)."""
        sock = self._connection()
        if deadline is None:
            deadline = time.monotonic() + self.deadline_s
        try:
            if self._unread is not None:
                self._read_ahead = (self._unread, self._read_reply(sock, self._unread, deadline))
                self._unread = None
            self._send_frame(sock, frame, deadline)
        except (OSError, socket.timeout, SidecarUnavailable) as error:
            self._fail()
            raise call_failed(error, self.deadline_s) from error
        self._unread = call_id

    def _send_frame(self, sock: socket.socket, frame: bytes, deadline: float) -> None:
        """sendall by one deadline for the whole frame. Writes never block: a blocking send of a
        large frame waits up to the kernel timeout per buffer it allocates, several timeouts in
        all, so a frame the sidecar reads slowly is written as the socket drains, waiting in poll()
        for what is left of the deadline, and abandoned (SidecarUnavailable) when it passes."""
        try:
            sent = sock.send(frame, socket.MSG_DONTWAIT)  # a step frame usually fits the socket buffer
        except BlockingIOError:
            sent = 0
        if sent == len(frame):
            return
        view = memoryview(frame)
        writable = select.poll()
        writable.register(sock, select.POLLOUT)
        while sent < len(view):
            left = deadline - time.monotonic()
            if left <= 0:
                raise SidecarUnavailable("deadline passed while sending the step", deadline_missed=True)
            if not writable.poll(max(1, math.ceil(left * 1000))):
                continue  # the deadline is checked again
            try:
                sent += sock.send(view[sent:], socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue

    def receive(self, call_id: int, deadline_s: Optional[float] = None, deadline: Optional[float] = None) -> bytes:
        """The reply to a frame sent with send(), within the deadline (deadline_s from now, or
        the absolute `deadline` of the call it belongs to)."""
        if self._read_ahead is not None and self._read_ahead[0] == call_id:
            reply = self._read_ahead[1]
            self._read_ahead = None
            return reply
        sock = self._sock
        if self._unread != call_id or sock is None:
            raise SidecarUnavailable(f"no reply on its way for call {call_id}: the connection was reset")
        budget = self.deadline_s if deadline_s is None else deadline_s
        if deadline is None:
            deadline = time.monotonic() + budget
        try:
            if deadline_s is not None:
                self._set_kernel_timeout(sock, budget)
            reply = self._read_reply(sock, call_id, deadline)
            if deadline_s is not None:
                self._set_kernel_timeout(sock, self.deadline_s)
        except (OSError, socket.timeout, SidecarUnavailable) as error:
            failed = call_failed(error, budget)
            if failed.deadline_missed and self._late_replies < MAX_LATE_REPLIES:
                # A busy sidecar, not a dead one: the connection stays (what was read of the reply
                # is kept), and the reply is read when receive(call_id) comes again.
                self._late_replies += 1
                if deadline_s is not None:
                    self._set_kernel_timeout(sock, self.deadline_s)
                failed.reply_pending = True
                raise failed from error
            self._fail()
            raise failed from error
        self._unread = None
        self._late_replies = 0
        self._answered = True
        self._dropped_unanswered = False
        self._backoff = self.backoff_initial_s
        return reply

    def _read_reply(self, sock: socket.socket, call_id: int, deadline: float) -> bytes:
        frame = self._read_frame(sock, deadline)
        while self._wakes and wire.parse_header(frame) == (wire.KIND_PONG, self._wakes[0]):
            self._wakes.popleft()  # replies come in order: a wake's PONG precedes later replies
            frame = self._read_frame(sock, deadline)
        return reply_to(call_id, frame)

    def _read_frame(self, sock: socket.socket, deadline: float) -> bytes:
        """The next frame. A read may bring more than one (a wake's PONG and the step's reply):
        the bytes past this frame stay in the buffer for the next call, and so do the bytes of a
        frame whose deadline passed (a late reply is read on from there)."""
        view = memoryview(self._buffer)
        have = self._buffered
        need = 4
        length = -1
        spin_until = time.monotonic() + min(self.spin_s, max(0.0, deadline - time.monotonic()))
        try:
            while True:
                if length < 0 and have >= 4:
                    length = struct.unpack_from("<I", self._buffer, 0)[0]
                    need = 4 + length
                    if need > len(self._buffer):
                        grown = bytearray(max(need, 2 * len(self._buffer)))
                        grown[:have] = self._buffer[:have]
                        self._buffer = grown
                        view = memoryview(self._buffer)
                if have >= need:
                    break
                now = time.monotonic()
                past = now > deadline
                if past or now < spin_until:
                    try:
                        got = sock.recv_into(view[have:], 0, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        if past:
                            # Past the deadline only what has already arrived is taken: a late
                            # reply waiting in the socket is read, not declared missing.
                            raise SidecarUnavailable("deadline passed while reading the reply", deadline_missed=True) from None
                        _yield_cpu()
                        continue
                else:
                    # The kernel timeout bounds each wait; cut to what is left of the deadline when
                    # that is less (a PONG first, or a reply in pieces, must not stretch the call).
                    left = deadline - now
                    before = self._kernel_timeout_s
                    if left < before:
                        self._set_kernel_timeout(sock, left)
                    try:
                        got = sock.recv_into(view[have:])
                    finally:
                        if left < before:
                            self._set_kernel_timeout(sock, before)
                if got == 0:
                    raise SidecarUnavailable("connection closed by the sidecar")
                have += got
        except BaseException:
            self._buffered = have
            raise
        frame = bytes(view[:need])
        self._buffered = have - need
        if self._buffered:
            self._buffer[: self._buffered] = self._buffer[need:have]  # a copy: the ranges may overlap
        return frame

    def step(self, request: "wire.StepRequest", deadline: Optional[float] = None) -> "wire.StepReply":
        """One Step over the fast lane, by `deadline` (time.monotonic(); default: the client's
        deadline from now). Raises SidecarUnavailable or wire.WireError."""
        call_id = self.next_call_id()
        self.last_call_id = call_id
        return wire.decode_reply(self.call(request.encode(call_id, self.frame_buffer), call_id, deadline=deadline))

    def ping(self, deadline_s: Optional[float] = 0.5) -> bool:
        """An empty round trip; deadline_s None: the client's own deadline."""
        call_id = self.next_call_id()
        try:
            kind, _ = wire.parse_header(self.call(wire.encode_ping(call_id), call_id, deadline_s))
        except SidecarUnavailable:
            return False
        return kind == wire.KIND_PONG

    def release(self, engine_id: bytes, req_ids, deadline_s: Optional[float] = None) -> int:
        call_id = self.next_call_id()
        reply = self.call(wire.encode_release(call_id, engine_id, list(req_ids)), call_id, deadline_s)
        kind, _ = wire.parse_header(reply)
        if kind == wire.KIND_ERROR_REPLY:
            wire.raise_error(reply)
        return struct.unpack_from("<I", reply, wire.HEADER_BYTES)[0]


class RateLimitedLog:
    """At most one log line per `interval_s` for a kind of event, with the count of those skipped."""

    def __init__(self, interval_s: float = 10.0):
        self.interval_s = interval_s
        self._last = {}
        self._skipped = {}

    def warning(self, key: str, message: str, *args) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.interval_s:
            skipped = self._skipped.pop(key, 0)
            suffix = f" ({skipped} similar since the last report)" if skipped else ""
            logger.warning(message + suffix, *args)
            self._last[key] = now
        else:
            self._skipped[key] = self._skipped.get(key, 0) + 1
