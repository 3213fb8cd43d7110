"""Twins for pbft (Bano et al., "Twins: BFT Systems Made Robust", OPODIS 2021).

A faulty replica is modelled by running two copies of the unmodified core with the same
id and the same key: a replica and its twin. Each copy behaves correctly on its own, but
the pair equivocates whenever the two see different inputs, which is the behaviour that
breaks unsafe protocols (two PRE-PREPAREs, PREPAREs or VIEW-CHANGEs under one key).

A scenario is a short list of rounds. For each round the sampler draws
  - a partition of the five nodes (replicas 0..3 and the twin) into one to three groups:
    messages cross only inside a group; and
  - a leader node: that round's client requests reach only the leader's group, so the
    leader (a primary or its twin) proposes what the rest of the cluster never saw.
PBFT fixes the primary of view v to replica v mod n, so the sampler cannot pick the
primary of a round directly; it picks which node the round's load enters at, and
whether the twinned id is the primary of view 0 (half the scenarios) or of a later
view reached by view changes. After the last round the network heals and the cluster
runs a little longer. The invariant checker (honest nodes only; both copies of the
twinned id are faulty) runs after every delivery.

``run_twins(seed)`` runs one sampled scenario; a failure replays with
``python -m bft.sim --twins --seed SEED``.
"""
from __future__ import annotations
import random
from dataclasses import dataclass, fields

from bft.pbft.core import PbftCore
from bft.pbft.rules import PbftRule
from bft.sim.scenario import RunResult, _result, build_pbft
from bft.sim.world import CLIENT, NetworkModel

N = 4
NODES = N + 1                   # replicas 0..3 and the twin at address 4
ROUNDS = (2, 8)                 # rounds per scenario
ROUND_TIME = (0.05, 0.3)        # virtual seconds per round
SETTLE = 1.0                    # after the rounds, the healed network runs this long
TWINS_CONFIG = dict(request_timeout=0.1, retransmit_interval=0.05, transfer_timeout=0.1, checkpoint_interval=4,
                    log_size=8, batch_size=4)


@dataclass
class TwinsResult(RunResult):
    scenario: str = ""
    conflicts: int = 0          # conflicting PRE-PREPAREs the honest replicas refused: the twins equivocated

    def describe(self) -> str:
        return super().describe() + f"\n  scenario: {self.scenario}"


@dataclass
class Round:
    duration: float
    groups: list[list[int]]     # node addresses; every node is in exactly one group
    leader: int                 # node address whose group receives the round's requests
    requests: int


@dataclass
class TwinsScenario:
    twin_of: int
    rounds: list[Round]

    def describe(self) -> str:
        rs = "; ".join(f"{r.duration:.2f}s {r.groups} leader {r.leader} +{r.requests}" for r in self.rounds)
        return f"twin of replica {self.twin_of} (node {N}); rounds: {rs}"


def sample(seed: int) -> TwinsScenario:
    rng = random.Random(f"pbft-twins-{seed}")
    twin_of = 0 if rng.random() < 0.5 else rng.randrange(1, N)
    rounds = []
    for _ in range(rng.randint(*ROUNDS)):
        k = rng.choice([1, 2, 2, 2, 3])
        labels = [rng.randrange(k) for _ in range(NODES)]
        groups = sorted([a for a in range(NODES) if labels[a] == g] for g in range(k))
        groups = [g for g in groups if g]
        rounds.append(Round(round(rng.uniform(*ROUND_TIME), 3), groups, rng.randrange(NODES), rng.randint(0, 3)))
    return TwinsScenario(twin_of, rounds)


def run_twins(seed: int, *, core_cls=PbftCore, trace: bool = False, scenario: TwinsScenario | None = None
              ) -> TwinsResult:
    sc = scenario or sample(seed)
    rng = random.Random(f"pbft-twins-run-{seed}")
    net = NetworkModel(delay_min=0.0005, delay_max=0.003)
    sim = build_pbft(seed, N, twins=(sc.twin_of,), clients=2, core_cls=core_cls, net=net, config=TWINS_CONFIG,
                     client_timeout=10.0, trace=trace, rng=rng)
    clients = [CLIENT + c.id for c in sim.clients]
    t = 0.0
    j = 0
    for rd in sc.rounds:
        def start(rd=rd, j=j) -> None:
            groups = [set(g) for g in rd.groups]
            lead = next(g for g in groups if rd.leader in g)
            lead |= set(clients)
            sim.partition(groups)
            sim.client_targets = sorted(a for a in lead if a < CLIENT)
            for k in range(rd.requests):
                sim.submit((j + k) % 2, f"k{(j + k) % 3}", b"v%d" % (j + k))
        sim.at(t, start)
        t += rd.duration
        j += rd.requests

    def heal() -> None:
        sim.partition(None)
        sim.client_targets = None
    sim.at(t, heal)
    sim.run_until(t + SETTLE)
    base = _result(sim, seed, "pbft-twins", N, {sc.twin_of: "twin"}, f"python -m bft.sim --twins --seed {seed}")
    base.unacked = []               # Twins checks safety; liveness is the seeded runs' business
    conflicts = sum(r.core.dropped[PbftRule.CONFLICTING_PRE_PREPARE]
                    for r in sim.replicas if r.honest)
    return TwinsResult(**{f.name: getattr(base, f.name) for f in fields(base)}, scenario=sc.describe(),
                       conflicts=conflicts)
