"""The learner: executes chosen slots in slot order ("Paxos Made Simple" §2.3, §3).

The leader knows a slot is chosen from a majority of ACCEPTEDs (the proposer tells the
learner); the others learn the commit index from the next ACCEPT or HEARTBEAT. A learner
executes slot ``s`` only when the leader of ballot ``b`` said ``s`` is chosen and its own
accepted value for ``s`` was accepted in ``b`` (that value is the leader's proposal, hence
the chosen one); anything else it fetches with state transfer (StateRequest /
StateResponse), checking every block's certificate and executing it itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bft.catchup import SKIP, execute_served
from bft.outputs import AppendBlock, CompactVotes, ServeBlocks
from bft.paxos.ballots import Role, leader_of
from bft.paxos.rules import PaxosRule
from bft.wire import PxHeartbeat, StateRequest, StateResponse
from ledger import tx as txmod
from ledger.block import Block

if TYPE_CHECKING:
    from bft.paxos.core import PaxosCore


@dataclass(slots=True)
class Transfer:
    target: int
    peers: list[int]
    turn: int
    deadline: float
    failures: int = 0


class Learner:
    """What is known chosen (``commit_index`` in ``commit_ballot``) and the execution of it."""

    def __init__(self, core: "PaxosCore") -> None:
        self._core = core
        height = core.chain.height
        # the leader of commit_ballot said every slot up to commit_index is chosen
        self.commit_ballot = -1
        self._commit_index = height
        self.stable = height - height % core.cfg.checkpoint_interval
        self.transfer: Transfer | None = None
        self.lag_since: float | None = None

    @property
    def commit_index(self) -> int:
        return self._commit_index

    # ------------------------------------------------------------------ told by the proposer
    def lead(self, ballot: int, known: int) -> None:
        """This replica leads ``ballot``, and phase 1 showed everything up to ``known`` chosen."""
        self.commit_ballot = ballot
        self._commit_index = known

    def chosen_upto(self, index: int) -> None:
        """As the leader (the distinguished learner): a majority accepted every slot up to ``index``."""
        if index > self._commit_index:
            self._commit_index = index
            self.learn()

    # ------------------------------------------------------------------ told by the leader
    def on_heartbeat(self, sender: int, m: PxHeartbeat) -> None:
        if self._core.acceptor.admit_leader(sender, m.ballot, "HEARTBEAT"):
            self.learn_commit(m.ballot, m.commit_index)

    def learn_commit(self, ballot: int, commit_index: int) -> None:
        proposer = self._core.proposer
        if ballot != proposer.ballot or proposer.role is Role.LEADER:
            return
        if ballot != self.commit_ballot:
            self.commit_ballot = ballot
            self._commit_index = commit_index
        elif commit_index > self._commit_index:
            self._commit_index = commit_index
        self.learn()

    # ------------------------------------------------------------------ execution
    def learn(self) -> None:
        """Execute, in slot order, every slot known chosen whose value this replica holds."""
        core = self._core
        chain, acceptor = core.chain, core.acceptor
        while chain.height < self._commit_index:
            acc = acceptor.value(chain.height + 1)
            if acc is None or acc.ballot != self.commit_ballot:
                break
            block = chain.execute(acc.slot, acc.ballot, acc.batch, [(acc.replica, acc.sig)])
            core.emit(AppendBlock(block))
            self._after_execute(block, reply_all=core.proposer.role is Role.LEADER)
        self._check_lag()

    def _after_execute(self, block: Block, reply_all: bool) -> None:
        core = self._core
        core.acceptor.executed_upto(block.height)
        core.proposer.note_progress()
        leading = core.proposer.role is Role.LEADER
        for index, raw in enumerate(block.txs):
            t = txmod.parse(raw)
            if t is None:
                continue
            held = core.requests.executed((t.client, t.timestamp))
            if leading and (reply_all or held is not None):
                core.reply(block, index, t.client, t.timestamp)
        if block.height % core.cfg.checkpoint_interval == 0:
            self.stable = block.height
            core.emit(CompactVotes(core.acceptor.snapshot()))

    def _check_lag(self) -> None:
        if self._core.chain.height < self._commit_index:
            if self.lag_since is None:
                self.lag_since = self._core.now
        else:
            self.lag_since = None

    # ------------------------------------------------------------------ state transfer
    def tick(self, now: float) -> None:
        t = self.transfer
        if t is not None and now >= t.deadline:
            self._transfer_failed()
        elif t is None and self.lag_since is not None and now >= self.lag_since + self._core.cfg.transfer_timeout:
            self._start_transfer()

    def _start_transfer(self) -> None:
        core = self._core
        self.lag_since = None
        if core.chain.height >= self._commit_index:
            return
        proposer = core.proposer
        first = proposer.catchup_peer if proposer.role is Role.LEADER else leader_of(self.commit_ballot, core.n)
        peers = [r for r in range(core.n) if r != core.id]
        if first is not None and first in peers:
            peers.remove(first)
            peers.insert(0, first)
        if not peers:
            return
        self.transfer = Transfer(self._commit_index, peers, 0, 0.0)
        self._request_blocks()

    def _request_blocks(self) -> None:
        core, t = self._core, self.transfer
        t.deadline = core.now + core.cfg.transfer_timeout
        frm = core.chain.height + 1
        to = min(max(t.target, frm), frm + core.cfg.transfer_chunk - 1)
        core.send(t.peers[t.turn % len(t.peers)], StateRequest(frm, to, core.id))

    def _transfer_failed(self) -> None:
        t = self.transfer
        t.turn += 1
        t.failures += 1
        if t.failures >= len(t.peers):
            self.transfer = None            # nobody could help now; lag detection tries again later
            self.lag_since = None
            self._check_lag()
        else:
            self._request_blocks()

    def on_state_request(self, sender: int, m: StateRequest) -> None:
        core = self._core
        to = min(m.to_height, core.chain.height, m.from_height + core.cfg.transfer_chunk - 1)
        if m.from_height < 1 or m.from_height > to:
            core.send(sender, StateResponse(core.id, [], []))
            return
        core.emit(ServeBlocks(sender, m.from_height, to))

    def on_state_response(self, sender: int, m: StateResponse) -> None:
        core = self._core
        t = self.transfer
        if t is None or sender != t.peers[t.turn % len(t.peers)]:
            core._drop(PaxosRule.UNSOLICITED_STATE, sender)
            return
        before = core.chain.height
        for raw in m.blocks:
            block, why = execute_served(core.chain, "paxos", core.f, core.keys, raw)
            if why == SKIP:
                continue
            if block is None:
                core._drop(why, sender)
                break
            if why:
                core._drop(PaxosRule.STATE_WRONG_HEADER, sender)
            core.emit(AppendBlock(block))
            self._after_execute(block, reply_all=False)
        if core.chain.height > before:
            t.failures = 0
        self.learn()                        # values accepted in the commit ballot may follow on
        if self.transfer is not t:
            return
        if core.chain.height >= t.target:
            self.transfer = None
            self._check_lag()
        elif core.chain.height > before:
            self._request_blocks()
        else:
            self._transfer_failed()
