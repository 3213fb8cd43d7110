"""PBFT suspicion: a replica leaves its view only when f+1 replicas suspect the primary.

A component of ``PbftCore`` that owns who suspects the primary of the current view (this
replica included), its own SUSPECT, the primary monitor (``bft.pbft.monitor``) and whom
it answered lately; a view change clears it through ``clear``. In Castro & Liskov a backup
whose request timer fires sends VIEW-CHANGE at once and stops taking part in its view.
A replica that is merely behind, or was cut off and has just healed, then sits alone in
a view change that nobody joins, for good (issue 17: a healed old primary stayed in a
lone view change to view 2 while the others ran view 1, and its fault budget was spent).
Raft's pre-vote and Tendermint's round catch-up avoid this; so does this rule:

- When its timer fires, a replica sends SUSPECT(v) and *keeps working in view v*.
- It starts the view change to v+1 once SUSPECTs for v from f+1 distinct replicas
  (itself included) are fresh: at least one of them is honest, so the primary really
  failed someone, and f faulty replicas alone can never force a view change. This is
  the threshold of PBFT's own join rule (f+1 VIEW-CHANGEs make a replica join), so a
  faulty primary is replaced as before, one message delay later.
- A SUSPECT expires after two request timeouts unless it is repeated; a replica repeats
  its own while it still suspects and stops once it executes again.
- A replica that is not itself suspecting answers a SUSPECT with its stable checkpoint
  proof: if the suspecting replica is behind, that starts its state transfer.
- Besides the request timer, a backup suspects a primary that fails one of the monitor's
  rules (``bft.pbft.monitor``: heartbeat, censorship, throughput); such a suspicion is kept
  until the view ends, since the primary does execute something meanwhile.

Safety is untouched: SUSPECT only gates when a replica starts a view change; what a
VIEW-CHANGE carries and how NEW-VIEW is checked do not change, and a replica never
returns to a view it left.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ledger import quorum
from bft.outputs import Broadcast, Send
from bft.pbft.monitor import PrimaryMonitor, SuspicionRule
from bft.pbft.rules import PbftRule
from bft.wire import Suspect

if TYPE_CHECKING:
    from bft.pbft.core import PbftCore

log = logging.getLogger("bft.pbft")

# While batches keep executing, a pending request may wait this many request timeouts
# before the primary is suspected (bursts queue legitimately; censorship still shows).
CENSOR_GRACE = 4


class Suspicion:
    """SUSPECTs of the current view, the request timer and the primary monitor."""

    __slots__ = ("_core", "_suspecting", "_sticky", "_mine", "_suspects", "_monitor", "_timer_arrival",
                 "_answered")

    def __init__(self, core: PbftCore, now: float) -> None:
        self._core = core
        self._suspecting = False                 # this replica's timer fired in the current view
        self._sticky = False                     # ... or the monitor's rules: kept until the view ends
        self._mine: Suspect | None = None
        self._suspects: dict[int, float] = {}    # replica -> when its SUSPECT of this view came
        self._monitor = PrimaryMonitor(core.cfg.monitor, core.n, now)
        self._timer_arrival: tuple[float, float] | None = None   # (computed at, oldest non-flooding arrival)
        self._answered: dict[int, float] = {}    # replica -> when its SUSPECT was last answered

    @property
    def suspecting(self) -> bool:
        return self._suspecting

    @property
    def suspects(self) -> dict[int, float]:
        return self._suspects

    @property
    def monitor(self) -> PrimaryMonitor:
        return self._monitor

    @property
    def answered(self) -> dict[int, float]:
        return self._answered

    # what the monitor measures, told by the core and the view changer
    def view_started(self, now: float) -> None:
        self._monitor.start_view(now)

    def useful_pre_prepare(self, now: float) -> None:
        self._monitor.useful_pre_prepare(now)

    def executed(self, fresh: int) -> None:
        self._monitor.executed(fresh)

    def tick(self, now: float) -> None:
        """Requests are pending and this replica is not behind: the request timer and the monitor.

        The oldest unexecuted request (dicts keep arrival order) decides. While the view
        executes new requests steadily, a burst queued behind it gets CENSOR_GRACE times
        longer before the primary is blamed (the monitor's rules catch a primary that serves
        some clients and not others, or serves slowly)."""
        core = self._core
        since = core.vstate.since
        patience = core._timeout()
        arrival = core.requests.oldest_arrival()
        if now - core.last_progress < patience:
            patience *= CENSOR_GRACE
            if now >= max(arrival, since) + patience:
                arrival = self._oldest_not_flooding(now, patience)
        if now >= max(arrival, since) + patience:
            self.suspect(SuspicionRule.REQUEST_TIMER)
        elif now >= self._monitor.next_check and core.cfg.monitor.enabled and not core.is_primary:
            self._watch_primary()
        if self._suspects and not core.in_view_change:
            self.check()

    def suspect(self, why: SuspicionRule) -> None:
        """This replica's timer fired in the current view, or the primary failed a monitor rule."""
        core = self._core
        if not self._suspecting:
            core.stats[why] += 1
            self._suspecting = True
            self._mine = core._sign(Suspect(core.view, core.id))
            core._out.append(Broadcast(self._mine))
            log.info("replica %d suspects the primary of view %d (%s)", core.id, core.view, why.label)
        self._suspects[core.id] = core.now
        self.check()

    def _watch_primary(self) -> None:
        """A backup checks the monitor's rules (bft.pbft.monitor) against its primary."""
        core = self._core
        self._monitor.next_check = core.now + core.cfg.monitor.check_interval
        timeout = core._timeout()
        now, requests = core.now, core.requests
        head = requests.oldest_queued(now, lambda c: requests.flooding(c, now, 2 * timeout))
        found = self._monitor.verdict(now, head, timeout)
        if found is not None:
            rule, why = found
            if not self._suspecting:
                log.info("replica %d: primary %d of view %d fails the %s rule: %s", core.id, core.leader, core.view,
                         rule.label, why)
            self._sticky = True
            self.suspect(rule)

    def _oldest_not_flooding(self, now: float, patience: float) -> float:
        """When the oldest request of a client that does not flood arrived (now if none):
        while the view executes, a flooding client's request may wait through nobody's fault.
        Recomputed at most every check interval: it walks the held requests."""
        cached = self._timer_arrival
        if cached is None or now - cached[0] >= self._core.cfg.monitor.check_interval:
            requests = self._core.requests
            a = requests.oldest_arrival(lambda c: requests.flooding(c, now, 2 * patience))
            cached = self._timer_arrival = (now, now if a is None else a)
        return cached[1]

    def check(self) -> None:
        """f+1 fresh SUSPECTs of this view (this replica's included): start the view change."""
        core = self._core
        fresh = core.now - 2 * core.cfg.request_timeout
        for r in [r for r, t in self._suspects.items() if t < fresh]:
            del self._suspects[r]
        if len(self._suspects) >= quorum.join_quorum(core.f):
            core.view_changer.start(core.view + 1)

    def clear(self) -> None:
        """The view ends (a view change starts, or a view is entered)."""
        self._suspecting = False
        self._sticky = False
        self._mine = None
        self._suspects.clear()

    def executing_again(self) -> None:
        """The next batch executes: a timer's suspicion ends (a monitor rule's lasts the view)."""
        if self._suspecting and not self._sticky:
            self._suspecting = False                 # executing again: stop repeating SUSPECT
            self._mine = None
            self._suspects.pop(self._core.id, None)

    def retransmit(self) -> None:
        if self._suspecting and self._mine is not None:
            self._suspects[self._core.id] = self._core.now
            self._core._out.append(Broadcast(self._mine))

    def on_suspect(self, sender: int, m: Suspect) -> None:
        core = self._core
        if m.view < core.view:
            core.view_changer.help_behind(sender)
            return
        if m.view > core.view or core.in_view_change:
            core._drop(PbftRule.SUSPECT_OTHER_VIEW, sender)
            return
        if sender not in self._suspects and not core.keys.replica_signed(m, sender):
            core._drop(PbftRule.SUSPECT_SIGNATURE, sender)
            return
        self._suspects[sender] = core.now
        if not self._suspecting:
            self._help_suspecting(sender)
        self.check()

    def _help_suspecting(self, sender: int) -> None:
        """It may just be behind: send it this replica's CHECKPOINT for its stable checkpoint;
        f+1 of them start its state transfer."""
        core = self._core
        mine = core.checkpoints.mine_at_stable()
        if mine is None or self._answered.get(sender, -1.0) + core.cfg.retransmit_interval > core.now:
            return
        self._answered[sender] = core.now
        core._out.append(Send(sender, mine))
