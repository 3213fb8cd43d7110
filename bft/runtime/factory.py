"""Builds the protocol core a replica runs, in one place for the runtime, the demo and tests.

The paxos core is imported only when a paxos cluster asks for it, so a pbft replica
starts whatever the state of ``bft.paxos``.
"""
from __future__ import annotations

import dataclasses
import os
import random
import tomllib
from pathlib import Path

from bft.adversary import STRATEGIES, TEAM_STRATEGY, Byzantine
from bft.pbft.certs import Keys
from crypto.signing import Signer
from ledger.chain import Chain
from ledger.clients import ClientKeys
from ledger.cluster import Cluster

# Optional tuning keys a cluster.toml may carry at top level (the benchmark sets batch_size);
# each goes to the core's config when that config has a field of the name (proof_replay_*: to
# bft.runtime.proofs, the bounds on re-execution per verified read of a past state).
TUNING_KEYS = ("batch_size", "batch_bytes", "pipeline", "request_timeout", "retransmit_interval", "checkpoint_interval",
               "log_size", "transfer_timeout", "client_requests", "proof_replay_blocks", "proof_replay_txs")


class PaxosUnavailable(RuntimeError):
    """The paxos core cannot be imported in this tree."""


def read_tuning(cluster_dir: str | os.PathLike[str]) -> dict:
    """The optional tuning keys of DIR/cluster.toml (a file that loads as a cluster is assumed)."""
    try:
        doc = tomllib.loads((Path(cluster_dir) / "cluster.toml").read_text())
    except (OSError, ValueError):
        return {}
    return {k: doc[k] for k in TUNING_KEYS if k in doc and type(doc[k]) in (int, float)}


def write_tuning(cluster_dir: str | os.PathLike[str], tuning: dict) -> None:
    """Add tuning keys to DIR/cluster.toml, at top level (before its first table), where
    ``read_tuning`` finds them; for the benchmark and the lab, not for users' clusters."""
    path = Path(cluster_dir) / "cluster.toml"
    lines = path.read_text().splitlines(keepends=True)
    at = next((k for k, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
    for name, value in tuning.items():
        if name not in TUNING_KEYS or type(value) not in (int, float):
            raise ValueError(f"{name} = {value!r} is not a tuning key")
    lines[at:at] = [f"{name} = {value}\n" for name, value in tuning.items()]
    path.write_text("".join(lines))


def _config(cls, n: int, f: int, tuning: dict):
    names = {fl.name for fl in dataclasses.fields(cls)}
    return cls(n=n, f=f, **{k: v for k, v in tuning.items() if k in names})


def paxos_classes():
    try:
        from bft.paxos.config import PaxosConfig
        from bft.paxos.core import PaxosCore
    except ImportError as e:
        raise PaxosUnavailable(f"the paxos core is not available in this build ({e})") from None
    return PaxosCore, PaxosConfig


def make_core(cluster: Cluster, replica_id: int, signer: Signer, chain: Chain, vote_records: list[bytes],
              now: float, byzantine: str | None = None, *, tuning: dict | None = None,
              rng: random.Random | None = None, group: list[int] | None = None):
    """The core for replica ``replica_id`` of ``cluster``, wrapped by a Byzantine strategy if asked
    (``collude`` with the team's replica ids in ``group``: ``bft.collusion``)."""
    tuning = tuning or {}
    rng = rng or random.Random()
    keys = Keys(cluster.replica_keys(), ClientKeys(cluster.clients, chain.registry), cluster.verifier(),
                admin=cluster.admin)
    if cluster.protocol.byzantine:
        from bft.pbft.config import PbftConfig
        from bft.pbft.core import PbftCore

        core = PbftCore(_config(PbftConfig, cluster.n, cluster.f, tuning), replica_id, signer, keys, chain,
                        vote_records, now)
    else:
        PaxosCore, PaxosConfig = paxos_classes()
        core = PaxosCore(_config(PaxosConfig, cluster.n, cluster.f, tuning), replica_id, signer, keys, chain,
                         vote_records, now, random.Random(rng.random()))
    if byzantine == TEAM_STRATEGY:
        from bft.collusion import Collusion

        if not group or replica_id not in group or not cluster.protocol.byzantine:
            raise ValueError("collude needs a pbft cluster and --group with this replica's id in it")
        return Collusion(cluster.n, sorted(group)).member(core, signer)
    if byzantine:
        if byzantine not in STRATEGIES:
            raise ValueError(f"unknown strategy {byzantine!r}; one of: {', '.join(STRATEGIES)}")
        core = Byzantine(core, byzantine, signer, random.Random(rng.random()))
    return core


def slow_delay(core) -> float:
    """How late the 'slow' strategy sends (``bft.adversary.slow_delay``)."""
    from bft.adversary import slow_delay as delay
    return delay(getattr(core, "core", core).cfg)


def verifier_of(core):
    inner = getattr(core, "core", core)
    return inner.keys.verifier
