"""PBFT checkpoints: CHECKPOINT votes, the stable checkpoint, and garbage collection below it.

A component of ``PbftCore`` that owns its state: the low watermark h, the proof that the
checkpoint at h is stable, the CHECKPOINT votes above it and this replica's own latest
one. Every K sequence numbers a replica signs (sequence, ledger head, tree head); 2f+1
matching ones make the checkpoint stable: h moves up, the log below it goes, and the
vote log is compacted. f+1 matching ones above a replica's ledger start its state
transfer (one of them is honest). What lies below h in the core and in the other
components is collected through their methods (``PbftCore._collect_below``,
``BatchFetcher.forget_below``); a transfer is started through ``Catchup``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ledger import quorum
from bft.outputs import Broadcast, CompactVotes
from bft.pbft import recovery
from bft.pbft.rules import PbftRule
from bft.wire import Checkpoint
from ledger.block import Block

if TYPE_CHECKING:
    from bft.pbft.core import PbftCore


class Checkpoints:
    """The stable checkpoint (h and its proof) and the CHECKPOINT votes above it."""

    __slots__ = ("_core", "_h", "_stable_proof", "_votes", "_mine")

    def __init__(self, core: PbftCore) -> None:
        self._core = core
        self._h = 0                                        # low watermark = stable checkpoint
        self._stable_proof: list[Checkpoint] = []          # 2f+1 matching CHECKPOINTs for h
        self._votes: dict[int, dict[int, Checkpoint]] = {}   # seq -> replica -> its CHECKPOINT
        self._mine: Checkpoint | None = None               # this replica's latest CHECKPOINT

    # ------------------------------------------------------------------ read-only views
    @property
    def h(self) -> int:
        return self._h

    @property
    def stable_proof(self) -> list[Checkpoint]:
        return self._stable_proof

    @property
    def votes(self) -> dict[int, dict[int, Checkpoint]]:
        return self._votes

    @property
    def mine(self) -> Checkpoint | None:
        return self._mine

    def mine_at_stable(self) -> Checkpoint | None:
        """This replica's CHECKPOINT for h, if it has one (SUSPECT's answer)."""
        if self._mine is not None and self._mine.seq == self._h:
            return self._mine
        return next((c for c in self._stable_proof if c.replica == self._core.id), None)

    # ------------------------------------------------------------------ this replica's checkpoints
    def restore(self, proof: list[Checkpoint]) -> None:
        """A restart: the stable checkpoint read back from the vote log."""
        self._h, self._stable_proof = proof[0].seq, proof[: quorum.checkpoint_quorum(self._core.f)]

    def take(self, block: Block) -> None:
        """``block`` ends a checkpoint interval: sign, multicast and record this replica's CHECKPOINT."""
        core = self._core
        chain = core.chain
        cp = core._sign(Checkpoint(block.sequence, chain.head, chain.tree.size, chain.tree.root(), core.id))
        self._mine = cp
        core._out.append(Broadcast(cp))
        self.record(cp)

    def retransmit(self) -> None:
        if self._mine is not None and self._mine.seq > self._h:
            self._core._out.append(Broadcast(self._mine))

    # ------------------------------------------------------------------ CHECKPOINT
    def on_checkpoint(self, sender: int, cp: Checkpoint) -> None:
        core = self._core
        if cp.seq <= self._h or cp.seq % core.cfg.checkpoint_interval:
            core._drop(PbftRule.STALE_CHECKPOINT, sender)
            return
        votes = self._votes.get(cp.seq)
        if votes is not None and sender in votes:
            # a repeat (a peer answering a SUSPECT): what was recorded while a transfer ran
            # may be actionable now
            self._act_on(cp.seq)
            return
        if not core.keys.replica_signed(cp, sender):
            core._drop(PbftRule.BAD_SIGNATURE, sender)
            return
        self.record(cp)

    def record(self, cp: Checkpoint) -> None:
        votes = self._votes.setdefault(cp.seq, {})
        votes[cp.replica] = cp
        # a replica keeps at most a few unstable checkpoint votes per peer (bounded memory)
        mine = sorted(s for s, v in self._votes.items() if cp.replica in v)
        for s in mine[:-4]:
            del self._votes[s][cp.replica]
            if not self._votes[s]:                    # no empty dicts left behind (issue 11)
                del self._votes[s]
        self._act_on(cp.seq, cp)

    def act_on_latest(self) -> None:
        """After a state transfer: the highest checkpoint recorded meanwhile may be the next step."""
        for seq in sorted(self._votes, reverse=True):
            if seq > self._h:
                self._act_on(seq)
                return

    def _act_on(self, seq: int, cp: Checkpoint | None = None) -> None:
        """2f+1 matching CHECKPOINTs for ``seq``: stable. f+1 above the ledger: fetch."""
        votes = self._votes.get(seq)
        if not votes:
            return
        core = self._core
        if cp is None:                               # the state most votes agree on
            states = [(c.head, c.tree_size, c.tree_root) for c in votes.values()]
            state = max(set(states), key=states.count)
        else:
            state = (cp.head, cp.tree_size, cp.tree_root)
        agreeing = [c for c in votes.values() if (c.head, c.tree_size, c.tree_root) == state]
        transferring = core.catchup.current is not None
        if len(agreeing) >= quorum.checkpoint_quorum(core.f) and (core.chain.height >= seq or not transferring):
            self.make_stable(seq, sorted(agreeing, key=lambda c: c.replica))
        elif len(agreeing) >= quorum.join_quorum(core.f) and seq > core.chain.height and not transferring:
            # f+1 agree, so one honest replica is there: fetch unless we get there ourselves soon
            peers = sorted(c.replica for c in agreeing if c.replica != core.id)
            if seq > self._h + core.cfg.log_size:
                core.catchup.start(seq, peers)
            else:
                core.catchup.lag_behind(seq, peers)

    def stable_at_height(self) -> None:
        """A state transfer reached the ledger height: stable there if 2f+1 recorded votes agree."""
        core = self._core
        height = core.chain.height
        if self._h < height:
            votes = self._votes.get(height, {})
            agreeing = [c for c in votes.values() if c.head == core.chain.head]
            if len(agreeing) >= quorum.checkpoint_quorum(core.f):
                self.make_stable(height, sorted(agreeing, key=lambda c: c.replica))

    def make_stable(self, seq: int, proof: list[Checkpoint]) -> None:
        if seq <= self._h:
            return
        core = self._core
        self._h = seq
        self._stable_proof = proof[: quorum.checkpoint_quorum(core.f)]   # exactly a quorum (see certs.py)
        for s in [s for s in self._votes if s <= seq]:
            del self._votes[s]
        core._collect_below(seq)
        core.fetcher.forget_below(seq)
        if core.chain.height < seq and core.catchup.current is None:
            core.catchup.start(seq, [c.replica for c in proof if c.replica != core.id])
        core._out.append(CompactVotes(recovery.snapshot(core)))
