"""The learner: executes chosen slots in slot order ("Paxos Made Simple" §2.3, §3).

The leader knows a slot is chosen from a majority of ACCEPTEDs (the proposer tells the
learner); the others learn the commit index from the next ACCEPT or HEARTBEAT. A learner
executes slot ``s`` only when the leader of ballot ``b`` said ``s`` is chosen and its own
accepted value for ``s`` was accepted in ``b`` (that value is the leader's proposal, hence
the chosen one); anything else it fetches with state transfer (StateRequest /
StateResponse, the machine ``bft.transfer`` shared with pbft), checking every block's
certificate and executing it itself.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from bft.outputs import AppendBlock, CompactVotes
from bft.paxos.ballots import Role, leader_of
from bft.paxos.rules import PaxosRule
from bft.transfer import StateTransfer, Transfer, TransferHooks, TransferRules
from bft.wire import PxHeartbeat, StateRequest, StateResponse
from ledger import tx as txmod
from ledger.block import Block

if TYPE_CHECKING:
    from bft.paxos.core import PaxosCore


RULES = TransferRules(unsolicited=PaxosRule.UNSOLICITED_STATE, wrong_header=PaxosRule.STATE_WRONG_HEADER,
                      no_new_block=None, nobody_served=None)


class Learner:
    """What is known chosen (``commit_index`` in ``commit_ballot``) and the execution of it."""

    def __init__(self, core: "PaxosCore") -> None:
        self._core = core
        height = core.chain.height
        # the leader of commit_ballot said every slot up to commit_index is chosen
        self.commit_ballot = -1
        self._commit_index = height
        self.stable = height - height % core.cfg.checkpoint_interval
        self.lag_since: float | None = None         # since when this replica is behind the commit index
        self._transfer = StateTransfer(core, RULES, TransferHooks(
            executed=lambda block: self._after_execute(block, reply_all=False),
            finished=self._check_lag, abandoned=self._transfer_abandoned,
            answered=self.learn),           # values accepted in the commit ballot may follow on
            answer_empty=True)

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
    @property
    def transfer(self) -> Transfer | None:
        """The state transfer in progress, if any."""
        return self._transfer.current

    def tick(self, now: float) -> None:
        if self._transfer.current is not None:
            self._transfer.tick(now)
        elif self.lag_since is not None and now >= self.lag_since + self._core.cfg.transfer_timeout:
            self._start_transfer()

    def _start_transfer(self) -> None:
        """Behind the commit index for a while: fetch the chosen prefix, asking first the replica
        most likely to hold it (the leader; a new leader, the acceptor ahead of it)."""
        core = self._core
        self.lag_since = None
        if core.chain.height >= self._commit_index:
            return
        proposer = core.proposer
        first = proposer.catchup_peer if proposer.role is Role.LEADER else leader_of(self.commit_ballot, core.n)
        self._transfer.start(self._commit_index, [r for r in range(core.n) if r != core.id], first)

    def _transfer_abandoned(self) -> None:
        self.lag_since = None               # nobody could help now; lag detection tries again later
        self._check_lag()

    def on_state_request(self, sender: int, m: StateRequest) -> None:
        self._transfer.serve(sender, m)

    def on_state_response(self, sender: int, m: StateResponse) -> None:
        self._transfer.on_response(sender, m)
