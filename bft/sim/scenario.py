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

from bft.adversary import Byzantine, slow_delay
from bft.pbft.certs import Keys
from bft.pbft.config import PbftConfig
from bft.pbft.core import PbftCore
from bft.sim.world import CLIENT, NetworkModel, Simulation
from crypto import keys as keymod
from crypto.signing import Ed25519Verifier, HashSigner, HashVerifier

BACKUP_STRATEGIES = ["silent", "wrong-digest", "corrupt", "forge", "replay", "flood"]
# with faulty_primary=True the view-0 primary is faulty too, with one of these
PRIMARY_STRATEGIES = ["silent", "equivocate", "censor", "forge-request", "slow", "forge-vc", "wrong-digest",
                      "corrupt", "forge", "replay", "flood"]
HEAL_AT = 2.0
LIVENESS_BOUND = 12.0       # virtual seconds after healing within which every request must commit
SIM_CONFIG = dict(checkpoint_interval=8, log_size=32, batch_size=16, pipeline=4, request_timeout=0.3,
                  retransmit_interval=0.1, transfer_timeout=0.2)


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
    trace: list[str] = field(default_factory=list)       # every delivered message, with trace=True

    @property
    def ok(self) -> bool:
        return self.violation is None and not self.unacked

    def describe(self) -> str:
        what = self.violation or (f"{len(self.unacked)} requests never acknowledged after healing: {self.unacked[:5]}"
                                  if self.unacked else "ok")
        byz = {i: _name_of(v) for i, v in self.byzantine.items()}
        return f"seed {self.seed} ({self.mode}, n={self.n}, byzantine={byz}): {what}\n  replay: {self.replay}"


def _name_of(x) -> str:
    return x if isinstance(x, str) else getattr(x, "__qualname__", type(x).__qualname__)


def make_signers(seed: int, count: int, prefix: str, real: bool) -> list:
    if real:
        return [keymod.Ed25519Signer(random.Random(f"{prefix}-{seed}-{i}").randbytes(32)) for i in range(count)]
    return [HashSigner(f"{prefix}-{seed}-{i}".encode()) for i in range(count)]


def new_verifier(real: bool, signers: list):
    return Ed25519Verifier() if real else HashVerifier(signers)


def pbft_config(n: int, f: int, **overrides) -> PbftConfig:
    """The simulator's settings (small batches, log and timeouts so every path runs), with overrides."""
    kw = dict(SIM_CONFIG)
    kw.update(overrides)
    return PbftConfig(n=n, f=f, **kw)


def pbft_factory(n: int, f: int, replica_signers: list, client_signers: list, real: bool,
                 byzantine: dict[int, str | Callable], rng: random.Random, core_cls=PbftCore,
                 **cfg_overrides) -> Callable:
    """make_core for the Simulation. ``byzantine`` maps a replica id to a strategy name of
    ``bft.adversary`` or to a callable (core, signer, rng) -> wrapper."""
    cfg = pbft_config(n, f, **cfg_overrides)
    rpk = [s.public_key for s in replica_signers]
    cpk = [s.public_key for s in client_signers]

    def make(i: int, chain, votes, now):
        keys = Keys(rpk, cpk, new_verifier(real, replica_signers + client_signers))
        core = core_cls(cfg, i, replica_signers[i], keys, chain, votes, now)
        if i in byzantine:
            how = byzantine[i]
            if callable(how):           # a custom wrapper (a test's colluding adversary): how(core, signer, rng)
                return how(core, replica_signers[i], random.Random(rng.random()))
            return Byzantine(core, how, replica_signers[i], random.Random(rng.random()))
        return core

    return make


def build_pbft(seed: int, n: int = 4, *, byzantine: dict[int, str] | None = None, twins: tuple[int, ...] = (),
               clients: int = 2, real_crypto: bool = False, core_cls=PbftCore, net: NetworkModel | None = None,
               config: dict | None = None, client_timeout: float = 0.3, trace: bool = False,
               rng: random.Random | None = None) -> Simulation:
    """A simulated pbft cluster, ready to run: real cores (``core_cls``), Byzantine wrappers for
    ``byzantine`` ({replica id: strategy}), a twin node for each id in ``twins``. Faulty ids
    are excluded from the checker's honest set; a 'slow' replica's sends are delayed by
    ``bft.adversary.slow_delay``. ``sim.cfg`` is the cores' PbftConfig."""
    f = (n - 1) // 3
    byzantine = dict(byzantine or {})
    rng = rng or random.Random(f"pbft-build-{seed}")
    rs = make_signers(seed, n, "replica", real_crypto)
    cs = make_signers(seed, clients, "client", real_crypto)
    config = dict(config or {})
    sim = Simulation(seed=seed, n=n, f=f, mode="pbft",
                     make_core=pbft_factory(n, f, rs, cs, real_crypto, byzantine, rng, core_cls, **config),
                     client_signers=cs, net=net or NetworkModel(), client_timeout=client_timeout, trace=trace,
                     twins=tuple(twins))
    sim.cfg = pbft_config(n, f, **config)
    sim.replica_signers, sim.client_signers = rs, cs
    for i, strategy in byzantine.items():
        sim.replicas[i].honest = False
        if strategy == "slow":
            sim.replicas[i].send_delay = slow_delay(sim.cfg)
    return sim


def run_pbft(seed: int, n: int = 4, *, byzantine: dict[int, str] | None = None, faults: bool = True,
             requests: int = 24, clients: int = 2, real_crypto: bool | None = None, core_cls=PbftCore,
             trace: bool = False, faulty_primary: bool = False, config: dict | None = None) -> RunResult:
    """One seeded run: up to f Byzantine replicas (backups only, or with ``faulty_primary``
    the view-0 primary plus up to f-1 backups), a lossy network with a partition and a crash
    (``faults``), heal at HEAL_AT, then every request must be acknowledged within
    LIVENESS_BOUND. Every 10th seed uses real Ed25519 unless ``real_crypto`` says otherwise."""
    f = (n - 1) // 3
    rng = random.Random(f"pbft-scenario-{seed}" + ("-primary" if faulty_primary else ""))
    real = (seed % 10 == 0) if real_crypto is None else real_crypto
    chosen = byzantine is None
    if byzantine is None:
        if faulty_primary:
            ids = [0] + rng.sample(range(1, n), rng.randint(0, f - 1))
            byzantine = {i: rng.choice(PRIMARY_STRATEGIES if i == 0 else BACKUP_STRATEGIES) for i in sorted(ids)}
        else:
            ids = rng.sample(range(1, n), rng.randint(0, f))
            byzantine = {i: rng.choice(BACKUP_STRATEGIES) for i in sorted(ids)}
    net = NetworkModel()
    if faults:
        net.delay_max = rng.choice([0.002, 0.005, 0.02])
        net.drop = rng.choice([0.0, 0.01, 0.05])
        net.duplicate = rng.choice([0.0, 0.05])
    sim = build_pbft(seed, n, byzantine=byzantine, clients=clients, real_crypto=real, core_cls=core_cls, net=net,
                     config=config, trace=trace, rng=rng)
    honest = [i for i in range(n) if i not in byzantine]
    client_addrs = {CLIENT + c for c in range(clients)}
    if faults:
        if rng.random() < 0.5:
            victim = rng.choice(honest)
            t0 = rng.uniform(0.1, 1.2)
            # the clients stay with the majority; the victim hears nobody
            sim.at(t0, lambda: sim.partition([{victim}, (set(range(n)) - {victim}) | client_addrs]))
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
    named = all(isinstance(v, str) for v in byzantine.values())
    if (named and core_cls is PbftCore and requests == 24 and clients == 2 and real_crypto is None and not config
            and (chosen or not faulty_primary)):
        replay = (f"python -m bft.sim --mode pbft --n {n} --seed {seed}" + ("" if faults else " --no-faults")
                  + (" --faulty-primary" if faulty_primary else "")
                  + ("" if chosen else "".join(f" --byzantine {i}={s}" for i, s in sorted(byzantine.items()))))
    else:
        given = dict(byzantine=None if chosen else byzantine, faults=faults, requests=requests, clients=clients,
                     real_crypto=real_crypto, faulty_primary=faulty_primary, config=config)
        defaults = dict(byzantine=None, faults=True, requests=24, clients=2, real_crypto=None,
                        faulty_primary=False, config=None)
        custom = not chosen and any(callable(v) for v in byzantine.values())
        if custom:
            given["byzantine"] = {i: _name_of(v) for i, v in byzantine.items()}
        args = [repr(seed), repr(n)] + [f"{k}={v!r}" for k, v in given.items() if v != defaults[k]]
        replay = (f"python -c \"from bft.sim.scenario import run_pbft; print(run_pbft({', '.join(args)}"
                  + ("" if core_cls is PbftCore else f", core_cls=<{core_cls.__module__}.{core_cls.__qualname__}>")
                  + ").describe())\"" + (" (with the test's adversary objects)" if custom else ""))
    return _result(sim, seed, "pbft", n, byzantine, replay)


def _result(sim: Simulation, seed: int, mode: str, n: int, byzantine: dict, replay: str) -> RunResult:
    return RunResult(seed, mode, n, sim.checker.violation, sim.checker.unacked() if sim.checker.violation is None else [],
                     byzantine, sim.delivered, dict(sim.sent),
                     max((len(r.blocks) for r in sim.replicas if r.honest), default=0), sim.checker.latencies, replay,
                     sim.trace or [])
