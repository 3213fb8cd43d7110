"""Offline audit of one replica's ledger with nothing but the cluster's public keys.

The audit trusts neither the replica nor its files: it scans the store read-only (the
same link, root and re-execution checks as recovery, so both agree on what a valid
chain is; re-execution recomputes the key-value state root after every block and a
header that disagrees is the fault, at its height), then checks what recovery cannot, because a replica's own disk is not
evidence: every transaction's client signature and every block's certificate
(pbft: 2f+1 distinct COMMIT signatures; paxos: the ballot leader's ACCEPT signature).
In paxos mode the result is only as strong as the crash-fault trust model, and the
report says so.

A ledger that was cleanly cut back (its last blocks removed) is still a valid chain, so
the audit also checks what the caller knows from elsewhere (issue 11): a head hash or a
height it must reach (``expect_head``, ``expect_height``), and receipts, whose block must
be in the ledger and whose tree head must be a prefix of the ledger's (an RFC 9162
consistency proof, computed here from the ledger's own log). It warns when the replica's
own vote log says it had a stable checkpoint above the ledger's end.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from typing import Callable

import msgpack

from crypto.merkle import EMPTY_ROOT, verify_consistency
from crypto.signing import Ed25519Verifier
from ledger import tx as txmod
from ledger.block import GENESIS_HASH, Block
from ledger.certificate import certificate_error
from ledger.cluster import Cluster, ClusterError, load
from ledger.statetree import EMPTY_STATE_ROOT
from ledger.store import BlockStore, StoreCorrupt

__all__ = ["AuditReport", "audit", "block_checker"]


@dataclass(slots=True)
class AuditReport:
    ok: bool
    replica: int
    path: str
    mode: str
    trust_model: str
    height: int                    # blocks that passed every check (the verified prefix)
    head: str                      # hex hash of the last verified block
    tree_size: int                 # transactions in the verified prefix
    tree_root: str                 # hex RFC 9162 root over them
    state_root: str                # hex key-value state root after the verified prefix (as its last header says)
    signatures_checked: int
    first_bad_height: int | None = None
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary_lines(self) -> list[str]:
        """A short human summary; the first line is the verdict."""
        if self.ok:
            lines = [f"OK: replica {self.replica}'s ledger verifies ({self.height} blocks, "
                     f"{self.tree_size} transactions)"]
        else:
            lines = [f"FAULT at height {self.first_bad_height}: {self.reason}",
                     f"  blocks 1..{self.height} verified before the fault"]
        lines += [
            f"  store:      {self.path}",
            f"  head:       {self.head}",
            f"  tree:       size {self.tree_size}, root {self.tree_root}",
            f"  state:      root {self.state_root}",
            f"  trust:      {self.trust_model}",
            f"  signatures: {self.signatures_checked} checked",
        ]
        lines += [f"  warning:    {w}" for w in self.warnings]
        return lines


def block_checker(cluster: Cluster, verifier: Ed25519Verifier) -> Callable[[Block], str | None]:
    """The signature checks of one block: every client request, then the certificate.

    Shared with anyone who must accept blocks from an untrusted source with public keys
    only (receipts, state transfer)."""
    client_keys = cluster.clients
    replica_keys = cluster.replica_keys()

    def check(block: Block) -> str | None:
        for i, raw in enumerate(block.txs):
            t = txmod.parse(raw)
            if t is None:
                return f"transaction {i} is not a well-formed signed client request"
            if t.client >= len(client_keys):
                return f"transaction {i} names client {t.client}, which is not in cluster.toml"
            if not verifier.verify(client_keys[t.client], txmod.REQUEST_DOMAIN, t.signable(), t.sig):
                return f"transaction {i}: client {t.client}'s signature does not verify"
        why = certificate_error(cluster.mode, cluster.f, replica_keys, block.view, block.sequence,
                                block.batch_root, block.cert, verifier)
        return None if why is None else str(why)

    return check


def audit_expectations(report: AuditReport, hashes: dict[bytes, int], tree, *, expect_head: bytes | None,
                       expect_height: int | None, receipts: list) -> str | None:
    """Why the verified ledger falls short of what the caller expects, or None."""
    if expect_height is not None and report.height < expect_height:
        return (f"the ledger ends at height {report.height}, but height {expect_height} was expected "
                "(blocks were removed, or the replica is behind)")
    if expect_head is not None and expect_head not in hashes:
        return f"block {expect_head.hex()[:16]} is not in this ledger (it was rolled back, or this is another fork)"
    for r in receipts:
        at = hashes.get(r.block_hash)
        if at is None:
            return (f"the block of the receipt for {r.describe()} (height {r.height}, hash "
                    f"{r.block_hash.hex()[:16]}) is not in this ledger (rolled back or forked)")
        if r.tree_size > tree.size or not verify_consistency(
                r.tree_size, tree.size, r.tree_root, tree.root(), tree.consistency_proof(r.tree_size)):
            return f"the ledger's log is not consistent with the tree head of the receipt at height {r.height}"
    return None


def stable_checkpoint_of(votes_path: str | os.PathLike[str]) -> int | None:
    """The highest stable checkpoint a pbft replica's vote log records (read-only, no lock: the
    replica may be running; whatever does not parse is skipped, this only feeds a warning)."""
    from ledger.records import FrameCorrupt, FrameScanner
    from ledger.votelog import VOTE_MAGIC

    best = None
    try:
        with open(votes_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            for _, raw in FrameScanner(f, VOTE_MAGIC, size):
                try:
                    kind, payload = msgpack.unpackb(raw, raw=False)
                    if kind == "stable" and payload:
                        seq = msgpack.unpackb(payload[0], raw=False)[2]   # [tag, version, seq, ...]
                        if type(seq) is int:
                            best = seq if best is None else max(best, seq)
                except (ValueError, TypeError, IndexError, msgpack.UnpackException):
                    continue
    except (OSError, FrameCorrupt):
        return best
    return best


def audit(cluster_dir: str | os.PathLike[str], replica_id: int, *, expect_head: bytes | None = None,
          expect_height: int | None = None, receipts: list = ()) -> AuditReport:
    """Check ``DIR/data/replica-I/`` end to end, and against what the caller expects (see the
    module doc). Faults in the ledger come back in the report; a missing or malformed cluster
    or store raises (ClusterError, StoreError) because there is nothing to judge."""
    cluster = load(cluster_dir)
    if type(replica_id) is not int or not 0 <= replica_id < cluster.n:
        raise ClusterError(f"replica {replica_id} is not in this cluster (ids are 0..{cluster.n - 1})")
    path = cluster.data_dir(replica_id)
    verifier = cluster.verifier()
    inner = block_checker(cluster, verifier)
    last_good: list[Block] = []
    hashes: dict[bytes, int] = {}

    def check(block: Block) -> str | None:
        why = inner(block)
        if why is None:
            last_good[:] = [block]
            hashes[block.hash()] = block.height
        return why

    base = dict(replica=replica_id, path=str(path), mode=cluster.mode, trust_model=cluster.trust_model)
    try:
        store = BlockStore.scan(path, check=check)
    except StoreCorrupt as e:
        good = last_good[0] if last_good else None
        return AuditReport(
            ok=False, **base,
            height=good.height if good else 0,
            head=(good.hash() if good else GENESIS_HASH).hex(),
            tree_size=good.tree_size if good else 0,
            tree_root=(good.tree_root if good else EMPTY_ROOT).hex(),
            state_root=(good.state_root if good else EMPTY_STATE_ROOT).hex(), signatures_checked=verifier.checks,
            first_bad_height=e.height, reason=e.reason)
    try:
        warnings = list(store.warnings)
        if store.height == 0:
            warnings.append("the ledger is empty (no block committed yet)")
        chain = store.chain
        if cluster.protocol.byzantine:
            stable = stable_checkpoint_of(path / "votes.log")
            if stable is not None and stable > store.height:
                warnings.append(f"the vote log records a stable checkpoint at {stable}, above the ledger's end "
                                f"at {store.height}: blocks were lost or removed")
        report = AuditReport(
            ok=True, **base, height=store.height, head=store.head.hex(),
            tree_size=chain.tree.size, tree_root=chain.tree.root().hex(),
            state_root=chain.kv.root().hex(), signatures_checked=verifier.checks,
            warnings=warnings)
        why = audit_expectations(report, hashes, chain.tree, expect_head=expect_head, expect_height=expect_height,
                                 receipts=list(receipts))
        if why is not None:
            report.ok = False
            report.first_bad_height = report.height + 1
            report.reason = why
        return report
    finally:
        store.close()
