"""A cluster's description: ``DIR/cluster.toml``, key files under ``DIR/keys/`` and the
nodes' TLS certificates under ``DIR/certs/``.

Only public material lives in cluster.toml and certs/, so they can be handed to anyone
who wants to verify receipts offline or connect as a client.

The cluster id is the sha256 of the genesis configuration: the mode, f, the replicas'
public keys and a random nonce that ``init`` draws. Every signature made in the cluster
covers it (``crypto.signing``), so two clusters made from the same keys still never
accept each other's certificates, attestations, checkpoints or receipts. Hosts, ports
and client keys are left out of the genesis on purpose: a cluster may move to other
addresses and onboard clients without becoming another cluster.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import msgpack

from crypto import keys
from crypto.hashing import sha256
from crypto.signing import Ed25519Signer, Ed25519Verifier
from ledger import quorum

MODES = ("pbft", "paxos")
TRANSPORT_TLS = "tls"
TRANSPORT_PLAINTEXT = "plaintext-insecure"
TRANSPORTS = (TRANSPORT_TLS, TRANSPORT_PLAINTEXT)
GENESIS_DOMAIN = b"bftledger/v1/genesis\x00"


def genesis_id(mode: str, f: int, replica_keys: list[bytes], nonce: bytes) -> bytes:
    """The cluster id: a hash of what makes the cluster this cluster (see the module doc)."""
    return sha256(GENESIS_DOMAIN + msgpack.packb([mode, f, list(replica_keys), nonce], use_bin_type=True))


class ClusterError(Exception):
    """The cluster directory or its configuration is missing or wrong (one line for the user)."""


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    id: int
    host: str
    port: int
    public_key: bytes


@dataclass(frozen=True, slots=True)
class Cluster:
    directory: Path
    mode: str
    f: int
    replicas: tuple[ReplicaInfo, ...]
    clients: tuple[bytes, ...]          # client id i -> public key
    cluster_id: bytes = b""             # genesis hash; bound into every signature
    transport: str = TRANSPORT_TLS      # "tls" (mutual TLS 1.3, pinned keys) or "plaintext-insecure"
    admin: int | None = None            # the client id that may register new clients (ledger.clients)

    @property
    def n(self) -> int:
        return len(self.replicas)

    @property
    def protocol(self) -> quorum.Protocol:
        return quorum.protocol(self.mode)

    @property
    def quorums(self) -> quorum.Quorums:
        return quorum.Quorums(self.mode, self.f)

    @property
    def quorum(self) -> int:
        """Votes that decide: 2f+1 in pbft, f+1 (a majority) in paxos."""
        return self.quorums.decide

    @property
    def reply_quorum(self) -> int:
        """Matching replies a client needs: f+1 in pbft (one is honest), 1 from the leader in paxos."""
        return self.quorums.reply

    @property
    def trust_model(self) -> str:
        if self.protocol.byzantine:
            return f"byzantine: certified by {self.quorums.certificate} of {self.n} replicas, up to {self.f} may lie"
        return "crash-fault: signed by the Paxos leader only; assumes no replica lies"

    def replica_keys(self) -> list[bytes]:
        return [r.public_key for r in self.replicas]

    def key_path(self, role: str, ident: int) -> Path:
        return self.directory / "keys" / f"{role}-{ident}.key"

    def data_dir(self, replica: int) -> Path:
        return self.directory / "data" / f"replica-{replica}"

    def cert_path(self, role: str, ident: int) -> Path:
        return self.directory / "certs" / f"{role}-{ident}.pem"

    @property
    def short_id(self) -> str:
        return self.cluster_id[:8].hex()

    def load_replica_key(self, replica: int) -> Ed25519Signer:
        """Replica ``replica``'s key, signing for this cluster."""
        return keys.load(self.key_path("replica", replica)).bound(self.cluster_id)

    def load_client_key(self, client: int) -> Ed25519Signer:
        """Client ``client``'s key, signing for this cluster."""
        return keys.load(self.key_path("client", client)).bound(self.cluster_id)

    def verifier(self, capacity: int = 200_000) -> Ed25519Verifier:
        """A verifier that accepts only signatures made for this cluster."""
        return Ed25519Verifier(capacity, context=self.cluster_id)


def required_n(mode: str, f: int) -> int:
    return quorum.protocol(mode).n(f)


def load(directory: str | os.PathLike[str]) -> Cluster:
    d = Path(directory)
    path = d / "cluster.toml"
    if not d.is_dir():
        raise ClusterError(f"cluster directory {d} does not exist; create one with 'bftledger init {d} --mode pbft --f 1'")
    if not path.is_file():
        raise ClusterError(f"{path} not found; is {d} a cluster made by 'bftledger init'?")
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ClusterError(f"cannot read {path}: {e}") from None
    try:
        mode = doc["mode"]
        f = doc["f"]
        if mode not in MODES:
            raise ClusterError(f"{path}: mode must be one of {', '.join(MODES)}, not {mode!r}")
        if type(f) is not int or f < 1:
            raise ClusterError(f"{path}: f must be an integer >= 1")
        reps = []
        for i, r in enumerate(doc.get("replica", [])):
            if r["id"] != i:
                raise ClusterError(f"{path}: replica ids must be 0..n-1 in order")
            reps.append(ReplicaInfo(i, str(r["host"]), int(r["port"]), bytes.fromhex(r["public_key"])))
        clients = tuple(bytes.fromhex(c["public_key"]) for c in doc.get("client", []))
        transport = doc.get("transport", TRANSPORT_TLS)
        if transport not in TRANSPORTS:
            raise ClusterError(f"{path}: transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        if "genesis_nonce" not in doc or "cluster_id" not in doc:
            raise ClusterError(f"{path} has no cluster id (made by an older bftledger); "
                               f"re-create the cluster with 'bftledger init {d} --force'")
        nonce = bytes.fromhex(doc["genesis_nonce"])
        cluster_id = bytes.fromhex(doc["cluster_id"])
        admin = doc.get("admin")
        if admin is not None and (type(admin) is not int or not 0 <= admin < len(clients)):
            raise ClusterError(f"{path}: admin must be a client id, 0..{len(clients) - 1}")
    except ClusterError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise ClusterError(f"{path} is malformed ({type(e).__name__}: {e}); re-create it with 'bftledger init --force'") from None
    if len(reps) != required_n(mode, f):
        raise ClusterError(f"{path}: {mode} with f={f} needs {required_n(mode, f)} replicas, found {len(reps)}")
    if len(nonce) != 32 or cluster_id != genesis_id(mode, f, [r.public_key for r in reps], nonce):
        raise ClusterError(f"{path}: cluster_id does not match the genesis configuration (mode, f, replica keys, "
                           "genesis_nonce); the file was edited. Restore it from another copy of the cluster")
    return Cluster(d, mode, f, tuple(reps), clients, cluster_id, transport, admin)


def write(directory: Path, mode: str, f: int, hosts: list[tuple[str, int]], replica_keys: list[bytes],
          client_keys: list[bytes], *, genesis_nonce: bytes, transport: str = TRANSPORT_TLS,
          admin: int | None = 0) -> Path:
    cid = genesis_id(mode, f, replica_keys, genesis_nonce)
    lines = [
        "# bftledger cluster: public information only (private keys are under keys/)",
        f'mode = "{mode}"',
        f"f = {f}",
        f"n = {len(hosts)}",
        "# the cluster id is sha256 over (mode, f, replica keys, genesis_nonce); every signature covers it",
        f'genesis_nonce = "{genesis_nonce.hex()}"',
        f'cluster_id = "{cid.hex()}"',
    ]
    if transport == TRANSPORT_PLAINTEXT:
        lines.append("# INSECURE: links are not encrypted and not bound to the channel; for teaching and benchmarks")
    lines += [f'transport = "{transport}"']
    if admin is not None:
        lines += ["# the client whose key registers new clients on the running ledger (bftledger add-client)",
                  f"admin = {admin}"]
    lines += [""]
    for i, ((host, port), pk) in enumerate(zip(hosts, replica_keys)):
        lines += ["[[replica]]", f"id = {i}", f'host = "{host}"', f"port = {port}",
                  f'public_key = "{pk.hex()}"', ""]
    for i, pk in enumerate(client_keys):
        lines += ["[[client]]", f"id = {i}", f'public_key = "{pk.hex()}"', ""]
    path = directory / "cluster.toml"
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    return path
