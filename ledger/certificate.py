"""What a block's certificate signs, and how to check it with public keys only.

The statements are byte-identical to the signable encodings of ``bft.wire.Commit``
(pbft) and ``bft.wire.PxAccept`` (paxos); the ledger restates them so that it never
imports the protocol package, and a unit test pins the two together.
"""
from __future__ import annotations

import msgpack

from crypto.signing import Verifier
from ledger.quorum import PROTOCOLS, Quorums
from ledger.rules import LedgerRule, Rejection

COMMIT_TAG, ACCEPT_TAG, VERSION = 12, 33, 1
COMMIT_DOMAIN = b"bftledger/v1/commit"
ACCEPT_DOMAIN = b"bftledger/v1/px-accept"


def commit_statement(view: int, seq: int, digest: bytes, replica: int) -> bytes:
    return msgpack.packb([COMMIT_TAG, VERSION, view, seq, digest, replica], use_bin_type=True)


def accept_statement(ballot: int, slot: int, digest: bytes, replica: int) -> bytes:
    return msgpack.packb([ACCEPT_TAG, VERSION, ballot, slot, digest, replica], use_bin_type=True)


def certificate_error(mode: str, f: int, replica_keys: list[bytes], view: int, seq: int, digest: bytes,
                      cert: list[tuple[int, bytes]], verifier: Verifier) -> Rejection | None:
    """Why ``cert`` does not certify (view, seq, digest), or None when it does.

    pbft: 2f+1 valid COMMIT signatures from distinct replica ids. paxos: a valid ACCEPT
    signature of the ballot's leader (ballot mod n). Duplicate or unknown ids never count.
    """
    n = len(replica_keys)
    proto = PROTOCOLS.get(mode)
    if proto is None:
        return Rejection(LedgerRule.CERT_UNKNOWN_MODE, repr(mode))
    if proto.byzantine:
        good = commit_signers(replica_keys, view, seq, digest, cert, verifier)
        need = proto.quorums(f).certificate
        if len(good) < need:
            return Rejection(LedgerRule.CERT_TOO_FEW_COMMITS, f"{len(good)} valid distinct signatures, needs {need}")
        return None
    leader = view % n
    for replica, sig in cert:
        if replica == leader and verifier.verify(replica_keys[leader], ACCEPT_DOMAIN,
                                                 accept_statement(view, seq, digest, leader), sig):
            return None
    return Rejection(LedgerRule.CERT_NO_LEADER_ACCEPT, f"ballot {view}'s leader is replica {leader}")


def commit_signers(replica_keys: list[bytes], view: int, seq: int, digest: bytes, cert: list[tuple[int, bytes]],
                   verifier: Verifier) -> set[int]:
    """The distinct replicas whose COMMIT signature in ``cert`` verifies (junk entries don't count)."""
    n = len(replica_keys)
    good: set[int] = set()
    for replica, sig in cert:
        if type(replica) is not int or not 0 <= replica < n or replica in good:
            continue
        if verifier.verify(replica_keys[replica], COMMIT_DOMAIN, commit_statement(view, seq, digest, replica), sig):
            good.add(replica)
    return good


def certified_block_error(mode: str, f: int, replica_keys: list[bytes], block, verifier: Verifier) -> Rejection | None:
    """Why a block served by a peer (state transfer) is not certified, or None.

    Only what a certificate can vouch for is checked: one block per sequence number, the
    transactions under the signed batch root, and the certificate itself. The receiver
    re-executes the batch, so the peer's results and header are never trusted.
    """
    return block_shape_error(block) or certificate_error(mode, f, replica_keys, block.view, block.sequence,
                                                         block.batch_root, block.cert, verifier)


def block_shape_error(block) -> Rejection | None:
    """What a block shows by itself: one block per sequence number, its transactions under its
    batch root. Anyone can build a block that passes; only the certificate says it committed."""
    from crypto.merkle import root_of

    if block.sequence != block.height:
        return Rejection(LedgerRule.BLOCK_SEQUENCE_NOT_HEIGHT)
    if len(block.results) != len(block.txs) or root_of(block.txs) != block.batch_root:
        return Rejection(LedgerRule.BLOCK_BATCH_ROOT)
    return None


ATTEST_TAG = 7
ATTEST_DOMAIN = b"bftledger/v1/attestation"


def attestation_statement(height: int, block_hash: bytes, batch_size: int, replica: int) -> bytes:
    """What a replica signs to say "I executed the block at ``height``, its hash is this and it
    holds ``batch_size`` transactions".

    The commit certificate signs only (view, sequence, batch root): the order, fixed
    before anyone executes the batch. The block hash also covers the results root, the
    tree head, the state root (issue 16) and the previous block, so f+1 of these (one of
    them honest) make a receipt's result, and a proof against the state root, checkable
    offline too. The number
    of transactions binds a receipt's batch size, and with it (RFC 9162 paths for one tree
    size are unique per leaf) its index: neither is in the block header (issue 11).
    Byte-identical to ``bft.wire.Attestation.signable()`` (pinned by a test).
    """
    return msgpack.packb([ATTEST_TAG, VERSION, height, block_hash, batch_size, replica], use_bin_type=True)


def attestation_error(mode: str, f: int, replica_keys: list[bytes], height: int, block_hash: bytes,
                      batch_size: int, attestations: list[tuple[int, bytes]], verifier: Verifier) -> Rejection | None:
    """pbft: f+1 distinct replicas signed the block hash; paxos: one replica did (crash-fault trust)."""
    need = Quorums(mode, f).attest
    good = attesters(replica_keys, height, block_hash, batch_size, attestations, verifier)
    if len(good) < need:
        return Rejection(LedgerRule.ATTEST_TOO_FEW,
                         f"{len(good)} valid distinct signatures on the block hash, needs {need}")
    return None


def attesters(replica_keys: list[bytes], height: int, block_hash: bytes, batch_size: int,
              attestations: list[tuple[int, bytes]], verifier: Verifier) -> set[int]:
    """The distinct replicas whose attestation of (height, block hash) verifies."""
    n = len(replica_keys)
    good: set[int] = set()
    for replica, sig in attestations:
        if type(replica) is not int or not 0 <= replica < n or replica in good:
            continue
        if verifier.verify(replica_keys[replica], ATTEST_DOMAIN,
                           attestation_statement(height, block_hash, batch_size, replica), sig):
            good.add(replica)
    return good
