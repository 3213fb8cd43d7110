"""The acceptor: phase 1b (PREPARE -> PROMISE) and phase 2b (ACCEPT -> ACCEPTED).

The only durable part of a replica ("Paxos Made Simple" §2.2, §2.4: an acceptor must
remember what it promised and accepted across a failure). ``AcceptorState`` holds the
promised ballot and the accepted value of every open slot; every change returns the
vote-log record that the replica persists (a ``Persist`` action placed before the matching
send), so that a restarted replica never promises or accepts against what it said before.
``Acceptor`` answers the messages: it promises a PREPARE above every ballot it promised
or follows, accepts an ACCEPT unless it promised a higher ballot, answers a PRE-VOTE with
what it would do with a PREPARE (without doing it), and refuses, with a NACK naming its
ballot, whatever it promised not to take.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import msgpack

from bft.paxos.ballots import PaxosStateError, Role, leader_of
from bft.paxos.rules import PaxosRule
from bft.wire import (MAX_LIST, DecodeError, PxAccept, PxAccepted, PxNack, PxPrepare, PxPreVote, PxPreVoteGrant,
                      PxPromise, decode)
from crypto.merkle import root_of

if TYPE_CHECKING:
    from bft.paxos.core import PaxosCore


class AcceptorState:
    """The promised ballot and the accepted value of every open slot.

    ``promise``/``accept`` return the vote-log record the replica persists before answering
    and raise ``PaxosStateError`` on a vote that contradicts an earlier one; ``recover``
    rebuilds the same state from those records after a restart."""

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
            raise PaxosStateError(f"promise of ballot {ballot} at or below the promised {self.promised}")
        self.promised = ballot
        return _record("promise", ballot)

    def accept(self, acc: PxAccept) -> bytes:
        if not self.may_accept(acc.ballot):
            raise PaxosStateError(f"accept in ballot {acc.ballot} below the promised {self.promised}")
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
    def recover(cls, records: list[bytes], executed: int) -> "AcceptorState":
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


class Acceptor:
    """The acceptor's messages; its durable state is an ``AcceptorState``."""

    __slots__ = ("_core", "_votes")

    def __init__(self, core: "PaxosCore", votes: AcceptorState) -> None:
        self._core = core
        self._votes = votes

    # ------------------------------------------------------------------ read by the other roles
    @property
    def promised(self) -> int:
        return self._votes.promised

    @property
    def accepted(self) -> dict[int, PxAccept]:
        """slot -> the value accepted under the highest ballot (read only: for learners and tests)."""
        return self._votes.accepted

    def value(self, slot: int) -> PxAccept | None:
        return self._votes.accepted.get(slot)

    def may_promise(self, ballot: int) -> bool:
        return self._votes.may_promise(ballot)

    def may_accept(self, ballot: int) -> bool:
        return self._votes.may_accept(ballot)

    # ------------------------------------------------------------------ the replica's own votes
    def promise_own(self, ballot: int) -> PxPromise:
        """A candidate's own promise, durable before its PREPARE leaves; the PROMISE it counts."""
        core = self._core
        core.persist(self._votes.promise(ballot))
        return PxPromise(ballot, core.id, core.chain.height, self._votes.report(core.chain.height))

    def accept_own(self, acc: PxAccept) -> None:
        """A leader's own acceptor accepts its proposal first, durable before the ACCEPT leaves."""
        self._core.persist(self._votes.accept(acc))

    def executed_upto(self, height: int) -> None:
        self._votes.forget_upto(height)

    def snapshot(self) -> list[bytes]:
        return self._votes.snapshot()

    # ------------------------------------------------------------------ phase 1b
    def on_prepare(self, sender: int, m: PxPrepare) -> None:
        core, proposer, votes = self._core, self._core.proposer, self._votes
        if leader_of(m.ballot, core.n) != sender:
            core._drop(PaxosRule.NOT_BALLOT_OWNER, sender, "PREPARE")
            return
        if proposer.role is Role.FOLLOWER and proposer.hears_live_leader(sender):
            # leader stickiness: while this acceptor hears a live leader, a candidate that does
            # not (one that skipped the pre-vote, or won it just before the leader spoke again)
            # gets no promise, so it cannot depose a working leader. Refusing a promise never
            # endangers safety.
            core._drop(PaxosRule.LEADER_ALIVE, sender, "PREPARE")
            return
        height = core.chain.height
        if m.ballot > proposer.ballot and votes.may_promise(m.ballot):
            report = votes.report(max(m.from_slot, height))
            if len(report) > MAX_LIST:
                core._drop(PaxosRule.PROMISE_TOO_LARGE, sender)
                return
            was_proposing = proposer.prepare_heard(m.ballot)
            core.persist(votes.promise(m.ballot))              # durable before the PROMISE leaves
            core.send(sender, PxPromise(m.ballot, core.id, height, report))
            proposer.promise_sent(was_proposing)
        elif m.ballot == proposer.ballot == votes.promised and not proposer.role.proposing:
            # the candidate re-sent its PREPARE: answer again, nothing new to persist
            report = votes.report(max(m.from_slot, height))
            if len(report) <= MAX_LIST:
                core.send(sender, PxPromise(m.ballot, core.id, height, report))
        else:
            self._nack(sender, m.ballot)
            core._drop(PaxosRule.PREPARE_BELOW_PROMISE, sender)

    def on_prevote(self, sender: int, m: PxPreVote) -> None:
        """Would I promise ``m.ballot``? Granting changes nothing: the promise comes from phase 1."""
        core, proposer = self._core, self._core.proposer
        if leader_of(m.ballot, core.n) != sender:
            core._drop(PaxosRule.NOT_BALLOT_OWNER, sender, "PRE-VOTE")
            return
        if proposer.hears_live_leader(sender):
            core._drop(PaxosRule.LEADER_ALIVE, sender, "PRE-VOTE")
            return
        if not (m.ballot > proposer.ballot and self._votes.may_promise(m.ballot)):
            self._nack(sender, m.ballot)        # tells it the ballot to go above
            return
        core.send(sender, PxPreVoteGrant(m.ballot, core.id))

    # ------------------------------------------------------------------ phase 2b
    def admit_leader(self, sender: int, ballot: int, what: str) -> bool:
        """An ACCEPT or HEARTBEAT from the leader of ``ballot``: follow it, or refuse a stale one."""
        core, proposer = self._core, self._core.proposer
        if leader_of(ballot, core.n) != sender:
            core._drop(PaxosRule.NOT_BALLOT_OWNER, sender, what)
            return False
        if ballot < proposer.ballot or not self._votes.may_accept(ballot):
            self._nack(sender, ballot)
            core._drop(PaxosRule.STALE_BALLOT, sender, what)
            return False
        proposer.follow(ballot)
        return True

    def on_accept(self, sender: int, m: PxAccept) -> None:
        core = self._core
        if m.slot < 1:
            core._drop(PaxosRule.ACCEPT_SLOT_ZERO, sender)
            return
        if m.slot > core.chain.height + core.cfg.accept_window:
            # far behind (back from a partition): not a value to accept, but a live leader to
            # follow and a commit index to catch up to, instead of campaigning against it
            if self.admit_leader(sender, m.ballot, "ACCEPT"):
                core.learner.learn_commit(m.ballot, m.commit_index)
            core._drop(PaxosRule.ACCEPT_FAR_AHEAD, sender)
            return
        prev = self._votes.accepted.get(m.slot)
        duplicate = prev is not None and prev.ballot == m.ballot and prev.sig == m.sig and prev.digest == m.digest
        if not duplicate and m.ballot >= core.proposer.ballot:
            if not core.keys.replica_signed(m, sender):
                core._drop(PaxosRule.ACCEPT_SIGNATURE, sender)
                if leader_of(m.ballot, core.n) == sender:
                    core.proposer.distrust(m.ballot)
                return
            if root_of(m.batch) != m.digest:
                core._drop(PaxosRule.ACCEPT_DIGEST, sender)
                return
        if not self.admit_leader(sender, m.ballot, "ACCEPT"):
            return
        if m.slot > core.chain.height and not duplicate:
            if prev is not None and prev.ballot == m.ballot:
                if prev.digest != m.digest:
                    core.note_equivocation((m.ballot, m.slot), sender, f"it sent this acceptor two values for "
                                           f"slot {m.slot} in ballot {m.ballot}")
                core._drop(PaxosRule.ACCEPT_TWICE, sender)
                return
            core.persist(self._votes.accept(m))              # durable before the ACCEPTED leaves
        core.send(sender, PxAccepted(m.ballot, m.slot, core.id))
        core.learner.learn_commit(m.ballot, m.commit_index)

    def _nack(self, to: int, ballot: int) -> None:
        core = self._core
        core.send(to, PxNack(ballot, core.proposer.ballot, core.id))
