"""PBFT view change: VIEW-CHANGE, NEW-VIEW and entering a view.

A component of ``PbftCore`` that owns the view state (``bft.pbft.viewstate``: every
transition is made here), the VIEW-CHANGEs received (one per replica, its highest), this
replica's own VIEW-CHANGE, the NEW-VIEW of the current view, how many view changes in a
row found no progress (the timer backs off), and whom it re-sent the NEW-VIEW to lately.
Leaving a view clears the core's log and the request pool's batches through their
owners' methods. The certificate checks and the O-from-V rule live in ``bft.pbft.certs``.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ledger import quorum
from bft.outputs import Broadcast, Send
from bft.pbft.certs import EMPTY_ROOT, primary, strip, view_change_error
from bft.pbft import viewstate
from bft.pbft.rules import PbftRule
from bft.pbft.viewstate import Changing, Normal, ViewState
from bft.wire import NewView, PrePrepare, PreparedCert, ViewChange

if TYPE_CHECKING:
    from bft.pbft.core import PbftCore

log = logging.getLogger("bft.pbft")


class ViewChanger:
    """The view state and the VIEW-CHANGE / NEW-VIEW exchange that moves it."""

    __slots__ = ("_core", "_state", "_view_changes", "_mine", "_new_view", "_attempts", "_helped")

    def __init__(self, core: PbftCore, now: float) -> None:
        self._core = core
        self._state: ViewState = Normal(0, now)    # the view, and whether this replica is changing it
        self._view_changes: dict[int, dict[int, ViewChange]] = {}   # view -> replica -> its VIEW-CHANGE
        self._mine: ViewChange | None = None       # this replica's VIEW-CHANGE while changing
        self._new_view: NewView | None = None      # the NEW-VIEW of the current view
        self._attempts = 0                         # view changes since the last progress
        self._helped: dict[int, float] = {}        # replica -> when it was last sent the NEW-VIEW

    # ------------------------------------------------------------------ read-only views
    @property
    def state(self) -> ViewState:
        return self._state

    @property
    def view_changes(self) -> dict[int, dict[int, ViewChange]]:
        return self._view_changes

    @property
    def mine(self) -> ViewChange | None:
        return self._mine

    @property
    def new_view_msg(self) -> NewView | None:
        return self._new_view

    @property
    def attempts(self) -> int:
        return self._attempts

    @property
    def helped(self) -> dict[int, float]:
        return self._helped

    def timeout(self) -> float:
        """The request and view-change timeout: doubled with each view change without progress."""
        return self._core.cfg.request_timeout * (2 ** min(self._attempts, 6))

    def progressed(self) -> None:
        """New requests executed: the timeout is back to its base."""
        self._attempts = 0

    def restore(self, view: int, changing: bool) -> None:
        """A restart: the state this replica was in when it stopped, rebuilt from the vote log
        (not a transition)."""
        now = self._core.now
        self._state = Changing(view, now) if changing else Normal(view, now)

    def rejoin(self) -> None:
        """A restart in a view change: this replica's VIEW-CHANGE again (the timer is re-armed
        once 2f+1 VIEW-CHANGEs are seen again; Changing starts unarmed)."""
        core = self._core
        cps = core.checkpoints
        self._mine = core._sign(ViewChange(
            core.view, cps.h, list(cps.stable_proof), self._prepared_digests(), core.id))
        self._view_changes.setdefault(core.view, {})[core.id] = self._mine

    def retransmit(self) -> bool:
        """While changing views, only this replica's VIEW-CHANGE is re-sent; True if so."""
        if not self._state.in_view_change:
            return False
        if self._mine is not None:
            self._core._out.append(Broadcast(self._mine))
        return True

    def help_behind(self, sender: int) -> None:
        """A peer still in an older view: the primary re-sends its NEW-VIEW, once per interval."""
        core = self._core
        if self._new_view is None or not core.is_primary or core.in_view_change:
            return
        if self._helped.get(sender, -1.0) + core.cfg.retransmit_interval > core.now:
            return
        self._helped[sender] = core.now
        core._out.append(Send(sender, self._new_view))

    # ------------------------------------------------------------------ VIEW-CHANGE
    def _prepared_digests(self) -> list[PreparedCert]:
        """P for a VIEW-CHANGE: the prepared certificates above h, their batches left out."""
        h = self._core.checkpoints.h
        return [PreparedCert(strip(c.pre_prepare), c.prepares)
                for s, c in sorted(self._core.prepared_certs.items()) if s > h]

    def start(self, new_view: int) -> None:
        core = self._core
        if new_view <= core.view and core.in_view_change:
            return
        if new_view < core.view:
            return
        self._state = viewstate.start_change(self._state, new_view, core.now)
        core.suspicion.clear()
        self._attempts += 1
        core._clear_view(keep_early=False)
        self._new_view = None
        core._persist("view", [new_view, True])
        cps = core.checkpoints
        vc = core._sign(ViewChange(new_view, cps.h, list(cps.stable_proof), self._prepared_digests(), core.id))
        self._mine = vc
        self._view_changes.setdefault(new_view, {})[core.id] = vc
        core._out.append(Broadcast(vc))
        log.info("replica %d starts a view change to view %d", core.id, new_view)
        self._arm_timer()
        self._maybe_new_view(new_view)

    def _arm_timer(self) -> None:
        """Castro & Liskov's first liveness rule: the timer for the next view starts only once
        2f+1 replicas (this one included) have asked for this view or a higher one.

        A replica that times out alone (partitioned, crashed, slow) therefore waits in its
        view change instead of climbing views by itself; started at once, such a replica
        stayed one view ahead of the others for good, so no view ever gathered 2f+1
        VIEW-CHANGEs while a faulty replica kept quiet (n=4 seed 134)."""
        s = self._state
        if not s.in_view_change or s.deadline is not None:
            return
        asking = {r for v, vcs in self._view_changes.items() if v >= s.view for r in vcs}
        if len(asking) >= quorum.view_change_quorum(self._core.f):
            self._state = viewstate.arm(s, self._core.now + self.timeout())

    def on_view_change(self, sender: int, vc: ViewChange) -> None:
        core = self._core
        if vc.new_view < core.view or (vc.new_view == core.view and not core.in_view_change):
            core.count_useless()
            if self._new_view is not None and core.is_primary and not core.in_view_change:
                self.help_behind(sender)
            return
        vcs_by_view = self._view_changes
        latest = max((v for v, vcs in vcs_by_view.items() if sender in vcs), default=-1)
        if latest >= vc.new_view:
            core.count_useless()
            # one VIEW-CHANGE per replica, its highest: VIEW-CHANGEs for descending views used to
            # pile up (20,000 kept, handling cost quadratic; issue 11)
            if latest > vc.new_view:
                core._drop(PbftRule.VIEW_CHANGE_REGRESSES, sender)
            return
        why = view_change_error(core.keys, core.f, vc, core.cfg.log_size, core.check_checkpoint_proof)
        if why:
            core._drop(why, sender)
            return
        if latest >= 0:
            del vcs_by_view[latest][sender]
            if not vcs_by_view[latest]:
                del vcs_by_view[latest]
        vcs_by_view.setdefault(vc.new_view, {})[sender] = vc
        higher = {r: v for v, vcs in vcs_by_view.items() if v > core.view for r in vcs}
        if len(higher) >= quorum.join_quorum(core.f):
            self.start(min(higher.values()))
        self._arm_timer()
        self._maybe_new_view(vc.new_view)

    # ------------------------------------------------------------------ NEW-VIEW
    def _maybe_new_view(self, v: int) -> None:
        core = self._core
        if v != core.view or not core.in_view_change or primary(v, core.n) != core.id:
            return
        vcs = self._view_changes.get(v, {})
        if len(vcs) < quorum.view_change_quorum(core.f):
            return
        chosen = [vcs[r] for r in sorted(vcs)][: quorum.view_change_quorum(core.f)]
        if core.id in vcs and vcs[core.id] not in chosen:
            chosen[-1] = vcs[core.id]
        plan = core.plan_new_view(chosen)
        o = [core._sign(PrePrepare(v, s, d, [], core.id)) for s, d in plan.entries]
        nv = core._sign(NewView(v, chosen, o, core.id))
        core._out.append(Broadcast(nv))
        log.info("replica %d is primary of view %d (O covers %d..%d)", core.id, v, plan.min_s + 1, plan.max_s)
        self.enter(nv, plan)

    def on_new_view(self, sender: int, nv: NewView) -> None:
        core = self._core
        if nv.view < core.view or (nv.view == core.view and not core.in_view_change):
            return
        why, plan = core.check_new_view(core.keys, core.f, nv, core.cfg.log_size, core.plan_new_view,
                                         core.check_checkpoint_proof)
        if why:
            core._drop(why, sender)
            return
        self.enter(nv, plan)

    def enter(self, nv: NewView, plan) -> None:
        core = self._core
        v = nv.view
        if v > core.view or core.in_view_change:
            core._persist("view", [v, False])
        self._state = viewstate.enter(self._state, v, core.now)
        core.suspicion.clear()
        self._new_view = nv
        self._mine = None
        core._clear_view(keep_early=True)
        for old in [x for x in self._view_changes if x <= v]:
            del self._view_changes[old]
        cps = core.checkpoints
        if plan.min_s > cps.h and not core.check_checkpoint_proof(core.keys, core.f, plan.min_s, plan.stable_proof):
            cps.make_stable(plan.min_s, plan.stable_proof)
        core.propose_after(max(plan.max_s, cps.h, core.chain.height))
        fetcher = core.fetcher
        for pp in nv.pre_prepares:            # digests only: attach the batches this replica holds
            if pp.seq <= cps.h:
                continue
            if pp.digest == EMPTY_ROOT:
                core._accept_pre_prepare(pp, [])
                continue
            have = fetcher.held(pp.digest)
            if have is None:
                core._accept_pre_prepare(pp, None)
            else:
                core._accept_pre_prepare(PrePrepare(pp.view, pp.seq, pp.digest, have[1], pp.replica, pp.sig), have[2])
        core.suspicion.view_started(core.now)
        if core.is_primary or core.cfg.monitor.enabled:
            core.requests.requeue(core.now)      # the primary serves them; backups watch them
        log.info("replica %d enters view %d", core.id, v)
        core.held.replay(v)
