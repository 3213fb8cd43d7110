"""Ballots, the roles a replica plays, and the error an illegal local transition raises.

Ballots are single integers; the leader (proposer) of ballot ``b`` is ``b % n``, so the
proposers draw their ballots from disjoint sets as "Paxos Made Simple" §2.2 asks.
"""
from __future__ import annotations

from enum import Enum

from crypto.merkle import root_of

NOOP_DIGEST = root_of([])           # the digest of the no-op a new leader proposes in a gap (§3)


class Role(Enum):
    """What a replica does in the election: Raft's names, since Paxos leaves leader election open.

    A follower accepts what the leader of its ballot proposes; a pre-candidate asks whether a
    majority would promise its next ballot (no state changes yet); a candidate runs phase 1
    for its own ballot; a leader runs phase 2 for every slot."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"

    @property
    def proposing(self) -> bool:
        """It holds a ballot of its own (a candidacy or a leadership) that a higher one pre-empts."""
        return self is Role.CANDIDATE or self is Role.LEADER


class PaxosStateError(RuntimeError):
    """A local transition the protocol forbids (promising below a promise, leading without a
    majority of promises): a bug in this replica, never the effect of a peer's message."""


def leader_of(ballot: int, n: int) -> int:
    return ballot % n


def next_ballot(above: int, replica: int, n: int) -> int:
    """The smallest ballot greater than ``above`` that belongs to ``replica``."""
    b = above + 1
    return b + (replica - b) % n
