"""Multi-Paxos (crash faults) as a sans-I/O state machine with the same driver interface as PbftCore.

``step`` takes one decoded message from an authenticated sender, ``tick`` tells it the time,
``ready`` hands back the actions to carry out in order (see ``bft.outputs``). No sockets,
clocks, files or global randomness: timeouts are drawn from the injected ``random.Random``.

The parts carry the names of the classic texts (Lamport, "Paxos Made Simple"; van Renesse
and Altinbuken, "Paxos Made Moderately Complex"), so the code maps onto the protocol:

* **Acceptor** (class ``Acceptor`` below) - the only durable part. It promises a ballot in
  phase 1b (PxPromise) and accepts a value in phase 2b (PxAccepted). Both are written to the
  vote log (a ``Persist`` action placed before the matching send) so that a restarted
  replica never promises or accepts against what it said before.
* **Proposer** (section "proposer") - a replica that wants to lead picks a ballot ``b`` with
  ``b % n == id`` above every ballot it has seen and runs phase 1 (PxPrepare / PxPromise)
  once for all slots above its executed height. From a majority of promises it re-proposes,
  for every slot, the value accepted under the highest ballot and fills gaps with no-ops
  (empty batch, digest ``root_of([])``). It then runs phase 2 (PxAccept / PxAccepted) per
  batch, ``pipeline`` slots in flight, and heartbeats.
* **Learner** (section "learner") - executes chosen slots in slot order. The leader knows a
  slot is chosen from a majority of PxAccepted; the others learn the commit index from the
  next PxAccept or PxHeartbeat. A learner executes slot ``s`` only when the leader of ballot
  ``b`` said ``s`` is chosen and its own accepted value for ``s`` was accepted in ``b``
  (that value is the leader's proposal, hence the chosen one); anything else it fetches
  with state transfer (StateRequest / StateResponse), checking every block's certificate.

Ballots are single integers; the leader of ballot ``b`` is ``b % n``. Every leadership
starts with phase 1, also the first one: replica 0 campaigns at its first tick when it
starts with no vote records and an empty ledger. (It used to lead ballot 0 without a
phase 1 on the grounds that no lower ballot exists; but a replica 0 whose disk was
replaced looks exactly like that, and would have proposed new values for slots the
cluster had already chosen; issue 11.) A replica never reuses a ballot after a restart:
its next candidacy is above the ballot it persisted.

Followers start an election after a randomized timeout, and an election starts with a
**pre-vote** (Raft's, Ongaro's thesis section 9.6): the would-be candidate asks every replica
whether it would promise its next ballot (PxPreVote) and raises its ballot, durably, only
once a majority would (PxPreVoteGrant). A replica grants unless it hears a live leader.
Without it, a replica cut off by a partition campaigned with ever higher ballots, and on
healing refused the working leader's ballot with a PxNack that deposed it, forcing a round
of elections (issue 17; with the pre-vote, an isolated follower's ten healings caused none). The pre-vote touches liveness only: granting one
changes no state, and the promise itself still comes from phase 1.

A proposer pre-empted by a higher
ballot, refused by a PxNack, or whose candidacy timed out backs off: its next timeout is
drawn from the same range times ``backoff_multiplier ** attempts`` (capped), so duelling
proposers settle. ``PaxosConfig(backoff=False)`` is the naive proposer of the textbook
livelock example: it retries at once with a higher ballot whenever it is pre-empted.

Crash faults only: peers do not lie. Still, anything malformed, wrongly signed, from a
non-member or from the wrong ballot is counted in ``dropped`` and dropped; a core never
raises on peer input. Followers check the leader's signature on every ACCEPT (it is the
block's certificate) but not the client signatures inside: the leader checked those.
"""
from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, replace

import msgpack

from ledger import quorum
from bft.catchup import SKIP, execute_served
from bft.outputs import (Action, AppendBlock, Broadcast, CompactVotes, Persist, Send, ServeBlocks,
                         ToClient)
from bft.paxos.config import PaxosConfig
from bft.pbft.certs import Keys
from bft.requests import CACHED, KNOWN, NEW, REFUSED, STALE, RequestPool, busy_reply, cached_reply, stale_reply
from bft.wire import (MAX_LIST, DecodeError, Message, PxAccept, PxAccepted, PxHeartbeat, PxNack,
                      PxPrepare, PxPreVote, PxPreVoteGrant, PxPromise, Redirect, Request, StateRequest,
                      StateResponse, decode)
from crypto.merkle import root_of
from crypto.signing import Signer
from ledger import tx as txmod
from ledger.block import Block
from ledger.chain import Chain

log = logging.getLogger("bft.paxos")

FOLLOWER, CANDIDATE, LEADER = "follower", "candidate", "leader"
NOOP_DIGEST = root_of([])


def leader_of(ballot: int, n: int) -> int:
    return ballot % n


def next_ballot(above: int, replica: int, n: int) -> int:
    """The smallest ballot greater than ``above`` that belongs to ``replica``."""
    b = above + 1
    return b + (replica - b) % n


# ============================================================================ acceptor
class Acceptor:
    """Phase 1b and 2b: the promised ballot and the accepted value of every open slot.

    ``record_*`` return the vote-log record the core persists before answering; ``recover``
    rebuilds the same state from those records after a restart.
    """

    __slots__ = ("promised", "accepted")

    def __init__(self) -> None:
        self.promised = 0
        self.accepted: dict[int, PxAccept] = {}      # slot -> the ACCEPT accepted under the highest ballot

    def may_promise(self, ballot: int) -> bool:
        return ballot > self.promised

    def may_accept(self, ballot: int) -> bool:
        return ballot >= self.promised

    def promise(self, ballot: int) -> bytes:
        if not self.may_promise(ballot):
            raise ValueError(f"promise of ballot {ballot} at or below the promised {self.promised}")
        self.promised = ballot
        return _record("promise", ballot)

    def accept(self, acc: PxAccept) -> bytes:
        if not self.may_accept(acc.ballot):
            raise ValueError(f"accept in ballot {acc.ballot} below the promised {self.promised}")
        self.promised = acc.ballot
        self.accepted[acc.slot] = acc
        return _record("accept", acc.encode())

    def report(self, above: int) -> list[PxAccept]:
        """What a PROMISE carries: every accepted value for a slot above ``above``."""
        return [self.accepted[s] for s in sorted(self.accepted) if s > above]

    def forget_upto(self, slot: int) -> None:
        """Slots up to ``slot`` are executed (chosen and in the ledger); their values are not needed."""
        if self.accepted and min(self.accepted) <= slot:
            for s in [s for s in self.accepted if s <= slot]:
                del self.accepted[s]

    def snapshot(self) -> list[bytes]:
        """The vote log's replacement at compaction: the promise and the still-open accepted values."""
        return [_record("promise", self.promised)] + [
            _record("accept", self.accepted[s].encode()) for s in sorted(self.accepted)]

    @classmethod
    def recover(cls, records: list[bytes], executed: int) -> "Acceptor":
        a = cls()
        for raw in records:
            try:
                kind, payload = msgpack.unpackb(raw, raw=False)
                if kind == "promise":
                    if type(payload) is not int or payload < 0:
                        raise ValueError
                    a.promised = max(a.promised, payload)
                elif kind == "accept":
                    acc = decode(payload)
                    if type(acc) is not PxAccept:
                        raise ValueError
                    a.promised = max(a.promised, acc.ballot)
                    cur = a.accepted.get(acc.slot)
                    if cur is None or acc.ballot >= cur.ballot:
                        a.accepted[acc.slot] = acc
                else:
                    raise ValueError
            except (ValueError, TypeError, IndexError, DecodeError):
                raise ValueError("paxos vote log record is malformed") from None
        a.forget_upto(executed)
        return a


def _record(kind: str, payload) -> bytes:
    return msgpack.packb([kind, payload], use_bin_type=True)


@dataclass(slots=True)
class Proposal:
    """A slot the leader proposed in its ballot and the acceptors that accepted it."""
    accept: PxAccept
    acks: set[int]


@dataclass(slots=True)
class Transfer:
    target: int
    peers: list[int]
    turn: int
    deadline: float
    failures: int = 0


# ============================================================================ the replica
class PaxosCore:
    mode = "paxos"

    def __init__(self, cfg: PaxosConfig, replica_id: int, signer: Signer, keys: Keys, chain: Chain,
                 vote_records: list[bytes] = (), now: float = 0.0, rng: random.Random | None = None) -> None:
        if not 0 <= replica_id < cfg.n:
            raise ValueError(f"replica id {replica_id} outside 0..{cfg.n - 1}")
        self.cfg = cfg
        self.id = replica_id
        self.signer = signer
        self.keys = keys
        self.chain = chain
        self.now = now
        self.rng = rng if rng is not None else random.Random(f"paxos-{replica_id}")
        self.n = cfg.n
        self.f = cfg.f
        self.majority = quorum.majority(cfg.n)
        self.dropped: Counter[str] = Counter()
        self.useless = 0                             # messages dropped: the runtime charges their sender
        self.stats: Counter[str] = Counter()
        self._out: list[Action] = []

        records = list(vote_records)
        self.acceptor = Acceptor.recover(records, chain.height)
        # ballot: the ballot of the leader this replica follows, or of its own candidacy/leadership
        self.ballot = self.acceptor.promised
        self.max_seen = self.ballot                 # the highest ballot heard of (a candidate goes above it)
        self.role = FOLLOWER
        self.leader_active = False                  # heard the current ballot's leader since it began
        self.attempts = 0                           # consecutive failed or pre-empted attempts (backoff)
        self.prevote_ballot = 0                     # the ballot a pre-vote in progress asks about ...
        self.prevotes: set[int] | None = None       # ... and who would promise it (None: no pre-vote)

        # proposer
        self.promises: dict[int, PxPromise] = {}
        self.prepare_from = 0
        self.proposals: dict[int, Proposal] = {}
        self.next_slot = chain.height + 1
        self.catchup_peer: int | None = None
        self.progress_at = now

        # learner: the leader of commit_ballot said every slot up to commit_index is chosen
        self.commit_ballot = -1
        self.commit_index = chain.height
        self.stable = chain.height - chain.height % cfg.checkpoint_interval
        self.transfer: Transfer | None = None
        self.lag_since: float | None = None

        # clients (leader side)
        self.requests = RequestPool(keys, chain, cfg.max_pending, max_bytes=cfg.max_pending_bytes,
                                    client_requests=cfg.client_requests, client_bytes=cfg.client_bytes)
        self.pending = self.requests.pending
        self.queue = self.requests.queue
        self.in_batch = self.requests.in_batch

        self.deadline = now + self._election_timeout()
        self.leader_heard = -1e9                      # when a live leader was last heard from
        self.next_heartbeat = now
        self.next_retransmit = now + cfg.retransmit_interval

        if not records and chain.height == 0 and leader_of(0, self.n) == self.id:
            # first start, or a disk that was replaced: campaign at once, with a phase 1, which
            # reports whatever the cluster already chose
            self.deadline = now

    # ------------------------------------------------------------------ driver interface
    def step(self, sender: int, msg: Message, from_client: bool = False) -> None:
        """One message from an authenticated peer: a replica id, or a client id if from_client."""
        t = type(msg)
        if from_client:
            if t is Request:
                self._on_request(sender, msg)
            else:
                self._drop("unexpected message from a client")
            return
        if type(sender) is not int or not 0 <= sender < self.n or sender == self.id:
            self._drop("message from a non-member")
            return
        handler = self._handlers.get(t)
        if handler is None:
            self._drop(f"unexpected {getattr(msg, 'NAME', t.__name__)} from a replica")
            return
        if getattr(msg, "replica", None) != sender:
            self._drop("sender field differs from the authenticated sender")
            return
        handler(self, sender, msg)

    def tick(self, now: float) -> None:
        self.now = now
        cfg = self.cfg
        if self.role == LEADER:
            if now >= self.next_heartbeat:
                self._heartbeat()
            if now >= self.next_retransmit:
                self.next_retransmit = now + cfg.retransmit_interval
                self._retransmit_accepts()
            if self.chain.height < self.commit_index and now - self.progress_at > 2 * cfg.election_timeout[1]:
                # cannot fetch the chosen prefix from anyone: run phase 1 again to learn it from acceptors
                log.info("replica %d: leader stalled catching up at %d of %d, new ballot",
                         self.id, self.chain.height, self.commit_index)
                self.attempts += 1
                self._campaign()
        elif self.role == CANDIDATE:
            if now >= self.deadline:
                # cut off mid-candidacy, perhaps: ask again before raising the ballot any further
                self.attempts += 1
                self.stats["candidacy timed out"] += 1
                self._step_down()
                self._start_election()
            elif now >= self.next_retransmit:
                self.next_retransmit = now + cfg.retransmit_interval
                prep = PxPrepare(self.ballot, self.prepare_from, self.id)
                for r in range(self.n):
                    if r != self.id and r not in self.promises:
                        self._out.append(Send(r, prep))
        elif now >= self.deadline:
            self.leader_active = False
            self._start_election()
        t = self.transfer
        if t is not None and now >= t.deadline:
            self._transfer_failed()
        elif t is None and self.lag_since is not None and now >= self.lag_since + cfg.transfer_timeout:
            self._start_transfer()

    def ready(self) -> list[Action]:
        if self.role == LEADER and self.queue:
            self._propose()
        out, self._out = self._out, []
        return out

    def campaign(self) -> None:
        """Start an election now (tests and operators; the timers call it otherwise)."""
        self._campaign()

    @property
    def is_primary(self) -> bool:
        return self.role == LEADER

    @property
    def leader(self) -> int:
        return leader_of(self.ballot, self.n)

    @property
    def view(self) -> int:
        return self.ballot

    @property
    def in_view_change(self) -> bool:
        """Electing: a candidacy in progress, or the current ballot's leader not heard from."""
        return self.role == CANDIDATE or (self.role == FOLLOWER and not self.leader_active)

    def status(self) -> dict:
        role = "pre-candidate" if self.prevotes is not None else self.role
        return {"mode": "paxos", "view": self.ballot, "leader": self.leader, "in_view_change": self.in_view_change,
                "executed": self.chain.height, "stable_checkpoint": self.stable, "height": self.chain.height,
                "head": self.chain.head.hex(), "pending": len(self.pending), "dropped": dict(self.dropped),
                "role": role, "promised": self.acceptor.promised, "commit_index": self.commit_index}

    # ------------------------------------------------------------------ helpers
    def _drop(self, why: str) -> None:
        if why not in self.dropped:
            log.info("replica %d drops: %s (first of its kind)", self.id, why)
        self.dropped[why] += 1
        self.useless += 1

    def _election_timeout(self) -> float:
        lo, hi = self.cfg.election_timeout
        t = self.rng.uniform(lo, hi)
        if self.cfg.backoff and self.attempts:
            t *= min(self.cfg.backoff_multiplier ** self.attempts, self.cfg.backoff_cap)
        return t

    def _persist(self, record: bytes) -> None:
        self._out.append(Persist(record))

    def _see(self, ballot: int) -> None:
        if ballot > self.max_seen:
            self.max_seen = ballot

    def _step_down(self) -> None:
        """Stop proposing (pre-empted or following a higher ballot); clients will retry elsewhere."""
        self.role = FOLLOWER
        self.promises.clear()
        self.proposals.clear()
        self.queue.clear()
        self.in_batch.clear()
        self.pending.clear()
        self.catchup_peer = None

    def _preempted(self) -> None:
        """My candidacy or leadership met a higher ballot: back off, or (naive) retry at once."""
        self.stats["pre-empted"] += 1
        self._step_down()
        self.attempts += 1
        if self.cfg.backoff:
            self.deadline = self.now + self._election_timeout()
        else:
            self._campaign()

    # ------------------------------------------------------------------ clients
    def _on_request(self, client: int, req: Request) -> None:
        if req.client != client or not 0 <= client < len(self.keys.clients):
            self._drop("request for another or an unknown client")
            return
        if self.leader != self.id:
            self._out.append(ToClient(client, Redirect(client, req.timestamp, self.id, self.leader)))
            return
        # a candidate (or a restarted replica whose own ballot is current) holds it until it leads
        what, detail = self.requests.admit(client, req, self.now)
        if what == NEW:
            if self.role == LEADER:
                self.queue.append((client, req.timestamp))
        elif what == CACHED:
            if self.role == LEADER:
                self._out.append(ToClient(client, cached_reply(self.ballot, self.id, client, detail)))
        elif what == STALE:
            if self.role == LEADER:
                self._out.append(ToClient(client, stale_reply(self.ballot, self.id, client, req.timestamp)))
        elif what == REFUSED:
            self._drop(detail)
            self._out.append(ToClient(client, busy_reply(self.ballot, self.id, client, req.timestamp, detail)))
        elif what != KNOWN:
            self._drop(detail)

    def _reply(self, block: Block, index: int, client: int, ts: int) -> None:
        reply = self.requests.reply(self.ballot, self.id, block, index, client, ts)
        if reply is not None:
            self._out.append(ToClient(client, reply))

    # ================================================================== proposer
    def _start_election(self) -> None:
        if self.cfg.prevote:
            self._prevote()
        else:
            self._campaign()

    def _prevote(self) -> None:
        """Ask whether a majority would promise my next ballot, before persisting anything."""
        b = next_ballot(max(self.max_seen, self.ballot, self.acceptor.promised), self.id, self.n)
        self.prevote_ballot = b
        self.prevotes = {self.id}
        self.stats["pre-votes"] += 1
        self._out.append(Broadcast(PxPreVote(b, self.id)))
        self.deadline = self.now + self._election_timeout()
        self._check_prevotes()

    def _on_prevote_grant(self, sender: int, m: PxPreVoteGrant) -> None:
        if self.prevotes is None or self.role != FOLLOWER or m.ballot != self.prevote_ballot:
            self._drop("PX-PREVOTE-GRANT for a pre-vote I am not running")
            return
        self.prevotes.add(sender)
        self._check_prevotes()

    def _check_prevotes(self) -> None:
        if self.prevotes is not None and len(self.prevotes) >= self.majority:
            self.stats["pre-votes won"] += 1
            self._campaign()

    def _campaign(self) -> None:
        """Phase 1a: a new ballot of mine above every ballot seen, PREPARE for all open slots."""
        b = next_ballot(max(self.max_seen, self.ballot, self.acceptor.promised), self.id, self.n)
        if self.role != FOLLOWER:
            self._step_down()
        self.stats["elections"] += 1
        self.prevotes = None
        self.role = CANDIDATE
        self.ballot = b
        self.max_seen = b
        self.leader_active = False
        self.prepare_from = self.chain.height
        self._persist(self.acceptor.promise(b))          # my own promise, durable before PREPARE leaves
        self.promises = {self.id: PxPromise(b, self.id, self.chain.height,
                                            self.acceptor.report(self.chain.height))}
        self._out.append(Broadcast(PxPrepare(b, self.prepare_from, self.id)))
        self.deadline = self.now + self._election_timeout()
        self.next_retransmit = self.now + self.cfg.retransmit_interval
        log.info("replica %d campaigns for ballot %d (attempt %d)", self.id, b, self.attempts + 1)
        self._check_promises()

    def _on_promise(self, sender: int, m: PxPromise) -> None:
        if self.role != CANDIDATE or m.ballot != self.ballot:
            self._drop("PX-PROMISE for a ballot I am not running")
            return
        if sender in self.promises:
            return
        seen: set[int] = set()
        for acc in m.accepted:
            why = None
            if acc.slot <= self.prepare_from or acc.slot in seen:
                why = "a slot not asked for or twice"
            elif acc.ballot >= m.ballot:
                why = "a value accepted at or above the promised ballot"
            elif acc.replica != leader_of(acc.ballot, self.n) or root_of(acc.batch) != acc.digest:
                why = "a value that is not its ballot leader's or not its digest's"
            elif not self.keys.replica_signed(acc, acc.replica):
                why = "a value with a bad leader signature"
            if why:
                self._drop("PX-PROMISE reports " + why)
                return
            seen.add(acc.slot)
        self.promises[sender] = m
        self._check_promises()

    def _check_promises(self) -> None:
        if self.role == CANDIDATE and len(self.promises) >= self.majority:
            self._become_leader()

    def _become_leader(self) -> None:
        """Phase 1 done: re-propose the highest-ballot value of every open slot, no-ops in the gaps."""
        b = self.ballot
        promises = [self.promises[r] for r in sorted(self.promises)]
        known = max([self.chain.height] + [p.commit_index for p in promises])   # chosen up to here
        best: dict[int, PxAccept] = {}
        for p in promises:
            for acc in p.accepted:
                if acc.slot <= known:
                    continue
                cur = best.get(acc.slot)
                if cur is None or acc.ballot > cur.ballot:
                    best[acc.slot] = acc
        top = max(best, default=known)
        self.role = LEADER
        self.leader_active = True
        self.stats["won"] += 1
        self.commit_ballot = b
        self.commit_index = known
        self.proposals = {}
        self.next_slot = top + 1
        self.progress_at = self.now
        ahead = [p for p in promises if p.commit_index > self.chain.height]
        self.catchup_peer = max(ahead, key=lambda p: (p.commit_index, -p.replica)).replica if ahead else None
        log.info("replica %d leads ballot %d: chosen up to %d, re-proposes %d..%d", self.id, b, known, known + 1, top)
        for s in range(known + 1, top + 1):
            acc = best.get(s)
            batch = list(acc.batch) if acc is not None else []
            for raw in batch:
                t = txmod.parse(raw)
                if t is not None:
                    self.in_batch.add((t.client, t.timestamp))
            self._propose_slot(s, batch)
            if self.role != LEADER:
                return
        self.requests.requeue()
        self._heartbeat()
        self._learn()

    def _propose(self) -> None:
        cfg = self.cfg
        while self.queue and self.role == LEADER:
            if self.next_slot - 1 - self.commit_index >= cfg.pipeline:
                return
            batch, _reqs = self.requests.take_batch(cfg.batch_size, cfg.batch_bytes)
            if not batch:
                return
            self._propose_slot(self.next_slot, batch)

    def _propose_slot(self, slot: int, batch: list[bytes]) -> None:
        """Phase 2a for one slot; my own acceptor accepts first (persisted before the ACCEPT leaves)."""
        acc = PxAccept(self.ballot, slot, root_of(batch), batch, self.commit_index, self.id).signed(self.signer)
        self.next_slot = max(self.next_slot, slot + 1)
        self.proposals[slot] = Proposal(acc, {self.id})
        self._persist(self.acceptor.accept(acc))
        self._out.append(Broadcast(acc))
        self.next_heartbeat = self.now + self.cfg.heartbeat_interval
        self._advance_commit()

    def _on_accepted(self, sender: int, m: PxAccepted) -> None:
        if self.role != LEADER or m.ballot != self.ballot:
            self._drop("PX-ACCEPTED for a ballot I do not lead")
            return
        p = self.proposals.get(m.slot)
        if p is None:
            return                          # chosen already
        p.acks.add(sender)
        self._advance_commit()

    def _advance_commit(self) -> None:
        advanced = False
        while True:
            p = self.proposals.get(self.commit_index + 1)
            if p is None or len(p.acks) < self.majority:
                break
            del self.proposals[self.commit_index + 1]
            self.commit_index += 1
            advanced = True
        if advanced:
            self.attempts = 0
            self._learn()

    def _on_nack(self, sender: int, m: PxNack) -> None:
        self._see(m.promised)
        if self.prevotes is not None and m.ballot == self.prevote_ballot:
            return          # a pre-vote refused for a ballot too low: the next one goes above m.promised
        if self.role != FOLLOWER and m.ballot == self.ballot and m.promised > self.ballot:
            log.info("replica %d: ballot %d refused by %d (promised %d)", self.id, m.ballot, sender, m.promised)
            self._preempted()
        else:
            self._drop("PX-NACK for a ballot I am not running")

    def _heartbeat(self) -> None:
        self.next_heartbeat = self.now + self.cfg.heartbeat_interval
        self._out.append(Broadcast(PxHeartbeat(self.ballot, self.commit_index, self.id)))

    def _retransmit_accepts(self) -> None:
        sent = 0
        for s in sorted(self.proposals):
            if sent >= 8:
                break
            p = self.proposals[s]
            acc = replace(p.accept, commit_index=self.commit_index)     # commit_index is not signed
            for r in range(self.n):
                if r not in p.acks:
                    self._out.append(Send(r, acc))
            sent += 1

    # ================================================================== acceptor (message side)
    def _nack(self, to: int, ballot: int) -> None:
        self._out.append(Send(to, PxNack(ballot, self.ballot, self.id)))

    def _hears_live_leader(self, sender: int) -> bool:
        """This replica leads, or heard its leader recently, and ``sender`` is someone else."""
        if self.role == LEADER:
            return True
        return (self.role == FOLLOWER and self.leader_active and sender != self.leader
                and self.now - self.leader_heard < self.cfg.election_timeout[0])

    def _on_prevote(self, sender: int, m: PxPreVote) -> None:
        if leader_of(m.ballot, self.n) != sender:
            self._drop("PX-PREVOTE for a ballot that is not its sender's")
            return
        if self._hears_live_leader(sender):
            self._drop("PX-PREVOTE while the leader is alive")
            return
        if not (m.ballot > self.ballot and self.acceptor.may_promise(m.ballot)):
            self._nack(sender, m.ballot)        # tells it the ballot to go above
            return
        self._out.append(Send(sender, PxPreVoteGrant(m.ballot, self.id)))

    def _on_prepare(self, sender: int, m: PxPrepare) -> None:
        if leader_of(m.ballot, self.n) != sender:
            self._drop("PX-PREPARE for a ballot that is not its sender's")
            return
        if self.role == FOLLOWER and self._hears_live_leader(sender):
            # leader stickiness: while this acceptor hears a live leader, a candidate that does
            # not (one that skipped the pre-vote, or won it just before the leader spoke again)
            # gets no promise, so it cannot depose a working leader. Refusing a promise never
            # endangers safety.
            self._drop("PX-PREPARE while the leader is alive")
            return
        a = self.acceptor
        if m.ballot > self.ballot and a.may_promise(m.ballot):
            above = max(m.from_slot, self.chain.height)
            report = a.report(above)
            if len(report) > MAX_LIST:
                self._drop("too many accepted values to report in a PX-PROMISE")
                return
            was_proposing = self.role != FOLLOWER
            self.prevotes = None
            if was_proposing:
                self._step_down()
            self._see(m.ballot)
            self.ballot = m.ballot
            self.leader_active = False
            self._persist(a.promise(m.ballot))           # durable before the PROMISE leaves
            self._out.append(Send(sender, PxPromise(m.ballot, self.id, self.chain.height, report)))
            if was_proposing:
                self.stats["pre-empted"] += 1
                self.attempts += 1
                if not self.cfg.backoff:
                    self._campaign()
                    return
            self.deadline = self.now + self._election_timeout()
        elif m.ballot == self.ballot == a.promised and self.role == FOLLOWER:
            # the candidate re-sent its PREPARE: answer again, nothing new to persist
            report = a.report(max(m.from_slot, self.chain.height))
            if len(report) <= MAX_LIST:
                self._out.append(Send(sender, PxPromise(m.ballot, self.id, self.chain.height, report)))
        else:
            self._nack(sender, m.ballot)
            self._drop("PX-PREPARE below the current ballot")

    def _from_leader(self, sender: int, ballot: int) -> bool:
        """An ACCEPT or HEARTBEAT from the leader of ``ballot``: follow it, or refuse a stale one."""
        if leader_of(ballot, self.n) != sender:
            self._drop("leader message for a ballot that is not its sender's")
            return False
        if ballot < self.ballot or not self.acceptor.may_accept(ballot):
            self._nack(sender, ballot)
            self._drop("leader message from a lower ballot")
            return False
        if ballot > self.ballot or self.role != FOLLOWER:
            if self.role != FOLLOWER:
                self.stats["pre-empted"] += 1
                self._step_down()
            self._see(ballot)
            self.ballot = ballot
        if self.pending:
            self.pending.clear()
        self.prevotes = None
        self.leader_active = True
        self.leader_heard = self.now
        self.attempts = 0
        self.deadline = self.now + self._election_timeout()
        return True

    def _on_accept(self, sender: int, m: PxAccept) -> None:
        if m.slot < 1:
            self._drop("PX-ACCEPT for slot 0")
            return
        if m.slot > self.chain.height + self.cfg.accept_window:
            # far behind (back from a partition): not a value to accept, but a live leader to
            # follow and a commit index to catch up to, instead of campaigning against it
            if self._from_leader(sender, m.ballot):
                self._learn_commit(m.ballot, m.commit_index)
            self._drop("PX-ACCEPT far above my execution")
            return
        prev = self.acceptor.accepted.get(m.slot)
        duplicate = prev is not None and prev.ballot == m.ballot and prev.sig == m.sig and prev.digest == m.digest
        if not duplicate and m.ballot >= self.ballot:
            if not self.keys.replica_signed(m, sender):
                self._drop("PX-ACCEPT with a bad signature")
                return
            if root_of(m.batch) != m.digest:
                self._drop("PX-ACCEPT batch does not match its digest")
                return
        if not self._from_leader(sender, m.ballot):
            return
        if m.slot > self.chain.height and not duplicate:
            if prev is not None and prev.ballot == m.ballot:
                self._drop("second PX-ACCEPT for one (ballot, slot)")
                return
            self._persist(self.acceptor.accept(m))        # durable before the ACCEPTED leaves
        self._out.append(Send(sender, PxAccepted(m.ballot, m.slot, self.id)))
        self._learn_commit(m.ballot, m.commit_index)

    def _on_heartbeat(self, sender: int, m: PxHeartbeat) -> None:
        if not self._from_leader(sender, m.ballot):
            return
        self._learn_commit(m.ballot, m.commit_index)

    # ================================================================== learner
    def _learn_commit(self, ballot: int, commit_index: int) -> None:
        if ballot != self.ballot or self.role == LEADER:
            return
        if ballot != self.commit_ballot:
            self.commit_ballot = ballot
            self.commit_index = commit_index
        elif commit_index > self.commit_index:
            self.commit_index = commit_index
        self._learn()

    def _learn(self) -> None:
        """Execute, in slot order, every slot known chosen whose value this replica holds."""
        chain = self.chain
        acc_map = self.acceptor.accepted
        while chain.height < self.commit_index:
            acc = acc_map.get(chain.height + 1)
            if acc is None or acc.ballot != self.commit_ballot:
                break
            block = chain.execute(acc.slot, acc.ballot, acc.batch, [(acc.replica, acc.sig)])
            self._out.append(AppendBlock(block))
            self._after_execute(block, reply_all=self.role == LEADER)
        self._check_lag()

    def _after_execute(self, block: Block, reply_all: bool) -> None:
        self.acceptor.forget_upto(block.height)
        self.progress_at = self.now
        for index, raw in enumerate(block.txs):
            t = txmod.parse(raw)
            if t is None:
                continue
            key = (t.client, t.timestamp)
            held = self.requests.executed(key)
            if self.role == LEADER and (reply_all or held is not None):
                self._reply(block, index, t.client, t.timestamp)
        if block.height % self.cfg.checkpoint_interval == 0:
            self.stable = block.height
            self._out.append(CompactVotes(self.acceptor.snapshot()))

    def _check_lag(self) -> None:
        if self.chain.height < self.commit_index:
            if self.lag_since is None:
                self.lag_since = self.now
        else:
            self.lag_since = None

    # ------------------------------------------------------------------ state transfer
    def _start_transfer(self) -> None:
        self.lag_since = None
        if self.chain.height >= self.commit_index:
            return
        first = self.catchup_peer if self.role == LEADER else leader_of(self.commit_ballot, self.n)
        peers = [r for r in range(self.n) if r != self.id]
        if first is not None and first in peers:
            peers.remove(first)
            peers.insert(0, first)
        if not peers:
            return
        self.transfer = Transfer(self.commit_index, peers, 0, 0.0)
        self._request_blocks()

    def _request_blocks(self) -> None:
        t = self.transfer
        t.deadline = self.now + self.cfg.transfer_timeout
        frm = self.chain.height + 1
        to = min(max(t.target, frm), frm + self.cfg.transfer_chunk - 1)
        self._out.append(Send(t.peers[t.turn % len(t.peers)], StateRequest(frm, to, self.id)))

    def _transfer_failed(self) -> None:
        t = self.transfer
        t.turn += 1
        t.failures += 1
        if t.failures >= len(t.peers):
            self.transfer = None            # nobody could help now; lag detection tries again later
            self.lag_since = None
            self._check_lag()
        else:
            self._request_blocks()

    def _on_state_request(self, sender: int, m: StateRequest) -> None:
        to = min(m.to_height, self.chain.height, m.from_height + self.cfg.transfer_chunk - 1)
        if m.from_height < 1 or m.from_height > to:
            self._out.append(Send(sender, StateResponse(self.id, [], [])))
            return
        self._out.append(ServeBlocks(sender, m.from_height, to))

    def _on_state_response(self, sender: int, m: StateResponse) -> None:
        t = self.transfer
        if t is None or sender != t.peers[t.turn % len(t.peers)]:
            self._drop("unsolicited state-transfer response")
            return
        before = self.chain.height
        for raw in m.blocks:
            block, why = execute_served(self.chain, "paxos", self.f, self.keys, raw)
            if why == SKIP:
                continue
            if block is None:
                self._drop("state transfer: " + str(why))
                break
            if why:
                self._drop("state-transfer peer sent a wrong header for a certified batch")
            self._out.append(AppendBlock(block))
            self._after_execute(block, reply_all=False)
        if self.chain.height > before:
            t.failures = 0
        self._learn()                       # values accepted in the commit ballot may follow on
        if self.transfer is not t:
            return
        if self.chain.height >= t.target:
            self.transfer = None
            self._check_lag()
        elif self.chain.height > before:
            self._request_blocks()
        else:
            self._transfer_failed()

    _handlers = {
        PxPrepare: _on_prepare,
        PxPromise: _on_promise,
        PxNack: _on_nack,
        PxAccept: _on_accept,
        PxAccepted: _on_accepted,
        PxHeartbeat: _on_heartbeat,
        PxPreVote: _on_prevote,
        PxPreVoteGrant: _on_prevote_grant,
        StateRequest: _on_state_request,
        StateResponse: _on_state_response,
    }


