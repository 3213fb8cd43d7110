"""Seeded scenarios: one integer decides the faults, the load and every delay.

``run_pbft(seed)`` builds a cluster of real pbft cores, up to f Byzantine backups, a
lossy reordering network with a partition and a crash, drives it until the faults
heal, then requires every submitted request to be acknowledged within a bound.
A failing run's message names the seed and the one command that replays it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from bft.adversary import Byzantine
from bft.pbft.certs import Keys
from bft.pbft.config import PbftConfig
from bft.pbft.core import PbftCore
from bft.sim.world import NetworkModel, Simulation
from crypto import keys as keymod
from crypto.signing import Ed25519Verifier, HashSigner, HashVerifier

BACKUP_STRATEGIES = ["silent", "wrong-digest", "corrupt", "forge", "replay", "flood"]
HEAL_AT = 2.0
LIVENESS_BOUND = 12.0       # virtual seconds after healing within which every request must commit


@dataclass
class RunResult:
    seed: int
    mode: str
    n: int
    violation: str | None
    unacked: list
    byzantine: dict[int, str]
    events: int
    sent: dict[str, int]
    blocks: int
    latencies: list[float] = field(default_factory=list)
    replay: str = ""

    @property
    def ok(self) -> bool:
        return self.violation is None and not self.unacked

    def describe(self) -> str:
        what = self.violation or (f"{len(self.unacked)} requests never acknowledged after healing: {self.unacked[:5]}"
                                  if self.unacked else "ok")
        return f"seed {self.seed} ({self.mode}, n={self.n}, byzantine={self.byzantine}): {what}\n  replay: {self.replay}"


def make_signers(seed: int, count: int, prefix: str, real: bool) -> list:
    if real:
        return [keymod.Ed25519Signer(random.Random(f"{prefix}-{seed}-{i}").randbytes(32)) for i in range(count)]
    return [HashSigner(f"{prefix}-{seed}-{i}".encode()) for i in range(count)]


def new_verifier(real: bool, signers: list):
    return Ed25519Verifier() if real else HashVerifier(signers)


def pbft_factory(n: int, f: int, replica_signers: list, client_signers: list, real: bool,
                 byzantine: dict[int, str], rng: random.Random, core_cls=PbftCore,
                 **cfg_overrides) -> Callable:
    cfg = PbftConfig(n=n, f=f, checkpoint_interval=8, log_size=32, batch_size=16, pipeline=4,
                     request_timeout=0.3, retransmit_interval=0.1, transfer_timeout=0.2, **cfg_overrides)
    rpk = [s.public_key for s in replica_signers]
    cpk = [s.public_key for s in client_signers]

    def make(i: int, chain, votes, now):
        keys = Keys(rpk, cpk, new_verifier(real, replica_signers + client_signers))
        core = core_cls(cfg, i, replica_signers[i], keys, chain, votes, now)
        if i in byzantine:
            return Byzantine(core, byzantine[i], replica_signers[i], random.Random(rng.random()))
        return core

    return make


def run_pbft(seed: int, n: int = 4, *, byzantine: dict[int, str] | None = None, faults: bool = True,
             requests: int = 24, clients: int = 2, real_crypto: bool | None = None, core_cls=PbftCore,
             trace: bool = False) -> RunResult:
    f = (n - 1) // 3
    rng = random.Random(f"pbft-scenario-{seed}")
    real = (seed % 10 == 0) if real_crypto is None else real_crypto
    if byzantine is None:
        k = rng.randint(0, f)
        ids = rng.sample(range(1, n), k)
        byzantine = {i: rng.choice(BACKUP_STRATEGIES) for i in sorted(ids)}
    rs = make_signers(seed, n, "replica", real)
    cs = make_signers(seed, clients, "client", real)
    net = NetworkModel()
    if faults:
        net.delay_max = rng.choice([0.002, 0.005, 0.02])
        net.drop = rng.choice([0.0, 0.01, 0.05])
        net.duplicate = rng.choice([0.0, 0.05])
    sim = Simulation(seed=seed, n=n, f=f, mode="pbft",
                     make_core=pbft_factory(n, f, rs, cs, real, byzantine, rng, core_cls),
                     client_signers=cs, net=net, client_timeout=0.3, trace=trace)
    for i in byzantine:
        sim.replicas[i].honest = False
    honest = [i for i in range(n) if i not in byzantine]
    if faults:
        if rng.random() < 0.5:
            victim = rng.choice(honest)
            t0 = rng.uniform(0.1, 1.2)
            sim.at(t0, lambda: sim.partition([{victim}, set(range(n)) - {victim}]))
            sim.at(rng.uniform(t0 + 0.1, HEAL_AT), lambda: sim.partition(None))
        if rng.random() < 0.5:
            victim = rng.choice(honest)
            t0 = rng.uniform(0.1, 1.2)
            sim.at(t0, lambda: sim.crash(victim))
            sim.at(rng.uniform(t0 + 0.05, HEAL_AT), lambda: sim.restart(victim))

    def heal() -> None:
        sim.partition(None)
        net.drop = 0.0
        net.duplicate = 0.0
    sim.at(HEAL_AT, heal)
    for j in range(requests):
        c = rng.randrange(clients)
        sim.at(rng.uniform(0.0, HEAL_AT), lambda c=c, j=j: sim.submit(c, f"k{j % 7}", b"v%d" % j))
    sim.run_until(HEAL_AT)
    if sim.checker.violation is None:
        sim.run_until(HEAL_AT + LIVENESS_BOUND, stop=sim.all_acked)
    return _result(sim, seed, "pbft", n, byzantine,
                   f"python -m bft.sim --mode pbft --n {n} --seed {seed}" + ("" if faults else " --no-faults"))


def _result(sim: Simulation, seed: int, mode: str, n: int, byzantine: dict, replay: str) -> RunResult:
    return RunResult(seed, mode, n, sim.checker.violation, sim.checker.unacked() if sim.checker.violation is None else [],
                     byzantine, sim.delivered, dict(sim.sent),
                     max(len(r.blocks) for r in sim.replicas if r.honest), sim.checker.latencies, replay)
