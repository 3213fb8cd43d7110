"""A deterministic discrete-event simulator that drives the real protocol cores.

Virtual time, one ``random.Random(seed)`` for everything, a network model with delay,
loss, duplication, reordering and partitions, replicas that crash and restart from
what they persisted, clients that retransmit, and an invariant checker that looks at
every block an honest replica appends and every answer a client accepts. The same seed
replays the same run event for event.
"""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Callable

from bft.outputs import Broadcast, Send, ServeBlocks, ToClient, plan
from bft.sim.invariants import Checker
from bft.sim.trace import TraceRecorder
from bft.wire import Message, ReadRedirect, ReadReply, Redirect, Reply, Request, StateResponse
from crypto.signing import Signer
from ledger.chain import Chain
from ledger.clientcore import EVERY_REPLICA, ClientCore, Pending, ReadPending
from ledger.state import op_get, op_put


@dataclass
class NetworkModel:
    delay_min: float = 0.0005
    delay_max: float = 0.003
    drop: float = 0.0
    duplicate: float = 0.0
    # partition: list of groups; a message crosses only within a group (None = fully connected)
    groups: list[set[int]] | None = None
    # cut links between replica pairs, both directions (partial connectivity); empty = none cut
    cut: set[frozenset[int]] = field(default_factory=set)

    def connected(self, a: int, b: int) -> bool:
        if self.cut and frozenset((a, b)) in self.cut:
            return False
        if self.groups is None:
            return True
        return any(a in g and b in g for g in self.groups)


@dataclass
class ReplicaNode:
    id: int
    core: object
    blocks: list = field(default_factory=list)
    votes: list[bytes] = field(default_factory=list)
    alive: bool = True
    honest: bool = True
    send_delay: float = 0.0
    addr: int = -1              # network address: the id itself, or n + k for the k-th twin


@dataclass
class ReadOutcome:
    """What became of a read not ordered: accepted ("fast"), ordered instead ("ordered", with the
    timestamp of the ordered read), or still "waiting"; ``result`` once known."""
    key: str
    started: float
    kind: str = "waiting"
    result: bytes | None = None
    since: int = 0
    ts: int | None = None
    done: float | None = None


@dataclass
class ClientNode:
    """A simulated client: the real client core (``ledger.clientcore``) and its timestamps."""
    id: int
    signer: Signer
    core: ClientCore
    next_ts: int = 1

    @property
    def outstanding(self) -> dict[int, Pending]:
        """Timestamp -> request not yet answered."""
        return self.core.pending

    @property
    def leader(self) -> int:
        return self.core.leader


CLIENT = 1 << 20            # addresses >= CLIENT are clients in the event queue
# Addresses below CLIENT are replica nodes: replica i is address i; with Twins, the k-th
# twin (a second node with the same id and key, running the same unmodified code) is
# address n + k. Messages to a replica id go to every node with that id that the
# network connects; partitions and cut links name addresses, so a twin can sit in a
# different partition from its sibling.


class Simulation:
    def __init__(self, *, seed: int, n: int, f: int, mode: str, make_core: Callable[[int, Chain, list[bytes], float], object],
                 client_signers: list[Signer], net: NetworkModel | None = None,
                 tick_interval: float = 0.01, client_timeout: float = 0.5, trace: bool = False,
                 twins: list[int] | tuple[int, ...] = (), read_timeout: float = 0.2) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.n, self.f, self.mode = n, f, mode
        self.make_core = make_core
        self.net = net or NetworkModel()
        self.now = 0.0
        self.tick_interval = tick_interval
        self.client_timeout = client_timeout
        self.read_timeout = read_timeout        # a read not ordered that is not decided by then is ordered
        self.read_outcomes: dict[tuple[int, int], ReadOutcome] = {}     # (client, nonce) -> outcome
        self._fallbacks: dict[tuple[int, int], tuple[int, int]] = {}    # (client, ts) -> (client, nonce)
        self._events: list = []
        self._counter = 0
        self.replicas = [ReplicaNode(i, make_core(i, Chain(), [], 0.0), addr=i) for i in range(n)]
        # Twins: twin k of replica t shares t's id and key; both count as faulty for the checker
        self.twins = [ReplicaNode(t, make_core(t, Chain(), [], 0.0), honest=False, addr=n + k)
                      for k, t in enumerate(twins)]
        for t in twins:
            self.replicas[t].honest = False
        self.nodes = self.replicas + self.twins          # indexed by address
        self._by_id = {i: [r for r in self.nodes if r.id == i] for i in range(n)}
        self.client_targets: list[int] | None = None     # pbft clients send only here (Twins rounds)
        self.drop_if: Callable[[int, int, Message], bool] | None = None  # test hook: (src, dst, msg) -> drop
        self.clients = [ClientNode(i, s, ClientCore(mode, f, n, i, retransmit_first=client_timeout,
                                                    retransmit_max=client_timeout))
                        for i, s in enumerate(client_signers)]
        self.checker = Checker(self)
        self.sent = {}                      # message name -> count (pattern tests)
        self.trace: list[str] | None = [] if trace else None
        self.recorder: TraceRecorder | None = None          # set it to record an HTML trace (bft.sim.trace)
        self.delivered = 0
        for r in self.nodes:
            self._schedule(self.rng.uniform(0, tick_interval), ("tick", r.addr))

    # ------------------------------------------------------------------ events
    def _schedule(self, at: float, ev: tuple) -> None:
        self._counter += 1
        heapq.heappush(self._events, (at, self._counter, ev))

    def at(self, t: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` at virtual time t (faults, partitions, submissions)."""
        self._schedule(t, ("call", fn))

    def run_until(self, t_end: float, stop: Callable[[], bool] | None = None) -> None:
        while self._events and self._events[0][0] <= t_end:
            t, _, ev = heapq.heappop(self._events)
            self.now = t
            kind = ev[0]
            if kind == "msg":
                self._deliver(ev[1], ev[2], ev[3], ev[4])
            elif kind == "tick":
                r = self.nodes[ev[1]]
                if r.alive:
                    r.core.tick(t)
                    self._carry_out(r)
                self._schedule(t + self.tick_interval, ev)
            elif kind == "call":
                ev[1]()
            elif kind == "client-timer":
                self._client_timer(ev[1], ev[2])
            elif kind == "read-timer":
                rp = self.clients[ev[1]].core.reads.get(ev[2])
                if rp is not None:
                    self._read_decided(self.clients[ev[1]], rp)
            if self.checker.violation:
                return
            if stop is not None and stop():
                return
        self.now = max(self.now, t_end) if not self._events or self._events[0][0] > t_end else self.now

    # ------------------------------------------------------------------ network
    def _send(self, src: int, dst: int, msg: Message, extra_delay: float = 0.0) -> None:
        self.sent[msg.NAME] = self.sent.get(msg.NAME, 0) + 1
        if not self.net.connected(src, dst):
            return
        if self.drop_if is not None and self.drop_if(src, dst, msg):
            return
        if self.net.drop and self.rng.random() < self.net.drop:
            return
        copies = 2 if self.net.duplicate and self.rng.random() < self.net.duplicate else 1
        for _ in range(copies):
            d = self.rng.uniform(self.net.delay_min, self.net.delay_max) + extra_delay
            self._schedule(self.now + d, ("msg", src, dst, msg, self.now))

    def _deliver(self, src: int, dst: int, msg: Message, sent: float) -> None:
        self.delivered += 1
        if self.trace is not None:
            self.trace.append(f"{self.now:.4f} {_name(src)} -> {_name(dst)} {msg.NAME}")
        if dst >= CLIENT:
            if self.recorder is not None:
                self.recorder.message(sent, self.now, _name(src), _name(dst), msg, None)
            self._client_receive(self.clients[dst - CLIENT], src, msg)
            return
        r = self.nodes[dst]
        if not r.alive:
            return
        before = self._observe(r) if self.recorder is not None else None
        if src >= CLIENT:
            r.core.step(src - CLIENT, msg, True)
        else:
            r.core.step(self.nodes[src].id, msg)        # the authenticated sender is the replica id
        if before is not None:
            self._record(r, src, msg, sent, before)
        self._carry_out(r)

    # ------------------------------------------------------------------ traces
    @staticmethod
    def _observe(r: ReplicaNode) -> tuple[dict, int]:
        return dict(r.core.drops.by_rule), r.core.view

    def _record(self, r: ReplicaNode, src: int, msg: Message, sent: float, before: tuple[dict, int]) -> None:
        drops, view = before
        now = r.core.drops.by_rule
        rule = next((k.label for k, v in now.items() if v > drops.get(k, 0)), None)
        self.recorder.message(sent, self.now, _name(src), _name(r.addr), msg, rule)
        if r.core.view != view:
            self.recorder.view(self.now, _name(r.addr), "view" if self.mode == "pbft" else "ballot", r.core.view)

    def _carry_out(self, r: ReplicaNode) -> None:
        steps, rest = plan(r.core.ready())            # the runtime's order (bft.outputs.plan)
        for kind, items in steps:
            if kind == "votes":
                r.votes.extend(items)
            elif kind == "compact":
                r.votes = list(items)
            else:
                for block in items:
                    r.blocks.append(block)
                    if r.honest:
                        self.checker.on_block(r, block)
        for a in rest:
            t = type(a)
            if t is Broadcast:
                for dst in self.nodes:
                    if dst.id != r.id:
                        self._send(r.addr, dst.addr, a.msg, r.send_delay)
            elif t is Send:
                for dst in self._by_id.get(a.to, ()):
                    self._send(r.addr, dst.addr, a.msg, r.send_delay)
            elif t is ToClient:
                self._send(r.addr, CLIENT + a.client, a.msg, r.send_delay)
            elif t is ServeBlocks:
                blocks = [b.encode() for b in r.blocks[a.from_height - 1: a.to_height]]
                for dst in self._by_id.get(a.to, ()):
                    self._send(r.addr, dst.addr, StateResponse(r.id, blocks, []), r.send_delay)

    # ------------------------------------------------------------------ faults
    def crash(self, i: int) -> None:
        """Stop node i (an address: replica i, or n + k for the k-th twin)."""
        self.nodes[i].alive = False
        if self.recorder is not None:
            self.recorder.crash(self.now, _name(i))

    def restart(self, i: int) -> None:
        """A new core from what node i persisted: its blocks (replayed) and its vote log."""
        r = self.nodes[i]
        chain = Chain()
        for b in r.blocks:
            chain.replay(b)
        r.core = self.make_core(r.id, chain, list(r.votes), self.now)
        r.alive = True
        if self.recorder is not None:
            self.recorder.restart(self.now, _name(i))

    def partition(self, groups: list[set[int]] | None) -> None:
        self.net.groups = groups
        if self.recorder is not None:
            self.recorder.partition(self.now, [{_name(a) for a in g} for g in groups] if groups else None)

    # ------------------------------------------------------------------ clients
    def submit(self, client: int, key: str, value: bytes) -> int:
        return self.submit_op(client, op_put(key, value))

    def submit_op(self, client: int, op: bytes) -> int:
        """Submit any operation (``ledger.state.op_*``); returns its timestamp."""
        c = self.clients[client]
        ts = c.next_ts
        c.next_ts += 1
        req = Request(client, ts, op).signed(c.signer)
        p = c.core.add(req, self.now)
        self.checker.on_submit(client, ts, p.encoded, self.now)
        self._client_send(c, p)
        return ts

    def _client_to(self, client: int, target: int | object, msg: Message) -> None:
        """Client ``client`` sends ``msg`` where its core said: one replica, or EVERY_REPLICA."""
        if target is EVERY_REPLICA:
            for dst in (self.client_targets if self.client_targets is not None else range(len(self.nodes))):
                self._send(CLIENT + client, dst, msg)
        else:
            self._send(CLIENT + client, target, msg)

    def _client_send(self, c: ClientNode, p: Pending) -> None:
        """A (re)transmission where the client core says, then its retransmission timer."""
        self._client_to(c.id, c.core.transmit(p), p.request)
        self._schedule(self.now + c.core.retransmit_after(p), ("client-timer", c.id, p.request.timestamp))

    def _client_timer(self, client: int, ts: int) -> None:
        c = self.clients[client]
        p = c.core.pending.get(ts)
        if p is not None:
            self._client_send(c, p)

    def _client_receive(self, c: ClientNode, src: int, msg: Message) -> None:
        src = self.nodes[src].id                    # a reply authenticates its replica id (twins share one)
        if type(msg) is ReadReply:
            rp = c.core.on_read_reply(src, msg)
            if rp is not None:
                self._read_decided(c, rp)
            return
        if type(msg) is ReadRedirect:
            target = c.core.on_read_redirect(src, msg)
            if target is not None:
                self._send(CLIENT + c.id, target, c.core.reads[msg.nonce].message(c.id))
            return
        if type(msg) is Redirect:
            target = c.core.on_redirect(src, msg)
            if target is not None:
                self._send(CLIENT + c.id, target, c.core.pending[msg.timestamp].request)
            return
        if type(msg) is not Reply:
            return
        p = c.core.on_reply(src, msg)
        if p is not None:
            c.core.remove(msg.timestamp)
            self.checker.on_ack(c.id, msg.timestamp, p.encoded, msg.height, msg.index, msg.result,
                                self.now - p.started)
            read = self._fallbacks.pop((c.id, msg.timestamp), None)
            if read is not None:
                self.read_outcomes[read].result = msg.result
                self.read_outcomes[read].done = self.now

    # ------------------------------------------------------------------ reads not ordered
    def read(self, client: int, key: str) -> int:
        """Client ``client`` reads ``key`` without ordering (``ledger.clientcore``), as the real
        client does: to every replica (pbft) or the leader (paxos); the checker checks what it
        accepts, and one not decided within ``read_timeout`` (or fallen short) is ordered with
        ``submit_op``. Returns its nonce; ``read_outcomes[(client, nonce)]`` tells the rest."""
        c = self.clients[client]
        rp = c.core.add_read(op_get(key), self.now)
        self.read_outcomes[(client, rp.nonce)] = ReadOutcome(key, self.now)
        self._client_to(client, c.core.read_transmit(rp), rp.message(client))
        self._schedule(self.now + self.read_timeout, ("read-timer", client, rp.nonce))
        return rp.nonce

    def _read_decided(self, c: ClientNode, rp: ReadPending) -> None:
        c.core.remove_read(rp.nonce)
        outcome = self.read_outcomes[(c.id, rp.nonce)]
        if rp.result is not None:
            outcome.kind, outcome.result, outcome.since, outcome.done = "fast", rp.result, rp.since, self.now
            self.checker.on_read(c.id, outcome.key, rp.floor, rp.since, rp.result)
        else:
            outcome.kind = "ordered"
            outcome.ts = self.submit_op(c.id, op_get(outcome.key))
            self._fallbacks[(c.id, outcome.ts)] = (c.id, rp.nonce)

    def client_sends(self, client: int, replica: int, msg: Message) -> None:
        """A message from client ``client``'s authenticated connection, as it is (labs and tests
        use it for a hostile client: bad signatures, another client's id, protocol messages)."""
        self._send(CLIENT + client, replica, msg)

    def all_acked(self) -> bool:
        return all(not c.outstanding and not c.core.reads for c in self.clients)


def _name(addr: int) -> str:
    return f"client{addr - CLIENT}" if addr >= CLIENT else f"r{addr}"
