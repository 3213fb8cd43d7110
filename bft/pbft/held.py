"""PBFT normal-case messages held for later instead of dropped for good.

A component of ``PbftCore`` that owns two bounded stores of PRE-PREPAREs, PREPAREs and
COMMITs, each re-checked in full by the core's handlers when it is replayed:

- ``ahead``: messages just above H, held until the window moves. A backup learns that a
  checkpoint is stable a little after the primary does, and the primary already proposes
  above the backup's old H. Dropped, those never came back (the others commit without this
  replica and stop retransmitting).
- ``early``: messages of the view this replica is changing into, which arrive before its
  NEW-VIEW does (the primary does not retransmit what the others committed, so a dropped
  one never came back). Replayed on entering the view.

Bounded: per sequence number in (H, H + min(L, 2K)] (``ahead``) or in the window
(``early``), one PRE-PREPARE of the primary and one PREPARE and one COMMIT per replica.
The core decides what is held and counts the drop (``PbftCore._normal_case_ok``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from bft.wire import Commit, Message, PrePrepare, Prepare

if TYPE_CHECKING:
    from bft.pbft.core import PbftCore

Key = tuple[int, int, int]          # (seq, kind: PRE-PREPARE < PREPARE < COMMIT, sender): the replay order
_KIND_ORDER = {PrePrepare: 0, Prepare: 1, Commit: 2}


class HeldMessages:
    __slots__ = ("_core", "_ahead", "_early", "_span", "_moved")

    def __init__(self, core: PbftCore) -> None:
        self._core = core
        self._ahead: dict[Key, Message] = {}
        self._early: dict[Key, Message] = {}
        self._span = min(core.cfg.log_size, 2 * core.cfg.checkpoint_interval)   # how far above H
        self._moved = False                     # the window moved while ``ahead`` held something

    @property
    def ahead(self) -> dict[Key, Message]:
        return self._ahead

    @property
    def early(self) -> dict[Key, Message]:
        return self._early

    def hold_early(self, sender: int, msg: Message, seq: int) -> None:
        self._early[(seq, _KIND_ORDER[type(msg)], sender)] = msg

    def hold_ahead(self, sender: int, msg: Message, seq: int, top: int) -> bool:
        """Hold ``msg`` if ``seq`` is at most the span above H = ``top``; False if too far."""
        if seq > top + self._span:
            return False
        self._ahead[(seq, _KIND_ORDER[type(msg)], sender)] = msg
        return True

    def window_moved(self) -> None:
        """A new stable checkpoint: what ``ahead`` holds may be in the window now (``drain``)."""
        self._moved = bool(self._ahead)

    def drain(self) -> None:
        """Process the held messages the window now covers, in sequence order, each
        PRE-PREPARE before the votes for it (every check runs again)."""
        core = self._core
        while self._moved:
            self._moved = False
            top = core.checkpoints.h + core.cfg.log_size
            due = sorted(k for k in self._ahead if k[0] <= top)
            for k in due:
                m = self._ahead.pop(k)
                core._handlers[type(m)](core, k[2], m)

    def replay(self, view: int) -> None:
        """Entering ``view``: the messages held for it, in the same order as ``drain``."""
        core = self._core
        early, self._early = self._early, {}
        for k in sorted(early):
            m = early[k]
            if m.view == view:
                core._handlers[type(m)](core, k[2], m)

    def clear(self, *, keep_early: bool) -> None:
        """Leaving a view: nothing held is for the next one (``keep_early``: but those)."""
        self._ahead.clear()
        if not keep_early:
            self._early.clear()
