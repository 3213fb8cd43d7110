"""PBFT suspicion: a replica leaves its view only when f+1 replicas suspect the primary.

A mixin of ``PbftCore`` (same state, same sans-I/O rules). In Castro & Liskov a backup
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

from ledger import quorum
from bft.outputs import Broadcast, Send
from bft.pbft.rules import PbftRule
from bft.wire import Suspect

log = logging.getLogger("bft.pbft")


class SuspicionMixin:
    def _suspect(self, why: str) -> None:
        """This replica's timer fired in the current view, or the primary failed a monitor rule."""
        if not self.suspecting:
            self.suspecting = True
            self.my_suspect = self._sign(Suspect(self.view, self.id))
            self._out.append(Broadcast(self.my_suspect))
            log.info("replica %d suspects the primary of view %d (%s)", self.id, self.view, why)
        self.suspects[self.id] = self.now
        self._check_suspects()

    def _watch_primary(self) -> None:
        """A backup checks the monitor's rules (bft.pbft.monitor) against its primary."""
        self.monitor.next_check = self.now + self.cfg.monitor.check_interval
        timeout = self._timeout()
        now, requests = self.now, self.requests
        head = self.queue.oldest_head(requests.live, now, lambda c: requests.flooding(c, now, 2 * timeout))
        found = self.monitor.verdict(now, head, timeout)
        if found is not None:
            rule, why = found
            if not self.suspecting:
                self.stats["suspected: " + rule] += 1
                log.info("replica %d: primary %d of view %d fails the %s rule: %s", self.id, self.leader, self.view,
                         rule, why)
            self.suspect_sticky = True
            self._suspect(rule)

    def _oldest_not_flooding(self, now: float, patience: float) -> float:
        """When the oldest request of a client that does not flood arrived (now if none):
        while the view executes, a flooding client's request may wait through nobody's fault.
        Recomputed at most every check interval: it walks the held requests."""
        cached = self._timer_arrival
        if cached is None or now - cached[0] >= self.cfg.monitor.check_interval:
            requests = self.requests
            a = requests.oldest_arrival(lambda c: requests.flooding(c, now, 2 * patience))
            cached = self._timer_arrival = (now, now if a is None else a)
        return cached[1]

    def _check_suspects(self) -> None:
        fresh = self.now - 2 * self.cfg.request_timeout
        for r in [r for r, t in self.suspects.items() if t < fresh]:
            del self.suspects[r]
        if len(self.suspects) >= quorum.join_quorum(self.f):
            self._start_view_change(self.view + 1)

    def _clear_suspicion(self) -> None:
        self.suspecting = False
        self.suspect_sticky = False
        self.my_suspect = None
        self.suspects.clear()

    def _on_suspect(self, sender: int, m: Suspect) -> None:
        if m.view < self.view:
            self._help_behind(sender)
            return
        if m.view > self.view or self.in_view_change:
            self._drop(PbftRule.SUSPECT_OTHER_VIEW, sender)
            return
        if sender not in self.suspects and not self.keys.replica_signed(m, sender):
            self._drop(PbftRule.SUSPECT_SIGNATURE, sender)
            return
        self.suspects[sender] = self.now
        if not self.suspecting:
            self._help_suspecting(sender)
        self._check_suspects()

    def _help_suspecting(self, sender: int) -> None:
        """It may just be behind: send it this replica's CHECKPOINT for its stable checkpoint;
        f+1 of them start its state transfer."""
        mine = self.my_checkpoint if self.my_checkpoint is not None and self.my_checkpoint.seq == self.h else \
            next((c for c in self.stable_proof if c.replica == self.id), None)
        if mine is None or self.helped.get(-1000 - sender, -1.0) + self.cfg.retransmit_interval > self.now:
            return
        self.helped[-1000 - sender] = self.now
        self._out.append(Send(sender, mine))
