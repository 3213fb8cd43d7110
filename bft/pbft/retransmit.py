"""PBFT retransmission: what a replica sends again, and when.

A component of ``PbftCore`` that owns the retransmission clock and whom it answered lately.
The protocol runs over a lossy network, and a replica that misses a vote may never see
it again once the others have committed, so every retransmission interval a replica
re-sends its own votes for the slots not yet committed-local here (at most 8), its
CHECKPOINT above h, its SUSPECT, and asks again for missing batches; while changing views,
only its VIEW-CHANGE. A peer that re-sends a vote this replica already has may be missing
this replica's: it gets them back, at most once per interval. Each component re-sends what
it owns through its own ``retransmit``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from bft.outputs import Broadcast, Send

if TYPE_CHECKING:
    from bft.pbft.core import PbftCore

SLOTS_PER_INTERVAL = 8


class Retransmitter:
    __slots__ = ("_core", "_next", "_helped")

    def __init__(self, core: PbftCore, now: float) -> None:
        self._core = core
        self._next = now + core.cfg.retransmit_interval   # when to retransmit next
        self._helped: dict[int, float] = {}     # replica -> when its repeated vote was last answered

    @property
    def helped(self) -> dict[int, float]:
        return self._helped

    def duplicate(self, sender: int, seq: int) -> None:
        """A peer re-sent a vote: it may be missing ours. Answer once per interval."""
        core = self._core
        core.count_useless()
        if self._helped.get(sender, -1.0) + core.cfg.retransmit_interval > core.now:
            return
        self._helped[sender] = core.now
        slot = core.log.get(seq)
        if slot is None:
            return
        out = core._out
        if slot.pre_prepare is not None and core.is_primary:
            out.append(Send(sender, slot.pre_prepare))
        if slot.my_prepare is not None:
            out.append(Send(sender, slot.my_prepare))
        if slot.my_commit is not None:
            out.append(Send(sender, slot.my_commit))

    def tick(self, now: float) -> None:
        if now >= self._next:
            self._next = now + self._core.cfg.retransmit_interval
            self._retransmit()

    def _retransmit(self) -> None:
        core = self._core
        if core.view_changer.retransmit():
            return
        out, log, sent = core._out, core.log, 0
        for seq in sorted(log):
            if sent >= SLOTS_PER_INTERVAL:
                break
            slot = log[seq]
            # Also slots this replica already executed (in an earlier view, or through
            # state transfer): a peer may still need this view's votes for them, and with
            # exactly 2f+1 honest replicas every honest vote is needed (n=10 seed 164).
            if slot.is_committed_local:
                continue
            if core.is_primary and slot.pre_prepare is not None:
                out.append(Broadcast(slot.pre_prepare))
            if slot.my_prepare is not None:
                out.append(Broadcast(slot.my_prepare))
            if slot.my_commit is not None:
                out.append(Broadcast(slot.my_commit))
            sent += 1
        core.checkpoints.retransmit()
        core.suspicion.retransmit()
        core.fetcher.retry()
