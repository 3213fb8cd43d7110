"""PBFT state transfer: a replica behind the stable checkpoint fetches certified blocks.

A mixin of ``PbftCore`` (same state, same sans-I/O rules), kept apart so that each
module stays readable. Every fetched block is checked against its commit certificate
and re-executed locally; a peer that serves a bad block is dropped for the next one.

One Byzantine peer must not pin a transfer (issue 11: an empty answer made the replica
ask the same peer again and reset the deadline; 20 s later it was still at height 0).
So every request goes to the next peer in turn, whatever the last answer was: a peer
that answers nothing, answers empty or drip-feeds one block at a time gets one request
in k. The order of the peers starts at a place that depends on this replica and the
target, so that the replicas behind do not all ask the same peer first. After
``FRUITLESS_ROUNDS`` rounds over all peers without a single new block the transfer is
abandoned; the next stable checkpoint or f+1 matching CHECKPOINTs start a fresh one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from ledger import quorum
from bft.catchup import SKIP, execute_served
from bft.outputs import AppendBlock, Send, ServeBlocks
from bft.pbft.rules import PbftRule
from bft.wire import StateRequest, StateResponse
from ledger.rules import Rejection
from ledger import tx as txmod

log = logging.getLogger("bft.pbft")


FRUITLESS_ROUNDS = 3
STATE_ANSWERS_PER_INTERVAL = 8         # per peer per retransmission interval: a catching-up replica
                                       # asks one peer in turn, one request at a time


@dataclass(slots=True)
class Transfer:
    target: int
    peers: list[int]
    turn: int
    deadline: float
    fruitless: int = 0          # requests in a row that brought no new block


class StateTransferMixin:
    def _start_transfer(self, target: int, peers: list[int]) -> None:
        if not peers:
            return
        start = (self.id + target) % len(peers)
        self.transfer = Transfer(target, peers[start:] + peers[:start], 0, 0.0)
        self._request_blocks()

    def _next_transfer_peer(self, progressed: bool) -> None:
        """Ask the next peer in turn; give up after FRUITLESS_ROUNDS rounds of no progress."""
        t = self.transfer
        t.turn += 1
        t.fruitless = 0 if progressed else t.fruitless + 1
        if t.fruitless >= FRUITLESS_ROUNDS * len(t.peers):
            self._drop(PbftRule.STATE_NOBODY_SERVED)
            self.transfer = None                     # a CHECKPOINT sent again (as SUSPECT's answer) restarts it
            return
        self._request_blocks()

    def _request_blocks(self) -> None:
        t = self.transfer
        peer = t.peers[t.turn % len(t.peers)]
        t.deadline = self.now + self.cfg.transfer_timeout
        frm = self.chain.height + 1
        to = min(t.target, frm + self.cfg.transfer_chunk - 1)
        self._out.append(Send(peer, StateRequest(frm, to, self.id)))

    def _on_state_request(self, sender: int, m: StateRequest) -> None:
        to = min(m.to_height, self.chain.height, m.from_height + self.cfg.transfer_chunk - 1)
        if m.from_height < 1 or m.from_height > to:
            return
        # Each answer reads up to transfer_chunk blocks from disk: a peer gets a few per interval
        # (one request is 20 bytes; an answer may be megabytes, issue 10's amplification).
        if not self._answer_allowed(self.state_served, sender, STATE_ANSWERS_PER_INTERVAL):
            self._drop(PbftRule.STATE_REQUEST_RATE, sender)
            return
        self._out.append(ServeBlocks(sender, m.from_height, to))

    def _on_state_response(self, sender: int, m: StateResponse) -> None:
        t = self.transfer
        if t is None or m.replica != sender or sender != t.peers[t.turn % len(t.peers)]:
            self._drop(PbftRule.UNSOLICITED_STATE, sender)
            return
        before = self.chain.height
        for raw in m.blocks:
            block, why = execute_served(self.chain, "pbft", self.f, self.keys, raw)
            if why == SKIP:
                continue
            if block is None:
                self._bad_transfer_peer(why, sender)
                return
            if why:
                self._drop(PbftRule.STATE_WRONG_HEADER, sender)
            self._out.append(AppendBlock(block))
            self._after_execute(block, [txmod.parse(t) for t in block.txs])
        if self.chain.height >= t.target:
            self.transfer = None
            if self.h < self.chain.height:
                votes = self.checkpoint_votes.get(self.chain.height, {})
                agreeing = [c for c in votes.values() if c.head == self.chain.head]
                if len(agreeing) >= quorum.checkpoint_quorum(self.f):
                    self._make_stable(self.chain.height, sorted(agreeing, key=lambda c: c.replica))
            for s in [s for s in self.committed if s <= self.chain.height]:
                del self.committed[s]
            self._execute()
            self._act_on_latest_checkpoint()
        else:
            if self.chain.height == before:
                self._drop(PbftRule.STATE_NO_NEW_BLOCK, sender)
            self._next_transfer_peer(self.chain.height > before)

    def _bad_transfer_peer(self, why: Rejection, sender: int) -> None:
        self._drop(why, sender)
        self._next_transfer_peer(False)
