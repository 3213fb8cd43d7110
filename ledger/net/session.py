"""The client's network session (trio): one authenticated connection per replica.

``ClientSession`` keeps one connection per replica (reconnecting on its own) and carries
any number of concurrent requests. What to do with replies, redirects and timeouts
(reply quorums, the paxos leader, retransmission) is decided by the sans-I/O
``ledger.clientcore.ClientCore``, the same code the simulator's clients run; this module
only carries frames and waits. A request's timestamp comes from a per-session counter
that starts at the current time in microseconds and then counts up by one, so a
restarted client never reuses one. Two processes must not use one client key at the
same time: the ledger executes a client's timestamps only within a window of 4096 below
its highest, so the later-started process would make the other's stale.

A request fails early, with the message ``bftledger status`` gives, when every replica's
host refuses the connection ``REFUSALS_TO_FAIL`` times in a row (about 0.2 to 0.4 s of
reconnection backoff): nothing listens, so waiting out the whole timeout would only
hide that the cluster is not running. One replica that accepts a connection, or one
dial that times out instead (a host that does not answer may yet), keeps the request
waiting; so do replicas restarting while others are up.

It lives in ``ledger.net`` with the channel and the transport it runs on (which the
replicas' runtime, ``bft.runtime``, uses too) so that ``ledger.client`` builds the public
API (receipts, put/get/...) on it without importing ``bft``.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext

import msgpack
import trio

from crypto.signing import Signer
from ledger.clientcore import EVERY_REPLICA, ClientCore, Outcome, Pending, ReadPending
from ledger.cluster import Cluster
from ledger.net.channel import Channels, channels_for
from ledger.rules import WireRule
from ledger.net.transport import (CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT, ROLE_CLIENT, ROLE_REPLICA, Connection,
                                  HandshakeError, Link, Problems, SendQueue, describe_error)
from ledger.wire import (MAX_FRAME, AttestRequest, Attestation, BlocksRequest, BlocksResponse, DecodeError,
                         FrameDecoder, HistoryResponse, ProofRequest, ProofResponse, ReadRedirect, ReadReply,
                         ReceiptRequest, ReceiptResponse, Redirect, Reply, Request, ScanResponse, StatusRequest,
                         StatusResponse, decode, frame)

log = logging.getLogger("ledger.net.session")

MAX_IN_FLIGHT = 2048          # well inside the ledger's window of 4096 timestamps per client
MAX_READS_IN_FLIGHT = 256     # reads not ordered; a replica holds at most 256 of one client's
RETRANSMIT_FIRST = 1.0
RETRANSMIT_MAX = 4.0
REFUSALS_TO_FAIL = 4          # dials refused in a row by every replica: the cluster is not running


class Unavailable(Exception):
    """No answer in time; the message says what was reachable. ``sent``: whether the request
    may have reached a replica (then it may still commit)."""

    def __init__(self, message: str, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


class _Asked:
    """A question to one replica (``ClientSession._ask``) and, once it came, the answer."""

    __slots__ = ("answered", "answer")

    def __init__(self) -> None:
        self.answered = trio.Event()
        self.answer: object = None


class ClientSession:
    def __init__(self, cluster: Cluster, client_id: int, signer: Signer) -> None:
        if client_id < 0:
            raise ValueError(f"client {client_id} is not a client id")
        if client_id < len(cluster.clients) and cluster.clients[client_id] != signer.public_key:
            raise ValueError(f"the key of client {client_id} does not match its public key in cluster.toml")
        self.cluster = cluster
        self.id = client_id
        self.signer = signer
        self.core = ClientCore(cluster.mode, cluster.f, cluster.n, client_id,
                               retransmit_first=RETRANSMIT_FIRST, retransmit_max=RETRANSMIT_MAX)
        self.problems = Problems(log)
        self.channels = channels_for(cluster, ROLE_CLIENT, client_id, signer)
        self.links = [Link(self.channels, r.id, r.host, r.port, self._on_frames, self.problems,
                           queue=SendQueue(f"replica {r.id}", max_bytes=64 * 1024 * 1024, max_frames=65536),
                           on_down=self._on_link_down, on_refused=self._on_refused)
                      for r in cluster.replicas]
        self._waiting: dict[int, tuple[trio.Event, bytes]] = {}      # timestamp -> (answered, frame)
        self._ts = time.time_ns() // 1000
        self._slots = trio.Semaphore(MAX_IN_FLIGHT)
        self._reading: dict[int, tuple[trio.Event, bytes]] = {}      # read nonce -> (decided, frame)
        self._read_slots = trio.Semaphore(MAX_READS_IN_FLIGHT)
        self._asked: dict[tuple, _Asked] = {}     # (kind, replica, ...) -> a question to one replica (_ask)
        self._nonce = 0                           # of the questions asked by nonce

    async def run(self) -> None:
        """The connection tasks; start it in a nursery and cancel it to close the session."""
        async with trio.open_nursery() as nursery:
            for link in self.links:
                nursery.start_soon(link.run)

    def _reachable(self, replica: int) -> bool:
        return self.links[replica].connected

    def refused_by_all(self) -> bool:
        """Every replica's host refused our last ``REFUSALS_TO_FAIL`` dials: nothing runs there."""
        return all(not link.connected and link.refusals >= REFUSALS_TO_FAIL for link in self.links)

    def _on_refused(self, replica: int) -> None:
        """Wake every waiting request once no replica is left to wait for (``submit`` decides)."""
        if self.refused_by_all():
            for done, _ in self._waiting.values():
                done.set()

    # ------------------------------------------------------------------ input
    def _on_frames(self, conn: Connection, bodies: list[bytes]) -> bool:
        if conn.role != ROLE_REPLICA:
            return False
        src = conn.ident
        for body in bodies:
            try:
                msg = decode(body)
            except DecodeError as e:
                self.problems.note(WireRule.MALFORMED, f"from replica {src}: {e}")
                return False
            t = type(msg)
            if t is Reply:
                p = self.core.on_reply(src, msg)
                if p is not None:
                    self._waiting[msg.timestamp][0].set()
            elif t is Redirect:
                target = self.core.on_redirect(src, msg, self._reachable)
                if target is not None:
                    self.links[target].send(self._waiting[msg.timestamp][1])
            elif t is ReadReply:
                rp = self.core.on_read_reply(src, msg)
                if rp is not None:
                    self._reading[msg.nonce][0].set()
            elif t is ReadRedirect:
                target = self.core.on_read_redirect(src, msg, self._reachable)
                if target is not None:
                    self.links[target].send(self._reading[msg.nonce][1])
            elif t is ReceiptResponse:
                self._answer(("block", src, msg.height), msg.block)
            elif t is Attestation:
                if msg.replica == src:
                    self._answer(("attest", src, msg.height), msg)
            elif t is ProofResponse:
                if msg.replica == src:
                    self._answer(("proof", src, msg.nonce), msg)
            elif t is BlocksResponse:                 # (an answer from another height misses)
                self._answer(("blocks", src, msg.nonce, msg.from_height), msg)
            elif t is HistoryResponse or t is ScanResponse:
                if msg.replica == src:
                    self._answer(("query", src, msg.nonce), msg)
            else:
                self.problems.note(WireRule.UNEXPECTED_FROM_REPLICA, f"{msg.NAME} from replica {src}")
        return True

    def _on_link_down(self, replica: int) -> None:
        """paxos: the believed leader's connection broke; re-send what waits on it to another replica."""
        target = self.core.on_link_down(replica, self._reachable)
        if target is None:
            return
        self.links[replica].queue.clear()
        for p in self.core.unanswered():
            self.links[target].send(self._waiting[p.request.timestamp][1])

    # ------------------------------------------------------------------ requests
    def next_timestamp(self) -> int:
        # +1 per request, never the clock again. The time-based start keeps a restarted client
        # above every timestamp its predecessor used (it issued far fewer than one per
        # microsecond). The ledger remembers the client's last 4096 executed requests exactly
        # (ledger.chain.ClientState), well above MAX_IN_FLIGHT.
        self._ts += 1
        return self._ts

    def _transmit(self, p: Pending) -> None:
        fr = self._waiting[p.request.timestamp][1]
        target = self.core.transmit(p, self._reachable)
        if target is EVERY_REPLICA:
            for link in self.links:
                link.send(fr)
        else:
            self.links[target].send(fr)

    def sign(self, op: bytes) -> Request:
        """A new request of this client: the next timestamp, signed."""
        return Request(self.id, self.next_timestamp(), op).signed(self.signer)

    async def submit(self, op: bytes, timeout: float | None = None) -> Outcome:
        """Sign and send one operation; returns once it is committed, retransmitting as needed."""
        return await self.submit_request(self.sign(op), timeout)

    async def submit_request(self, req: Request, timeout: float | None = None) -> Outcome:
        """Send one signed request of this client (a new one, or one sent before: the ledger
        executes a request once and answers a copy with its cached reply)."""
        if req.client != self.id:
            raise ValueError(f"request of client {req.client} given to client {self.id}'s session")
        async with self._slots:
            ts = req.timestamp
            if ts in self._waiting:
                raise ValueError(f"request {self.id}-{ts} is already in flight on this client")
            p = self.core.add(req)
            fr = frame(p.encoded)
            self._waiting[ts] = (trio.Event(), fr)
            answered = False
            sent = False
            try:
                with trio.fail_after(timeout) if timeout is not None else nullcontext():
                    while True:
                        if self.refused_by_all():
                            raise Unavailable(self.describe_unavailable(timeout), sent)
                        sent = sent or any(link.connected for link in self.links)
                        self._transmit(p)
                        if await self._wait_answer(p, ts, fr, self.core.retransmit_after(p)):
                            answered = True
                            return p.outcome
            except trio.TooSlowError:
                why = self.describe_unavailable(timeout)
                if p.busy:
                    why = (f"the replicas answered BUSY {p.busy} times (they hold as many requests of this "
                           f"client, or in all, as they allow); slow down or retry later. {why}")
                raise Unavailable(why, sent) from None
            finally:
                self.core.remove(ts)
                del self._waiting[ts]
                if not answered:
                    for link in self.links:
                        link.queue.discard(fr)

    async def _wait_answer(self, p: Pending, ts: int, fr: bytes, wait: float) -> bool:
        """Until ``p`` is answered (True), ``wait`` seconds pass (False, retransmit), or every
        replica refuses connections (False; ``submit`` then fails at once)."""
        deadline = trio.current_time() + wait
        while True:
            done = self._waiting[ts][0]
            with trio.move_on_at(deadline):
                await done.wait()
            if p.outcome is not None:
                return True
            if not done.is_set() or self.refused_by_all():
                return False
            self._waiting[ts] = (trio.Event(), fr)      # woken by _on_refused, but a link came back

    async def read(self, op: bytes, timeout: float) -> ReadPending:
        """A read not ordered (``ledger.clientcore``): sent to every replica (pbft) or the leader
        (paxos), never retransmitted; returns once decided or after ``timeout`` seconds, with
        ``.result`` None when it fell short (the caller orders it then)."""
        async with self._read_slots:
            rp = self.core.add_read(op)
            done = trio.Event()
            fr = frame(rp.message(self.id).encode())
            self._reading[rp.nonce] = (done, fr)
            try:
                target = self.core.read_transmit(rp, self._reachable)
                for link in (self.links if target is EVERY_REPLICA else [self.links[target]]):
                    link.send(fr)
                with trio.move_on_after(timeout):
                    await done.wait()
                return rp
            finally:
                self.core.remove_read(rp.nonce)
                del self._reading[rp.nonce]

    def describe_unavailable(self, timeout: float | None) -> str:
        up = [link.replica for link in self.links if link.connected]
        need = self.core.need
        if not up:
            return no_replica_reachable(self.cluster, [link.last_error or "not connected" for link in self.links])
        return (f"not committed within {timeout:g} s with {len(up)} of {len(self.links)} replicas reachable "
                f"(replicas {', '.join(map(str, up))}); a commit needs {self.cluster.quorum} working replicas "
                f"and {need} matching replies; check 'bftledger status {self.cluster.directory}'")

    def _answer(self, key: tuple, answer: object) -> None:
        """File a replica's answer for the question waiting under ``key`` (the first one only)."""
        w = self._asked.get(key)
        if w is not None and not w.answered.is_set():
            w.answer = answer
            w.answered.set()

    def _next_nonce(self) -> int:
        self._nonce += 1
        return self._nonce

    async def _ask(self, key: tuple, request: object, timeout: float, *, share: bool = False,
                   until_refused: bool = False):
        """Send ``request`` to replica ``key[1]`` and return the answer ``_on_frames`` files under
        ``key`` (unverified; the sender is the link's), or None after ``timeout`` seconds.
        ``share``: a caller asking what is being asked already waits for that answer instead of
        asking again. ``until_refused``: give up at once when every replica refuses connections
        (nothing runs there: do not wait it out)."""
        w = self._asked.get(key) if share else None
        try:
            if w is None:
                w = self._asked[key] = _Asked()
                self.links[key[1]].send(frame(request.encode()))
            with trio.move_on_after(timeout):
                if not until_refused:
                    await w.answered.wait()
                while not w.answered.is_set() and not self.refused_by_all():
                    with trio.move_on_after(0.1):
                        await w.answered.wait()
            return w.answer
        finally:
            if self._asked.get(key) is w:
                del self._asked[key]

    async def fetch_block(self, replica: int, height: int, index: int, timeout: float) -> bytes | None:
        """The encoded block at ``height`` as ``replica`` serves it (unverified), or None."""
        return await self._ask(("block", replica, height), ReceiptRequest(height, index), timeout, share=True)

    async def fetch_attestation(self, replica: int, height: int, timeout: float) -> Attestation | None:
        """``replica``'s signed hash of block ``height`` (unverified; the sender is the link's), or None."""
        return await self._ask(("attest", replica, height), AttestRequest(height), timeout, share=True)

    async def fetch_proof(self, replica: int, key: str, height: int, timeout: float) -> ProofResponse | None:
        """``replica``'s answer to a verified read of ``key`` at ``height`` (0: its current
        height), unverified (``ledger.readproof`` checks it), or None."""
        nonce = self._next_nonce()
        return await self._ask(("proof", replica, nonce), ProofRequest(nonce, height, key.encode()), timeout,
                               until_refused=True)

    async def ask(self, replica: int, make, timeout: float):
        """Send ``make(nonce)`` (a history or scan request) to ``replica`` and return its answer
        with that nonce (unverified; the sender is the link's), or None after ``timeout``."""
        nonce = self._next_nonce()
        return await self._ask(("query", replica, nonce), make(nonce), timeout)

    async def fetch_blocks(self, replica: int, from_height: int, max_blocks: int,
                           timeout: float) -> BlocksResponse | None:
        """``replica``'s blocks from ``from_height`` (at most ``max_blocks``) and its height, all
        unverified (``ledger.stream`` checks them), or None without an answer in time."""
        nonce = self._next_nonce()
        return await self._ask(("blocks", replica, nonce, from_height), BlocksRequest(nonce, from_height, max_blocks),
                               timeout)

    async def wait_connected(self, count: int, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while sum(link.connected for link in self.links) < count:
                await trio.sleep(0.02)
            return True
        return False


def no_replica_reachable(cluster: Cluster, errors: list[str]) -> str:
    """The one message for a cluster none of whose replicas could be reached (``errors[i]``:
    why not replica i), shared by ``bftledger status`` and a failed request so that both
    say the same thing."""
    by_error: dict[str, list[str]] = {}
    for err, r in zip(errors, cluster.replicas):
        by_error.setdefault(err, []).append(f"{r.host}:{r.port}")
    listed = "; ".join(f"{err} at {', '.join(addrs)}" for err, addrs in sorted(by_error.items()))
    return (f"no replica of {cluster.directory} is reachable ({listed}); "
            f"start the cluster with 'bftledger up {cluster.directory}'")


async def query_status(cluster: Cluster, client_id: int, signer: Signer, timeout: float = 2.0,
                       channels: Channels | None = None) -> list[dict]:
    """Each replica's self-report, or {"id": i, "reachable": false, "error": ...}; asks all at once."""
    channels = channels or channels_for(cluster, ROLE_CLIENT, client_id, signer)
    results: list[dict] = [{"id": r.id, "reachable": False, "error": "no answer"} for r in cluster.replicas]

    async def one(r) -> None:
        try:
            with trio.fail_after(timeout):
                stream = await trio.open_tcp_stream(r.host, r.port)
                try:
                    _, _, stream, leftover = await channels.dial(stream, (ROLE_REPLICA, r.id))
                    decoder = FrameDecoder(MAX_FRAME)
                    nonce = int.from_bytes(os.urandom(8), "big")
                    await stream.send_all(frame(StatusRequest(nonce).encode()))
                    bodies = decoder.feed(leftover)
                    while True:
                        for body in bodies:
                            m = decode(body)
                            if type(m) is StatusResponse and m.nonce == nonce:
                                info = msgpack.unpackb(m.info, raw=False)
                                if not isinstance(info, dict):
                                    raise DecodeError("status is not a map")
                                info["id"] = r.id
                                info["reachable"] = True
                                results[r.id] = info
                                return
                        data = await stream.receive_some(1 << 16)
                        if not data:
                            raise trio.BrokenResourceError("connection closed")
                        bodies = decoder.feed(data)
                finally:
                    await trio.aclose_forcefully(stream)
        except trio.TooSlowError:
            results[r.id] = {"id": r.id, "reachable": False, "error": "timed out"}
        except HandshakeError as e:
            results[r.id] = {"id": r.id, "reachable": False, "error": str(e)}
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, DecodeError, ValueError) as e:
            results[r.id] = {"id": r.id, "reachable": False, "error": describe_error(e)}

    async with trio.open_nursery() as nursery:
        for r in cluster.replicas:
            nursery.start_soon(one, r)
    return results


__all__ = ["ClientSession", "Outcome", "Unavailable", "query_status", "no_replica_reachable", "CONNECT_TIMEOUT",
           "HANDSHAKE_TIMEOUT"]
