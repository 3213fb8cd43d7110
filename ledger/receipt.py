"""A receipt: proof that one transaction was committed, checkable offline with public keys.

It carries the transaction (the client's signed request), the header fields of the
block that holds it, the block's certificate, execution attestations, and two RFC 9162
inclusion proofs against roots in that header: the transaction in the batch
(``batch_root``, which is the digest the certificate signs) and its result in the
results (``results_root``).

``verify(cluster_dir)`` needs only DIR/cluster.toml and checks: the client's signature
on the transaction, both inclusion proofs, one block per sequence number, and the
certificate (pbft: 2f+1 distinct COMMIT signatures on (view, sequence, batch root);
paxos: the ballot leader's ACCEPT signature, which is only as good as the crash-fault
trust model: it assumes no replica lies), and the execution attestations: the COMMITs
fix the order but not the results, so f+1 replicas (one of them honest; one in paxos)
sign the block hash, which binds the results root, the tree head, the state root and
the previous block. A rewritten result with a recomputed results root therefore fails.

Version 4 (issue 16) carries the block's state root: without it the block hash, and so
the attestations, could not be checked. Earlier receipts prove blocks of version 1,
which this build no longer reads, and are refused with that reason.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from crypto.hashing import sha256
from crypto.merkle import MerkleTree, leaf_hash, verify_inclusion
from crypto.signing import Verifier
from crypto.tls import CertificateError, ed25519_key_of
from ledger import tx as txmod
from ledger.block import BLOCK_TAG, BLOCK_VERSION, Block
from ledger.certificate import attestation_error, attesters, certificate_error, commit_signers
from ledger.cluster import MODES, Cluster, load
from ledger.state import FAILED, OK, STATUS_NAMES, decode_failed, decode_result, describe_op, operation_of

RECEIPT_VERSION = 4             # 4: the block header has a state root (issue 16)


class ReceiptError(Exception):
    """The receipt does not prove what it claims (or is not a receipt); the message says why."""


@dataclass(frozen=True, slots=True)
class Verified:
    """What a successful ``Receipt.verify`` established."""
    trust_model: str
    signers: list[int]
    block_hash: bytes
    attesters: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Receipt:
    mode: str
    tx: bytes
    index: int
    height: int
    sequence: int
    view: int
    prev_hash: bytes
    batch_root: bytes
    results_root: bytes
    tree_size: int
    tree_root: bytes
    state_root: bytes
    batch_size: int
    batch_proof: list[bytes]
    result: bytes
    results_proof: list[bytes]
    cert: list[tuple[int, bytes]] = field(default_factory=list)
    attestations: list[tuple[int, bytes]] = field(default_factory=list)
    cluster_id: bytes = b""          # which cluster's signatures these are; every signature covers it
    # a client registered on the ledger (ledger.clients) is not in cluster.toml: its receipts carry
    # the receipt of its registration, which proves its key offline like everything else
    registration: "Receipt | None" = None
    claimed_summary: dict | None = field(default=None, compare=False)   # from a file; verify() checks it

    # ------------------------------------------------------------------ building
    @classmethod
    def from_block(cls, block: Block, index: int, mode: str, *, tx_tree: MerkleTree | None = None,
                   results_tree: MerkleTree | None = None,
                   attestations: list[tuple[int, bytes]] = (), cluster_id: bytes = b"") -> "Receipt":
        if not 0 <= index < len(block.txs):
            raise ReceiptError(f"block {block.height} has no transaction {index}")
        tx_tree = tx_tree or MerkleTree(block.txs)
        results_tree = results_tree or MerkleTree(block.results)
        return cls(mode=mode, tx=block.txs[index], index=index, height=block.height, sequence=block.sequence,
                   view=block.view, prev_hash=block.prev_hash, batch_root=block.batch_root,
                   results_root=block.results_root, tree_size=block.tree_size, tree_root=block.tree_root,
                   state_root=block.state_root, batch_size=len(block.txs), batch_proof=tx_tree.inclusion_proof(index),
                   result=block.results[index], results_proof=results_tree.inclusion_proof(index),
                   cert=list(block.cert), attestations=list(attestations), cluster_id=cluster_id)

    # ------------------------------------------------------------------ reading
    @property
    def block_hash(self) -> bytes:
        return sha256(Block(self.height, self.sequence, self.view, self.prev_hash, self.batch_root,
                            self.results_root, self.tree_size, self.tree_root, self.state_root, [],
                            []).header_bytes())

    def _result(self) -> tuple[int, bytes | None]:
        try:
            return decode_result(self.result)
        except Exception:
            return -1, None

    @property
    def status(self) -> str:
        return STATUS_NAMES.get(self._result()[0], "malformed")

    @property
    def ok(self) -> bool:
        """The operation's outcome: a put always; a delete that removed a key; a cas that swapped."""
        return self._result()[0] == OK

    @property
    def value(self) -> bytes | None:
        return self._result()[1]

    @property
    def client(self) -> int | None:
        t = txmod.parse(self.tx)
        return None if t is None else t.client

    @property
    def timestamp(self) -> int | None:
        t = txmod.parse(self.tx)
        return None if t is None else t.timestamp

    def describe(self) -> str:
        t = txmod.parse(self.tx)
        return "invalid transaction" if t is None else describe_op(t.op)

    @property
    def operation(self) -> dict | None:
        """What the receipt proves was asked: ``{"kind": "put", "key", "value"}``, ``"get"``,
        ``"delete"``, ``"cas"`` (with ``"expected"``), or ``"transact"`` with ``"puts"``,
        ``"deletes"`` and ``"require"``; None for a malformed transaction. Read from the
        client's signed request, which the receipt's proofs cover."""
        t = txmod.parse(self.tx)
        return None if t is None else operation_of(t.op)

    @property
    def failed(self) -> dict[str, bytes | None]:
        """The unmet requirements of a transaction or cas that did not apply: key -> its value
        when it was checked (None: absent); {} when the operation applied."""
        status, value = self._result()
        if status != FAILED:
            return {}
        op = self.operation or {}
        if op.get("kind") == "transact":
            try:
                return decode_failed(value)
            except Exception:
                return {}
        if op.get("kind") == "cas":
            return {op["key"]: value}
        return {}

    # ------------------------------------------------------------------ checking
    def verify(self, cluster_dir: "str | os.PathLike[str] | Cluster", *,
               verifier: Verifier | None = None) -> Verified:
        """Check everything with DIR/cluster.toml's public keys; raises ReceiptError on any fault."""
        cluster = cluster_dir if isinstance(cluster_dir, Cluster) else load(cluster_dir)
        verifier = verifier or cluster.verifier()
        if self.cluster_id != cluster.cluster_id:
            raise ReceiptError(f"this receipt is from cluster {self.cluster_id[:8].hex() or '(none)'}, not from the "
                               f"cluster in {cluster.directory} ({cluster.short_id}); a cluster never accepts "
                               "another's signatures, even when the two share keys")
        if self.mode != cluster.mode:
            raise ReceiptError(f"receipt is from a {self.mode} cluster, this cluster runs {cluster.mode}")
        if self.sequence != self.height:
            raise ReceiptError(f"sequence {self.sequence} at height {self.height} (one block per sequence number)")
        t = txmod.parse(self.tx)
        if t is None:
            raise ReceiptError("the transaction is not a well-formed signed client request")
        if t.client < len(cluster.clients):
            client_key = cluster.clients[t.client]
        else:
            client_key = self._registered_key(cluster, t.client, verifier)
        if not verifier.verify(client_key, txmod.REQUEST_DOMAIN, t.signable(), t.sig):
            raise ReceiptError(f"client {t.client}'s signature on the transaction does not verify")
        if not 0 <= self.index < self.batch_size:
            raise ReceiptError(f"index {self.index} outside a batch of {self.batch_size}")
        if not verify_inclusion(leaf_hash(self.tx), self.index, self.batch_size, self.batch_proof, self.batch_root):
            raise ReceiptError("the transaction's inclusion proof does not lead to the block's batch root")
        if not verify_inclusion(leaf_hash(self.result), self.index, self.batch_size, self.results_proof,
                                self.results_root):
            raise ReceiptError("the result's inclusion proof does not lead to the block's results root")
        if self._result()[0] < 0:
            raise ReceiptError("the result is not a well-formed result")
        why = certificate_error(cluster.mode, cluster.f, cluster.replica_keys(), self.view, self.sequence,
                                self.batch_root, self.cert, verifier)
        if why is not None:
            raise ReceiptError(f"certificate: {why}")
        block_hash = self.block_hash
        why = attestation_error(cluster.mode, cluster.f, cluster.replica_keys(), self.height, block_hash,
                                self.batch_size, self.attestations, verifier)
        if why is not None:
            raise ReceiptError(str(why))
        if self.claimed_summary is not None and self.claimed_summary != self.summary():
            # issue 11: an edited summary used to pass, so a person or a program reading the file
            # was told the wrong operation, client or outcome
            proven, claimed = self.summary(), self.claimed_summary
            fields = sorted(k for k in set(proven) | set(claimed) if claimed.get(k) != proven.get(k))
            raise ReceiptError(f"the receipt's summary disagrees with what it proves ({', '.join(fields)}); "
                               f"it proves: {proven['operation']} by client {proven['client']}, {proven['status']}")
        keys = cluster.replica_keys()
        if cluster.protocol.byzantine:
            signers = sorted(commit_signers(keys, self.view, self.sequence, self.batch_root, self.cert, verifier))
        else:
            signers = [self.view % cluster.n]            # the ballot's leader, whose ACCEPT verified
        attested = sorted(attesters(keys, self.height, block_hash, self.batch_size, self.attestations, verifier))
        return Verified(cluster.trust_model, signers, block_hash, attested)

    def _registered_key(self, cluster: Cluster, client: int, verifier: Verifier) -> bytes:
        """The key of a client registered on the ledger, proven by its registration's receipt:
        the administrator's transaction, certified, registering a certificate whose key is the
        client's, with the index that makes it this client id."""
        reg = self.registration
        if reg is None:
            raise ReceiptError(f"the transaction names client {client}, which is not in cluster.toml, and the "
                               "receipt carries no registration for it")
        if reg.registration is not None:
            raise ReceiptError("a registration's receipt carries a registration of its own")
        try:
            reg.verify(cluster, verifier=verifier)
        except ReceiptError as e:
            raise ReceiptError(f"the registration of client {client}: {e}") from None
        if reg.client != cluster.admin:
            raise ReceiptError(f"client {client} was registered by client {reg.client}, not the administrator "
                               f"({cluster.admin})")
        op = reg.operation or {}
        if op.get("kind") != "addclient" or not reg.ok:
            raise ReceiptError(f"the registration receipt of client {client} is not a successful registration")
        try:
            registered = len(cluster.clients) + int((reg.value or b"").decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise ReceiptError("the registration receipt's result is not a client index") from None
        if registered != client:
            raise ReceiptError(f"the registration receipt is of client {registered}, not {client}")
        if reg.height > self.height:
            raise ReceiptError(f"client {client} was registered at height {reg.height}, after this transaction")
        try:
            return ed25519_key_of(op["certificate"])
        except CertificateError as e:
            raise ReceiptError(f"the registered certificate of client {client}: {e}") from None

    # ------------------------------------------------------------------ JSON
    def summary(self) -> dict:
        """What a person reads first; derived from the proven fields, never trusted on its own."""
        return {"operation": self.describe(), "client": self.client, "timestamp": self.timestamp,
                "status": self.status, "ok": self.ok, "block_hash": self.block_hash.hex()}

    def to_dict(self) -> dict:
        return {
            "receipt_version": RECEIPT_VERSION, "cluster_id": self.cluster_id.hex(), "mode": self.mode,
            "summary": self.summary(),
            "tx": self.tx.hex(), "index": self.index,
            "block": {"height": self.height, "sequence": self.sequence, "view": self.view,
                      "prev_hash": self.prev_hash.hex(), "batch_root": self.batch_root.hex(),
                      "results_root": self.results_root.hex(), "tree_size": self.tree_size,
                      "tree_root": self.tree_root.hex(), "state_root": self.state_root.hex(),
                      "batch_size": self.batch_size},
            "batch_proof": [h.hex() for h in self.batch_proof],
            "result": self.result.hex(),
            "results_proof": [h.hex() for h in self.results_proof],
            "certificate": [[r, s.hex()] for r, s in self.cert],
            "attestations": [[r, s.hex()] for r, s in self.attestations],
            **({"registration": self.registration.to_dict()} if self.registration is not None else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: object) -> "Receipt":
        """Parse a receipt; anything malformed raises ReceiptError. The ``summary`` it carries is
        kept and compared by ``verify`` with what the other fields prove."""
        with parsing("a receipt", ReceiptError):
            if not isinstance(d, dict):
                raise TypeError("a receipt is a JSON object")
            version = d.get("receipt_version")
            if version != RECEIPT_VERSION or type(version) is not int:
                if type(version) is int and 1 <= version < RECEIPT_VERSION:
                    raise ValueError(f"receipt_version {version} proves a block of version 1, which has no state "
                                     f"root; this build verifies receipt_version {RECEIPT_VERSION} (issue 16)")
                raise ValueError(f"unsupported receipt_version {version!r}")
            mode = d["mode"]
            if mode not in MODES:
                raise ValueError(f"unknown mode {mode!r}")
            b = d["block"]
            if not isinstance(b, dict):
                raise TypeError("block must be an object")
            r = cls(mode=mode, tx=_hex(d["tx"]), index=_int(d["index"]), height=_int(b["height"]),
                       sequence=_int(b["sequence"]), view=_int(b["view"]), prev_hash=_hex(b["prev_hash"], 32),
                       batch_root=_hex(b["batch_root"], 32), results_root=_hex(b["results_root"], 32),
                       tree_size=_int(b["tree_size"]), tree_root=_hex(b["tree_root"], 32),
                       state_root=_hex(b["state_root"], 32), batch_size=_int(b["batch_size"]), batch_proof=_hexlist(d["batch_proof"], 32),
                       result=_hex(d["result"]), results_proof=_hexlist(d["results_proof"], 32),
                       cert=_cert(d["certificate"]), attestations=_cert(d["attestations"]),
                       cluster_id=_hex(d["cluster_id"], 32))
            if "registration" in d:
                if not isinstance(d["registration"], dict) or "registration" in d["registration"]:
                    raise TypeError("registration must be a receipt without a registration of its own")
                r.registration = cls.from_dict(d["registration"])
            if "summary" in d:
                r.claimed_summary = d["summary"] if isinstance(d["summary"], dict) else {"": d["summary"]}
            return r

    @classmethod
    def from_json(cls, text: str | bytes) -> "Receipt":
        return cls.from_dict(load_json(text, "a receipt", ReceiptError))


@contextmanager
def parsing(what: str, error: type[Exception]) -> Iterator[None]:
    """Around the parsing of a JSON object: a missing field, or a field of the wrong type or
    value, raises ``error("not WHAT: ...")`` (an ``error`` raised inside passes through)."""
    try:
        yield
    except error:
        raise
    except KeyError as e:
        raise error(f"not {what}: field {e} is missing") from None
    except (TypeError, ValueError) as e:
        raise error(f"not {what}: {e}") from None


def load_json(text: str | bytes, what: str, error: type[Exception]) -> object:
    """``text`` parsed as JSON; ``error("not WHAT: not JSON (...)")`` if it is not."""
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise error(f"not {what}: not JSON ({e})") from None


def _int(v: object) -> int:
    if type(v) is not int or v < 0:
        raise ValueError(f"expected a non-negative integer, got {v!r}")
    return v


def _hex(v: object, size: int | None = None) -> bytes:
    if type(v) is not str:
        raise TypeError(f"expected a hex string, got {type(v).__name__}")
    b = bytes.fromhex(v)
    if size is not None and len(b) != size:
        raise ValueError(f"expected {size} bytes of hex, got {len(b)}")
    return b


def _hexlist(v: object, size: int) -> list[bytes]:
    if type(v) is not list or len(v) > 64:
        raise TypeError("expected a list of at most 64 hex strings")
    return [_hex(x, size) for x in v]


def _cert(v: object) -> list[tuple[int, bytes]]:
    if type(v) is not list or len(v) > 1024:
        raise TypeError("certificate must be a list of [replica, signature]")
    out = []
    for c in v:
        if type(c) is not list or len(c) != 2:
            raise TypeError("certificate must be a list of [replica, signature]")
        out.append((_int(c[0]), _hex(c[1])))
    return out


__all__ = ["Receipt", "ReceiptError", "Verified", "BLOCK_TAG", "BLOCK_VERSION"]
