"""The proposer: elections, phase 1a (PREPARE, counting PROMISEs) and phase 2a (ACCEPT, counting ACCEPTEDs).

A replica that wants to lead picks a ballot ``b`` with ``b % n == id`` above every ballot
it has seen and runs phase 1 once for all slots above its executed height ("Paxos Made
Simple" §3). From a majority of promises it re-proposes, for every slot, the value
accepted under the highest ballot and fills gaps with no-ops (empty batch, digest
``root_of([])``). It then runs phase 2 per batch, ``pipeline`` slots in flight, and
heartbeats; a slot is chosen once a majority accepted it (the leader is the
distinguished learner of §2.3).

Followers start an election after a randomized timeout, and an election starts with a
**pre-vote** (Raft's, Ongaro's thesis §9.6): the pre-candidate asks every replica whether
it would promise its next ballot (PRE-VOTE) and raises its ballot, durably, only once a
majority would. A replica grants unless it hears a live leader. Without it, a replica cut
off by a partition campaigned with ever higher ballots, and on healing refused the
working leader's ballot with a NACK that deposed it (issue 17). The pre-vote touches
liveness only: granting one changes no state, and the promise itself comes from phase 1.

A proposer pre-empted by a higher ballot, refused by a NACK, or whose candidacy timed
out backs off: its next timeout is drawn from the same range times
``backoff_multiplier ** attempts`` (capped), so duelling proposers settle.
``PaxosConfig(backoff=False)`` is the naive proposer of the textbook livelock example: it
retries at once with a higher ballot whenever it is pre-empted.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import TYPE_CHECKING

from bft.paxos.ballots import PaxosStateError, Role, leader_of, next_ballot
from bft.paxos.rules import PaxosRule
from bft.skeleton import highest_per_slot
from bft.wire import PxAccept, PxAccepted, PxHeartbeat, PxNack, PxPrepare, PxPreVote, PxPreVoteGrant, PxPromise
from crypto.merkle import root_of

if TYPE_CHECKING:
    from bft.paxos.core import PaxosCore

log = logging.getLogger("bft.paxos")

RETRANSMIT_SLOTS = 8            # proposals re-sent per retransmission interval


@dataclass(slots=True)
class Proposal:
    """A slot the leader proposed in its ballot and the acceptors that accepted it."""
    accept: PxAccept
    acks: set[int]


class Proposer:
    """The election state of a replica (its role and ballot) and the proposer's phases."""

    def __init__(self, core: "PaxosCore", ballot: int, now: float) -> None:
        self._core = core
        # the ballot of the leader this replica follows, or of its own candidacy/leadership
        self._ballot = ballot
        self._role = Role.FOLLOWER
        self.max_seen = ballot                      # the highest ballot heard of (a candidate goes above it)
        self.leader_active = False                  # heard the current ballot's leader since it began
        self.leader_heard = -1e9                    # when a live leader was last heard from
        self.distrusted = -1                        # the highest ballot whose leader sent a corrupt ACCEPT
        self.attempts = 0                           # consecutive failed or pre-empted attempts (backoff)
        self.prevote_ballot = 0                     # the ballot a pre-vote in progress asks about ...
        self.prevotes: set[int] = set()             # ... and who would promise it (role PRE_CANDIDATE)
        self.promises: dict[int, PxPromise] = {}    # candidate: the PROMISEs of its ballot, by acceptor
        self.prepare_from = 0
        self.proposals: dict[int, Proposal] = {}    # leader: slots proposed and not yet chosen
        self.next_slot = core.chain.height + 1
        self.elected_top = 0                        # leader: the last slot phase 1 re-proposed (bft.paxos.reads)
        self._catchup_peer: int | None = None       # leader: the acceptor whose commit index was highest
        self.progress_at = now                      # when this replica last executed (or began to lead)
        self.deadline = now + self.election_timeout()
        self.next_heartbeat = now
        self.next_retransmit = now + core.cfg.retransmit_interval

    # ------------------------------------------------------------------ read by the other roles
    @property
    def ballot(self) -> int:
        return self._ballot

    @property
    def role(self) -> Role:
        return self._role

    @property
    def catchup_peer(self) -> int | None:
        return self._catchup_peer

    def hears_live_leader(self, sender: int) -> bool:
        """This replica leads, or heard its leader recently, and ``sender`` is someone else."""
        if self._role is Role.LEADER:
            return True
        core = self._core
        return (self._role is Role.FOLLOWER and self.leader_active and sender != leader_of(self._ballot, core.n)
                and core.now - self.leader_heard < core.cfg.election_timeout[0])

    def note_progress(self) -> None:
        self.progress_at = self._core.now

    def election_timeout(self) -> float:
        cfg = self._core.cfg
        lo, hi = cfg.election_timeout
        t = self._core.rng.uniform(lo, hi)
        if cfg.backoff and self.attempts:
            t *= min(cfg.backoff_multiplier ** self.attempts, cfg.backoff_cap)
        return t

    def campaign_at_once(self) -> None:
        """First start (or a replaced disk) of the first ballot's owner: campaign at the first tick."""
        self.deadline = self._core.now

    # ------------------------------------------------------------------ timers
    def tick(self, now: float) -> None:
        core, cfg = self._core, self._core.cfg
        if self._role is Role.LEADER:
            if now >= self.next_heartbeat:
                self.heartbeat()
            if now >= self.next_retransmit:
                self.next_retransmit = now + cfg.retransmit_interval
                self._retransmit_accepts()
            commit_index = core.learner.commit_index
            if core.chain.height < commit_index and now - self.progress_at > 2 * cfg.election_timeout[1]:
                # cannot fetch the chosen prefix from anyone: run phase 1 again to learn it from acceptors
                log.info("replica %d: leader stalled catching up at %d of %d, new ballot",
                         core.id, core.chain.height, commit_index)
                self.attempts += 1
                self.campaign()
        elif self._role is Role.CANDIDATE:
            if now >= self.deadline:
                # cut off mid-candidacy, perhaps: ask again before raising the ballot any further
                self.attempts += 1
                core.stats["candidacy timed out"] += 1
                self._step_down()
                self._start_election()
            elif now >= self.next_retransmit:
                self.next_retransmit = now + cfg.retransmit_interval
                prep = PxPrepare(self._ballot, self.prepare_from, core.id)
                for r in range(core.n):
                    if r != core.id and r not in self.promises:
                        core.send(r, prep)
        elif now >= self.deadline:
            self.leader_active = False
            self._start_election()

    # ------------------------------------------------------------------ following others
    def _see(self, ballot: int) -> None:
        if ballot > self.max_seen:
            self.max_seen = ballot

    def _step_down(self) -> None:
        """Stop proposing (pre-empted or following a higher ballot); clients will retry elsewhere."""
        self._role = Role.FOLLOWER
        self.prevotes = set()
        self.promises.clear()
        self.proposals.clear()
        self._core.forget_requests()
        self._catchup_peer = None

    def _preempted(self) -> None:
        """My candidacy or leadership met a higher ballot: back off, or (naive) retry at once."""
        self._core.stats["pre-empted"] += 1
        self._step_down()
        self.attempts += 1
        if self._core.cfg.backoff:
            self.deadline = self._core.now + self.election_timeout()
        else:
            self.campaign()

    def prepare_heard(self, ballot: int) -> bool:
        """The acceptor is about to promise ``ballot``: follow it. Returns whether I was proposing."""
        was_proposing = self._role.proposing
        if was_proposing:
            self._step_down()
        else:
            self._role = Role.FOLLOWER                # a pre-vote of mine is moot
            self.prevotes = set()
        self._see(ballot)
        self._ballot = ballot
        self.leader_active = False
        return was_proposing

    def promise_sent(self, was_proposing: bool) -> None:
        """After the PROMISE: a pre-empted proposer backs off (or, naive, campaigns at once)."""
        core = self._core
        if was_proposing:
            core.stats["pre-empted"] += 1
            self.attempts += 1
            if not core.cfg.backoff:
                self.campaign()
                return
        self.deadline = core.now + self.election_timeout()

    def follow(self, ballot: int) -> None:
        """A message of the leader of ``ballot``, which the acceptor admitted: it leads; wait for it."""
        core = self._core
        if ballot > self._ballot or self._role is not Role.FOLLOWER:
            if self._role.proposing:
                core.stats["pre-empted"] += 1
                self._step_down()
            self._see(ballot)
            self._ballot = ballot
        core.forget_pending()
        self._role = Role.FOLLOWER
        self.prevotes = set()
        if ballot <= self.distrusted:
            # its heartbeats do not keep it in office: this follower times out and campaigns
            self.leader_active = False
            return
        self.leader_active = True
        self.leader_heard = core.now
        self.attempts = 0
        self.deadline = core.now + self.election_timeout()

    def distrust(self, ballot: int) -> None:
        """The leader of ``ballot`` sent an ACCEPT whose signature does not verify. A leader that
        only crashes never does; this one is corrupt (a bug, a bad disk, a lie). Paxos cannot
        outvote a liar, but it need not wait on one for ever: from now on its messages do not
        count as a live leader, so this follower's election timer runs out as if it had
        crashed, and a pre-vote for another leader is granted."""
        core = self._core
        if ballot <= self.distrusted or ballot < self._ballot:
            return
        self.distrusted = ballot
        core.stats["leaders distrusted"] += 1
        log.warning("replica %d: the leader of ballot %d (replica %d) sent an ACCEPT with a bad signature; its "
                    "heartbeats no longer count, an election follows", core.id, ballot, leader_of(ballot, core.n))
        if ballot == self._ballot and self._role is Role.FOLLOWER:
            self.leader_active = False

    def on_nack(self, sender: int, m: PxNack) -> None:
        self._see(m.promised)
        if self._role is Role.PRE_CANDIDATE and m.ballot == self.prevote_ballot:
            return          # a pre-vote refused for a ballot too low: the next one goes above m.promised
        if self._role.proposing and m.ballot == self._ballot and m.promised > self._ballot:
            log.info("replica %d: ballot %d refused by %d (promised %d)", self._core.id, m.ballot, sender, m.promised)
            self._preempted()
        else:
            self._core._drop(PaxosRule.NACK_NOT_RUNNING, sender)

    # ------------------------------------------------------------------ pre-vote
    def _start_election(self) -> None:
        if self._core.cfg.prevote:
            self._prevote()
        else:
            self.campaign()

    def _next_ballot(self) -> int:
        core = self._core
        return next_ballot(max(self.max_seen, self._ballot, core.acceptor.promised), core.id, core.n)

    def _prevote(self) -> None:
        """Ask whether a majority would promise my next ballot, before persisting anything."""
        core = self._core
        self._role = Role.PRE_CANDIDATE
        self.prevote_ballot = self._next_ballot()
        self.prevotes = {core.id}
        core.stats["pre-votes"] += 1
        core.broadcast(PxPreVote(self.prevote_ballot, core.id))
        self.deadline = core.now + self.election_timeout()
        self._check_prevotes()

    def on_prevote_grant(self, sender: int, m: PxPreVoteGrant) -> None:
        if self._role is not Role.PRE_CANDIDATE or m.ballot != self.prevote_ballot:
            self._core._drop(PaxosRule.PREVOTE_GRANT_NOT_RUNNING, sender)
            return
        self.prevotes.add(sender)
        self._check_prevotes()

    def _check_prevotes(self) -> None:
        if self._role is Role.PRE_CANDIDATE and len(self.prevotes) >= self._core.majority:
            self._core.stats["pre-votes won"] += 1
            self.campaign()

    # ------------------------------------------------------------------ phase 1a
    def campaign(self) -> None:
        """Phase 1a: a new ballot of mine above every ballot seen, PREPARE for all open slots."""
        core = self._core
        b = self._next_ballot()
        if self._role.proposing:
            self._step_down()
        core.stats["elections"] += 1
        self.prevotes = set()
        self._role = Role.CANDIDATE
        self._ballot = b
        self.max_seen = b
        self.leader_active = False
        self.prepare_from = core.chain.height
        self.promises = {core.id: core.acceptor.promise_own(b)}    # durable before PREPARE leaves
        core.broadcast(PxPrepare(b, self.prepare_from, core.id))
        self.deadline = core.now + self.election_timeout()
        self.next_retransmit = core.now + core.cfg.retransmit_interval
        log.info("replica %d campaigns for ballot %d (attempt %d)", core.id, b, self.attempts + 1)
        self._check_promises()

    def on_promise(self, sender: int, m: PxPromise) -> None:
        core = self._core
        if self._role is not Role.CANDIDATE or m.ballot != self._ballot:
            core._drop(PaxosRule.PROMISE_NOT_RUNNING, sender)
            return
        if sender in self.promises:
            return
        seen: set[int] = set()
        for acc in m.accepted:
            if acc.slot <= self.prepare_from or acc.slot in seen:
                why = PaxosRule.PROMISE_SLOT_NOT_ASKED
            elif acc.slot > m.commit_index + core.cfg.accept_window:
                # an acceptor accepts no slot beyond its execution + the window (Acceptor.on_accept),
                # and commit_index is its execution: so the re-proposal after phase 1 is bounded
                why = PaxosRule.PROMISE_SLOT_BEYOND_WINDOW
            elif acc.ballot >= m.ballot:
                why = PaxosRule.PROMISE_VALUE_ABOVE_BALLOT
            elif acc.replica != leader_of(acc.ballot, core.n) or root_of(acc.batch) != acc.digest:
                why = PaxosRule.PROMISE_VALUE_FOREIGN
            elif not core.keys.replica_signed(acc, acc.replica):
                why = PaxosRule.PROMISE_VALUE_SIGNATURE
            else:
                seen.add(acc.slot)
                continue
            core._drop(why, sender, f"slot {acc.slot}")
            return
        self.promises[sender] = m
        self._check_promises()

    def _check_promises(self) -> None:
        if self._role is Role.CANDIDATE and len(self.promises) >= self._core.majority:
            self._become_leader()

    def values_to_repropose(self, promises: list[PxPromise], known: int) -> dict[int, PxAccept]:
        """Phase 1's rule (Paxos Made Simple, §2.2): for every slot above ``known``, the value
        accepted in the highest ballot any promise reports must be proposed again."""
        return highest_per_slot((acc for p in promises for acc in p.accepted), attrgetter("slot"),
                                attrgetter("ballot"), known)

    def _report_equivocation(self, promises: list[PxPromise]) -> None:
        """Two acceptors reporting different values accepted in one ballot for one slot prove
        that ballot's leader equivocated: a crash-fault protocol cannot stop a liar (Paxos
        assumes none), but a replica that can tell says so, loudly, once per (ballot, slot)."""
        core = self._core
        seen: dict[tuple[int, int], bytes] = {}
        for p in promises:
            for acc in p.accepted:
                key = (acc.ballot, acc.slot)
                first = seen.setdefault(key, acc.digest)
                if first != acc.digest:
                    core.note_equivocation(key, acc.replica, f"promises report two values for slot {acc.slot} "
                                           f"in ballot {acc.ballot}")

    def _become_leader(self) -> None:
        """Phase 1 done: re-propose the highest-ballot value of every open slot, no-ops in the gaps."""
        core = self._core
        if self._role is not Role.CANDIDATE or len(self.promises) < core.majority:
            raise PaxosStateError(f"replica {core.id} cannot lead ballot {self._ballot} as a {self._role.value} "
                                  f"with {len(self.promises)} promises of {core.majority}")
        b = self._ballot
        promises = [self.promises[r] for r in sorted(self.promises)]
        known = max([core.chain.height] + [p.commit_index for p in promises])   # chosen up to here
        self._report_equivocation(promises)
        best = self.values_to_repropose(promises, known)
        top = max(best, default=known)
        self._role = Role.LEADER
        self.leader_active = True
        core.stats["won"] += 1
        core.learner.lead(b, known)
        self.proposals = {}
        self.next_slot = top + 1
        self.elected_top = top          # a read index is at least this: what earlier leaders chose is below it
        self.progress_at = core.now
        ahead = [p for p in promises if p.commit_index > core.chain.height]
        self._catchup_peer = max(ahead, key=lambda p: (p.commit_index, -p.replica)).replica if ahead else None
        log.info("replica %d leads ballot %d: chosen up to %d, re-proposes %d..%d", core.id, b, known, known + 1, top)
        for s in range(known + 1, top + 1):
            acc = best.get(s)
            batch = list(acc.batch) if acc is not None else []
            core.requests_in_batch(batch)
            self._propose_slot(s, batch)
            if self._role is not Role.LEADER:
                return
        core.requests.requeue()
        self.heartbeat()
        core.learner.learn()

    # ------------------------------------------------------------------ phase 2a
    def propose(self) -> None:
        core, cfg = self._core, self._core.cfg
        while core.queue and self._role is Role.LEADER:
            if self.next_slot - 1 - core.learner.commit_index >= cfg.pipeline:
                return
            batch, _reqs = core.requests.take_batch(cfg.batch_size, cfg.batch_bytes)
            if not batch:
                return
            self._propose_slot(self.next_slot, batch)

    def _propose_slot(self, slot: int, batch: list[bytes]) -> None:
        """Phase 2a for one slot; my own acceptor accepts first (persisted before the ACCEPT leaves)."""
        core = self._core
        acc = PxAccept(self._ballot, slot, root_of(batch), batch, core.learner.commit_index,
                       core.id).signed(core.signer)
        self.next_slot = max(self.next_slot, slot + 1)
        self.proposals[slot] = Proposal(acc, {core.id})
        core.acceptor.accept_own(acc)
        core.broadcast(acc)
        self.next_heartbeat = core.now + core.cfg.heartbeat_interval
        self._advance_commit()

    def on_accepted(self, sender: int, m: PxAccepted) -> None:
        if self._role is not Role.LEADER or m.ballot != self._ballot:
            self._core._drop(PaxosRule.ACCEPTED_NOT_LEADING, sender)
            return
        p = self.proposals.get(m.slot)
        if p is None:
            return                          # chosen already
        p.acks.add(sender)
        self._advance_commit()

    def _advance_commit(self) -> None:
        """A slot is chosen once a majority accepted it; slots are learned in order."""
        start = index = self._core.learner.commit_index
        while True:
            p = self.proposals.get(index + 1)
            if p is None or len(p.acks) < self._core.majority:
                break
            del self.proposals[index + 1]
            index += 1
        if index > start:
            self.attempts = 0
            self._core.learner.chosen_upto(index)

    def heartbeat(self) -> None:
        core = self._core
        self.next_heartbeat = core.now + core.cfg.heartbeat_interval
        core.broadcast(PxHeartbeat(self._ballot, core.learner.commit_index, core.id))

    def _retransmit_accepts(self) -> None:
        core = self._core
        commit_index = core.learner.commit_index
        for s in sorted(self.proposals)[:RETRANSMIT_SLOTS]:
            p = self.proposals[s]
            acc = replace(p.accept, commit_index=commit_index)     # commit_index is not signed
            for r in range(core.n):
                if r not in p.acks:
                    core.send(r, acc)
