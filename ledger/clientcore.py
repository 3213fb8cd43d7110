"""The client's side of the protocol, sans I/O: reply quorums, redirects, retransmission.

One implementation for every driver: the trio client session (``ledger.net.session``)
and the simulator's clients (``bft.sim.world``) feed it the replies and redirects that
arrive, each with the replica id the *connection* proved (never a field of the
message), and ask it where to send a request and how long to wait before sending it
again. It never touches a socket, a clock or a random generator, so the simulator
exercises the very logic real clients run.

The rules, by mode (``ledger.quorum``):

- A request is answered once ``Quorums.reply`` distinct replicas sent the same
  (height, index, result): f+1 in pbft (one of them is honest, Castro & Liskov, TOCS
  2002, §4.1), one in paxos (crash faults only: replicas do not lie). A replica's later
  reply replaces its earlier one, so a replica that says something twice counts once.
- A reply of BUSY (nothing executed, height 0) is a hint to back off, never an outcome.
- pbft sends every transmission to every replica. paxos sends to the believed leader,
  or the next reachable replica when the driver says the leader is unreachable; a
  retransmission moves on to the next replica; a REDIRECT names the leader and is
  followed at most n times per transmission (two followers that name each other cannot
  bounce a request for ever); the replica that answers becomes the believed leader.
- Retransmissions back off exponentially from ``retransmit_first`` to ``retransmit_max``.

Reads not ordered (``add_read``; PBFT's read-only optimisation, Castro & Liskov, TOCS 2002,
§5.1.3, and a Paxos leader's read index, ``bft.paxos.reads``):

- pbft sends a READ to every replica and accepts a result once ``Quorums.read`` = 2f+1
  distinct replicas answered the same (since, result): the value, and the height of the
  block that last wrote the key. Matching on ``since`` too keeps a value that changed and
  changed back (A, B, A) from passing for one state: the 2f+1 answers then describe one
  stretch of the ledger in which the key held that value. paxos sends it to the believed
  leader, follows READ-REDIRECTs as it follows REDIRECTs, and accepts the leader's answer.
- A read falls short when no result can reach the quorum any more (answers that differ,
  BUSY answers), or when the caller's short timeout passes; the caller then orders it
  (``ledger.client``: an ordinary ``get`` through consensus). Nothing is retransmitted.
- The client's *floor* is the height of its latest write, and the ``since`` of its latest
  read. Each READ carries it, and a replica answers only from a state at least that high,
  so a client reads its own writes and never reads an older state than it already read.

It lives in ``ledger`` because what a client of the ledger service does with replies does
not depend on how the replicas agree, and ``ledger.client`` must not import ``bft``.
"""
from __future__ import annotations

from typing import Callable

import msgpack

from ledger.quorum import Quorums, protocol
from ledger.state import BUSY
from ledger.wire import Read, ReadRedirect, ReadReply, Redirect, Reply, Request

_BUSY_PREFIX = msgpack.packb([BUSY, b""])[:2]
EVERY_REPLICA = None          # what ``transmit`` returns when a request goes to every replica


def _always(replica: int) -> bool:
    return True


class Outcome:
    """A committed request as ``Quorums.reply`` matching replicas reported it."""

    __slots__ = ("request", "height", "index", "result", "replicas")

    def __init__(self, request: Request, height: int, index: int, result: bytes, replicas: list[int]) -> None:
        self.request = request
        self.height = height
        self.index = index
        self.result = result
        self.replicas = replicas


class Pending:
    """One request in flight: its votes so far and what has happened to it."""

    __slots__ = ("request", "encoded", "started", "votes", "outcome", "redirects", "busy", "sends")

    def __init__(self, request: Request, started: float) -> None:
        self.request = request
        self.encoded = request.encode()
        self.started = started
        self.votes: dict[int, tuple[int, int, bytes]] = {}      # replica -> (height, index, result)
        self.outcome: Outcome | None = None
        self.redirects = 0            # redirects followed since the last transmission
        self.busy = 0                 # BUSY answers: replicas that would not hold it (a hint, not an outcome)
        self.sends = 0                # transmissions so far


class ReadPending:
    """One read in flight: the answers so far and, once decided, its result or why it fell short."""

    __slots__ = ("nonce", "op", "floor", "started", "votes", "busy", "result", "since", "replicas", "short",
                 "redirects")

    def __init__(self, nonce: int, op: bytes, floor: int, started: float) -> None:
        self.nonce = nonce
        self.op = op
        self.floor = floor
        self.started = started
        self.votes: dict[int, tuple[int, bytes]] = {}      # replica -> (since, result)
        self.busy: set[int] = set()                        # replicas that refused it (BUSY)
        self.result: bytes | None = None                   # accepted: the result ...
        self.since = 0                                     # ... and the height since which it held
        self.replicas: list[int] = []                      # ... as these replicas answered it
        self.short: str | None = None                      # or why it fell short (order it instead)
        self.redirects = 0

    @property
    def decided(self) -> bool:
        return self.result is not None or self.short is not None

    def message(self, client: int) -> Read:
        return Read(client, self.nonce, self.floor, self.op)


class ClientCore:
    """The state of one client identity: its requests in flight and the believed leader."""

    def __init__(self, mode: str, f: int, n: int, client_id: int, *,
                 retransmit_first: float = 1.0, retransmit_max: float = 4.0) -> None:
        self.protocol = protocol(mode)
        self.quorums = Quorums(mode, f)
        self.need = self.quorums.reply
        self.n = n
        self.id = client_id
        self.retransmit_first = retransmit_first
        self.retransmit_max = retransmit_max
        self.leader = 0
        self.pending: dict[int, Pending] = {}      # timestamp -> request in flight
        self.need_read = self.quorums.read
        self.reads: dict[int, ReadPending] = {}    # nonce -> read in flight
        self.floor = 0                             # see the module's docstring
        self._nonce = 0
        self.reads_answered = 0                    # reads accepted without ordering ...
        self.reads_short = 0                       # ... and reads that fell short (then ordered)

    # ------------------------------------------------------------------ requests
    def add(self, request: Request, now: float = 0.0) -> Pending:
        p = self.pending[request.timestamp] = Pending(request, now)
        return p

    def remove(self, timestamp: int) -> Pending | None:
        return self.pending.pop(timestamp, None)

    def transmit(self, p: Pending, reachable: Callable[[int], bool] = _always) -> int | None:
        """Where ``p``'s next (re)transmission goes: ``EVERY_REPLICA`` (pbft) or one replica."""
        attempt = p.sends
        p.sends += 1
        if self.protocol.byzantine:
            return EVERY_REPLICA
        if attempt > 0:
            self.leader = (self.leader + 1) % self.n
        p.redirects = 0
        return self.pick_leader(reachable)

    def retransmit_after(self, p: Pending) -> float:
        """How long to wait for an outcome after ``p``'s latest transmission."""
        wait = self.retransmit_first
        for _ in range(1, p.sends):
            wait = min(wait * 2, self.retransmit_max)
            if wait == self.retransmit_max:
                break
        return wait

    def pick_leader(self, reachable: Callable[[int], bool] = _always) -> int:
        """The believed leader, or the next reachable replica when it is not reachable."""
        for k in range(self.n):
            r = (self.leader + k) % self.n
            if reachable(r):
                self.leader = r
                return r
        return self.leader

    # ------------------------------------------------------------------ input
    def on_reply(self, src: int, r: Reply) -> Pending | None:
        """A REPLY that arrived on replica ``src``'s connection; the request it completes, if any."""
        p = self.pending.get(r.timestamp)
        if p is None or r.client != self.id or r.replica != src or p.outcome is not None:
            return None
        if r.height == 0 and r.result[:2] == _BUSY_PREFIX:
            p.busy += 1                # the retransmission timer backs off; the replica may hold it later
            return None
        vote = (r.height, r.index, r.result)
        p.votes[src] = vote
        same = [rid for rid, v in p.votes.items() if v == vote]
        if len(same) < self.need:
            return None
        if not self.protocol.byzantine:
            self.leader = src
        p.outcome = Outcome(p.request, r.height, r.index, r.result, sorted(same))
        if r.height > self.floor:                  # f+1 matching replies: an honest replica executed it
            self.floor = r.height
        return p

    def on_redirect(self, src: int, m: Redirect, reachable: Callable[[int], bool] = _always) -> int | None:
        """A REDIRECT from replica ``src``: the replica to send the request to now, or None."""
        p = self.pending.get(m.timestamp)
        if p is None or m.client != self.id or m.replica != src or p.outcome is not None:
            return None
        if not 0 <= m.leader < self.n or m.leader == src:
            return None
        self.leader = m.leader
        target = self.pick_leader(reachable)          # the named leader, or the next reachable replica
        if target == src or p.redirects >= self.n:
            return None
        p.redirects += 1
        return target

    def on_link_down(self, replica: int, reachable: Callable[[int], bool] = _always) -> int | None:
        """paxos: the believed leader became unreachable; the replica to re-send every
        unanswered request to, or None when nothing is to be done."""
        if self.protocol.byzantine or replica != self.leader:
            return None
        self.leader = (replica + 1) % self.n
        return self.pick_leader(reachable)

    def unanswered(self) -> list[Pending]:
        return [p for p in self.pending.values() if p.outcome is None]

    # ------------------------------------------------------------------ reads not ordered
    def add_read(self, op: bytes, now: float = 0.0) -> ReadPending:
        """A new read of ``op`` (a read-only operation) at the client's current floor."""
        self._nonce += 1
        rp = self.reads[self._nonce] = ReadPending(self._nonce, op, self.floor, now)
        return rp

    def remove_read(self, nonce: int) -> ReadPending | None:
        rp = self.reads.pop(nonce, None)
        if rp is not None:
            if rp.result is not None:
                self.reads_answered += 1
            else:
                self.reads_short += 1
        return rp

    def read_transmit(self, rp: ReadPending, reachable: Callable[[int], bool] = _always) -> int | None:
        """Where a read goes: ``EVERY_REPLICA`` (pbft) or the believed leader (paxos)."""
        if self.protocol.byzantine:
            return EVERY_REPLICA
        return self.pick_leader(reachable)

    def on_read_reply(self, src: int, m: ReadReply) -> ReadPending | None:
        """A READ-REPLY that arrived on replica ``src``'s connection; the read, once decided
        (accepted, or fallen short: nothing can reach the quorum any more)."""
        rp = self.reads.get(m.nonce)
        if rp is None or m.client != self.id or m.replica != src or rp.decided:
            return None
        if m.height == 0 and m.result[:2] == _BUSY_PREFIX:
            rp.busy.add(src)
            rp.votes.pop(src, None)
        else:
            vote = (m.since, m.result)
            rp.votes[src] = vote
            rp.busy.discard(src)
            same = [rid for rid, v in rp.votes.items() if v == vote]
            if len(same) >= self.need_read:
                rp.result, rp.since, rp.replicas = m.result, m.since, sorted(same)
                if m.since > self.floor:           # 2f+1 (pbft) or the leader said so: it is a real height
                    self.floor = m.since
                if not self.protocol.byzantine:
                    self.leader = src
                return rp
        if not self.protocol.byzantine:           # paxos asks one replica: its BUSY ends the read
            rp.short = f"replica {src} was busy"
            return rp
        best = max((sum(1 for v in rp.votes.values() if v == w) for w in set(rp.votes.values())), default=0)
        silent = self.n - len(rp.votes) - len(rp.busy)
        if best + silent < self.need_read:
            kinds = len(set(rp.votes.values()))
            rp.short = (f"{len(rp.votes)} replicas answered with {kinds} different results and {len(rp.busy)} "
                        f"were busy; {self.need_read} matching answers are needed")
            return rp
        return None

    def on_read_redirect(self, src: int, m: ReadRedirect,
                         reachable: Callable[[int], bool] = _always) -> int | None:
        """paxos: a follower named the leader; the replica to send the read to now, or None."""
        rp = self.reads.get(m.nonce)
        if (rp is None or m.client != self.id or m.replica != src or rp.decided or self.protocol.byzantine
                or not 0 <= m.leader < self.n or m.leader == src):
            return None
        self.leader = m.leader
        target = self.pick_leader(reachable)
        if target == src or rp.redirects >= self.n:
            return None
        rp.redirects += 1
        return target
