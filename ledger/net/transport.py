"""TCP transport for replicas and clients (trio): framing, per-peer queues, links.

Frames are a 4-byte big-endian length plus a body (``ledger.wire.frame`` / ``FrameDecoder``);
the length is checked against a cap before any of the body is buffered.

Every connection is authenticated first (``ledger.net.channel``: mutual TLS 1.3 by
default); from then on every frame on it is attributed to the proven (role, id) and to
nothing a message claims.

Sending: one bounded queue of ready-made frames per peer. A writer task drains the
whole queue with one ``send_all`` per wakeup, so frames coalesce under load; when a
queue is over its cap the oldest frames are dropped and counted (the protocols
retransmit), so a dead or slow peer never stalls the others. Outgoing links reconnect
with exponential backoff and jitter; frames queued while a link is down go out after
it reconnects.

Receiving: one read takes up to ``RECV_SIZE`` bytes and decodes every complete frame in
it; the frames go to a callback in one call, so the replica hands its core a whole
burst before asking it for output. Malformed, oversized or unauthenticated input is
counted by kind (``Problems``), logged once per kind, and closes that connection only.
"""
from __future__ import annotations

import logging
import os
import random
import socket
from collections import Counter, deque
from enum import Enum
from typing import Callable

import trio

from ledger.net.channel import (ROLE_CLIENT, ROLE_NAMES, ROLE_REPLICA, Channels, HandshakeError,
                                 peer_name)
from ledger.rules import WireRule
from ledger.wire import MAX_FRAME, DecodeError, FrameDecoder

log = logging.getLogger("ledger.net.transport")

HANDSHAKE_TIMEOUT = 2.0            # an unauthenticated connection gets this long, then it is closed
CLIENT_MAX_FRAME = 256 * 1024      # a client sends requests (<= 64 KiB op) and small queries
RECV_SIZE = 256 * 1024
BURST = 128                        # frames handed to the owner at once before it may act on them
MAX_WRITE = 1 << 20                # bytes joined into one send_all
QUEUE_MAX_BYTES = 16 * 1024 * 1024
QUEUE_MAX_FRAMES = 32768
DOWN_QUEUE_BYTES = 1024 * 1024     # backlog kept for a peer that cannot be reached
CONNECT_TIMEOUT = 1.5
UNACKED_TIMEOUT_MS = 3000          # TCP_USER_TIMEOUT: a peer that acknowledges nothing for this long is dead
BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0


class LocalFault(Enum):
    """This node's own failures while serving a peer (a disk error, a bug): counted beside the
    peer-input rules so that an operator sees them, but not a peer's fault."""

    ACCEPT_FAILED = "accepting a connection failed"
    CANNOT_SERVE_RECEIPT = "cannot serve a receipt"
    CANNOT_ATTEST = "cannot attest a block"
    CANNOT_SERVE_BLOCKS = "cannot serve blocks"
    CANNOT_SERVE_PROOF = "cannot serve a state proof"
    CANNOT_SERVE_QUERY = "cannot serve a history or scan query"
    OVERSIZED_OUTGOING = "oversized outgoing message (a bug; dropped)"

    @property
    def text(self) -> str:
        return self.value

    @property
    def label(self) -> str:
        return f"local.{self.name}"


class Problems:
    """Channel problems counted by rule (``ledger.rules.WireRule``) or local fault; the first of
    each is logged, the rest only counted."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self.counts: Counter[WireRule | LocalFault] = Counter()
        self._log = logger

    def note(self, kind: WireRule | LocalFault, detail: str = "") -> None:
        if kind not in self.counts:
            self._log.warning("%s [%s]%s (first of its kind; later ones are only counted)", kind.text, kind.label,
                              f" ({detail})" if detail else "")
        self.counts[kind] += 1

    def as_json(self) -> dict[str, int]:
        return {k.label: n for k, n in sorted(self.counts.items(), key=lambda kv: kv[0].label)}


class SendQueue:
    """Bounded FIFO of framed bytes for one peer; drops the oldest frames when full."""

    __slots__ = ("frames", "nbytes", "max_bytes", "max_frames", "dropped", "sent_frames", "sent_bytes",
                 "_wake", "name", "_warned")

    def __init__(self, name: str, max_bytes: int = QUEUE_MAX_BYTES, max_frames: int = QUEUE_MAX_FRAMES) -> None:
        self.frames: deque[bytes] = deque()
        self.nbytes = 0
        self.max_bytes = max_bytes
        self.max_frames = max_frames
        self.dropped = 0
        self.sent_frames = 0
        self.sent_bytes = 0
        self._wake = trio.Event()
        self.name = name
        self._warned = False

    def __len__(self) -> int:
        return len(self.frames)

    def put(self, fr: bytes) -> None:
        frames = self.frames
        frames.append(fr)
        self.nbytes += len(fr)
        if self.nbytes > self.max_bytes or len(frames) > self.max_frames:
            while len(frames) > 1 and (self.nbytes > self.max_bytes or len(frames) > self.max_frames):
                self.nbytes -= len(frames.popleft())
                self.dropped += 1
            if not self._warned:
                self._warned = True
                log.warning("send queue to %s is full; dropping its oldest frames (counted in status)", self.name)
        self._wake.set()

    def clear(self) -> None:
        self.dropped += len(self.frames)
        self.frames.clear()
        self.nbytes = 0

    def discard(self, fr: bytes) -> None:
        """Remove ``fr`` if it still waits here: a client that gave up on a request while the
        link was down must not deliver it when the link comes back, long after it said it failed."""
        try:
            self.frames.remove(fr)
        except ValueError:
            return
        self.nbytes -= len(fr)

    async def take(self) -> bytes:
        """Wait for frames, then remove and return as many as fit in one write, joined."""
        while not self.frames:
            self._wake = trio.Event()
            await self._wake.wait()
        frames = self.frames
        if self.nbytes <= MAX_WRITE:
            out = list(frames)
            frames.clear()
            size = self.nbytes
        else:
            out, size = [], 0
            while frames and (not out or size + len(frames[0]) <= MAX_WRITE):
                fr = frames.popleft()
                out.append(fr)
                size += len(fr)
        self.nbytes -= size
        self.sent_frames += len(out)
        self.sent_bytes += size
        return out[0] if len(out) == 1 else b"".join(out)


# on_frames(conn, bodies) -> False to close the connection
FrameHandler = Callable[["Connection", list[bytes]], bool]


class Connection:
    """An authenticated connection: reads frames into a handler, writes a SendQueue."""

    __slots__ = ("stream", "role", "ident", "queue", "decoder", "closed", "name", "_scope", "pause_until")

    def __init__(self, stream: trio.abc.Stream, role: int, ident: int, queue: SendQueue,
                 decoder: FrameDecoder) -> None:
        self.stream = stream
        self.role = role
        self.ident = ident
        self.queue = queue
        self.decoder = decoder
        self.closed = False
        self.name = peer_name(role, ident)
        self._scope: trio.CancelScope | None = None
        self.pause_until = 0.0             # the owner throttles this peer: read nothing before then

    def send(self, fr: bytes) -> None:
        if not self.closed:
            self.queue.put(fr)

    def close(self) -> None:
        """Stop this connection's tasks (the owner of the stream closes it)."""
        self.closed = True
        if self._scope is not None:
            self._scope.cancel()

    async def run(self, leftover: bytes, on_frames: FrameHandler, problems: Problems) -> None:
        """Until the peer goes away, the input is bad, or the caller is cancelled."""
        if self.closed:
            return
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._writer, nursery.cancel_scope)
                await self._reader(leftover, on_frames, problems)
                nursery.cancel_scope.cancel()
        finally:
            self.closed = True

    async def _reader(self, data: bytes, on_frames: FrameHandler, problems: Problems) -> None:
        stream, decoder = self.stream, self.decoder
        while True:
            if not data:
                try:
                    data = await stream.receive_some(RECV_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return
                if not data:
                    return
            try:
                bodies = decoder.feed(data)
            except DecodeError as e:
                problems.note(WireRule.OVERSIZED_FRAME, f"from {self.name}: {e}")
                return
            data = b""
            if not bodies:
                continue
            if len(bodies) <= BURST:
                if not on_frames(self, bodies):
                    return
            else:
                # a long burst goes in slices, letting the owner act (a primary propose) in between
                for i in range(0, len(bodies), BURST):
                    if not on_frames(self, bodies[i:i + BURST]):
                        return
                    await trio.lowlevel.checkpoint()
            if self.pause_until and self.pause_until > trio.current_time():
                # throttled: TCP flow control now slows the sender, at no cost to us
                await trio.sleep_until(self.pause_until)

    async def _writer(self, scope: trio.CancelScope) -> None:
        try:
            while True:
                data = await self.queue.take()
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            scope.cancel()


def fail_fast(stream) -> None:
    """Close a connection whose peer stops acknowledging (cut off by a partition) after
    UNACKED_TIMEOUT_MS instead of TCP's own minutes of exponential retransmission, so that
    the link reconnects soon after the network heals (issue 17: a follower cut off for 5 s
    took over 20 s to catch up, its connections stuck in TCP backoff)."""
    sock = getattr(stream, "socket", None)
    if sock is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, UNACKED_TIMEOUT_MS)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 2)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)
        except OSError:
            pass


def backoff(delay: float, rng: random.Random) -> float:
    """A jittered sleep for the current reconnection ``delay``: between half of it and all of it
    (the caller doubles the delay, capped at BACKOFF_MAX, for the next attempt)."""
    return delay * (0.5 + rng.random() * 0.5)


class Link:
    """An outgoing connection to one replica that keeps itself connected.

    Frames put into ``queue`` go out in order whenever the link is up; frames that
    arrive on the link go to ``on_frames`` like those of any other connection.

    ``refusals`` counts the consecutive dials that failed at once with an error from the
    peer's host (nothing listens there: "connection refused"), as opposed to a timeout,
    which says nothing; a client gives up early when every replica refuses like that
    (``ledger.net.session``). ``on_refused`` is called after each such dial."""

    def __init__(self, channels: Channels, replica: int, host: str, port: int,
                 on_frames: FrameHandler, problems: Problems, *, max_frame: int = MAX_FRAME,
                 queue: SendQueue | None = None, on_down: Callable[[int], None] | None = None,
                 on_refused: Callable[[int], None] | None = None) -> None:
        self.channels = channels
        self.replica = replica
        self.host = host
        self.port = port
        self.on_frames = on_frames
        self.problems = problems
        self.max_frame = max_frame
        self.queue = queue or SendQueue(f"replica {replica}")
        self.on_down = on_down
        self.on_refused = on_refused
        self.refusals = 0
        self.connected = False
        self.connects = 0
        self.last_error: str | None = None
        self.up_event = trio.Event()
        self._rng = random.Random()
        self._poke = trio.Event()

    def send(self, fr: bytes) -> None:
        self.queue.put(fr)

    def poke(self) -> None:
        """The peer is back (it just connected to us): skip the rest of the backoff and dial now."""
        if not self.connected:
            self._poke.set()

    async def _backoff(self, delay: float) -> None:
        with trio.move_on_after(backoff(delay, self._rng)):
            await self._poke.wait()
        self._poke = trio.Event()

    def _set_down(self, down: bool) -> None:
        """While the peer is unreachable keep only a little backlog: what it needs after a long
        absence it gets by retransmission and state transfer, not from a stale burst."""
        q = self.queue
        if down:
            q.max_bytes = min(q.max_bytes, DOWN_QUEUE_BYTES)
            while len(q.frames) > 1 and q.nbytes > q.max_bytes:
                q.nbytes -= len(q.frames.popleft())
                q.dropped += 1
        else:
            q.max_bytes = self._up_max_bytes

    async def run(self) -> None:
        delay = BACKOFF_MIN
        self._up_max_bytes = self.queue.max_bytes
        while True:
            try:
                with trio.fail_after(CONNECT_TIMEOUT):
                    stream = await trio.open_tcp_stream(self.host, self.port)
                fail_fast(stream)
                self.refusals = 0
            except (OSError, trio.TooSlowError) as e:
                self.last_error = _describe(e)
                self._set_down(True)
                if isinstance(e, OSError):
                    self.refusals += 1
                    if self.on_refused is not None:
                        self.on_refused(self.replica)
                else:
                    self.refusals = 0
                await self._backoff(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            try:
                with trio.fail_after(HANDSHAKE_TIMEOUT):
                    role, ident, stream, leftover = await self.channels.dial(stream, (ROLE_REPLICA, self.replica))
                decoder = FrameDecoder(self.max_frame)
                self._set_down(False)
                delay = BACKOFF_MIN
                self.connected = True
                self.connects += 1
                self.last_error = None
                self.up_event.set()
                conn = Connection(stream, role, ident, self.queue, decoder)
                await conn.run(leftover, self.on_frames, self.problems)
                self.last_error = "connection closed"
            except HandshakeError as e:
                self.last_error = str(e)
                self.problems.note(e.rule, f"dialling replica {self.replica}")
            except trio.TooSlowError:
                self.last_error = "handshake timed out"
                self.problems.note(WireRule.HANDSHAKE_TIMEOUT, f"dialling replica {self.replica}")
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                self.last_error = _describe(e)
            except Exception:                        # a bug of ours: log it, keep the link alive
                log.exception("link to replica %d failed", self.replica)
                self.last_error = "internal error"
            finally:
                if self.connected:
                    self.connected = False
                    self.up_event = trio.Event()
                    if self.on_down is not None:
                        self.on_down(self.replica)
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)
            await self._backoff(delay)
            delay = min(delay * 2, BACKOFF_MAX)


def _describe(e: BaseException) -> str:
    """A short reason for a failed connection ("connection refused", "timed out", ...)."""
    if isinstance(e, trio.TooSlowError):
        return "timed out"
    cause = e.__cause__
    if isinstance(cause, BaseExceptionGroup) and cause.exceptions:   # trio's "all attempts ... failed"
        return _describe(cause.exceptions[0])
    if isinstance(e, OSError) and e.errno:
        return os.strerror(e.errno).lower()
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e) or type(e).__name__


describe_error = _describe


__all__ = ["ROLE_CLIENT", "ROLE_NAMES", "ROLE_REPLICA", "HandshakeError", "peer_name", "Problems", "SendQueue",
           "Connection", "Link", "backoff", "describe_error", "fail_fast"]
