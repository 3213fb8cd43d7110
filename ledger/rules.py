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


@unique
class WireRule(Rule):
    """What a channel rejects before any core sees it (replicas and clients alike)."""

    MALFORMED = ("malformed message (not a well-formed, well-typed wire message)",
                 f"{OURS}: decoding validates types, ranges and sizes")
    OVERSIZED_FRAME = ("frame over the size cap", f"{OURS}: the cap is checked before decoding")
    UNEXPECTED_FROM_REPLICA = ("message a client does not take from a replica (only replies)", OURS)
    SERVE_RATE = ("receipt, attestation, state proof, history or scan requests over the rate limit",
                  f"{OURS}: bounded work per peer")
    PROOF_REFUSED = ("state proof request refused: a height above this replica's, a past state beyond the "
                     "replay limit, or a key that is not a key", f"{OURS}: bounded work per query (issue 16)")
    READ_PROOF_REJECTED = ("a replica's answer to a verified read does not verify (header, certificate, "
                           "state proof or attestations)", f"{OURS}: f+1 attest the state root (issue 16)")
    QUERY_QUEUE_FULL = ("history or scan query dropped: the queue of queries waiting to be served is full, "
                        "or holds the caller's share of it",
                        f"{OURS}: bounded work and memory per replica")
    QUERY_INVALID = ("history or scan query with a key, prefix or bound that is not UTF-8 (dropped)",
                     f"{OURS}: keys are UTF-8 text")
    QUERY_TOO_DEEP = ("scan in the past refused: replaying to that height is over the replica's bound",
                      f"{OURS}: bounded work per query")
    HANDSHAKE_AFTER_AUTH = ("handshake message after authentication", OURS)
    # the handshake: mutual TLS 1.3 with pinned keys, or a signed hello (plaintext-insecure)
    HANDSHAKE_TIMEOUT = ("channel handshake timed out", f"{OURS}: bounded pre-authentication state")
    HANDSHAKE_CLOSED = ("connection closed during the handshake", OURS)
    HANDSHAKE_MALFORMED = ("malformed handshake message", OURS)
    HANDSHAKE_OVERSIZED = ("frame over the handshake's size cap", f"{OURS}: a tiny cap before authentication")
    HANDSHAKE_UNEXPECTED = ("unexpected message during the handshake", OURS)
    NOT_WHO_WE_DIALLED = ("the peer is not who we dialled", f"{OURS}: pinned identities")
    NOT_ACCEPTING = ("this node does not accept connections", OURS)
    NO_CERTIFICATE = ("the peer presented no certificate or a non-Ed25519 one", "RFC 8446, §4.4.2; RFC 8410")
    TLS_FAILED = ("TLS handshake failed", "RFC 8446")
    UNKNOWN_IDENTITY = ("handshake from an identity not in cluster.toml", f"{OURS}: a fixed membership")
    CLAIMS_TO_BE_ME = ("a connection claiming to be this node", OURS)
    REFLECTED = ("handshake from the wrong direction (a reflected Auth)",
                 f"{OURS}: the signed Auth names its direction")
    RELAYED = ("handshake meant for another node (a relayed Auth)", f"{OURS}: the signed Auth names both ends")
    WRONG_CHALLENGE = ("handshake answered a different challenge", f"{OURS}: fresh nonces on both sides")
    HANDSHAKE_SIGNATURE = ("handshake with a bad signature", OURS)
    # connection budgets
    EVICTED_PER_SOURCE = ("handshake evicted: the per-source budget of pending handshakes is full",
                          f"{OURS}: bounded pre-authentication state")
    EVICTED_TOTAL = ("handshake evicted: the total budget of pending handshakes is full", OURS)
    CLIENTS_PER_SOURCE = ("client connection refused: the per-source budget is full", OURS)
    CLIENTS_TOTAL = ("client connection refused: the total budget is full", OURS)
