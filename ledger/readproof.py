"""A read proof: that a key held a value (or was absent) in the ledger's state at a height,
checkable offline with the cluster's public keys only (issue 16, verified reads).

What it carries: the key, the value (None: absent), the header of the block at that height
(every field but the view, which the hash does not cover), the block's view and commit
certificate, its number of transactions, the execution attestations of the header's hash,
and the state proof (``ledger.statetree.StateProof``) from the key to the header's state root.

``verify(cluster_dir)`` checks, in this order:

1. the cluster id and mode are DIR/cluster.toml's (and every signature is made under that
   cluster id, so a proof of another cluster fails there even when the two share keys);
2. one block per sequence number (sequence == height);
3. the certificate over (view, sequence, batch root): pbft 2f+1 COMMITs, paxos the
   ballot leader's ACCEPT. It fixes the batch, not the state;
4. the execution attestations of the header's hash: pbft f+1 distinct replicas, so at least
   one honest replica executed the block and got this header, state root included; paxos
   one replica (crash-fault trust: it assumes nobody lies, like the paxos certificate);
5. the state proof leads from (key, value) to the header's state root.

The header's hash covers the height and the state root, so a changed value, a claimed
absence, a different height or another state all fail step 4 or 5. Why the state root is
not under the certificate: see ledger/block.py (it is the result of execution).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from crypto.hashing import sha256
from crypto.signing import Verifier
from ledger.block import Block
from ledger.certificate import attestation_error, attesters, certificate_error, commit_signers
from ledger.cluster import MODES, Cluster, load
from ledger.receipt import _cert, _hex, _int, load_json, parsing
from ledger.statetree import MAX_PROOF_STEPS, StateProof, StateProofError, _check_shape

READ_PROOF_VERSION = 1


class ReadProofError(Exception):
    """The read proof does not prove what it claims (or is not a read proof); the message says why."""


@dataclass(frozen=True, slots=True)
class VerifiedRead:
    """What a successful ``ReadProof.verify`` established."""
    key: str
    value: bytes | None
    height: int
    block_hash: bytes
    trust_model: str
    signers: list[int]                 # whose certificate signatures verified
    attesters: list[int]               # whose attestations of the block hash verified


@dataclass(slots=True)
class ReadProof:
    mode: str
    cluster_id: bytes
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
    state_proof: StateProof
    cert: list[tuple[int, bytes]] = field(default_factory=list)
    attestations: list[tuple[int, bytes]] = field(default_factory=list)

    # ------------------------------------------------------------------ reading
    @property
    def key(self) -> str:
        return self.state_proof.key

    @property
    def value(self) -> bytes | None:
        """The value the proof claims (None: absent); trust it after ``verify``."""
        return self.state_proof.value

    def header_block(self) -> Block:
        """A block with this header and no transactions (its hash is the header's)."""
        return Block(self.height, self.sequence, self.view, self.prev_hash, self.batch_root, self.results_root,
                     self.tree_size, self.tree_root, self.state_root, [], [], list(self.cert))

    @property
    def block_hash(self) -> bytes:
        return sha256(self.header_block().header_bytes())

    # ------------------------------------------------------------------ checking
    def verify(self, cluster_dir: "str | os.PathLike[str] | Cluster", *,
               verifier: Verifier | None = None) -> VerifiedRead:
        """Check everything with DIR/cluster.toml's public keys; raises ReadProofError on any fault."""
        cluster = cluster_dir if isinstance(cluster_dir, Cluster) else load(cluster_dir)
        verifier = verifier or cluster.verifier()
        why = self.error(cluster, verifier)
        if why is not None:
            raise ReadProofError(why)
        keys = cluster.replica_keys()
        if cluster.protocol.byzantine:
            signers = sorted(commit_signers(keys, self.view, self.sequence, self.batch_root, self.cert, verifier))
        else:
            signers = [self.view % cluster.n]
        block_hash = self.block_hash
        attested = sorted(attesters(keys, self.height, block_hash, self.batch_size, self.attestations, verifier))
        return VerifiedRead(self.key, self.value, self.height, block_hash, cluster.trust_model, signers, attested)

    def error(self, cluster: Cluster, verifier: Verifier, *, check_attestations: bool = True) -> str | None:
        """Why the proof does not verify, or None. The client checks a replica's answer with
        ``check_attestations=False`` before it spends a round asking for attestations."""
        if self.cluster_id != cluster.cluster_id:
            return (f"this read proof is from cluster {self.cluster_id[:8].hex() or '(none)'}, not from the cluster "
                    f"in {cluster.directory} ({cluster.short_id}); a cluster never accepts another's signatures")
        if self.mode != cluster.mode:
            return f"the read proof is from a {self.mode} cluster, this cluster runs {cluster.mode}"
        if self.height < 1 or self.sequence != self.height:
            return f"sequence {self.sequence} at height {self.height} (one block per sequence number, from 1)"
        why = certificate_error(cluster.mode, cluster.f, cluster.replica_keys(), self.view, self.sequence,
                                self.batch_root, self.cert, verifier)
        if why is not None:
            return f"certificate of block {self.height}: {why}"
        try:
            self.state_proof.verify(self.state_root, self.key)
        except StateProofError as e:
            return f"state proof: {e}"
        if check_attestations:
            why = attestation_error(cluster.mode, cluster.f, cluster.replica_keys(), self.height, self.block_hash,
                                    self.batch_size, self.attestations, verifier)
            if why is not None:
                return f"block {self.height}'s header (its state root): {why}"
        return None

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        p = self.state_proof
        return {
            "read_proof_version": READ_PROOF_VERSION, "cluster_id": self.cluster_id.hex(), "mode": self.mode,
            "key": self.key, "value": None if self.value is None else self.value.hex(), "height": self.height,
            "block": {"sequence": self.sequence, "view": self.view, "prev_hash": self.prev_hash.hex(),
                      "batch_root": self.batch_root.hex(), "results_root": self.results_root.hex(),
                      "tree_size": self.tree_size, "tree_root": self.tree_root.hex(),
                      "state_root": self.state_root.hex(), "batch_size": self.batch_size},
            "certificate": [[r, s.hex()] for r, s in self.cert],
            "attestations": [[r, s.hex()] for r, s in self.attestations],
            "state_proof": {"path": [[k, vh.hex(), sib.hex()] for k, vh, sib in p.path],
                            "children": None if p.children is None else [c.hex() for c in p.children]},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: object) -> "ReadProof":
        """Parse a read proof; anything malformed raises ReadProofError (nothing is verified here)."""
        with parsing("a read proof", ReadProofError):
            if not isinstance(d, dict):
                raise TypeError("a read proof is a JSON object")
            version = d.get("read_proof_version")
            if type(version) is not int or version != READ_PROOF_VERSION:
                raise ValueError(f"unsupported read_proof_version {version!r}")
            mode = d["mode"]
            if mode not in MODES:
                raise ValueError(f"unknown mode {mode!r}")
            b, sp = d["block"], d["state_proof"]
            if not isinstance(b, dict) or not isinstance(sp, dict):
                raise TypeError("block and state_proof must be objects")
            path = sp["path"]
            if type(path) is not list or len(path) > MAX_PROOF_STEPS:
                raise TypeError(f"state_proof.path is a list of at most {MAX_PROOF_STEPS} nodes")
            steps = []
            for s in path:
                if type(s) is not list or len(s) != 3 or type(s[0]) is not str:
                    raise TypeError("a state_proof.path node is [key, value hash, sibling hash]")
                steps.append((s[0], _hex(s[1], 32), _hex(s[2], 32)))
            ch = sp["children"]
            if ch is not None and (type(ch) is not list or len(ch) != 2):
                raise TypeError("state_proof.children is null or [left hash, right hash]")
            value = d["value"]
            proof = StateProof(d["key"], None if value is None else _hex(value), tuple(steps),
                               None if ch is None else (_hex(ch[0], 32), _hex(ch[1], 32)))
            try:
                _check_shape(proof)                 # types and bounds; verify() checks the rest
            except StateProofError as e:
                raise ValueError(str(e)) from None
            return cls(mode=mode, cluster_id=_hex(d["cluster_id"], 32), height=_int(d["height"]),
                       sequence=_int(b["sequence"]), view=_int(b["view"]), prev_hash=_hex(b["prev_hash"], 32),
                       batch_root=_hex(b["batch_root"], 32), results_root=_hex(b["results_root"], 32),
                       tree_size=_int(b["tree_size"]), tree_root=_hex(b["tree_root"], 32),
                       state_root=_hex(b["state_root"], 32), batch_size=_int(b["batch_size"]), state_proof=proof,
                       cert=_cert(d["certificate"]), attestations=_cert(d["attestations"]))

    @classmethod
    def from_json(cls, text: str | bytes) -> "ReadProof":
        return cls.from_dict(load_json(text, "a read proof", ReadProofError))


__all__ = ["ReadProof", "ReadProofError", "VerifiedRead", "READ_PROOF_VERSION"]
