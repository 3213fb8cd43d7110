"""Quorum arithmetic and the protocol descriptor: the one module that writes 2f+1.

It sits in the bottom layer that every other one may import (``ledger`` imports nothing
from ``bft``), because the ledger checks certificates, the client counts replies, the
simulator and the adversaries size their attacks, and the cores count votes, all with
the same numbers. Everything else asks ``Quorums`` or a ``Protocol``, never ``f``
directly, so that weakening a quorum on purpose (to see which test notices) is a
one-line change here.

Sources: Castro & Liskov, "Practical Byzantine Fault Tolerance and Proactive Recovery",
TOCS 20(4), 2002, §4.2-§4.4 (n = 3f+1; prepared = PRE-PREPARE + 2f PREPAREs;
committed-local = 2f+1 COMMITs; stable checkpoint = 2f+1 CHECKPOINTs; a NEW-VIEW holds
2f+1 VIEW-CHANGEs; a client waits for f+1 matching replies; a replica joins a view
change after f+1 VIEW-CHANGEs). Lamport, "Paxos Made Simple", 2001, §2.2 (any two
majorities of n = 2f+1 acceptors intersect).
"""
from __future__ import annotations

from dataclasses import dataclass


def pbft_n(f: int) -> int:
    return 3 * f + 1


def pbft_f(n: int) -> int:
    """The most faults n replicas tolerate in pbft: n >= 3f+1."""
    return (n - 1) // 3


def paxos_n(f: int) -> int:
    return 2 * f + 1


def paxos_f(n: int) -> int:
    return (n - 1) // 2


def prepare_quorum(f: int) -> int:
    """PREPAREs from distinct backups that, with the PRE-PREPARE, make a request prepared."""
    return 2 * f


def commit_quorum(f: int) -> int:
    """Matching COMMITs (own included) that make a request committed-local."""
    return 2 * f + 1


def checkpoint_quorum(f: int) -> int:
    return 2 * f + 1


def view_change_quorum(f: int) -> int:
    return 2 * f + 1


def join_quorum(f: int) -> int:
    """Replicas that include at least one honest one (f+1): enough to join a view change,
    to trust a reply, or to trust an execution attestation."""
    return f + 1


def reply_quorum(f: int) -> int:
    """Matching REPLYs a pbft client needs (one of them is honest)."""
    return join_quorum(f)


def read_quorum(f: int) -> int:
    """Matching answers a pbft client needs for a read that is not ordered (Castro & Liskov,
    TOCS 2002, §5.1.3): 2f+1, so that any two such reads, and a read and the replicas that
    executed a write, meet in a replica (in an honest one for two reads)."""
    return 2 * f + 1


def majority(n: int) -> int:
    return n // 2 + 1


@dataclass(frozen=True)
class Quorums:
    """Every threshold of one cluster, by what it decides."""

    mode: str
    f: int

    @property
    def byzantine(self) -> bool:
        return self.mode == "pbft"

    @property
    def n(self) -> int:
        return pbft_n(self.f) if self.byzantine else paxos_n(self.f)

    @property
    def decide(self) -> int:
        """Votes that decide a slot: 2f+1 COMMITs in pbft, a majority of acceptors in paxos."""
        return commit_quorum(self.f) if self.byzantine else majority(paxos_n(self.f))

    @property
    def prepare(self) -> int:
        return prepare_quorum(self.f)

    @property
    def checkpoint(self) -> int:
        return checkpoint_quorum(self.f)

    @property
    def view_change(self) -> int:
        return view_change_quorum(self.f)

    @property
    def one_honest(self) -> int:
        """f+1: any set this large holds an honest replica (pbft); one replica suffices in paxos."""
        return join_quorum(self.f) if self.byzantine else 1

    @property
    def reply(self) -> int:
        """Matching replies a client accepts: f+1 in pbft, the leader's one in paxos."""
        return self.one_honest

    @property
    def read(self) -> int:
        """Matching answers a client accepts for a read answered without ordering: 2f+1 in
        pbft (TOCS 2002, §5.1.3), the leader's one in paxos (after its read-index round)."""
        return read_quorum(self.f) if self.byzantine else 1

    @property
    def attest(self) -> int:
        """Replicas whose signature on a block hash makes a receipt trustworthy."""
        return self.one_honest

    @property
    def certificate(self) -> int:
        """Distinct signatures a block's commit certificate needs: 2f+1 COMMITs in pbft,
        the ballot leader's one in paxos."""
        return commit_quorum(self.f) if self.byzantine else 1

    @property
    def beyond_f(self) -> int:
        """f+1: the smallest number of faulty replicas the mode does not tolerate."""
        return join_quorum(self.f)


@dataclass(frozen=True)
class Protocol:
    """What differs between the two modes, named once, in place of ``mode ==`` branches."""

    name: str
    byzantine: bool
    round_word: str          # "view" or "ballot"
    leader_word: str         # "primary" or "leader"
    fault_word: str          # what a tolerated faulty replica may do
    certificate_word: str    # what certifies a block

    def n(self, f: int) -> int:
        return pbft_n(f) if self.byzantine else paxos_n(f)

    def f(self, n: int) -> int:
        return pbft_f(n) if self.byzantine else paxos_f(n)

    def quorums(self, f: int) -> Quorums:
        return Quorums(self.name, f)


PBFT = Protocol("pbft", True, "view", "primary", "lie (Byzantine)", "COMMITs of replicas")
PAXOS = Protocol("paxos", False, "ballot", "leader", "crash", "ACCEPT of leader")
PROTOCOLS = {p.name: p for p in (PBFT, PAXOS)}


def protocol(mode: str) -> Protocol:
    """The descriptor of ``mode``; ValueError names the modes there are."""
    p = PROTOCOLS.get(mode)
    if p is None:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(PROTOCOLS)}")
    return p
