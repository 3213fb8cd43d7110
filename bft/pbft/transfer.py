"""PBFT state transfer: a replica behind the stable checkpoint fetches certified blocks.

The machine itself (peer rotation, deadlines, fruitless rounds, executing served blocks
against their certificates) is ``bft.transfer.StateTransfer``, shared with Paxos. This
component, ``Catchup``, owns pbft's side of it: the machine, the lag (a checkpoint seen
above this replica's ledger, waited on for a transfer timeout before fetching, in case
the normal case gets there first) and how often it answered each peer. It says what the
machine means to pbft: which rule each drop counts under, that answers are rate-limited
per peer, and that reaching the target may make a recorded checkpoint stable and lets the
committed sequence numbers above it execute. An abandoned transfer is restarted by the
next stable checkpoint or f+1 matching CHECKPOINTs (a CHECKPOINT sent again as SUSPECT's
answer, for one).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bft.pbft.rules import PbftRule
from bft.transfer import FRUITLESS_ROUNDS, StateTransfer, Transfer, TransferHooks, TransferRules
from bft.wire import StateRequest, StateResponse
from ledger.block import Block
from ledger import tx as txmod

if TYPE_CHECKING:
    from bft.pbft.core import PbftCore

__all__ = ["FRUITLESS_ROUNDS", "STATE_ANSWERS_PER_INTERVAL", "Catchup", "Transfer"]

log = logging.getLogger("bft.pbft")

STATE_ANSWERS_PER_INTERVAL = 8         # per peer per retransmission interval: a catching-up replica
                                       # asks one peer in turn, one request at a time
RULES = TransferRules(unsolicited=PbftRule.UNSOLICITED_STATE, wrong_header=PbftRule.STATE_WRONG_HEADER,
                      no_new_block=PbftRule.STATE_NO_NEW_BLOCK, nobody_served=PbftRule.STATE_NOBODY_SERVED)

Lag = tuple[int, list[int], float]     # (checkpoint seq above us, its signers, since)


class Catchup:
    """The state transfer in progress, if any, and the lag that may start one."""

    __slots__ = ("_core", "_machine", "_lag", "_served")

    def __init__(self, core: PbftCore) -> None:
        self._core = core
        # the host of the shared machine is the core: its id, clock, chain, output and drops
        self._machine = StateTransfer(
            core, RULES, TransferHooks(executed=self._executed, finished=self._finished, abandoned=lambda: None),
            answer_empty=False)
        self._lag: Lag | None = None
        self._served: dict[int, tuple[float, int]] = {}   # peer -> (interval start, answers)

    @property
    def current(self) -> Transfer | None:
        """The transfer in progress, if any."""
        return self._machine.current

    @property
    def machine(self) -> StateTransfer:
        return self._machine

    @property
    def lag(self) -> Lag | None:
        return self._lag

    @property
    def served(self) -> dict[int, tuple[float, int]]:
        return self._served

    @property
    def idle(self) -> bool:
        """Neither fetching nor waiting to fetch."""
        return self._machine.current is None and self._lag is None

    def start(self, target: int, peers: list[int]) -> None:
        self._machine.start(target, peers)

    def lag_behind(self, seq: int, peers: list[int]) -> None:
        """f+1 agree on a checkpoint at ``seq`` above the ledger but inside the window: fetch
        it after a transfer timeout unless the normal case gets there first."""
        if self._lag is None or self._lag[0] < seq:
            self._lag = (seq, peers, self._core.now)

    def tick(self, now: float) -> None:
        core = self._core
        if self.idle and core.committed and not core.in_view_change:
            first = min(core.committed)
            if first > core.chain.height + 1:
                # committed here but an earlier sequence number is missing (missed while cut
                # off): fetch the certified blocks in between from the others
                self._lag = (first - 1, [r for r in range(core.n) if r != core.id], now)
        if self._machine.current is not None:
            self._machine.tick(now)
        elif self._lag is not None:
            seq, peers, since = self._lag
            if core.chain.height >= seq:
                self._lag = None
            elif now >= since + core.cfg.transfer_timeout:
                self._lag = None
                self.start(seq, peers)

    def on_state_request(self, sender: int, m: StateRequest) -> None:
        # Each answer reads up to transfer_chunk blocks from disk: a peer gets a few per interval
        # (one request is 20 bytes; an answer may be megabytes, issue 10's amplification).
        core = self._core
        self._machine.serve(
            sender, m, lambda peer: core._answer_allowed(self._served, peer, STATE_ANSWERS_PER_INTERVAL),
            PbftRule.STATE_REQUEST_RATE)

    def on_state_response(self, sender: int, m: StateResponse) -> None:
        self._machine.on_response(sender, m)

    def _executed(self, block: Block) -> None:
        self._core._after_execute(block, [txmod.parse(t) for t in block.txs])

    def _finished(self) -> None:
        core = self._core
        core.checkpoints.stable_at_height()
        for s in [s for s in core.committed if s <= core.chain.height]:
            del core.committed[s]
        core._execute()
        core.checkpoints.act_on_latest()
