"""PBFT view change: VIEW-CHANGE, NEW-VIEW and entering a view.

A mixin of ``PbftCore`` (same state, same sans-I/O rules), kept apart so that each
module stays readable. The certificate checks and the O-from-V rule live in
``bft.pbft.certs``.
"""
from __future__ import annotations

import logging

from ledger import quorum
from bft.outputs import Broadcast
from bft.pbft.certs import EMPTY_ROOT, checkpoint_proof_error, new_view_error, primary, strip, view_change_error
from bft.pbft import viewstate
from bft.pbft.rules import PbftRule
from bft.wire import NewView, PrePrepare, PreparedCert, ViewChange

log = logging.getLogger("bft.pbft")


class ViewChangeMixin:
    def _prepared_digests(self) -> list[PreparedCert]:
        """P for a VIEW-CHANGE: the prepared certificates above h, their batches left out."""
        return [PreparedCert(strip(c.pre_prepare), c.prepares)
                for s, c in sorted(self.prepared_certs.items()) if s > self.h]

    def _start_view_change(self, new_view: int) -> None:
        if new_view <= self.view and self.in_view_change:
            return
        if new_view < self.view:
            return
        self.vstate = viewstate.start_change(self.vstate, new_view, self.now)
        self._clear_suspicion()
        self.vc_attempts += 1
        self.log.clear()
        self.ahead.clear()
        self.early.clear()
        self.in_batch.clear()
        self.queue.clear()
        self.new_view_msg = None
        self._persist("view", [new_view, True])
        vc = self._sign(ViewChange(new_view, self.h, list(self.stable_proof), self._prepared_digests(), self.id))
        self.my_view_change = vc
        self.view_changes.setdefault(new_view, {})[self.id] = vc
        self._out.append(Broadcast(vc))
        log.info("replica %d starts a view change to view %d", self.id, new_view)
        self._arm_view_change_timer()
        self._maybe_new_view(new_view)

    def _arm_view_change_timer(self) -> None:
        """Castro & Liskov's first liveness rule: the timer for the next view starts only once
        2f+1 replicas (this one included) have asked for this view or a higher one.

        A replica that times out alone (partitioned, crashed, slow) therefore waits in its
        view change instead of climbing views by itself; started at once, such a replica
        stayed one view ahead of the others for good, so no view ever gathered 2f+1
        VIEW-CHANGEs while a faulty replica kept quiet (n=4 seed 134)."""
        if not self.in_view_change or self.vc_deadline is not None:
            return
        asking = {r for v, vcs in self.view_changes.items() if v >= self.view for r in vcs}
        if len(asking) >= quorum.view_change_quorum(self.f):
            self.vstate = viewstate.arm(self.vstate, self.now + self._timeout())

    def _on_view_change(self, sender: int, vc: ViewChange) -> None:
        if vc.new_view < self.view or (vc.new_view == self.view and not self.in_view_change):
            self.useless += 1
            if self.new_view_msg is not None and self.is_primary and not self.in_view_change:
                self._help_behind(sender)
            return
        latest = max((v for v, vcs in self.view_changes.items() if sender in vcs), default=-1)
        if latest >= vc.new_view:
            self.useless += 1
            # one VIEW-CHANGE per replica, its highest: VIEW-CHANGEs for descending views used to
            # pile up (20,000 kept, handling cost quadratic; issue 11)
            if latest > vc.new_view:
                self._drop(PbftRule.VIEW_CHANGE_REGRESSES, sender)
            return
        why = view_change_error(self.keys, self.f, vc, self.cfg.log_size)
        if why:
            self._drop(why, sender)
            return
        if latest >= 0:
            del self.view_changes[latest][sender]
            if not self.view_changes[latest]:
                del self.view_changes[latest]
        self.view_changes.setdefault(vc.new_view, {})[sender] = vc
        higher = {r: v for v, vcs in self.view_changes.items() if v > self.view for r in vcs}
        if len(higher) >= quorum.join_quorum(self.f):
            self._start_view_change(min(higher.values()))
        self._arm_view_change_timer()
        self._maybe_new_view(vc.new_view)

    def _maybe_new_view(self, v: int) -> None:
        if v != self.view or not self.in_view_change or primary(v, self.n) != self.id:
            return
        vcs = self.view_changes.get(v, {})
        if len(vcs) < quorum.view_change_quorum(self.f):
            return
        chosen = [vcs[r] for r in sorted(vcs)][: quorum.view_change_quorum(self.f)]
        if self.id in vcs and vcs[self.id] not in chosen:
            chosen[-1] = vcs[self.id]
        plan = self.plan_new_view(chosen)
        o = [self._sign(PrePrepare(v, s, d, [], self.id)) for s, d in plan.entries]
        nv = self._sign(NewView(v, chosen, o, self.id))
        self._out.append(Broadcast(nv))
        log.info("replica %d is primary of view %d (O covers %d..%d)", self.id, v, plan.min_s + 1, plan.max_s)
        self._enter_view(nv, plan)

    def _on_new_view(self, sender: int, nv: NewView) -> None:
        if nv.view < self.view or (nv.view == self.view and not self.in_view_change):
            return
        why, plan = new_view_error(self.keys, self.f, nv, self.cfg.log_size, self.plan_new_view)
        if why:
            self._drop(why, sender)
            return
        self._enter_view(nv, plan)

    def _enter_view(self, nv: NewView, plan) -> None:
        v = nv.view
        if v > self.view or self.in_view_change:
            self._persist("view", [v, False])
        self.vstate = viewstate.enter(self.vstate, v, self.now)
        self._clear_suspicion()
        self.new_view_msg = nv
        self.my_view_change = None
        self.log.clear()
        self.ahead.clear()
        self.in_batch.clear()
        self.queue.clear()
        for old in [x for x in self.view_changes if x <= v]:
            del self.view_changes[old]
        if plan.min_s > self.h and not checkpoint_proof_error(self.keys, self.f, plan.min_s, plan.stable_proof):
            self._make_stable(plan.min_s, plan.stable_proof)
        self.next_seq = max(plan.max_s, self.h, self.chain.height) + 1
        for pp in nv.pre_prepares:            # digests only: attach the batches this replica holds
            if pp.seq <= self.h:
                continue
            if pp.digest == EMPTY_ROOT:
                self._accept_pre_prepare(pp, [])
                continue
            have = self.batches.get(pp.digest)
            if have is None:
                self._accept_pre_prepare(pp, None)
            else:
                self._accept_pre_prepare(PrePrepare(pp.view, pp.seq, pp.digest, have[1], pp.replica, pp.sig), have[2])
        self.monitor.start_view(self.now)
        if self.is_primary or self.cfg.monitor.enabled:
            self.requests.requeue(self.now)      # the primary serves them; backups watch them
        log.info("replica %d enters view %d", self.id, v)
        early, self.early = self.early, {}
        for k in sorted(early):                       # each PRE-PREPARE before the votes for it
            m = early[k]
            if m.view == v:
                self._handlers[type(m)](self, k[2], m)
