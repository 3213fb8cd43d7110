"""Rules every protocol core shares, the rules of the runtime's frames, and the drop counter.

``StepRule``: what the common ``step`` skeleton checks before a protocol handler sees a
message (membership, the message types a peer may send, the sender field against the
authenticated sender). ``RequestRule``: the admission of a client's signed request.
``ReadRule``: the admission of a client's READ, answered without ordering (``bft.reads``).
The protocols' own rules are in ``bft.pbft.rules`` and ``bft.paxos.rules``; the base
class, the ledger's rules and ``WireRule`` (what the channels reject before a message
reaches a core; ``ledger.net`` runs them for clients too) in ``ledger.rules``.
"""
from __future__ import annotations

import logging
from collections import Counter
from enum import unique

from ledger.rules import CL99, OURS, Rejection, Rule

__all__ = ["Drops", "ReadRule", "Rejection", "RequestRule", "Rule", "StepRule"]

CL02 = "Castro & Liskov, Practical Byzantine Fault Tolerance and Proactive Recovery, TOCS 2002"

SENDERS_PER_RULE = 64      # distinct senders named per rule; the rest count under "others"


@unique
class StepRule(Rule):
    """Checked by the skeleton's ``step`` for every message of every protocol."""

    NOT_A_MEMBER = ("message from a non-member (or from this replica itself)",
                    f"{CL99}, §2 (a fixed set of n replicas, each with a key)")
    CLIENT_SENT_PROTOCOL = ("protocol message from a client (clients may send only requests and reads)",
                            f"{CL99}, §4.1")
    UNEXPECTED_TYPE = ("message of a type this protocol does not take from a replica", OURS)
    SENDER_MISMATCH = ("sender field differs from the authenticated sender",
                       f"{CL99}, §2 (messages are authenticated: nobody speaks for another)")


@unique
class RequestRule(Rule):
    """Admission of a client's signed REQUEST <op, timestamp, client> (both modes)."""

    UNKNOWN_CLIENT = ("request for another client or an unknown one", f"{CL99}, §4.1")
    BAD_CLIENT_SIGNATURE = ("request with a bad client signature", f"{CL99}, §4.1 (requests are signed)")
    BLACKLISTED = ("request from a blacklisted client (it sent bad signatures)",
                   f"{OURS}: a client's bad signatures cost checks; its requests wait 10 s unverified")
    CLIENT_QUOTA_FULL = ("refused: the client's quota of held requests is full",
                         f"{OURS}: bounded resources, one client cannot spend another's share")
    POOL_FULL = ("refused: the pool of held requests is full", f"{OURS}: bounded resources")
    REGISTRATION_NOT_ADMIN = ("registration of a client by a client that is not the administrator",
                              f"{OURS}: only the key cluster.toml names admin onboards clients (ledger.clients)")
    REGISTRATION_KEY_TAKEN = ("registration of a key that is already a replica's or a client's",
                              f"{OURS}: one identity per key, so a channel's peer is never ambiguous")


@unique
class ReadRule(Rule):
    """Admission of a client's READ (both modes): answered from the executed state, never
    ordered, so nothing but these checks stands between a client and a replica's work."""

    WRONG_CLIENT = ("read naming another client than its channel's, or an unknown one",
                    f"{CL99}, §2 (nobody speaks for another); {OURS}: a read is authenticated by its channel")
    NOT_READ_ONLY = ("read whose operation is not read-only (or is malformed)",
                     f"{CL02}, §5.1.3 (replicas check that the request is in fact read-only)")
    RATE = ("read over the client's read rate: answered BUSY",
            f"{OURS}: a read costs a replica a lookup and a reply; bounded work per client")
    HELD_FULL = ("read refused: the client's reads waiting for a height are as many as allowed (answered BUSY)",
                 f"{OURS}: bounded memory per client and in all")
    EXPIRED = ("read dropped unanswered: this replica did not reach the height it needs in time",
               f"{OURS}: held reads are bounded in time (the client falls back to an ordered read)")


class Drops:
    """Drops counted by rule and by sender; the first of each rule is logged.

    Senders are named "r3" (replica 3) or "c17" (client 17); at most SENDERS_PER_RULE are
    named per rule and the rest count under "others", so a flood of distinct clients cannot
    grow the table beyond rules x SENDERS_PER_RULE."""

    __slots__ = ("by_rule", "by_sender", "_log", "_who")

    def __init__(self, logger: logging.Logger, who: str) -> None:
        self.by_rule: Counter[Rule] = Counter()
        self.by_sender: dict[Rule, Counter[str]] = {}
        self._log = logger
        self._who = who

    def count(self, rule: Rule, sender: str | None, detail: str = "") -> None:
        if rule not in self.by_rule:
            self._log.info("%s drops: %s [%s]%s from %s (first of its kind)", self._who, rule.text, rule.label,
                           f" ({detail})" if detail else "", sender or "itself")
        self.by_rule[rule] += 1
        if sender is not None:
            senders = self.by_sender.setdefault(rule, Counter())
            if sender not in senders and len(senders) >= SENDERS_PER_RULE:
                sender = "others"
            senders[sender] += 1

    def __getitem__(self, rule: Rule) -> int:
        return self.by_rule[rule]

    def total(self) -> int:
        return sum(self.by_rule.values())

    def as_json(self) -> dict:
        """{"rule label": {"total": n, "by_sender": {"r1": k, ...}}}, for ``status --json``."""
        return {rule.label: {"total": n, "by_sender": dict(self.by_sender.get(rule, {}))}
                for rule, n in sorted(self.by_rule.items(), key=lambda kv: kv[0].label)}


def replica_name(replica: int) -> str:
    return f"r{replica}"


def client_name(client: int) -> str:
    return f"c{client}"

