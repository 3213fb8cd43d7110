"""One sequence number's agreement state, with the paper's predicates (Castro & Liskov, OSDI 1999, §4.2).

A slot moves forward only: PRE_PREPARED (a PRE-PREPARE accepted) -> PREPARED (with 2f
matching PREPAREs of distinct backups) -> COMMITTED_LOCAL (prepared, with 2f+1 matching
COMMITs) -> EXECUTED. Votes may arrive before the PRE-PREPARE, so a slot starts EMPTY.
``prepared`` and ``committed_local`` are the predicates of §4.2, computed from the votes;
``advance`` records that one became true, and raises ``SlotStateError`` (a bug of ours,
never peer input) when asked to skip or go back a phase.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

from bft.wire import Commit, PrePrepare, Prepare, Request
from ledger import quorum


class LocalProtocolError(RuntimeError):
    """This replica's own code tried an illegal transition (h11's LocalProtocolError): a bug,
    raised loudly. Peer input never raises; it is dropped and counted by rule."""


class SlotStateError(LocalProtocolError):
    pass


class Phase(IntEnum):
    EMPTY = 0
    PRE_PREPARED = 1
    PREPARED = 2
    COMMITTED_LOCAL = 3
    EXECUTED = 4


@dataclass(slots=True)
class Slot:
    """Everything this replica knows about one (view, sequence number)."""
    pre_prepare: PrePrepare | None = None
    requests: list[Request] | None = field(default_factory=list)   # None: the batch is being fetched
    prepares: dict[int, Prepare] = field(default_factory=dict)
    commits: dict[int, Commit] = field(default_factory=dict)
    phase: Phase = Phase.EMPTY
    my_prepare: Prepare | None = None
    my_commit: Commit | None = None

    def advance(self, to: Phase) -> None:
        if to != self.phase + 1:
            raise SlotStateError(f"slot cannot go from {self.phase.name} to {to.name}")
        self.phase = to

    @property
    def is_prepared(self) -> bool:
        return self.phase >= Phase.PREPARED

    @property
    def is_committed_local(self) -> bool:
        return self.phase >= Phase.COMMITTED_LOCAL

    def prepared(self, primary: int, f: int) -> list[Prepare] | None:
        """prepared(m, v, n, i): the PRE-PREPARE and 2f PREPAREs of distinct backups that match
        it; returns those PREPAREs (the prepared certificate's), or None."""
        pp = self.pre_prepare
        if pp is None:
            return None
        matching = [p for r, p in self.prepares.items() if r != primary and p.digest == pp.digest]
        need = quorum.prepare_quorum(f)
        if len(matching) < need:
            return None
        return sorted(matching, key=lambda p: p.replica)[:need]

    def committed_local(self, f: int) -> list[tuple[int, bytes]] | None:
        """committed-local(m, v, n, i): prepared, and 2f+1 matching COMMITs of distinct replicas
        (this one's included); returns (replica, signature) of those COMMITs, or None."""
        if not self.is_prepared:
            return None
        digest = self.pre_prepare.digest
        matching = sorted((r, c.sig) for r, c in self.commits.items() if c.digest == digest)
        need = quorum.commit_quorum(f)
        return matching[:need] if len(matching) >= need else None


class CommittedBatch(NamedTuple):
    """A committed-local batch waiting for its turn to execute (sequence order)."""
    view: int
    digest: bytes
    batch: list[bytes]
    cert: list[tuple[int, bytes]]
    requests: list[Request] | None          # None: committed, its batch still being fetched
