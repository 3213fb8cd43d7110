"""The rule vocabulary: every reason to reject a message, a block or a proof is a named rule.

A rule is an enum member with the sentence a person reads (``text``) and the source it
comes from (``source``: a paper and its section, an RFC, or "bftledger" with the reason
for a rule the papers leave to the implementation, such as a rate limit). Drop counters,
``status --json``, the lab tools and the tests speak the members' names
(``pbft.NOT_FROM_PRIMARY``), never the prose, so that prose can be reworded without
breaking anything and a student can go from a counter to the paper.

This module holds the base class and the ledger's own rules (certificates, blocks,
Merkle proofs, state transfer of blocks); ``bft.rules`` holds the rules every protocol
core shares and those of the runtime, ``bft.pbft.rules`` and ``bft.paxos.rules`` the
protocols' own. ``python -m bft.app.rules_table`` writes the table in docs/rules.md.
"""
from __future__ import annotations

from enum import Enum, unique
from typing import NamedTuple

CL99 = "Castro & Liskov, Practical Byzantine Fault Tolerance, OSDI 1999"
LAMPORT01 = 'Lamport, "Paxos Made Simple", 2001'
ONGARO14 = "Ongaro, Consensus: Bridging Theory and Practice, PhD thesis, 2014"
RFC9162 = "RFC 9162 (Certificate Transparency 2.0)"
OURS = "bftledger"


class Rule(Enum):
    """Base of every rule family; a family's name is its class name without 'Rule'."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source

    @property
    def family(self) -> str:
        return type(self).__name__.removesuffix("Rule").lower()

    @property
    def label(self) -> str:
        """The stable name used in counters and JSON: ``family.MEMBER``."""
        return f"{self.family}.{self.name}"

    def __str__(self) -> str:
        return self.label


class Rejection(NamedTuple):
    """A rule broken, with the particulars of this case (counts, heights) for people to read.

    Checks return one (or None when nothing is wrong); counters key on ``rule`` only, so
    the particulars never multiply the counter's keys."""

    rule: Rule
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.rule.text}: {self.detail}" if self.detail else self.rule.text


@unique
class LedgerRule(Rule):
    """What makes a block, a commit certificate or an execution attestation invalid."""

    CERT_TOO_FEW_COMMITS = ("commit certificate has too few valid COMMIT signatures of distinct replicas",
                            f"{CL99}, §4.2 (committed-local needs 2f+1 matching COMMITs)")
    CERT_NO_LEADER_ACCEPT = ("no valid ACCEPT signature of the ballot's leader",
                             f"{LAMPORT01}, §3 (the leader of a ballot proposes; crash-fault trust)")
    CERT_UNKNOWN_MODE = ("certificate of an unknown mode", OURS)
    BLOCK_SEQUENCE_NOT_HEIGHT = ("block sequence differs from its height",
                                 f"{OURS}: one block per committed sequence number")
    BLOCK_BATCH_ROOT = ("block transactions differ from its batch root", f"{RFC9162}, §2.1.1")
    BLOCK_MALFORMED = ("malformed block", OURS)
    BLOCK_LINK = ("block does not extend the chain (height, previous hash or log root)",
                  f"{OURS}: hash-linked blocks over an append-only log, {RFC9162}, §2.1.4")
    ATTEST_TOO_FEW = ("too few valid execution attestations of distinct replicas on the block hash",
                      f"{CL99}, §4.1 (f+1 matching replies hold an honest one)")
