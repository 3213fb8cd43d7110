"""The lab's rule switches, by name: which safety rule each turns off and which lab attack
shows what happens then. Data only (the CLI lists them without loading a core); the cores
with the rule off are in ``bft.unsafe``."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Switch:
    mode: str
    rule: str                    # what is turned off
    attack: str                  # the lab attack that shows the violation
    f: int = 1                   # ... at this f
    count: int = 1               # ... with this many Byzantine replicas (never more than f)
    seeds: tuple[int, ...] = (1, 2)   # seeds on which the violation shows (tested; the command uses the first)
    config: tuple = ()           # core settings it changes, as (name, value) pairs
    breaks: str = "safety"       # what breaks with the rule off

    def command(self, name: str) -> str:
        extra = (f" --f {self.f}" if self.f != 1 else "") + \
            (f" --byzantine-count {self.count}" if self.count != 1 else "") + \
            (f" --seed {self.seeds[0]}" if self.seeds[0] != 1 else "")
        return f"bftledger lab {self.attack} --mode {self.mode}{extra} --unsafe-disable {name}"


SWITCHES: dict[str, Switch] = {
    "quorum-size": Switch("pbft", "prepared needs 2f PREPAREs and committed-local 2f+1 COMMITs "
                                  "(OSDI 1999, §4.2); off: f and f+1", "equivocate"),
    "distinct-senders": Switch("pbft", "quorums count distinct replicas (§4.2); off: every copy of a vote "
                                       "counts", "collude", f=2, count=2),
    "view-change-certificates": Switch("pbft", "a NEW-VIEW re-proposes, for each sequence number, the digest "
                                               "prepared in the highest view of its VIEW-CHANGEs' certificates "
                                               "(§4.4); off: nulls everywhere", "lost-commits", seeds=(2, 3)),
    "one-pre-prepare": Switch("pbft", "a backup accepts one PRE-PREPARE per (view, sequence) and never votes "
                                      "against its own earlier vote (§4.2); off: a later one replaces it",
                              "equivocate-all", seeds=(2, 4)),
    "new-view-recompute": Switch("pbft", "a backup accepts a NEW-VIEW only if its O is the one it computes itself "
                                         "from V (§4.4); off: it takes the new primary's O", "forge-new-view"),
    "checkpoint-proofs": Switch("pbft", "a stable checkpoint claimed in a VIEW-CHANGE or NEW-VIEW carries 2f+1 "
                                        "matching CHECKPOINTs of distinct replicas (§4.3, §4.4); off: one "
                                        "replica's CHECKPOINT is proof enough", "false-checkpoint",
                                breaks="liveness"),
    "transfer-certificates": Switch("pbft", "a replica catching up executes a served block only under a commit "
                                            "certificate of 2f+1 COMMITs for its batch (§4.2, §4.3; state "
                                            "transfer moves certified blocks); off: it takes the serving peer's "
                                            "word", "forge-transfer"),
    "client-signatures": Switch("pbft", "every request in a batch carries its client's valid signature (§4.1); "
                                        "off: backups accept any request", "forge-request"),
    "highest-ballot": Switch("paxos", "a new leader re-proposes, for each slot, the value accepted in the "
                                      "highest ballot its promises report (Paxos Made Simple, §2.2); off: it "
                                      "proposes its own", "partition-primary"),
    "paxos-backoff": Switch("paxos", "a pre-empted proposer waits a randomized, growing time before it tries "
                                     "again (progress needs one distinguished proposer: Paxos Made Simple, §3); "
                                     "off: it retries at once", "great-livelock", f=2,
                            config=(("backoff", False),), breaks="liveness"),
    "paxos-majority": Switch("paxos", "a ballot needs promises, and a value acceptances, from a majority "
                                      "(Paxos Made Simple, §2.2); off: one acceptor is enough", "split-brain"),
}
