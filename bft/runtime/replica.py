"""The replica process: a protocol core driven by real time, TCP and disk.

One trio task per connection reads bursts of frames and steps the core with each
message; a driver task then asks the core for its output (``ready()``) and carries it
out in order, with every durable action (vote-log records, compaction, blocks) written
and fsync'd once per burst before any message of that burst is queued for sending.
A ticker tells the core the time every ``TICK`` seconds (monotonic clock).

Besides the protocol messages the replica answers queries itself: ``StatusRequest``
(``bftledger status``), ``ReceiptRequest`` (a block from the store, self-certifying,
so any replica may serve it), and history and scan queries (``bft.runtime.queries``,
from the history index kept beside the store, ``ledger.history``, and the state).

Layout on disk: ``DIR/data/replica-I/`` holds the block store's segments,
``votes.log`` and ``history.idx``. SIGTERM or SIGINT stops the replica cleanly.
"""
from __future__ import annotations

import logging
import signal

import trio

from bft.outputs import Broadcast, Send, ServeBlocks, Step, ToClient, plan
from bft.runtime import factory
from bft.runtime.admission import PER_CLIENT, Admission, Heard, Intake, RateLimit, unwrap_heard
from bft.runtime.queries import QueryServer
from bft.runtime.serving import BlockServer, SlowSender
from bft.runtime.status import replica_status, status_bytes
from bft.runtime.tracelog import TraceLog
from bft.wire import (MAX_FRAME, AttestRequest, Auth, DecodeError, FrameDecoder, Hello, ProofRequest, ReceiptRequest,
                      Request, StatusRequest, StatusResponse, decode, describe, frame)
from ledger.cluster import Cluster
from ledger.history import HistoryIndex
from ledger.net.channel import channels_for
from ledger.net.transport import (CLIENT_MAX_FRAME, HANDSHAKE_TIMEOUT, ROLE_CLIENT, ROLE_REPLICA, Connection,
                                  HandshakeError, Link, LocalFault, Problems, SendQueue, fail_fast, peer_name)
from ledger.rules import WireRule
from ledger.records import LockHeld
from ledger.store import BlockStore, StoreError
from ledger.votelog import VoteLog
from ledger.wire import BlocksRequest, HistoryRequest, ScanRequest

log = logging.getLogger("bft.runtime.replica")

TICK = 0.01
# Receipt and attestation queries cost a replica a disk read and an encoding (a receipt), or a
# signature (an attestation not in the cache); a cached attestation costs nothing to speak of.
# Each client (or peer) has a bucket of QUERY_BURST tokens refilled at QUERIES_PER_S: a receipt
# costs 1 token per started 64 KiB of its block, an attestation 1 token when it is signed anew.
# An honest client spends about 2 tokens per block it writes into (issue 11: at 200/s flat,
# the receipts of 8 busy writers were refused and their puts waited for the fetch timeout).
QUERIES_PER_S = 2000.0
QUERY_BURST = 4000.0
# Tokens per second a replica peer, or a client, may make this replica spend (a token per message
# and per KiB, Intake.USELESS_COST more for each one dropped or repeated; bft.runtime.admission).
# An honest client writing 1,000 small requests a second spends about 1,200; a replica peer at
# full speed a few thousand. A client flooding the largest operations gets about 3 MB/s read.
PEER_INTAKE = (20_000.0, 40_000.0)
CLIENT_INTAKE = (4_000.0, 8_000.0)
CLIENT_PAUSE_MAX = 0.25
VOTELOG_NAME = "votes.log"


class Replica:
    def __init__(self, cluster: Cluster, replica_id: int, *, byzantine: str | None = None,
                 tuning: dict | None = None, dormant: bool = False, group: list[int] | None = None,
                 trace_log: str | None = None) -> None:
        if not 0 <= replica_id < cluster.n:
            raise ValueError(f"replica {replica_id} is not in this cluster (ids are 0..{cluster.n - 1})")
        self.cluster = cluster
        self.id = replica_id
        self.byzantine = byzantine
        self.dormant = dormant                  # honest until SIGUSR1 (--dormant)
        self.group = group                      # --byzantine collude: the team (bft.collusion)
        self.trace_path = trace_log
        self.trace: TraceLog | None = None      # --trace-log: every message in and out (bft.runtime.tracelog)
        self.tuning = dict(tuning or {})
        self.signer = cluster.load_replica_key(replica_id)
        if self.signer.public_key != cluster.replicas[replica_id].public_key:
            raise ValueError(f"{cluster.key_path('replica', replica_id)} does not match replica "
                             f"{replica_id}'s public key in cluster.toml")
        self.info = cluster.replicas[replica_id]
        self.problems = Problems(log)
        self.store: BlockStore | None = None
        self.votelog: VoteLog | None = None
        self.history: HistoryIndex | None = None      # beside the block store (ledger.history)
        self.queries_server: QueryServer | None = None   # history and scans (its own task)
        self.core = None
        self.channels = channels_for(cluster, ROLE_REPLICA, replica_id, self.signer)
        self.admission = Admission()
        self.queries = RateLimit(QUERIES_PER_S, QUERY_BURST)
        self.intake = {ROLE_REPLICA: Intake(*PEER_INTAKE), ROLE_CLIENT: Intake(*CLIENT_INTAKE)}
        self.blacklist_dropped = 0
        self.intake_dropped = 0                   # client requests dropped unread over the intake
        self.links: dict[int, Link] = {}
        self.clients: dict[int, list[Connection]] = {}
        self.replica_conns: dict[int, Connection] = {}
        self.replica_links_replaced = 0
        self.client_conns_replaced = 0
        self.internal_errors = 0
        self._dirty: trio.Event | None = None
        self.slow: SlowSender | None = None     # the 'slow' strategy: every send held back
        self.client_frames_dropped = 0
        self.msgs_in = 0
        self.started = 0.0

    # ------------------------------------------------------------------ lifecycle
    def open(self, now: float) -> None:
        d = self.cluster.data_dir(self.id)
        try:
            self.store = BlockStore.open(d)
        except LockHeld as e:
            # the usual cause: this replica already runs ('bftledger up' twice on one directory)
            who = "another process" if e.pid is None else f"another process (PID {e.pid})"
            raise StoreError(f"replica {self.id} is already running: {who} holds its lock {e.path}; "
                             "stop that process first") from None
        self.server = BlockServer(self.id, self.signer, self.store, self.problems, self._lies, self.tuning)
        try:
            self.history = HistoryIndex.open(d, self.store)
            self.queries_server = QueryServer(self.id, self.store, self.store.chain, self.history, self.problems,
                                              self._lies, self._charge_query)
            self.votelog = VoteLog.open(d / VOTELOG_NAME)
            self.core = factory.make_core(self.cluster, self.id, self.signer, self.store.chain,
                                          self.votelog.records(), now, self.byzantine, tuning=self.tuning,
                                          group=self.group)
        except (ValueError, TypeError, IndexError) as e:
            self.close()
            raise StoreError(f"replica {self.id} cannot start from {d}: {e} (its vote log or tuning in "
                             "cluster.toml is not usable; it was not changed)") from None
        except BaseException:
            self.close()
            raise
        self._trusted = 0
        self._trust_registered()
        if self.byzantine and self.dormant:
            self.core.active = False
        if self.byzantine == "slow":
            self.slow = SlowSender(factory.slow_delay(self.core))
        if self.trace_path:
            self.trace = TraceLog(self.trace_path, f"r{self.id}")
            self._trace_view()

    def _trust_registered(self) -> None:
        """Clients the ledger registered since the last look (ledger.clients) may connect."""
        registry = self.store.chain.registry
        if len(registry) == self._trusted:
            return
        self.channels.keys.use_clients(self.core.keys.clients)
        for cert in registry.certs[self._trusted:]:
            self.channels.trust_client(cert)
        self._trusted = len(registry)

    def close(self) -> None:
        if self.trace is not None:
            self.trace.close()
        if self.votelog is not None:
            self.votelog.close()
        if self.history is not None:
            self.history.close()
        if self.store is not None:
            self.store.close()

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled (or a signal arrives); the store must be open."""
        self._dirty = trio.Event()
        self.started = trio.current_time()
        listeners = await trio.open_tcp_listeners(self.info.port, host=self.info.host)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._signals, nursery.cancel_scope)
            nursery.start_soon(self._accept_loop, listeners)
            for r in self.cluster.replicas:
                if r.id != self.id:
                    link = Link(self.channels, r.id, r.host, r.port, self._on_frames, self.problems)
                    self.links[r.id] = link
                    nursery.start_soon(link.run)
            nursery.start_soon(self._ticker)
            nursery.start_soon(self._driver)
            nursery.start_soon(self.queries_server.run)
            if self.slow is not None:
                nursery.start_soon(self.slow.run)
            st = self.core.status()
            log.info("replica %d (%s, n=%d, f=%d%s) listening on %s:%d; height %d, view %s; links: %s",
                     self.id, self.cluster.mode, self.cluster.n, self.cluster.f,
                     f", byzantine {self.byzantine}" if self.byzantine else "",
                     self.info.host, self.info.port, st.get("height", 0), st.get("view"), self.channels.name)
            if not self.channels.secure:
                log.warning("replica %d: links are INSECURE plaintext (init --insecure-plaintext): anyone on the "
                            "path can read, drop or inject frames; use it for teaching and benchmarks only", self.id)
            task_status.started()

    async def _signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1) as sigs:
            async for s in sigs:
                if s == signal.SIGUSR1:
                    if self.byzantine and self.dormant:
                        self.dormant = False
                        self.core.active = True
                        log.warning("replica %d: SIGUSR1 received, turning Byzantine: %s", self.id, self.byzantine)
                    continue
                log.info("replica %d: %s received, stopping", self.id, signal.Signals(s).name)
                scope.cancel()
                return

    # ------------------------------------------------------------------ incoming connections
    async def _accept_loop(self, listeners) -> None:
        async with trio.open_nursery() as nursery:
            for ln in listeners:
                nursery.start_soon(self._accept_one_listener, ln, nursery)

    async def _accept_one_listener(self, listener, nursery) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as e:   # EMFILE and friends: back off instead of spinning
                    self.problems.note(LocalFault.ACCEPT_FAILED, str(e))
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(self._incoming, stream)

    async def _incoming(self, stream) -> None:
        """Authenticate within the pre-authentication budget, then take the peer's slot."""
        source = _source_of(stream)
        fail_fast(stream)
        pending = self.admission.begin(source, trio.current_time() + HANDSHAKE_TIMEOUT)
        conn = None
        admitted_client = False
        try:
            try:
                with pending.scope:
                    role, ident, stream, leftover = await self.channels.accept(Heard(stream, pending))
                    stream = unwrap_heard(stream)
            except HandshakeError as e:
                self.problems.note(e.rule, "incoming connection")
                return
            finally:
                self.admission.end(pending)
            if pending.scope.cancelled_caught:
                if trio.current_time() >= pending.scope.deadline:
                    self.problems.note(WireRule.HANDSHAKE_TIMEOUT, "incoming connection")
                return                       # evicted: counted by the admission budget
            if role == ROLE_CLIENT:
                if not self.admission.admit_client(source):
                    return
                admitted_client = True
            decoder = FrameDecoder(MAX_FRAME if role == ROLE_REPLICA else CLIENT_MAX_FRAME)
            conn = Connection(stream, role, ident, SendQueue(peer_name(role, ident)), decoder)
            self._register(conn)
            await conn.run(leftover, self._on_frames, self.problems)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:
            self.internal_errors += 1
            log.exception("replica %d: connection handler failed", self.id)
        finally:
            if admitted_client:
                self.admission.release_client(source)
            if conn is not None:
                self._unregister(conn)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

    def _register(self, conn: Connection) -> None:
        if conn.role == ROLE_CLIENT:
            conns = self.clients.setdefault(conn.ident, [])
            conns.append(conn)
            while len(conns) > PER_CLIENT:
                conns.pop(0).close()
                self.client_conns_replaced += 1
        else:
            old = self.replica_conns.get(conn.ident)
            self.replica_conns[conn.ident] = conn
            if old is not None:
                # only the holder of replica conn.ident's key authenticates as it (see admission.py)
                old.close()
                self.replica_links_replaced += 1
            link = self.links.get(conn.ident)
            if link is not None:
                link.poke()           # it is (back) up: our link to it need not wait out its backoff

    def _unregister(self, conn: Connection) -> None:
        if conn.role == ROLE_CLIENT:
            conns = self.clients.get(conn.ident)
            if conns and conn in conns:
                conns.remove(conn)
                if not conns:
                    del self.clients[conn.ident]
        elif self.replica_conns.get(conn.ident) is conn:
            del self.replica_conns[conn.ident]

    # ------------------------------------------------------------------ input
    def _on_frames(self, conn: Connection, bodies: list[bytes]) -> bool:
        core = self.core
        from_client = conn.role == ROLE_CLIENT
        sender = conn.ident
        now = trio.current_time()
        if from_client:
            until = core.requests.blacklisted_until(sender, now)
            if until is not None:
                # it sent bad signatures: nothing it sends is read until the blacklist expires
                self.blacklist_dropped += len(bodies)
                conn.pause_until = until
                return True
            if self.intake[ROLE_CLIENT].in_debt((ROLE_CLIENT, sender), now):
                # over its intake: its requests are dropped unread, its queries still answered
                kept = [b for b in bodies if not _is_request(b)]
                self.intake_dropped += len(bodies) - len(kept)
                if not kept:
                    return True
                bodies = kept
        ok = True
        useless = core.useless
        debug = log.isEnabledFor(logging.DEBUG)
        trace = self.trace
        watch = debug or trace is not None
        for body in bodies:
            try:
                msg = decode(body)
            except DecodeError as e:
                self.problems.note(WireRule.MALFORMED, f"from {conn.name}: {e}")
                ok = False
                break
            t = type(msg)
            self.msgs_in += 1
            if t is StatusRequest:
                conn.send(frame(StatusResponse(msg.nonce, self._status_bytes()).encode()))
                continue
            if t is BlocksRequest:
                if self.queries.allow((conn.role, conn.ident), trio.current_time(), self.server.stream_cost(msg)):
                    self.server.stream(conn, msg)
                else:
                    self.problems.note(WireRule.SERVE_RATE, conn.name)
                continue
            if t is ReceiptRequest or t is AttestRequest or t is ProofRequest:
                cost = self.server.query_cost(msg)
                if cost and not self.queries.allow((conn.role, conn.ident), trio.current_time(), cost):
                    self.problems.note(WireRule.SERVE_RATE, conn.name)
                elif t is ReceiptRequest:
                    self.server.receipt(conn, msg)
                elif t is AttestRequest:
                    self.server.attest(conn, msg)
                else:
                    self.server.prove(conn, msg)
                continue
            if t is HistoryRequest or t is ScanRequest:
                self.queries_server.submit(conn, msg)       # charged by _charge_query, queued
                continue
            if t is Hello or t is Auth:
                self.problems.note(WireRule.HANDSHAKE_AFTER_AUTH, conn.name)
                ok = False
                break
            if watch:
                before = dict(core.drops.by_rule)
            try:
                core.step(sender, msg, from_client)
                if watch:
                    rule = next((k.label for k, v in core.drops.by_rule.items() if v > before.get(k, 0)), None)
                    if debug:
                        log.debug("%s from %s%s", describe(msg), conn.name, f": dropped by {rule}" if rule else "")
                    if trace is not None:
                        self._trace_in(conn, msg, body, rule)
            except Exception:
                self.internal_errors += 1
                if self.internal_errors <= 5:
                    log.exception("replica %d: the core failed on a %s from %s", self.id, msg.NAME, conn.name)
        spent = core.useless - useless
        wait = self.intake[conn.role].charge((conn.role, sender), now, len(bodies),
                                             sum(map(len, bodies)) if spent else 0, spent)
        if wait:
            if from_client:
                # not read for a moment, then its queries are answered and its requests dropped
                # unread until it is out of debt (a longer pause would starve its receipts)
                core.requests.throttled(sender, now)
                wait = min(wait, CLIENT_PAUSE_MAX)
            conn.pause_until = now + wait
        self._dirty.set()
        return ok

    def _trace_view(self) -> None:
        self.trace.view("view" if self.cluster.protocol.byzantine else "ballot", self.core.view)

    def _charge_query(self, conn: Connection, tokens: int) -> bool:
        return self.queries.allow((conn.role, conn.ident), trio.current_time(), tokens)

    def _trace_in(self, conn: Connection, msg, body: bytes, rule: str | None) -> None:
        src = f"client{conn.ident}" if conn.role == ROLE_CLIENT else f"r{conn.ident}"
        self.trace.received(src, msg, body, rule)

    def _lies(self, strategy: str) -> bool:
        """This replica runs the runtime-level Byzantine ``strategy`` now (not dormant)."""
        return self.byzantine == strategy and not self.dormant

    # ------------------------------------------------------------------ the driver
    async def _ticker(self) -> None:
        core = self.core
        while True:
            await trio.sleep(TICK)
            try:
                core.tick(trio.current_time())
            except Exception:
                self.internal_errors += 1
                if self.internal_errors <= 5:
                    log.exception("replica %d: tick failed", self.id)
            self._dirty.set()

    async def _driver(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty = trio.Event()
            self.flush()
            # let the connection tasks read and step another burst before the next ready()
            await trio.lowlevel.checkpoint()

    def flush(self) -> None:
        """Ask the core for its output and carry it out: durable writes first, then sends."""
        actions = self.core.ready()
        if not actions:
            return
        steps, sends = plan(actions)
        apply_durable(steps, self.votelog, self.store)
        for kind, items in steps:
            if kind == "blocks":
                self.history.add(items)        # after the store has them (ledger.history)
        self._trust_registered()
        trace = self.trace
        if trace is not None:
            self._trace_view()
        framed: dict[int, bytes | None] = {}
        for a in sends:
            t = type(a)
            if t is Broadcast or t is Send:
                key = id(a.msg)
                if key in framed:
                    fr = framed[key]
                else:
                    fr = framed[key] = self._frame(a.msg)
                if fr is None:
                    continue
                if t is Send:
                    self._send_replica(a.to, fr)
                    if trace is not None:
                        trace.sent(f"r{a.to}", a.msg, fr)
                else:
                    for r in self.links:
                        self._send_replica(r, fr)
                    if trace is not None:
                        trace.sent_to([f"r{r}" for r in self.links], a.msg, fr)
            elif t is ToClient:
                fr = self._frame(a.msg)
                if fr is not None:
                    self._send_client(a.client, fr)
                    if trace is not None:
                        trace.sent(f"client{a.client}", a.msg, fr)
            elif t is ServeBlocks:
                fr = self.server.blocks(a)
                if fr is not None:
                    self._send_replica(a.to, fr)

    def _frame(self, msg) -> bytes | None:
        """The frame of an outgoing message, or None (counted, logged once) if it exceeds the
        frame cap. The cores bound what they send (batches by weight, view changes by
        digests), so this is a bug of ours; it must cost one message, never the process."""
        try:
            return frame(msg.encode())
        except ValueError as e:
            self.internal_errors += 1
            self.problems.note(LocalFault.OVERSIZED_OUTGOING, f"{msg.NAME}: {e}")
            return None

    def _send_replica(self, to: int, fr: bytes) -> None:
        link = self.links.get(to)
        if link is None:
            return
        if self.slow is not None and not self.dormant:
            self.slow.schedule(link, fr)
        else:
            link.send(fr)

    def _send_client(self, client: int, fr: bytes) -> None:
        conns = self.clients.get(client)
        if not conns:
            self.client_frames_dropped += 1      # the client retransmits and gets the cached reply
            return
        for c in conns:
            if self.slow is not None and not self.dormant:
                self.slow.schedule(c, fr)
            else:
                c.send(fr)

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        return replica_status(self)

    def _status_bytes(self) -> bytes:
        return status_bytes(self)


def _is_request(body: bytes) -> bool:
    """A Request frame, told from its first two bytes (fixarray, tag) without decoding it."""
    return len(body) > 1 and body[0] & 0xF0 == 0x90 and body[1] == Request.TAG


def apply_durable(steps: list[Step], votelog: VoteLog, store: BlockStore) -> None:
    """Carry out ``bft.outputs.plan``'s durable steps in order, each one fsync'd."""
    for kind, items in steps:
        if kind == "votes":
            votelog.append_many(items)
        elif kind == "blocks":
            store.append_many(items)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("appended blocks %d..%d (%d transactions)", items[0].height, items[-1].height,
                          sum(len(b.txs) for b in items))
        else:
            votelog.compact(items)


def _source_of(stream) -> str:
    """The peer's address, the unit of the pre-authentication budget."""
    try:
        return str(stream.socket.getpeername()[0])
    except (AttributeError, OSError, IndexError):
        return "?"
