"""PBFT checkpoints: CHECKPOINT votes, the stable checkpoint, and garbage collection below it.

A mixin of ``PbftCore`` (same state, same sans-I/O rules), kept apart so that each module
stays readable. Every K sequence numbers a replica signs (sequence, ledger head, tree
head); 2f+1 matching ones make the checkpoint stable: h moves up, the log below it goes,
and the vote log is compacted. f+1 matching ones above a replica's ledger start its state
transfer (one of them is honest).
"""
from __future__ import annotations

from ledger import quorum
from bft.outputs import CompactVotes
from bft.pbft.rules import PbftRule
from bft.wire import Checkpoint


class CheckpointMixin:
    def _on_checkpoint(self, sender: int, cp: Checkpoint) -> None:
        if cp.seq <= self.h or cp.seq % self.cfg.checkpoint_interval:
            self._drop(PbftRule.STALE_CHECKPOINT, sender)
            return
        votes = self.checkpoint_votes.get(cp.seq)
        if votes is not None and sender in votes:
            # a repeat (a peer answering a SUSPECT): what was recorded while a transfer ran
            # may be actionable now
            self._act_on_checkpoint(cp.seq)
            return
        if not self.keys.replica_signed(cp, sender):
            self._drop(PbftRule.BAD_SIGNATURE, sender)
            return
        self._record_checkpoint(cp)

    def _record_checkpoint(self, cp: Checkpoint) -> None:
        votes = self.checkpoint_votes.setdefault(cp.seq, {})
        votes[cp.replica] = cp
        # a replica keeps at most a few unstable checkpoint votes per peer (bounded memory)
        mine = sorted(s for s, v in self.checkpoint_votes.items() if cp.replica in v)
        for s in mine[:-4]:
            del self.checkpoint_votes[s][cp.replica]
            if not self.checkpoint_votes[s]:         # no empty dicts left behind (issue 11)
                del self.checkpoint_votes[s]
        self._act_on_checkpoint(cp.seq, cp)

    def _act_on_latest_checkpoint(self) -> None:
        """After a state transfer: the highest checkpoint recorded meanwhile may be the next step."""
        for seq in sorted(self.checkpoint_votes, reverse=True):
            if seq > self.h:
                self._act_on_checkpoint(seq)
                return

    def _act_on_checkpoint(self, seq: int, cp: Checkpoint | None = None) -> None:
        """2f+1 matching CHECKPOINTs for ``seq``: stable. f+1 above the ledger: fetch."""
        votes = self.checkpoint_votes.get(seq)
        if not votes:
            return
        if cp is None:                               # the state most votes agree on
            states = [(c.head, c.tree_size, c.tree_root) for c in votes.values()]
            state = max(set(states), key=states.count)
        else:
            state = (cp.head, cp.tree_size, cp.tree_root)
        agreeing = [c for c in votes.values() if (c.head, c.tree_size, c.tree_root) == state]
        if len(agreeing) >= quorum.checkpoint_quorum(self.f) and (
                self.chain.height >= seq or self.transfer is None):
            self._make_stable(seq, sorted(agreeing, key=lambda c: c.replica))
        elif len(agreeing) >= quorum.join_quorum(self.f) and seq > self.chain.height and self.transfer is None:
            # f+1 agree, so one honest replica is there: fetch unless we get there ourselves soon
            peers = sorted(c.replica for c in agreeing if c.replica != self.id)
            if seq > self.h + self.cfg.log_size:
                self._start_transfer(seq, peers)
            elif self.lag is None or self.lag[0] < seq:
                self.lag = (seq, peers, self.now)

    def _make_stable(self, seq: int, proof: list[Checkpoint]) -> None:
        if seq <= self.h:
            return
        self.h = seq
        self.stable_proof = proof[: quorum.checkpoint_quorum(self.f)]   # exactly a quorum (see certs.py)
        self._window_moved = bool(self.ahead)
        for s in [s for s in self.log if s <= seq]:
            del self.log[s]
        for s in [s for s in self.prepared_certs if s <= seq]:
            del self.prepared_certs[s]
        for s in [s for s in self.checkpoint_votes if s <= seq]:
            del self.checkpoint_votes[s]
        for s in [s for s in self.committed if s <= seq]:
            del self.committed[s]
        self._forget_batches(seq)
        self.votes = {k: d for k, d in self.votes.items() if k[1] > seq}
        if self.next_seq <= seq:
            self.next_seq = seq + 1
        if self.chain.height < seq and self.transfer is None:
            self._start_transfer(seq, [c.replica for c in proof if c.replica != self.id])
        self._out.append(CompactVotes(self._vote_snapshot()))

