"""A portable, self-verifying archive of one replica's ledger (``bftledger export`` and
``bftledger verify-export``, issue 16).

Why an archive of its own rather than a copy of ``data/replica-I/``: the store's segments
need the cluster directory beside them and say nothing about which cluster they belong
to; an archive carries the cluster's public configuration (``cluster.toml``, whose cluster
id every signature covers) so that anyone can check it offline with nothing else.

Format (version 1), all integers big-endian::

    magic  b"BFTLEDGER-EXPORT"   16 bytes
    version                      2 bytes (1)
    records, each:  kind (1 byte) | length (4 bytes) | payload | crc32(kind, length, payload) (4 bytes)
        H  header:  msgpack map {replica, mode, cluster_id (hex), cluster_toml (text), height}
        B  block:   ``Block.encode()``, one per height 1..N in order
        T  trailer: msgpack map {count, head, tree_size, tree_root, state_root} (hex digests)
    end of file right after the trailer

The CRC is not the security: anyone who edits an archive can recompute it. It is what lets
a damaged byte be reported with *what* and *where* (record, byte offset, height); a
deliberate edit that keeps every checksum is caught by what the blocks prove: hash links,
re-execution (results, tree head, state root: ``Chain.replay``) and every client signature
and commit certificate (``ledger.audit.block_checker``, the audit's own checks), against
the public keys of the cluster.toml inside, whose cluster id must match its genesis. What
an archive cannot prove by itself is that it is complete: a cut-off ledger is still a valid
chain, so ``--expect-head`` and ``--receipt`` check it against what the caller knows
(``ledger.audit.audit_expectations``, as for ``audit``).
"""
from __future__ import annotations

import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import msgpack

from crypto.merkle import MerkleTree
from ledger.audit import AuditReport, audit_expectations, block_checker
from ledger.block import GENESIS_HASH, Block, BlockFormatError, link_error
from ledger.chain import Chain, ReplayError
from ledger.cluster import Cluster, ClusterError, load
from ledger.store import BlockStore, StoreCorrupt, StoreError

__all__ = ["MAGIC", "FORMAT_VERSION", "ExportError", "ExportCorrupt", "export", "verify_export", "ExportReport",
           "archive_cluster"]

MAGIC = b"BFTLEDGER-EXPORT"
FORMAT_VERSION = 1
PREAMBLE = len(MAGIC) + 2
REC_HEAD = struct.Struct(">cI")             # kind, payload length
REC_CRC = struct.Struct(">I")
MAX_RECORD = 64 * 1024 * 1024               # a block is at most one frame (ledger.wire.MAX_FRAME) ~ 16 MiB
MAX_META = 1024 * 1024                      # header and trailer
KIND_HEADER, KIND_BLOCK, KIND_TRAILER = b"H", b"B", b"T"
KIND_NAMES = {KIND_HEADER: "header", KIND_BLOCK: "block", KIND_TRAILER: "trailer"}


class ExportError(StoreError):
    """The ledger cannot be exported (its store does not verify): one line for the user."""


class ExportCorrupt(Exception):
    """The archive is damaged or forged: ``what`` went wrong at byte ``offset`` (record
    ``record``, 0 = the header; ``height`` when the record is a block)."""

    def __init__(self, offset: int, record: int | None, height: int | None, what: str) -> None:
        self.offset, self.record, self.height, self.what = offset, record, height, what
        where = f"byte {offset}"
        if record is not None:
            where += f", record {record}"
        if height is not None:
            where += f" (block {height})"
        super().__init__(f"{where}: {what}")


def _record(kind: bytes, payload: bytes) -> bytes:
    head = REC_HEAD.pack(kind, len(payload))
    return head + payload + REC_CRC.pack(zlib.crc32(payload, zlib.crc32(head)))


def export(cluster_dir: str | os.PathLike[str], replica_id: int, out: str | os.PathLike[str]) -> AuditReport:
    """Write replica ``replica_id``'s ledger to ``out`` (atomically: a temporary file renamed).

    The store is scanned read-only with the audit's checks first, so an archive is only
    ever made of a ledger that verifies (and a running replica is not disturbed: its
    in-flight append looks torn and is left out). Returns the audit-style summary."""
    cluster = load(cluster_dir)
    if type(replica_id) is not int or not 0 <= replica_id < cluster.n:
        raise ClusterError(f"replica {replica_id} is not in this cluster (ids are 0..{cluster.n - 1})")
    toml = (cluster.directory / "cluster.toml").read_text()
    path = cluster.data_dir(replica_id)
    verifier = cluster.verifier()
    try:
        store = BlockStore.scan(path, check=block_checker(cluster, verifier))
    except StoreCorrupt as e:
        raise ExportError(f"replica {replica_id}'s ledger does not verify at height {e.height} ({e.reason}); "
                          f"run 'bftledger audit {cluster_dir} --id {replica_id}', or export another replica") from None
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with store, open(tmp, "wb") as f:
            header = dict(replica=replica_id, mode=cluster.mode, cluster_id=cluster.cluster_id.hex(),
                          cluster_toml=toml, height=store.height)
            f.write(MAGIC + struct.pack(">H", FORMAT_VERSION))
            f.write(_record(KIND_HEADER, msgpack.packb(header, use_bin_type=True)))
            for block in store.blocks(1, store.height):
                f.write(_record(KIND_BLOCK, block.encode()))
            chain = store.chain
            trailer = dict(count=store.height, head=store.head.hex(), tree_size=chain.tree.size,
                           tree_root=chain.tree.root().hex(), state_root=chain.kv.root().hex())
            f.write(_record(KIND_TRAILER, msgpack.packb(trailer, use_bin_type=True)))
            f.flush()
            os.fsync(f.fileno())
            report = AuditReport(ok=True, replica=replica_id, path=str(out), mode=cluster.mode,
                                 trust_model=cluster.trust_model, height=store.height, head=store.head.hex(),
                                 tree_size=chain.tree.size, tree_root=chain.tree.root().hex(),
                                 state_root=chain.kv.root().hex(), signatures_checked=verifier.checks,
                                 warnings=list(store.warnings))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return report


# ----------------------------------------------------------------------------- reading
@dataclass(slots=True)
class _Rec:
    offset: int
    index: int
    kind: bytes
    payload: bytes


def _records(f: BinaryIO, size: int) -> Iterator[_Rec]:
    """The archive's records after the preamble, each checksum-checked (ExportCorrupt otherwise)."""
    offset, index = PREAMBLE, 0
    while offset < size:
        head = f.read(REC_HEAD.size)
        if len(head) < REC_HEAD.size:
            raise ExportCorrupt(offset, index, None, f"the file ends inside a record header ({size - offset} bytes "
                                                     "left): truncated")
        kind, length = REC_HEAD.unpack(head)
        limit = MAX_RECORD if kind == KIND_BLOCK else MAX_META
        if length > limit:
            raise ExportCorrupt(offset, index, None, f"a {KIND_NAMES.get(kind, 'record')} record of {length:,} bytes "
                                                     f"is over the limit of {limit:,}: its length field is damaged")
        end = offset + REC_HEAD.size + length + REC_CRC.size
        if end > size:
            raise ExportCorrupt(offset, index, None, f"the record claims {length:,} bytes but the file ends "
                                                     f"{end - size:,} bytes short: truncated, or its length is damaged")
        payload = f.read(length)
        (crc,) = REC_CRC.unpack(f.read(REC_CRC.size))
        if crc != zlib.crc32(payload, zlib.crc32(head)):
            raise ExportCorrupt(offset, index, None, f"checksum mismatch over bytes {offset}..{end - 1}: "
                                                     "the record was damaged")
        if kind not in KIND_NAMES:
            raise ExportCorrupt(offset, index, None, f"unknown record kind {kind!r}")
        yield _Rec(offset, index, kind, payload)
        offset, index = end, index + 1


def _meta(rec: _Rec, keys: dict[str, type]) -> dict:
    try:
        v = msgpack.unpackb(rec.payload, raw=False, strict_map_key=True)
    except Exception as e:
        raise ExportCorrupt(rec.offset, rec.index, None, f"the {KIND_NAMES[rec.kind]} is not msgpack "
                                                         f"({type(e).__name__})") from None
    if type(v) is not dict or set(v) != set(keys) or any(type(v[k]) is not t for k, t in keys.items()):
        raise ExportCorrupt(rec.offset, rec.index, None,
                            f"the {KIND_NAMES[rec.kind]} must be a map of {', '.join(keys)}")
    return v


def _cluster_of(toml: str) -> Cluster:
    """The cluster described by ``toml`` (ledger.cluster.load's checks, genesis included)."""
    with tempfile.TemporaryDirectory(prefix="bftledger-export-") as d:
        Path(d, "cluster.toml").write_text(toml)
        c = load(d)
    return c


def _preamble(f: BinaryIO) -> int:
    """The archive's format version, after checking its magic (ExportCorrupt without it)."""
    pre = f.read(PREAMBLE)
    if len(pre) < PREAMBLE or pre[:len(MAGIC)] != MAGIC:
        raise ExportCorrupt(0, None, None, "not a bftledger export (no BFTLEDGER-EXPORT magic at the start)")
    (version,) = struct.unpack(">H", pre[len(MAGIC):])
    return version


def _header(rec: _Rec) -> tuple[dict, Cluster]:
    """The header record's fields and the cluster its cluster.toml describes (ExportCorrupt if damaged)."""
    h = _meta(rec, dict(replica=int, mode=str, cluster_id=str, cluster_toml=str, height=int))
    try:
        return h, _cluster_of(h["cluster_toml"])
    except ClusterError as e:
        raise ExportCorrupt(rec.offset, rec.index, None, f"the cluster configuration inside: {e}") from None


def archive_cluster(path: str | os.PathLike[str]) -> Cluster:
    """The cluster named in an archive's header (checked: checksum, genesis), to verify receipts
    against before the whole archive is; ExportCorrupt when the header is damaged."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        _preamble(f)
        for rec in _records(f, size):
            if rec.kind != KIND_HEADER:
                break
            return _header(rec)[1]
    raise ExportCorrupt(PREAMBLE, 0, None, "the first record is not the header")


@dataclass(slots=True)
class ExportReport:
    """What ``verify_export`` found: the audit-style report, and the cluster inside the archive."""
    report: AuditReport
    cluster: Cluster | None


def verify_export(path: str | os.PathLike[str], *, expect_head: bytes | None = None,
                  expect_height: int | None = None, receipts: list = ()) -> ExportReport:
    """Check an archive offline (see the module doc). Faults come back in the report, with the
    byte offset and record where they are; an unreadable file raises OSError."""
    path = Path(path)
    base = dict(path=str(path), mode="?", trust_model="?", replica=-1)
    state: dict = dict(height=0, head=GENESIS_HASH.hex(), tree_size=0, tree_root=MerkleTree().root().hex(),
                       state_root=Chain().kv.root().hex(), signatures_checked=0)
    cluster: Cluster | None = None
    hashes: dict[bytes, int] = {}
    chain = Chain()
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            version = _preamble(f)
            if version != FORMAT_VERSION:
                raise ExportCorrupt(len(MAGIC), None, None, f"archive format version {version}; this build reads "
                                                            f"version {FORMAT_VERSION}")
            cluster, trailer_seen = _verify_records(f, size, chain, hashes, base, state)
            if not trailer_seen:
                raise ExportCorrupt(size, None, None, "the file ends without a trailer: truncated")
    except ExportCorrupt as e:
        report = AuditReport(ok=False, **base, **state, first_bad_height=e.height or state["height"] + 1,
                             reason=str(e))
        return ExportReport(report, cluster)
    report = AuditReport(ok=True, **base, **state)
    if report.height == 0:
        report.warnings.append("the ledger is empty (no block committed yet)")
    why = audit_expectations(report, hashes, chain.tree, expect_head=expect_head, expect_height=expect_height,
                             receipts=list(receipts))
    if why is not None:
        report.ok, report.first_bad_height, report.reason = False, report.height + 1, why
    return ExportReport(report, cluster)


def _verify_records(f: BinaryIO, size: int, chain: Chain, hashes: dict[bytes, int], base: dict,
                    state: dict) -> tuple[Cluster, bool]:
    cluster: Cluster | None = None
    check = None
    verifier = None
    prev: Block | None = None
    tree = MerkleTree()
    declared = 0
    for rec in _records(f, size):
        if cluster is None:
            if rec.kind != KIND_HEADER:
                raise ExportCorrupt(rec.offset, rec.index, None, "the first record is not the header")
            h, cluster = _header(rec)
            if h["cluster_id"] != cluster.cluster_id.hex() or h["mode"] != cluster.mode:
                raise ExportCorrupt(rec.offset, rec.index, None, "the header's cluster id or mode is not its "
                                                                 "cluster.toml's")
            if not 0 <= h["replica"] < cluster.n or h["height"] < 0:
                raise ExportCorrupt(rec.offset, rec.index, None, "the header's replica id or height is out of range")
            declared = h["height"]
            base.update(replica=h["replica"], mode=cluster.mode, trust_model=cluster.trust_model)
            verifier = cluster.verifier()
            check = block_checker(cluster, verifier)
            continue
        height = chain.height + 1
        if rec.kind == KIND_HEADER:
            raise ExportCorrupt(rec.offset, rec.index, None, "a second header")
        if rec.kind == KIND_TRAILER:
            t = _meta(rec, dict(count=int, head=str, tree_size=int, tree_root=str, state_root=str))
            got = dict(count=chain.height, head=chain.head.hex(), tree_size=chain.tree.size,
                       tree_root=chain.tree.root().hex(), state_root=chain.kv.root().hex())
            wrong = [k for k in got if t[k] != got[k]]
            if wrong:
                raise ExportCorrupt(rec.offset, rec.index, None, f"the trailer's {', '.join(wrong)} disagree with "
                                                                 "the blocks before it (blocks missing or added)")
            if declared != chain.height:
                raise ExportCorrupt(rec.offset, rec.index, None, f"the header announced {declared} blocks, the "
                                                                 f"archive holds {chain.height}")
            end = f.tell()
            if end != size:
                raise ExportCorrupt(end, None, None, f"{size - end} bytes after the trailer")
            return cluster, True
        try:
            block = Block.decode(rec.payload)
        except (BlockFormatError, ValueError, TypeError, RecursionError) as e:
            raise ExportCorrupt(rec.offset, rec.index, height, f"not a block: {e}") from None
        if block.encode() != rec.payload:
            raise ExportCorrupt(rec.offset, rec.index, height, "not the canonical encoding of a block")
        why = link_error(block, prev, tree)
        if why is None:
            try:
                chain.replay(block)
            except ReplayError as e:
                why = "re-execution: " + str(e).removeprefix(f"block {block.height}: ")
        if why is None:
            why = check(block)
        if why is not None:
            raise ExportCorrupt(rec.offset, rec.index, height, why)
        prev = block
        hashes[chain.head] = chain.height
        state.update(height=chain.height, head=chain.head.hex(), tree_size=chain.tree.size,
                     tree_root=chain.tree.root().hex(), state_root=block.state_root.hex(),
                     signatures_checked=verifier.checks)
    if cluster is None:
        raise ExportCorrupt(PREAMBLE, 0, None, "no header record: truncated")
    return cluster, False
