"""Checks of the certificates that travel inside VIEW-CHANGE and NEW-VIEW messages.

Pure functions over messages and public keys. Each returns a reason string when the
certificate is bad (the caller counts and drops it) or None when it holds. Quorums
count distinct replica ids, each signature verified.

A certificate holds exactly its quorum of distinct signers, nothing more: a repeated
or surplus entry makes it invalid rather than being skipped. Skipping let a Byzantine
replica pad a valid VIEW-CHANGE with copies up to the frame cap, which pushed the
honest new primary's NEW-VIEW (2f+1 of them) over it (issue 11). Likewise the
PRE-PREPAREs inside prepared certificates and NEW-VIEW carry the batch digest only
(the signature covers the digest, not the batch), so neither message grows with the
batches; a replica that lacks a batch fetches it (BatchRequest).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

from bft.pbft.rules import PbftRule as P
from bft.requests import batch_weight, registration_error
from bft.skeleton import highest_per_slot
from bft.wire import Checkpoint, DecodeError, NewView, PrePrepare, PreparedCert, Request, ViewChange, decode
from crypto.merkle import root_of
from crypto.signing import Verifier
from ledger import quorum
from ledger.rules import Rejection
from ledger.state import is_registration
from ledger.rules import Rejection as R


@dataclass(slots=True)
class Keys:
    """The public material a core needs to check anything it receives."""
    replicas: list[bytes]
    clients: Sequence[bytes]          # a live ledger.clients.ClientKeys in a replica: registrations add to it
    verifier: Verifier
    admin: int | None = None          # the client that may register clients (cluster.toml's admin)

    @property
    def n(self) -> int:
        return len(self.replicas)

    def replica_signed(self, msg, replica: int) -> bool:
        return 0 <= replica < len(self.replicas) and msg.verify(self.verifier, self.replicas[replica])


def primary(view: int, n: int) -> int:
    return view % n


EMPTY_ROOT = root_of([])              # the digest of the null request's empty batch


def strip(pp: PrePrepare) -> PrePrepare:
    """The same PRE-PREPARE (the same signature) without its batch."""
    return PrePrepare(pp.view, pp.seq, pp.digest, [], pp.replica, pp.sig)


def batch_error(keys: Keys, digest: bytes, batch: list[bytes],
                max_weight: int) -> tuple[Rejection | None, list[Request]]:
    """Checks a batch: digest over its encoded requests, its weight, every client signature."""
    if root_of(batch) != digest:
        return R(P.BATCH_DIGEST), []
    reqs: list[Request] = []
    for raw in batch:
        try:
            r = decode(raw)
        except DecodeError:
            return R(P.BATCH_MALFORMED_REQUEST, "not a message"), []
        if type(r) is not Request:
            return R(P.BATCH_MALFORMED_REQUEST, "not a request"), []
        if r.encode() != raw:
            # one encoding per request: another (valid msgpack, same fields) would change the
            # transaction's bytes, so its client could not find its request in a receipt (issue 11)
            return R(P.BATCH_MALFORMED_REQUEST, "non-canonical encoding"), []
        if r.client >= len(keys.clients) or not r.verify(keys.verifier, keys.clients[r.client]):
            return R(P.BATCH_BAD_CLIENT_SIGNATURE), []
        if is_registration(r.op):
            why = registration_error(keys, r)
            if why is not None:
                return R(P.BATCH_BAD_REGISTRATION, why.label), []
        reqs.append(r)
    if len(reqs) > 1 and batch_weight(batch, reqs) > max_weight:
        return R(P.BATCH_OVER_CAP), []
    return None, reqs


def checkpoint_proof_error(keys: Keys, f: int, seq: int, proof: list[Checkpoint]) -> Rejection | None:
    """2f+1 CHECKPOINTs for ``seq`` from distinct replicas that agree on the state."""
    if seq == 0:
        return None if not proof else R(P.CHECKPOINT_PROOF_SIZE, "sequence 0 needs none")
    if len(proof) != quorum.checkpoint_quorum(f):
        return R(P.CHECKPOINT_PROOF_SIZE, f"{len(proof)} entries, needs exactly {quorum.checkpoint_quorum(f)}")
    signers: set[int] = set()
    state = None
    for cp in proof:
        if cp.seq != seq:
            return R(P.CHECKPOINT_PROOF_MIXED, "sequence numbers")
        s = (cp.head, cp.tree_size, cp.tree_root)
        if state is None:
            state = s
        elif s != state:
            return R(P.CHECKPOINT_PROOF_MIXED, "states")
        if cp.replica in signers:
            return R(P.CHECKPOINT_PROOF_REPEATS)
        if not keys.replica_signed(cp, cp.replica):
            return R(P.CHECKPOINT_PROOF_SIGNATURE)
        signers.add(cp.replica)
    if len(signers) < quorum.checkpoint_quorum(f):
        return R(P.CHECKPOINT_PROOF_REPEATS, f"{len(signers)} distinct signers, needs {quorum.checkpoint_quorum(f)}")
    return None


def prepared_cert_error(keys: Keys, f: int, cert: PreparedCert, below_view: int, low: int,
                        high: int) -> Rejection | None:
    """A PRE-PREPARE of the view's primary plus 2f matching PREPAREs of distinct backups."""
    pp = cert.pre_prepare
    if pp.view >= below_view:
        return R(P.PREPARED_CERT_VIEW)
    if not low < pp.seq <= high:
        return R(P.PREPARED_CERT_WATERMARKS)
    p = primary(pp.view, keys.n)
    if pp.batch:
        return R(P.PREPARED_CERT_CARRIES_BATCH)
    if pp.replica != p or not keys.replica_signed(pp, p):
        return R(P.PREPARED_CERT_NOT_PRIMARY)
    if len(cert.prepares) != quorum.prepare_quorum(f):
        return R(P.PREPARED_CERT_SIZE, f"{len(cert.prepares)} PREPAREs, needs exactly {quorum.prepare_quorum(f)}")
    backups: set[int] = set()
    for pr in cert.prepares:
        if (pr.view, pr.seq, pr.digest) != (pp.view, pp.seq, pp.digest):
            return R(P.PREPARED_CERT_MISMATCH, "another (view, sequence, digest)")
        if pr.replica == p:
            return R(P.PREPARED_CERT_MISMATCH, "a PREPARE of the primary")
        if pr.replica in backups:
            return R(P.PREPARED_CERT_REPEATS)
        if not keys.replica_signed(pr, pr.replica):
            return R(P.PREPARED_CERT_SIGNATURE)
        backups.add(pr.replica)
    if len(backups) < quorum.prepare_quorum(f):
        return R(P.PREPARED_CERT_SIZE, f"{len(backups)} distinct backups, needs {quorum.prepare_quorum(f)}")
    return None


def view_change_error(keys: Keys, f: int, vc: ViewChange, log_size: int,
                      proof_error=checkpoint_proof_error) -> Rejection | None:
    """A VIEW-CHANGE's signature, its checkpoint proof (``proof_error``: checkpoint_proof_error
    unless a lab build swaps it) and its prepared certificates."""
    if not keys.replica_signed(vc, vc.replica):
        return R(P.VIEW_CHANGE_SIGNATURE)
    why = proof_error(keys, f, vc.stable_seq, vc.checkpoints)
    if why:
        return why
    seen: set[int] = set()
    for cert in vc.prepared:
        s = cert.pre_prepare.seq
        if s in seen:
            return R(P.PREPARED_CERT_TWICE)
        seen.add(s)
        why = prepared_cert_error(keys, f, cert, vc.new_view, vc.stable_seq, vc.stable_seq + log_size)
        if why:
            return why
    return None


@dataclass(slots=True)
class NewViewPlan:
    """What a NEW-VIEW must contain, computed from its VIEW-CHANGE set V."""
    min_s: int
    max_s: int
    stable_proof: list[Checkpoint]
    entries: list[tuple[int, bytes]]                  # (seq, digest); EMPTY_ROOT = null request


def plan_new_view(vcs: list[ViewChange]) -> NewViewPlan:
    """O from V: for each n in (min-s, max-s], the digest prepared in the highest view, else null."""
    best_stable = max(vcs, key=lambda vc: (vc.stable_seq, -vc.replica))
    min_s = best_stable.stable_seq
    chosen: dict[int, PrePrepare] = highest_per_slot((cert.pre_prepare for vc in vcs for cert in vc.prepared),
                                                     attrgetter("seq"), attrgetter("view"), min_s)
    max_s = max(chosen, default=min_s)
    entries = []
    for s in range(min_s + 1, max_s + 1):
        pp = chosen.get(s)
        entries.append((s, EMPTY_ROOT if pp is None else pp.digest))
    return NewViewPlan(min_s, max_s, list(best_stable.checkpoints), entries)


def new_view_error(keys: Keys, f: int, nv: NewView, log_size: int, plan_fn=None,
                   proof_error=checkpoint_proof_error) -> tuple[Rejection | None, NewViewPlan | None]:
    """A backup's check of NEW-VIEW: V holds 2f+1 valid VIEW-CHANGEs and O is what V implies
    (``plan_fn`` computes O from V; plan_new_view unless a test swaps it)."""
    p = primary(nv.view, keys.n)
    if nv.replica != p or not keys.replica_signed(nv, p):
        return R(P.NEW_VIEW_NOT_PRIMARY), None
    if len(nv.view_changes) != quorum.view_change_quorum(f):
        need = quorum.view_change_quorum(f)
        return R(P.NEW_VIEW_SIZE, f"{len(nv.view_changes)} VIEW-CHANGEs, needs exactly {need}"), None
    senders: set[int] = set()
    vcs: list[ViewChange] = []
    for vc in nv.view_changes:
        if vc.new_view != nv.view:
            return R(P.NEW_VIEW_FOREIGN_VIEW_CHANGE), None
        if vc.replica in senders:
            return R(P.NEW_VIEW_REPEATS), None
        why = view_change_error(keys, f, vc, log_size, proof_error)
        if why:
            return R(P.NEW_VIEW_BAD_VIEW_CHANGE, f"{why.rule.label}: {why}"), None
        senders.add(vc.replica)
        vcs.append(vc)
    if len(senders) < quorum.view_change_quorum(f):
        return R(P.NEW_VIEW_SIZE, f"{len(senders)} distinct VIEW-CHANGEs, needs {quorum.view_change_quorum(f)}"), None
    plan = (plan_fn or plan_new_view)(vcs)
    if len(nv.pre_prepares) != len(plan.entries):
        return R(P.NEW_VIEW_WRONG_O), None
    for pp, (s, d) in zip(nv.pre_prepares, plan.entries):
        if (pp.view, pp.seq, pp.digest, pp.replica) != (nv.view, s, d, p) or pp.batch:
            return R(P.NEW_VIEW_WRONG_O), None
        if not keys.replica_signed(pp, p):
            return R(P.NEW_VIEW_SIGNATURE), None
    return None, plan
