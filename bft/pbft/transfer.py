"""PBFT state transfer: a replica behind the stable checkpoint fetches certified blocks.

A mixin of ``PbftCore`` (same state, same sans-I/O rules), kept apart so that each
module stays readable. Every fetched block is checked against its commit certificate
and re-executed locally; a peer that serves a bad block is dropped for the next one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from bft import quorum
from bft.catchup import SKIP, execute_served
from bft.outputs import AppendBlock, Send, ServeBlocks
from bft.wire import StateRequest, StateResponse
from ledger import tx as txmod

log = logging.getLogger("bft.pbft")


@dataclass(slots=True)
class Transfer:
    target: int
    peers: list[int]
    turn: int
    deadline: float


class StateTransferMixin:
    def _start_transfer(self, target: int, peers: list[int]) -> None:
        if not peers:
            return
        self.transfer = Transfer(target, peers, 0, 0.0)
        self._request_blocks()

    def _request_blocks(self) -> None:
        t = self.transfer
        peer = t.peers[t.turn % len(t.peers)]
        t.deadline = self.now + self.cfg.transfer_timeout
        frm = self.chain.height + 1
        to = min(t.target, frm + self.cfg.transfer_chunk - 1)
        self._out.append(Send(peer, StateRequest(frm, to, self.id)))

    def _on_state_request(self, sender: int, m: StateRequest) -> None:
        if m.replica != sender:
            self._drop("sender field differs from the authenticated sender")
            return
        to = min(m.to_height, self.chain.height, m.from_height + self.cfg.transfer_chunk - 1)
        if m.from_height < 1 or m.from_height > to:
            return
        self._out.append(ServeBlocks(sender, m.from_height, to))

    def _on_state_response(self, sender: int, m: StateResponse) -> None:
        t = self.transfer
        if t is None or m.replica != sender or sender != t.peers[t.turn % len(t.peers)]:
            self._drop("unsolicited state-transfer response")
            return
        for raw in m.blocks:
            block, why = execute_served(self.chain, "pbft", self.f, self.keys, raw)
            if why == SKIP:
                continue
            if block is None:
                self._bad_transfer_peer(why)
                return
            if why:
                self._drop("state-transfer peer sent a wrong header for a certified batch")
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
        else:
            self._request_blocks()

    def _bad_transfer_peer(self, why: str) -> None:
        self._drop("state transfer: " + why)
        self.transfer.turn += 1
        self._request_blocks()
