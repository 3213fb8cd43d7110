"""A cluster's description: ``DIR/cluster.toml`` plus key files under ``DIR/keys/``.

Only public material lives in cluster.toml, so it can be handed to anyone who wants to
verify receipts offline.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from crypto import keys
from crypto.signing import Ed25519Signer

MODES = ("pbft", "paxos")


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

    @property
    def n(self) -> int:
        return len(self.replicas)

    @property
    def quorum(self) -> int:
        """Votes that decide: 2f+1 in pbft, f+1 (a majority) in paxos."""
        return 2 * self.f + 1 if self.mode == "pbft" else self.f + 1

    @property
    def reply_quorum(self) -> int:
        """Matching replies a client needs: f+1 in pbft (one is honest), 1 from the leader in paxos."""
        return self.f + 1 if self.mode == "pbft" else 1

    @property
    def trust_model(self) -> str:
        if self.mode == "pbft":
            return f"byzantine: certified by {2 * self.f + 1} of {self.n} replicas, up to {self.f} may lie"
        return f"crash-fault: signed by the Paxos leader only; assumes no replica lies"

    def replica_keys(self) -> list[bytes]:
        return [r.public_key for r in self.replicas]

    def key_path(self, role: str, ident: int) -> Path:
        return self.directory / "keys" / f"{role}-{ident}.key"

    def data_dir(self, replica: int) -> Path:
        return self.directory / "data" / f"replica-{replica}"

    def load_replica_key(self, replica: int) -> Ed25519Signer:
        return keys.load(self.key_path("replica", replica))

    def load_client_key(self, client: int) -> Ed25519Signer:
        return keys.load(self.key_path("client", client))


def required_n(mode: str, f: int) -> int:
    return 3 * f + 1 if mode == "pbft" else 2 * f + 1


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
    except ClusterError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise ClusterError(f"{path} is malformed ({type(e).__name__}: {e}); re-create it with 'bftledger init --force'") from None
    if len(reps) != required_n(mode, f):
        raise ClusterError(f"{path}: {mode} with f={f} needs {required_n(mode, f)} replicas, found {len(reps)}")
    return Cluster(d, mode, f, tuple(reps), clients)


def write(directory: Path, mode: str, f: int, hosts: list[tuple[str, int]], replica_keys: list[bytes],
          client_keys: list[bytes]) -> Path:
    lines = [
        "# bftledger cluster: public information only (private keys are under keys/)",
        f'mode = "{mode}"',
        f"f = {f}",
        f"n = {len(hosts)}",
        "",
    ]
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
