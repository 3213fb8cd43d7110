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

from dataclasses import dataclass

from bft import quorum
from bft.requests import batch_weight
from bft.wire import Checkpoint, NewView, PrePrepare, PreparedCert, Request, ViewChange, decode, DecodeError
from crypto.merkle import root_of
from crypto.signing import Verifier


@dataclass(slots=True)
class Keys:
    """The public material a core needs to check anything it receives."""
    replicas: list[bytes]
    clients: list[bytes]
    verifier: Verifier

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


def batch_error(keys: Keys, digest: bytes, batch: list[bytes], max_weight: int) -> tuple[str | None, list[Request]]:
    """Checks a batch: digest over its encoded requests, its weight, every client signature."""
    if root_of(batch) != digest:
        return "batch does not match its digest", []
    reqs: list[Request] = []
    for raw in batch:
        try:
            r = decode(raw)
        except DecodeError:
            return "batch holds a malformed request", []
        if type(r) is not Request:
            return "batch holds a non-request", []
        if r.encode() != raw:
            # one encoding per request: another (valid msgpack, same fields) would change the
            # transaction's bytes, so its client could not find its request in a receipt (issue 11)
            return "batch holds a request in a non-canonical encoding", []
        if r.client >= len(keys.clients) or not r.verify(keys.verifier, keys.clients[r.client]):
            return "batch holds a request with a bad client signature", []
        reqs.append(r)
    if len(reqs) > 1 and batch_weight(batch, reqs) > max_weight:
        return "batch over the byte cap", []
    return None, reqs


def checkpoint_proof_error(keys: Keys, f: int, seq: int, proof: list[Checkpoint]) -> str | None:
    """2f+1 CHECKPOINTs for ``seq`` from distinct replicas that agree on the state."""
    if seq == 0:
        return None if not proof else "checkpoint proof for sequence 0 must be empty"
    if len(proof) != quorum.checkpoint_quorum(f):
        return f"checkpoint proof has {len(proof)} entries, needs exactly {quorum.checkpoint_quorum(f)}"
    signers: set[int] = set()
    state = None
    for cp in proof:
        if cp.seq != seq:
            return "checkpoint proof mixes sequence numbers"
        s = (cp.head, cp.tree_size, cp.tree_root)
        if state is None:
            state = s
        elif s != state:
            return "checkpoint proof mixes states"
        if cp.replica in signers:
            return "checkpoint proof repeats a replica"
        if not keys.replica_signed(cp, cp.replica):
            return "checkpoint proof holds a bad signature"
        signers.add(cp.replica)
    if len(signers) < quorum.checkpoint_quorum(f):
        return f"checkpoint proof has {len(signers)} distinct signers, needs {quorum.checkpoint_quorum(f)}"
    return None


def prepared_cert_error(keys: Keys, f: int, cert: PreparedCert, below_view: int, low: int, high: int) -> str | None:
    """A PRE-PREPARE of the view's primary plus 2f matching PREPAREs of distinct backups."""
    pp = cert.pre_prepare
    if pp.view >= below_view:
        return "prepared certificate from a view not below the new one"
    if not low < pp.seq <= high:
        return "prepared certificate outside the watermarks"
    p = primary(pp.view, keys.n)
    if pp.batch:
        return "prepared certificate carries a batch (it must carry the digest only)"
    if pp.replica != p or not keys.replica_signed(pp, p):
        return "prepared certificate's PRE-PREPARE is not signed by its view's primary"
    if len(cert.prepares) != quorum.prepare_quorum(f):
        return (f"prepared certificate has {len(cert.prepares)} PREPAREs, needs exactly "
                f"{quorum.prepare_quorum(f)}")
    backups: set[int] = set()
    for pr in cert.prepares:
        if (pr.view, pr.seq, pr.digest) != (pp.view, pp.seq, pp.digest):
            return "prepared certificate holds a PREPARE for something else"
        if pr.replica == p:
            return "prepared certificate holds a PREPARE of the primary"
        if pr.replica in backups:
            return "prepared certificate repeats a replica"
        if not keys.replica_signed(pr, pr.replica):
            return "prepared certificate holds a bad PREPARE signature"
        backups.add(pr.replica)
    if len(backups) < quorum.prepare_quorum(f):
        return f"prepared certificate has {len(backups)} distinct backups, needs {quorum.prepare_quorum(f)}"
    return None


def view_change_error(keys: Keys, f: int, vc: ViewChange, log_size: int) -> str | None:
    if not keys.replica_signed(vc, vc.replica):
        return "bad VIEW-CHANGE signature"
    why = checkpoint_proof_error(keys, f, vc.stable_seq, vc.checkpoints)
    if why:
        return why
    seen: set[int] = set()
    for cert in vc.prepared:
        s = cert.pre_prepare.seq
        if s in seen:
            return "two prepared certificates for one sequence number"
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
    chosen: dict[int, PrePrepare] = {}
    for vc in vcs:
        for cert in vc.prepared:
            pp = cert.pre_prepare
            if pp.seq <= min_s:
                continue
            cur = chosen.get(pp.seq)
            if cur is None or pp.view > cur.view:
                chosen[pp.seq] = pp
    max_s = max(chosen, default=min_s)
    entries = []
    for s in range(min_s + 1, max_s + 1):
        pp = chosen.get(s)
        entries.append((s, EMPTY_ROOT if pp is None else pp.digest))
    return NewViewPlan(min_s, max_s, list(best_stable.checkpoints), entries)


def new_view_error(keys: Keys, f: int, nv: NewView, log_size: int,
                   plan_fn=None) -> tuple[str | None, NewViewPlan | None]:
    """A backup's check of NEW-VIEW: V holds 2f+1 valid VIEW-CHANGEs and O is what V implies
    (``plan_fn`` computes O from V; plan_new_view unless a test swaps it)."""
    p = primary(nv.view, keys.n)
    if nv.replica != p or not keys.replica_signed(nv, p):
        return "NEW-VIEW not signed by the new view's primary", None
    if len(nv.view_changes) != quorum.view_change_quorum(f):
        return (f"NEW-VIEW has {len(nv.view_changes)} VIEW-CHANGEs, needs exactly "
                f"{quorum.view_change_quorum(f)}"), None
    senders: set[int] = set()
    vcs: list[ViewChange] = []
    for vc in nv.view_changes:
        if vc.new_view != nv.view:
            return "NEW-VIEW holds a VIEW-CHANGE for another view", None
        if vc.replica in senders:
            return "NEW-VIEW repeats a replica's VIEW-CHANGE", None
        why = view_change_error(keys, f, vc, log_size)
        if why:
            return "NEW-VIEW holds an invalid VIEW-CHANGE: " + why, None
        senders.add(vc.replica)
        vcs.append(vc)
    if len(senders) < quorum.view_change_quorum(f):
        return f"NEW-VIEW has {len(senders)} distinct VIEW-CHANGEs, needs {quorum.view_change_quorum(f)}", None
    plan = (plan_fn or plan_new_view)(vcs)
    if len(nv.pre_prepares) != len(plan.entries):
        return "NEW-VIEW's O differs from the one V implies", None
    for pp, (s, d) in zip(nv.pre_prepares, plan.entries):
        if (pp.view, pp.seq, pp.digest, pp.replica) != (nv.view, s, d, p) or pp.batch:
            return "NEW-VIEW's O differs from the one V implies", None
        if not keys.replica_signed(pp, p):
            return "NEW-VIEW's O holds a bad PRE-PREPARE signature", None
    return None, plan
