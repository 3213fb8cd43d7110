"""Blocks: one per committed batch (one per PBFT sequence number / Paxos slot).

The block hash covers the header only; the header binds the transactions and results
through RFC 9162 roots, the previous block through its hash, and the key-value state
after the block through its state root (``ledger.statetree``; version 2, issue 16). The
state root is the result of executing the block, so like the results root it is not
under the commit certificate (signed before execution) but under the block hash, which
CHECKPOINTs (2f+1) and execution attestations (f+1) sign. The certificate and
the view it was gathered in sit outside the hash: PBFT may commit one batch at one
sequence number in different views at different replicas (a NEW-VIEW re-proposes a
prepared batch), and those replicas must still hold identical ledgers. The certificate
attests (view, sequence, batch_root): pbft 2f+1 COMMITs, paxos the leader's ACCEPT.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

from crypto.hashing import sha256
from crypto.merkle import MerkleTree, root_of

GENESIS_HASH = b"\x00" * 32
BLOCK_TAG = 0x42
BLOCK_VERSION = 2               # 2: the header ends with the state root (issue 16)


class BlockFormatError(ValueError):
    """Bytes that do not decode to a block."""


@dataclass(slots=True)
class Block:
    height: int                    # 1 for the first block
    sequence: int                  # pbft sequence number / paxos slot
    view: int                      # pbft view / paxos ballot the certificate was gathered in (not hashed)
    prev_hash: bytes
    batch_root: bytes              # root over txs == the PRE-PREPARE / ACCEPT digest
    results_root: bytes
    tree_size: int                 # transactions in the whole log after this block
    tree_root: bytes               # RFC 9162 root of the whole log after this block
    state_root: bytes              # root of the key-value state after this block (ledger.statetree)
    txs: list[bytes]
    results: list[bytes]
    cert: list[tuple[int, bytes]] = field(default_factory=list)

    def header(self) -> list:
        return [BLOCK_TAG, BLOCK_VERSION, self.height, self.sequence, self.prev_hash,
                self.batch_root, self.results_root, self.tree_size, self.tree_root, self.state_root]

    def header_bytes(self) -> bytes:
        return msgpack.packb(self.header(), use_bin_type=True)

    def hash(self) -> bytes:
        return sha256(self.header_bytes())

    def encode(self) -> bytes:
        return msgpack.packb([self.header(), self.view, self.txs, self.results, [list(c) for c in self.cert]],
                             use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> "Block":
        try:
            v = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
        except Exception as e:
            raise BlockFormatError(f"not msgpack ({type(e).__name__})") from None
        if type(v) is not list or len(v) != 5:
            raise BlockFormatError("a block is [header, view, txs, results, cert]")
        header, view, txs, results, cert = v
        height, seq, prev, broot, rroot, tsize, troot, sroot = parse_header(header)
        if type(view) is not int or view < 0:
            raise BlockFormatError("block view is not a non-negative integer")
        if type(txs) is not list or any(type(t) is not bytes for t in txs):
            raise BlockFormatError("transactions must be a list of bytes")
        if type(results) is not list or any(type(r) is not bytes for r in results):
            raise BlockFormatError("results must be a list of bytes")
        if type(cert) is not list or any(
                type(c) is not list or len(c) != 2 or type(c[0]) is not int or type(c[1]) is not bytes
                for c in cert):
            raise BlockFormatError("certificate must be a list of [replica, signature]")
        return cls(height, seq, view, prev, broot, rroot, tsize, troot, sroot, txs=txs, results=results,
                   cert=[(c[0], c[1]) for c in cert])

    def check_roots(self) -> str | None:
        """Why the block's own roots disagree with its contents, or None."""
        if len(self.results) != len(self.txs):
            return f"{len(self.txs)} transactions but {len(self.results)} results"
        if root_of(self.txs) != self.batch_root:
            return "batch root does not match the transactions"
        if root_of(self.results) != self.results_root:
            return "results root does not match the results"
        return None


def parse_header(header: object) -> tuple:
    """(height, sequence, prev_hash, batch_root, results_root, tree_size, tree_root, state_root)
    of a decoded header, every field checked; BlockFormatError otherwise."""
    if type(header) is not list or len(header) < 2 or header[0] != BLOCK_TAG:
        raise BlockFormatError("malformed block header")
    if type(header[1]) is not int or header[1] != BLOCK_VERSION:
        if type(header[1]) is int and header[1] == 1:
            raise BlockFormatError("block version 1 has no state root; this build reads version 2 only "
                                   "(issue 16): start the ledger anew")
        raise BlockFormatError(f"unsupported block version {header[1]!r}")
    if len(header) != 10:
        raise BlockFormatError(f"a version {BLOCK_VERSION} block header has 10 fields, not {len(header)}")
    _, _, height, seq, prev, broot, rroot, tsize, troot, sroot = header
    for name, x in (("height", height), ("sequence", seq), ("tree size", tsize)):
        if type(x) is not int or x < 0:
            raise BlockFormatError(f"block {name} is not a non-negative integer")
    for name, x in (("previous hash", prev), ("batch root", broot), ("results root", rroot), ("tree root", troot),
                    ("state root", sroot)):
        if type(x) is not bytes or len(x) != 32:
            raise BlockFormatError(f"block {name} is not 32 bytes")
    return height, seq, prev, broot, rroot, tsize, troot, sroot


def header_hash(header: list) -> bytes:
    return sha256(msgpack.packb(header, use_bin_type=True))


def link_error(block: Block, prev: Block | None, tree: MerkleTree) -> str | None:
    """Check ``block`` against its predecessor and the log so far, extending ``tree``.

    Shared by the store's recovery, the audit and state transfer so that the three agree
    on what a valid chain is. The state root is not checked here: only executing the block
    can (``ledger.chain.Chain.replay``, which recovery and the audit run next).
    """
    expected_height = 1 if prev is None else prev.height + 1
    if block.height != expected_height:
        return f"height {block.height} where {expected_height} was expected"
    expected_prev = GENESIS_HASH if prev is None else prev.hash()
    if block.prev_hash != expected_prev:
        return "previous-block hash does not match"
    if block.sequence != block.height:
        return f"sequence {block.sequence} at height {block.height} (one block per sequence number)"
    why = block.check_roots()
    if why:
        return why
    if block.tree_size != tree.size + len(block.txs):
        return f"tree size {block.tree_size} but the log holds {tree.size + len(block.txs)}"
    for t in block.txs:
        tree.append(t)
    if tree.root() != block.tree_root:
        return "tree root does not match the log"
    return None
