"""The rules by which a Multi-Paxos replica rejects a message, each citing its source.

Section numbers are those of Lamport, "Paxos Made Simple" (2001): §2.2 chooses a value
(phase 1: an acceptor promises not to accept ballots below n; phase 2: it accepts unless
it promised a higher ballot), §2.3 learns a chosen value, §3 runs a state machine (one
distinguished proposer, gaps filled with no-ops, phase 1 once per leadership). The
pre-vote and the refusals while a leader is alive come from Raft (Ongaro's thesis §9.6),
the read-index rules from its §6.4.
Rules marked "bftledger" bound what the papers leave unbounded (sizes, windows) or check
what a crash-fault protocol need not, but a replica that never raises on peer input must.
"""
from __future__ import annotations

from enum import unique

from ledger.rules import LAMPORT01, ONGARO14, OURS, Rule



def _lamport(section: str) -> str:
    return f"{LAMPORT01}, {section}"


PHASE1, PHASE2 = _lamport("§2.2 (phase 1)"), _lamport("§2.2 (phase 2)")
LEARN, SMR = _lamport("§2.3"), _lamport("§3")
PREVOTE = ONGARO14 + ", §9.6"
READ_INDEX = ONGARO14 + ", §6.4"


@unique
class PaxosRule(Rule):
    # ballots (§3: the proposer of ballot b is b mod n)
    NOT_BALLOT_OWNER = ("PREPARE, PRE-VOTE, ACCEPT, HEARTBEAT or READ-INDEX for a ballot that is not its sender's",
                        f"{SMR}: each proposer draws ballots from its own disjoint set")
    # phase 1 (prepare / promise)
    PREPARE_BELOW_PROMISE = ("PREPARE at or below the ballot this acceptor promised or follows",
                             f"{PHASE1}: an acceptor promises only ballots above any it promised")
    LEADER_ALIVE = ("PREPARE or PRE-VOTE while this replica hears a live leader",
                    f"{PREVOTE}: a server that hears a current leader ignores a would-be candidate")
    PROMISE_TOO_LARGE = ("too many accepted values to report in a PROMISE",
                         f"{OURS}: a message carries at most MAX_LIST values; the candidate learns them later")
    PROMISE_NOT_RUNNING = ("PROMISE for a ballot this replica is not running for", PHASE1)
    PROMISE_SLOT_BEYOND_WINDOW = ("PROMISE reports a value above its acceptor's execution plus the accept "
                                  "window, which no acceptor accepts",
                                  f"{OURS}: a new leader re-proposes every slot up to the highest reported, so "
                                  "an unbounded one would have it re-propose for ever")
    PROMISE_SLOT_NOT_ASKED = ("PROMISE reports a slot not asked for, or one slot twice",
                              f"{SMR}: phase 1 asks for the slots above the candidate's execution")
    PROMISE_VALUE_ABOVE_BALLOT = ("PROMISE reports a value accepted at or above the promised ballot",
                                  f"{PHASE1}: the acceptor promised not to accept below n, and reports below n")
    PROMISE_VALUE_FOREIGN = ("PROMISE reports a value that is not its ballot leader's or not its digest's",
                             f"{SMR}; {OURS}: the proposal carries its leader's signature over its digest")
    PROMISE_VALUE_SIGNATURE = ("PROMISE reports a value with a bad leader signature",
                               f"{SMR}; {OURS}: the proposal carries its leader's signature")
    # phase 2 (accept / accepted)
    STALE_BALLOT = ("ACCEPT, HEARTBEAT or READ-INDEX from a ballot below the one this acceptor promised or follows",
                    f"{PHASE2}: an acceptor accepts unless it promised a higher ballot")
    ACCEPT_SLOT_ZERO = ("ACCEPT for slot 0", f"{OURS}: slots are ledger heights, from 1")
    ACCEPT_FAR_AHEAD = ("ACCEPT far above this replica's execution (followed, not accepted)",
                        f"{OURS}: bounded accepted values; the chosen prefix comes by state transfer")
    ACCEPT_SIGNATURE = ("ACCEPT with a bad leader signature",
                        f"{SMR}; {OURS}: the leader's signature is the block's certificate")
    ACCEPT_DIGEST = ("ACCEPT whose batch does not match its digest", f"{OURS}: the digest is the batch's Merkle root")
    ACCEPT_TWICE = ("a second, different ACCEPT for one (ballot, slot)",
                    f"{SMR}: the leader of a ballot proposes one value per slot")
    ACCEPTED_NOT_LEADING = ("ACCEPTED for a ballot this replica does not lead",
                            f"{LEARN}: acceptors tell the distinguished learner, the leader")
    NACK_NOT_RUNNING = ("NACK for a ballot this replica is not running",
                        f"{PHASE2}; {OURS}: a refusal concerns only the proposer of that ballot")
    # pre-vote (Raft's, §9.6)
    PREVOTE_GRANT_NOT_RUNNING = ("PRE-VOTE grant for a pre-vote this replica is not running", PREVOTE)
    # reads answered by the leader without ordering (Raft's read index, §6.4)
    READ_NOT_LEADING = ("read at the ballot's own replica while it does not lead yet (an election is on): "
                        "answered BUSY", f"{READ_INDEX}: only a leader answers reads")
    READ_ACK_NOT_LEADING = ("read-index acknowledgement for a ballot this replica does not lead",
                            f"{READ_INDEX}: a leader confirms its own ballot")
    READ_LEADERSHIP_LOST = ("read dropped unanswered: its leader stepped down before confirming its ballot",
                            f"{READ_INDEX}: a deposed leader may hold stale state (the client retries)")
    # state transfer (learning the chosen prefix from a peer, §2.3 with certificates)
    UNSOLICITED_STATE = ("unsolicited state-transfer response", f"{LEARN}; {OURS}: asked of one peer at a time")
    STATE_WRONG_HEADER = ("state-transfer peer sent a wrong header for a certified batch",
                          f"{OURS}: results are re-executed, never trusted")
