"""The Multi-Paxos leader's reads without ordering: a read index (Ongaro's thesis, §6.4).

Why a read index and not a leader lease: both let the leader answer a read from its own
state without a slot in the log. A lease is the cheaper of the two (no message per read),
but its safety rests on clocks: a leader that paused (a GC pause, a SIGSTOP, a VM
migration) between checking its lease and answering could answer after a new leader was
elected and wrote, and the paxos mode is meant to survive exactly such pauses and
partitions (README, "Partitions and linearizability"). The read index rests on messages
only: the answer is right whatever the clocks do, at the cost of one round trip to a
majority, shared by every read that arrived meanwhile.

The steps, for the reads that arrived since the last round:

1. Record the read index: the commit index, and at least the top of the slots that phase 1
   re-proposed (``Proposer.elected_top``). A new leader's commit index may lag what an
   earlier leader chose and acknowledged; every such slot is at most that top (a majority
   accepted it, so a promise reports it), and Raft's rule "the leader has committed an
   entry of its own term" serves the same purpose. The client's floor too (a read never
   goes back in time).
2. Confirm the ballot: broadcast PxReadIndex(ballot, round); followers that still follow the
   ballot acknowledge it, one that promised a higher ballot NACKs (which deposes this
   leader). A majority of acknowledgements, own included, means no higher ballot had a
   majority at some moment after the reads arrived, so nothing was chosen by anyone else
   before then that this leader does not know of.
3. Wait until the executed height reaches the read index, then answer from the state.

Followers answer a READ with a READ-REDIRECT to the leader. A leader that steps down
drops the reads it holds (counted, ``paxos.READ_LEADERSHIP_LOST``); the client falls back
to an ordered read. Admission, bounds and answers are ``bft.reads.ReadDesk``'s.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from bft.outputs import ToClient
from bft.paxos.ballots import Role
from bft.paxos.rules import PaxosRule
from bft.reads import HeldRead
from bft.wire import PxReadIndex, PxReadIndexAck, Read, ReadRedirect

if TYPE_CHECKING:
    from bft.paxos.core import PaxosCore

ROUNDS_IN_FLIGHT = 4            # unconfirmed read-index rounds at once; later reads wait for the next


class ReadIndex:
    """The leader's read-index rounds: which reads each one confirms, and who acknowledged it."""

    def __init__(self, core: "PaxosCore") -> None:
        self._core = core
        self.round = 0                                   # the last round started (this leadership)
        self.unprobed: list[HeldRead] = []               # arrived since the last round started
        self.rounds: dict[int, list[HeldRead]] = {}      # round -> the reads it confirms
        self.acks: dict[int, set[int]] = {}              # round -> replicas that acknowledged it
        self.sent: dict[int, float] = {}                 # round -> when it was last (re)sent

    # ------------------------------------------------------------------ leader
    def on_read(self, client: int, m: Read, key: str) -> None:
        """A READ admitted by the desk, at this replica, which leads or does not."""
        core = self._core
        proposer = core.proposer
        if proposer.role is not Role.LEADER:
            if core.leader != core.id:
                core.emit(ToClient(client, ReadRedirect(client, m.nonce, core.id, core.leader)))
            else:                       # the ballot is mine, but phase 1 is not done: nobody leads yet
                core.read_desk.refuse(client, m, PaxosRule.READ_NOT_LEADING)
            return
        target = max(core.learner.commit_index, proposer.elected_top, m.min_height)
        r = core.read_desk.hold(client, m, key, target, confirmed=False)
        if r is not None:
            self.unprobed.append(r)

    def ready(self) -> None:
        """Start a round for the reads that arrived since the last one (one round per burst)."""
        core = self._core
        if not self.unprobed or core.proposer.role is not Role.LEADER or len(self.rounds) >= ROUNDS_IN_FLIGHT:
            return
        self.round += 1
        r = self.round
        self.rounds[r] = self.unprobed
        self.unprobed = []
        self.acks[r] = {core.id}
        self.sent[r] = core.now
        core.broadcast(PxReadIndex(core.ballot, r, core.learner.commit_index, core.id))
        self._check(r)

    def on_ack(self, sender: int, m: PxReadIndexAck) -> None:
        core = self._core
        if core.proposer.role is not Role.LEADER or m.ballot != core.ballot:
            core._drop(PaxosRule.READ_ACK_NOT_LEADING, sender)
            return
        acks = self.acks.get(m.round)
        if acks is None:
            core.count_useless()           # a round confirmed already (a late or repeated answer)
            return
        acks.add(sender)
        self._check(m.round)

    def _check(self, r: int) -> None:
        if len(self.acks[r]) < self._core.majority:
            return
        # a majority still follows this ballot after round r's reads arrived, and so after every
        # earlier round's: those are confirmed too
        for k in sorted(k for k in self.rounds if k <= r):
            for read in self.rounds.pop(k):
                read.confirmed = True
            del self.acks[k]
            del self.sent[k]
        self._core.read_desk.serve()

    def tick(self, now: float) -> None:
        """Re-send a round nobody answered for a retransmission interval, to those who did not."""
        core = self._core
        if core.proposer.role is not Role.LEADER:
            return
        for r, at in self.sent.items():
            if now - at >= core.cfg.retransmit_interval:
                self.sent[r] = now
                probe = PxReadIndex(core.ballot, r, core.learner.commit_index, core.id)
                for peer in range(core.n):
                    if peer not in self.acks[r]:
                        core.send(peer, probe)

    def abandon(self) -> None:
        """Stepping down: no round of this ballot can confirm any more; the held reads go."""
        self.unprobed = []
        self.rounds.clear()
        self.acks.clear()
        self.sent.clear()
        self._core.read_desk.abandon(PaxosRule.READ_LEADERSHIP_LOST)

    # ------------------------------------------------------------------ follower
    def on_probe(self, sender: int, m: PxReadIndex) -> None:
        """Acknowledge a round of the ballot this replica follows (and learn the commit index,
        as from a heartbeat); a stale ballot is NACKed by the acceptor's own rule."""
        core = self._core
        if core.acceptor.admit_leader(sender, m.ballot, "READ-INDEX"):
            core.learner.learn_commit(m.ballot, m.commit_index)
            core.send(sender, PxReadIndexAck(m.ballot, m.round, core.id))
