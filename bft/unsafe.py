"""Rule switches: builds of the cores with one named safety rule turned off, for the lab.

A course learns most from seeing a rule fail: ``bftledger lab ATTACK --unsafe-disable RULE``
runs the attack against honest replicas built from one of these cores, and the lab shows
the violation the rule prevents. The switches exist only here, in the simulator's lab: no
real replica can be started with one (``bftledger replica`` has no such option), and the
production cores carry no flag for them. Each switch is a subclass that overrides exactly
the check it removes, so reading it shows what the rule does.
"""
from __future__ import annotations

from bft.adversary import plan_with_nulls
from bft.paxos.core import PaxosCore
from bft.paxos.proposer import Proposer
from bft.pbft.certs import (Keys, NewViewPlan, batch_error, checkpoint_proof_error, new_view_error,
                            plan_new_view)
from bft.pbft.core import PbftCore
from bft.pbft.slots import Slot

from bft.wire import Checkpoint, Commit, NewView, PrePrepare, Prepare, PxAccept, PxPromise
from crypto.signing import Verifier
from ledger import quorum
from ledger.certificate import block_shape_error


class _WeakSlot(Slot):
    """prepared with f PREPAREs, committed-local with f+1 COMMITs: quorums that need not intersect."""

    __slots__ = ()

    def prepared(self, primary: int, f: int) -> list[Prepare] | None:
        pp = self.pre_prepare
        if pp is None:
            return None
        matching = [p for r, p in self.prepares.items() if r != primary and p.digest == pp.digest]
        return matching if len(matching) >= f else None

    def committed_local(self, f: int) -> list[tuple[int, bytes]] | None:
        if not self.is_prepared:
            return None
        matching = sorted((r, c.sig) for r, c in self.commits.items() if c.digest == self.pre_prepare.digest)
        return matching if len(matching) >= quorum.join_quorum(f) else None


class WeakQuorumCore(PbftCore):
    def _slot(self, seq: int) -> Slot:
        s = self.log.get(seq)
        if s is None:
            s = self.log[seq] = _WeakSlot()
        return s


class DuplicateVotesCore(PbftCore):
    """Every PREPARE and COMMIT received is stored under a fresh key, so one replica's repeated
    vote counts several times toward a quorum."""

    def _on_prepare(self, sender: int, p: Prepare) -> None:
        if not self._normal_case_ok(sender, p, p.view, p.seq) or sender == self.leader:
            return
        if not self.keys.replica_signed(p, sender):
            return
        slot = self._slot(p.seq)
        slot.prepares[sender + self.n * (1 + len(slot.prepares))] = p       # not keyed by replica
        self._check_prepared(p.seq, slot)

    def _on_commit(self, sender: int, c: Commit) -> None:
        if not self._normal_case_ok(sender, c, c.view, c.seq):
            return
        if not self.keys.replica_signed(c, sender):
            return
        slot = self._slot(c.seq)
        slot.commits[sender + self.n * (1 + len(slot.commits))] = c         # not keyed by replica
        self._check_committed(c.seq, slot)

    _handlers = {**PbftCore._handlers, Prepare: _on_prepare, Commit: _on_commit}


class NewViewIgnoresP(PbftCore):
    plan_new_view = staticmethod(plan_with_nulls)


class LaterPrePrepareCore(PbftCore):
    """Takes a later PRE-PREPARE for a (view, sequence) it already has one for: the slot starts
    over with the new digest, and this replica votes again (its own earlier vote forgotten)."""

    def _on_pre_prepare(self, sender: int, pp: PrePrepare) -> None:
        slot = self.log.get(pp.seq)
        if (slot is not None and slot.pre_prepare is not None and slot.pre_prepare.digest != pp.digest
                and pp.view == self.view and sender == self.leader and not slot.is_committed_local):
            del self.log[pp.seq]
            self.votes.pop((pp.view, pp.seq), None)
        super()._on_pre_prepare(sender, pp)

    _handlers = {**PbftCore._handlers, PrePrepare: _on_pre_prepare}


class _TrustingVerifier:
    """Says yes to every signature, and only to those: client requests in batches (replica
    messages are checked by the core's own verifier, which it keeps)."""

    def __init__(self, inner: Verifier) -> None:
        self._inner = inner

    def verify(self, *args) -> bool:
        return True

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


def _unchecked_batch(keys: Keys, digest: bytes, batch: list[bytes], max_weight: int):
    return batch_error(Keys(keys.replicas, keys.clients, _TrustingVerifier(keys.verifier), keys.admin), digest, batch,
                       max_weight)


class NoClientSignaturesCore(PbftCore):
    check_batch = staticmethod(_unchecked_batch)


def _new_view_as_sent(keys: Keys, f: int, nv: NewView, log_size: int, plan_fn=None,
                      proof_error=checkpoint_proof_error):
    """V is checked as before (2f+1 valid VIEW-CHANGEs), but O is not recomputed from it: the
    backup takes the O the new primary sent for the one V implies. min-s and its checkpoint
    still come from V."""
    def as_sent(vcs) -> NewViewPlan:
        plan = (plan_fn or plan_new_view)(vcs)
        entries = [(pp.seq, pp.digest) for pp in nv.pre_prepares]
        return NewViewPlan(plan.min_s, max((s for s, _d in entries), default=plan.min_s), plan.stable_proof, entries)
    return new_view_error(keys, f, nv, log_size, as_sent, proof_error)


class NewViewTakesOCore(PbftCore):
    check_new_view = staticmethod(_new_view_as_sent)


def _one_checkpoint_proves(keys: Keys, f: int, seq: int, proof: list[Checkpoint]):
    """A claimed stable checkpoint (in a VIEW-CHANGE or a NEW-VIEW) is proved by one signed
    CHECKPOINT, the first of its proof, instead of 2f+1 matching ones of distinct replicas: one
    replica's word makes a checkpoint stable."""
    return checkpoint_proof_error(keys, 0, seq, proof[:1])


class OneCheckpointCore(PbftCore):
    check_checkpoint_proof = staticmethod(_one_checkpoint_proves)


def _served_block_uncertified(mode: str, f: int, replica_keys: list[bytes], block, verifier):
    """A block a peer serves in state transfer is checked for its own consistency (sequence,
    batch root) but not for its commit certificate: the replica takes the peer's word that
    this batch committed at this sequence number."""
    return block_shape_error(block)             # certified_block_error without its certificate_error


class TrustingTransferCore(PbftCore):
    check_served_block = staticmethod(_served_block_uncertified)


class _ForgetfulProposer(Proposer):
    def values_to_repropose(self, promises: list[PxPromise], known: int) -> dict[int, PxAccept]:
        return {}                       # ignores what the acceptors report having accepted


class ForgetfulLeaderCore(PaxosCore):
    proposer_cls = _ForgetfulProposer


class MinorityPaxosCore(PaxosCore):
    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.majority = 1


PBFT_CORES = {"quorum-size": WeakQuorumCore, "distinct-senders": DuplicateVotesCore,
              "client-signatures": NoClientSignaturesCore, "view-change-certificates": NewViewIgnoresP,
              "one-pre-prepare": LaterPrePrepareCore, "new-view-recompute": NewViewTakesOCore,
              "checkpoint-proofs": OneCheckpointCore, "transfer-certificates": TrustingTransferCore}
PAXOS_CORES = {"paxos-majority": MinorityPaxosCore, "highest-ballot": ForgetfulLeaderCore}
