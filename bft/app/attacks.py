"""The attack catalogue: what each attack does, what stops it, what a student will see.

Every entry runs in the lab (``bftledger lab NAME``, the simulator driving the real cores),
in each mode it applies to. For each mode it names the rules that stop the attack (drop
rules, or the rules by which backups suspect a primary) and the outcome a run shows: for
pbft safety and liveness hold; for paxos some attacks break one of them, which is the
lesson. ``tests/unit/test_lab.py`` runs every listed command and checks that at least one
listed rule fires against the attacker and that the outcome is the one stated here, so the
catalogue cannot claim what the code does not do.
"""
from __future__ import annotations

from dataclasses import dataclass

from bft.adversary import STRATEGIES
from bft.sim.lab import SCENARIOS


@dataclass(frozen=True)
class Outcome:
    rules: tuple[str, ...]           # labels; at least one fires against the attacker in the lab
    observe: str
    safety: str = "held"
    liveness: str = "held"


@dataclass(frozen=True)
class Attack:
    name: str
    what: str
    defence: str                     # how the protocol stops it, with the paper's section
    pbft: Outcome | None = None
    paxos: Outcome | None = None

    @property
    def kind(self) -> str:
        return SCENARIOS[self.name].kind

    def outcome(self, mode: str) -> Outcome | None:
        return self.pbft if mode == "pbft" else self.paxos

    def command(self, mode: str) -> str:
        return f"bftledger lab {self.name} --mode {mode}"

    def real_command(self, mode: str) -> str | None:
        """The same attack on real replica processes, where ``--real`` runs it."""
        from bft.app.reallab import real_attacks

        return f"{self.command(mode)} --real" if self.name in real_attacks(mode) else None

    def as_json(self) -> dict:
        modes = {}
        for mode in ("pbft", "paxos"):
            o = self.outcome(mode)
            if o is not None:
                modes[mode] = {"rules": list(o.rules), "observe": o.observe, "safety": o.safety,
                               "liveness": o.liveness, "command": self.command(mode),
                               "real_command": self.real_command(mode)}
        return {"name": self.name, "kind": self.kind, "what": self.what, "defence": self.defence, "modes": modes}


NO_RULE_PAXOS = "no rule of Paxos looks at it: Paxos assumes replicas do not lie"

ATTACKS: list[Attack] = [
    # ------------------------------------------------------------------ Byzantine replicas
    Attack("silent", STRATEGIES["silent"],
           "quorums of 2f+1 (pbft) or a majority (paxos) never need any one replica (OSDI 1999, §4.2)",
           Outcome((), "nothing is dropped; every request commits with the other three"),
           Outcome((), "nothing is dropped; the other two form a majority")),
    Attack("wrong-digest", STRATEGIES["wrong-digest"],
           "votes count only if they match the PRE-PREPARE's digest, one per replica (§4.2)",
           Outcome(("pbft.DUPLICATE_VOTE",), "its votes never match; its second votes are dropped")),
    Attack("corrupt", STRATEGIES["corrupt"],
           "every protocol message is signed and checked before it counts (§4.2)",
           Outcome(("pbft.BAD_SIGNATURE",), "hundreds of bad signatures, all from the attacker"),
           Outcome(("paxos.ACCEPT_SIGNATURE",), "as the leader: its ACCEPTs are dropped, and the followers stop "
                   "counting its heartbeats (a crash-fault leader never signs wrong) and elect another")),
    Attack("forge", STRATEGIES["forge"],
           "the sender field must be the channel's authenticated sender (OSDI 1999, §2)",
           Outcome(("step.SENDER_MISMATCH",), "every forged message dropped, counted against the forger"),
           Outcome(("step.SENDER_MISMATCH",), "the channel catches it in paxos too")),
    Attack("replay", STRATEGIES["replay"],
           "messages outside the current view or the watermarks are dropped (§4.2, §4.3)",
           Outcome(("pbft.OUTSIDE_WATERMARKS", "pbft.OTHER_VIEW"), "old messages dropped by view and watermark"),
           Outcome(("paxos.PROMISE_NOT_RUNNING", "paxos.PREVOTE_GRANT_NOT_RUNNING", "paxos.STALE_BALLOT"),
                   "replayed election messages for ballots nobody runs are dropped")),
    Attack("flood", STRATEGIES["flood"],
           "quorums count distinct replicas: a repeated vote counts once (§4.2)",
           Outcome(("pbft.OUTSIDE_WATERMARKS", "pbft.DUPLICATE_VOTE"), "copies change nothing; late ones dropped"),
           Outcome(("paxos.PROMISE_NOT_RUNNING", "paxos.PREVOTE_GRANT_NOT_RUNNING"),
                   "copies of election messages arrive after the election and are dropped")),
    Attack("equivocate", STRATEGIES["equivocate"],
           "a backup accepts one PRE-PREPARE per (view, sequence); without 2f PREPAREs for one digest "
           "nothing is prepared, the timers fire and the view changes (§4.2, §4.4)",
           Outcome(("pbft.CONFLICTING_PRE_PREPARE", "suspicion.REQUEST_TIMER"),
                   "the conflicting PRE-PREPARE is dropped, the view changes, the ledgers stay equal"),
           Outcome((), "the two followers execute different batches at one height: " + NO_RULE_PAXOS,
                   safety="violated", liveness="not measured")),
    Attack("equivocate-all", STRATEGIES["equivocate-all"],
           "a backup accepts the first PRE-PREPARE for a (view, sequence) and drops any other (§4.2)",
           Outcome(("pbft.CONFLICTING_PRE_PREPARE",), "every second PRE-PREPARE dropped; the ledgers stay equal")),
    Attack("slow", STRATEGIES["slow"],
           "a view must keep up the throughput of recent views, or the backups suspect it (Aardvark)",
           Outcome(("suspicion.CALIBRATION", "suspicion.THROUGHPUT", "suspicion.REQUEST_TIMER"),
                   "the backups suspect the slow primary and change the view"),
           Outcome((), "the slow leader keeps its ballot; requests wait but commit")),
    Attack("censor", STRATEGIES["censor"],
           "a client's request that waits while others are served makes the backups suspect (Aardvark)",
           Outcome(("suspicion.CENSORSHIP", "suspicion.REQUEST_TIMER"),
                   "the backups suspect the censoring primary; client 0 is served in the next view"),
           Outcome((), "client 0 is never served: the leader's heartbeats keep it in office; " + NO_RULE_PAXOS,
                   liveness="violated")),
    Attack("forge-request", STRATEGIES["forge-request"],
           "every request in a batch must carry its client's valid signature (§4.1)",
           Outcome(("pbft.BATCH_BAD_CLIENT_SIGNATURE",), "its batches are refused; the view changes")),
    Attack("forge-vc", STRATEGIES["forge-vc"],
           "a VIEW-CHANGE's prepared certificates and checkpoint proof are checked (§4.4)",
           Outcome(("pbft.PREPARED_CERT_NOT_PRIMARY", "pbft.CHECKPOINT_PROOF_SIGNATURE"),
                   "the forged VIEW-CHANGEs are rejected; the NEW-VIEW is built from honest ones")),
    Attack("padded-vc", STRATEGIES["padded-vc"],
           "a VIEW-CHANGE must carry exactly 2f PREPAREs per certificate and 2f+1 CHECKPOINTs (§4.4)",
           Outcome(("pbft.CHECKPOINT_PROOF_SIZE", "pbft.PREPARED_CERT_SIZE", "suspicion.REQUEST_TIMER"),
                   "the padded VIEW-CHANGEs are rejected before they can swell a NEW-VIEW")),
    Attack("descending-vc", STRATEGIES["descending-vc"],
           "one VIEW-CHANGE kept per replica, its highest (bounded state)",
           Outcome(("pbft.VIEW_CHANGE_REGRESSES",), "each lower VIEW-CHANGE is dropped")),
    Attack("far-checkpoints", STRATEGIES["far-checkpoints"],
           "a few unstable CHECKPOINTs kept per replica; 2f+1 matching ones are needed to be stable (§4.3)",
           Outcome((), "nothing changes: the far checkpoints never become stable and their memory is bounded")),
    Attack("state-flood", STRATEGIES["state-flood"],
           "state requests are answered a few per interval per peer (bounded work)",
           Outcome((), "the honest replicas keep committing; over the rate, requests are dropped")),
    Attack("empty-batches", STRATEGIES["empty-batches"],
           "a primary that orders nothing useful is suspected (request timer, heartbeat rule)",
           Outcome(("suspicion.REQUEST_TIMER", "suspicion.HEARTBEAT"), "the view changes; requests commit")),
    Attack("replay-executed", STRATEGIES["replay-executed"],
           "executed requests do not count as progress; the primary is suspected",
           Outcome(("suspicion.REQUEST_TIMER", "suspicion.HEARTBEAT"), "the view changes; requests commit")),
    Attack("flood-votes", STRATEGIES["flood-votes"],
           "a repeated vote counts once; votes below the stable checkpoint are dropped (§4.3)",
           Outcome(("pbft.OUTSIDE_WATERMARKS",), "thousands of stale votes dropped, counted against the attacker")),
    Attack("flood-vc", STRATEGIES["flood-vc"],
           "f VIEW-CHANGEs cannot move anyone: a replica joins a view change after f+1 (§4.5.2)",
           Outcome((), "nobody leaves the view")),
    Attack("forge-new-view", STRATEGIES["forge-new-view"] + "; the network loses the COMMITs to replicas 2 and 3 "
           "for 0.4 s, then cuts the primary off, so that replicas 0 and 1 have committed batches the others only "
           "prepared, and the attacker, replica 1, is the next primary",
           "a backup accepts a NEW-VIEW only if O is what it computes itself from V (§4.4); turn it off to see "
           "the ledgers split: --unsafe-disable new-view-recompute",
           Outcome(("pbft.NEW_VIEW_WRONG_O",),
                   "the forged NEW-VIEW is rejected, the view moves on to an honest primary, and what committed "
                   "in view 0 survives")),
    Attack("false-checkpoint", STRATEGIES["false-checkpoint"],
           "a stable checkpoint is proved by 2f+1 matching CHECKPOINTs of distinct replicas, in a VIEW-CHANGE "
           "as anywhere (§4.3, §4.4); turn it off to see every replica stall: --unsafe-disable checkpoint-proofs",
           Outcome(("pbft.CHECKPOINT_PROOF_SIZE",),
                   "its VIEW-CHANGEs are rejected; the NEW-VIEW is built from honest ones")),
    Attack("forge-transfer", STRATEGIES["forge-transfer"] + "; the network cuts replica 2 off for 1.5 s, so that "
           "it must catch up by state transfer, a few blocks per request from each peer in turn",
           "a served block is executed only under a commit certificate of 2f+1 COMMITs for its batch; turn it "
           "off to see the ledgers split: --unsafe-disable transfer-certificates",
           Outcome(("ledger.CERT_TOO_FEW_COMMITS",),
                   "the forged blocks are rejected; replica 2 fetches the real ones from the next peer")),
    Attack("lying-reads", STRATEGIES["lying-reads"],
           "pbft: a read that is not ordered is accepted only when 2f+1 replicas answer the same value, held "
           "since the same height, so f liars cannot make one, and the client falls back to an ordered read "
           "(Castro & Liskov, TOCS 2002, §5.1.3); paxos: the client trusts the leader's one answer",
           Outcome((), "the lie never gathers 2f+1 matching answers: every read returns a value the ledger held"),
           Outcome((), "the clients accept the leader's made-up value: " + NO_RULE_PAXOS,
                   safety="violated", liveness="not measured")),
    Attack("collude", "K replicas led by the primary split the honest ones in two halves: each half gets its "
           "own PRE-PREPARE and the team's PREPAREs and COMMITs for it (bft.collusion)",
           "with K <= f the halves cannot both reach 2f PREPAREs and 2f+1 COMMITs: quorums of 2f+1 intersect "
           "in an honest replica (OSDI 1999, §4.5.1); with K = f+1 they can (--byzantine-count 2 at n=4)",
           Outcome(("pbft.CONFLICTING_PRE_PREPARE", "pbft.DUPLICATE_VOTE"),
                   "with K <= f the split fails and the view changes; with K = f+1 two honest replicas "
                   "commit different batches at one height")),
    Attack("byzantine-ledger", "the war story: the leader tells half the replicas one ledger and the other "
           "half another (it equivocates at every height)",
           "pbft: a backup accepts one PRE-PREPARE per (view, sequence) and commits only with 2f+1 matching "
           "COMMITs, so the liar is outvoted and replaced (§4.2, §4.4); paxos has no such rule",
           Outcome(("pbft.CONFLICTING_PRE_PREPARE", "suspicion.REQUEST_TIMER"),
                   "the lie is dropped, the view changes, every ledger stays equal"),
           Outcome((), "the followers' ledgers split at the first height: " + NO_RULE_PAXOS,
                   safety="violated", liveness="not measured")),
    # ------------------------------------------------------------------ hostile clients
    Attack("bad-signatures", "client 2 sends requests with made-up signatures",
           "requests are signed (§4.1); a client whose signatures keep failing is blacklisted for a while",
           Outcome(("request.BAD_CLIENT_SIGNATURE", "request.BLACKLISTED"), "checked, dropped, then not even checked"),
           Outcome(("request.BAD_CLIENT_SIGNATURE", "request.BLACKLISTED"), "the same in paxos")),
    Attack("impersonate-client", "client 2, on its own authenticated connection, sends requests naming client 0",
           "a request must name the client its channel authenticated",
           Outcome(("request.UNKNOWN_CLIENT",), "every such request dropped"),
           Outcome(("request.UNKNOWN_CLIENT",), "the same in paxos")),
    Attack("client-flood", "client 2 sends 60 valid requests at once",
           "each client has a quota of held requests; over it, BUSY (bounded resources)",
           Outcome(("request.CLIENT_QUOTA_FULL",), "client 2 is told BUSY; the other clients are served"),
           Outcome(("request.CLIENT_QUOTA_FULL",), "the leader refuses past the quota")),
    Attack("client-sends-protocol", "client 2 sends PREPAREs in replica 1's name",
           "a client may send requests only (§4.1)",
           Outcome(("step.CLIENT_SENT_PROTOCOL",), "every one dropped, counted against client 2"),
           Outcome(("step.CLIENT_SENT_PROTOCOL",), "the same in paxos")),
    # ------------------------------------------------------------------ the network
    Attack("partition-primary", "the network cuts the first primary (leader) off for 1.2 s",
           "the backups' timers fire and the view changes (§4.4); the cut-off replica's old-view messages "
           "are dropped when it returns",
           Outcome(("suspicion.REQUEST_TIMER", "pbft.OTHER_VIEW"), "a view change; every request commits"),
           Outcome(("paxos.PROMISE_NOT_RUNNING", "paxos.PREVOTE_GRANT_NOT_RUNNING", "paxos.STALE_BALLOT"),
                   "a new leader is elected; every request commits")),
    Attack("lost-commits", "the network loses the COMMITs (and CHECKPOINTs) to replicas 2 and 3 for 0.4 s, "
           "then cuts the primary off: replica 1 has committed batches the others only prepared",
           "a VIEW-CHANGE carries the prepared certificates, and the NEW-VIEW re-proposes the highest-view "
           "prepared digest of each sequence number (§4.4): what committed anywhere survives the view change",
           Outcome(("pbft.OTHER_VIEW", "suspicion.REQUEST_TIMER", "pbft.ENTERING_VIEW"),
                   "a view change; replica 1's commits survive it; every ledger stays equal")),
    Attack("great-livelock", "the war story: every follower campaigns at once against the leader "
           "(duelling proposers)",
           "a pre-empted proposer backs off for a randomized, growing time, so one of them wins "
           "(Paxos Made Simple, §3); turn it off to see the livelock: --f 2 --unsafe-disable paxos-backoff",
           paxos=Outcome(("paxos.PROMISE_NOT_RUNNING", "paxos.PREVOTE_GRANT_NOT_RUNNING", "paxos.STALE_BALLOT",
                          "paxos.LEADER_ALIVE", "paxos.NACK_NOT_RUNNING", "paxos.PREPARE_BELOW_PROMISE"),
                         "a few elections, and blocks keep committing through the duel")),
    Attack("split-brain", "the network splits the replicas in two, each side with clients, for 2 s",
           "only a quorum commits, and two quorums always intersect: the smaller side waits (§4.5.1; "
           "Paxos Made Simple, §2.2). Turn the rule off to see the war story: "
           "--mode paxos --unsafe-disable paxos-majority",
           Outcome(("pbft.OTHER_VIEW", "suspicion.REQUEST_TIMER", "pbft.ENTERING_VIEW"),
                   "the side without a quorum commits nothing until the network heals"),
           Outcome(("paxos.PROMISE_NOT_RUNNING", "paxos.PREVOTE_GRANT_NOT_RUNNING", "paxos.STALE_BALLOT",
                    "paxos.LEADER_ALIVE"),
                   "the side without a majority commits nothing until the network heals")),
]

BY_NAME = {a.name: a for a in ATTACKS}
