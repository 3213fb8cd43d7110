"""PBFT state transfer: a replica behind the stable checkpoint fetches certified blocks.

The machine itself (peer rotation, deadlines, fruitless rounds, executing served blocks
against their certificates) is ``bft.transfer.StateTransfer``, shared with Paxos. This
mixin says what it means to pbft: which rule each drop counts under, that answers are
rate-limited per peer, and that reaching the target may make a recorded checkpoint
stable and lets the committed sequence numbers above it execute. An abandoned transfer
is restarted by the next stable checkpoint or f+1 matching CHECKPOINTs (a CHECKPOINT sent
again as SUSPECT's answer, for one).
"""
from __future__ import annotations

import logging

from ledger import quorum
from bft.pbft.rules import PbftRule
from bft.transfer import FRUITLESS_ROUNDS, StateTransfer, Transfer, TransferHooks, TransferRules
from bft.wire import StateRequest, StateResponse
from ledger.block import Block
from ledger import tx as txmod

__all__ = ["FRUITLESS_ROUNDS", "STATE_ANSWERS_PER_INTERVAL", "StateTransferMixin", "Transfer"]

log = logging.getLogger("bft.pbft")

STATE_ANSWERS_PER_INTERVAL = 8         # per peer per retransmission interval: a catching-up replica
                                       # asks one peer in turn, one request at a time
RULES = TransferRules(unsolicited=PbftRule.UNSOLICITED_STATE, wrong_header=PbftRule.STATE_WRONG_HEADER,
                      no_new_block=PbftRule.STATE_NO_NEW_BLOCK, nobody_served=PbftRule.STATE_NOBODY_SERVED)


class StateTransferMixin:
    def _init_transfer(self) -> None:
        self.state_transfer = StateTransfer(
            self, RULES, TransferHooks(executed=self._transfer_executed, finished=self._transfer_finished,
                                       abandoned=lambda: None),
            answer_empty=False)

    @property
    def transfer(self) -> Transfer | None:
        """The transfer in progress, if any."""
        return self.state_transfer.current

    def _start_transfer(self, target: int, peers: list[int]) -> None:
        self.state_transfer.start(target, peers)

    def _on_state_request(self, sender: int, m: StateRequest) -> None:
        # Each answer reads up to transfer_chunk blocks from disk: a peer gets a few per interval
        # (one request is 20 bytes; an answer may be megabytes, issue 10's amplification).
        self.state_transfer.serve(
            sender, m, lambda peer: self._answer_allowed(self.state_served, peer, STATE_ANSWERS_PER_INTERVAL),
            PbftRule.STATE_REQUEST_RATE)

    def _on_state_response(self, sender: int, m: StateResponse) -> None:
        self.state_transfer.on_response(sender, m)

    def _transfer_executed(self, block: Block) -> None:
        self._after_execute(block, [txmod.parse(t) for t in block.txs])

    def _transfer_finished(self) -> None:
        if self.h < self.chain.height:
            votes = self.checkpoint_votes.get(self.chain.height, {})
            agreeing = [c for c in votes.values() if c.head == self.chain.head]
            if len(agreeing) >= quorum.checkpoint_quorum(self.f):
                self._make_stable(self.chain.height, sorted(agreeing, key=lambda c: c.replica))
        for s in [s for s in self.committed if s <= self.chain.height]:
            del self.committed[s]
        self._execute()
        self._act_on_latest_checkpoint()
