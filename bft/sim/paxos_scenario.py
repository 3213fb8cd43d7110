"""Seeded Multi-Paxos scenarios: one integer decides the faults, the load and every delay.

``run_paxos(seed)`` builds a cluster of real paxos cores on a lossy, duplicating,
reordering network, injects crash faults (the leader crashes and restarts, the leader
is partitioned away, partial connectivity where every replica sees a majority but no two
see the same one, every replica crashes and restarts), heals everything at a fixed time,
then requires every submitted request to be acknowledged within a bound. The invariant
checker watches every append and every acknowledgement throughout.

``run_duel(seed)`` makes two or more replicas campaign at the same instant against a
working leader and measures how the election settles (``backoff=False`` shows the
livelock of naive proposers). ``run_ops(mode, ops)`` runs one operation sequence,
one at a time, against either mode and returns what the client saw.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from bft.outputs import AppendBlock
from bft.paxos.config import PaxosConfig
from bft.paxos.core import PaxosCore
from ledger import quorum
from bft.pbft.certs import Keys
from bft.sim.scenario import RunResult, make_signers, new_verifier, pbft_factory
from bft.sim.world import CLIENT, NetworkModel, Simulation
from crypto.merkle import MerkleTree
from ledger import tx as txmod
from ledger.block import link_error
from ledger.certificate import certificate_error

HEAL_AT = 3.0
MIN_EVENTS, MAX_EVENTS = 3, 12    # fault events per seeded run, before HEAL_AT
LIVENESS_BOUND = 12.0       # virtual seconds after healing within which every request must commit
FAULT_KINDS = ["leader-crash", "leader-crash-mid-step", "follower-crash", "follower-crash-mid-step", "all-crash",
               "leader-partition", "follower-partition", "partial-connectivity"]


@dataclass
class PaxosRunResult(RunResult):
    faults: list[str] = field(default_factory=list)
    elections: int = 0            # phase-1 attempts started, over every core incarnation
    leaderships: int = 0          # phase-1 attempts that won a majority of promises
    stats: dict = field(default_factory=dict)
    trace: list[str] = field(default_factory=list)       # every delivered message, with trace=True

    def describe(self) -> str:
        what = self.violation or (f"{len(self.unacked)} requests never acknowledged after healing: {self.unacked[:5]}"
                                  if self.unacked else "ok")
        return (f"seed {self.seed} ({self.mode}, n={self.n}, faults={self.faults}, elections={self.elections}, "
                f"leaderships={self.leaderships}): {what}\n  replay: {self.replay}")


def paxos_config(n: int, f: int, **overrides) -> PaxosConfig:
    """The simulator's settings: small batches and checkpoints so that every path is exercised."""
    kw = dict(batch_size=16, pipeline=4, heartbeat_interval=0.05, election_timeout=(0.3, 0.6),
              retransmit_interval=0.1, transfer_timeout=0.2, transfer_chunk=16, checkpoint_interval=8)
    kw.update(overrides)
    return PaxosConfig(n=n, f=f, **kw)


def paxos_factory(seed: int, cfg: PaxosConfig, replica_signers: list, client_signers: list, real: bool,
                  cores: list | None = None, core_cls=PaxosCore) -> Callable:
    """make_core for the Simulation; every incarnation gets its own rng derived from the seed."""
    rpk = [s.public_key for s in replica_signers]
    cpk = [s.public_key for s in client_signers]
    incarnation: Counter[int] = Counter()

    def make(i: int, chain, votes, now):
        keys = Keys(rpk, cpk, new_verifier(real, replica_signers + client_signers))
        rng = random.Random(f"paxos-core-{seed}-{i}-{incarnation[i]}")
        incarnation[i] += 1
        core = core_cls(cfg, i, replica_signers[i], keys, chain, votes, now, rng)
        if cores is not None:
            cores.append(core)
        return core

    return make


def partial_connectivity(n: int, order: list[int]) -> set[frozenset[int]]:
    """Links to cut so that every replica sees a majority (itself included) and no two the same one.

    n = 3: cut the link order[0]-order[1] (each of them sees the third, which sees all).
    n >= 5: a ring in ``order`` where each replica keeps its ceil(f/2) nearest neighbours
    on either side.
    """
    if n < 3:
        return set()
    if n == 3:
        return {frozenset((order[0], order[1]))}
    reach = (quorum.paxos_f(n) + 1) // 2
    keep = set()
    for k in range(n):
        for d in range(1, reach + 1):
            keep.add(frozenset((order[k], order[(k + d) % n])))
    return {frozenset((a, b)) for a in range(n) for b in range(a + 1, n)} - keep


def _current_leader(sim: Simulation) -> int:
    """The live replica that leads the highest ballot, else the owner of the highest ballot known."""
    leading = [r for r in sim.replicas if r.alive and r.core.is_primary]
    if leading:
        return max(leading, key=lambda r: r.core.ballot).id
    best = max(sim.replicas, key=lambda r: (r.core.ballot, -r.id))
    return best.core.leader


def _build(seed: int, n: int, clients: int, real: bool, net: NetworkModel, trace: bool,
           **cfg_overrides) -> tuple[Simulation, list]:
    f = (n - 1) // 2
    rs = make_signers(seed, n, "replica", real)
    cs = make_signers(seed, clients, "client", real)
    cores: list = []
    cfg = paxos_config(n, f, **cfg_overrides)
    sim = Simulation(seed=seed, n=n, f=f, mode="paxos", make_core=paxos_factory(seed, cfg, rs, cs, real, cores),
                     client_signers=cs, net=net, client_timeout=0.3, trace=trace)
    return sim, cores


def run_paxos(seed: int, n: int = 3, *, faults: bool = True, requests: int = 24, clients: int = 2,
              backoff: bool = True, real_crypto: bool | None = None, trace: bool = False,
              plan: list[tuple[str, float, float]] | None = None, **cfg_overrides) -> PaxosRunResult:
    """One seeded run. The seed draws 3-12 fault events (kind, start, duration) from FAULT_KINDS
    before HEAL_AT, plus loss, duplication and a delay range (reordering); ``plan`` overrides
    the events. At HEAL_AT everything heals and every request must commit within the bound."""
    rng = random.Random(f"paxos-scenario-{seed}-{n}")
    real = (seed % 10 == 0) if real_crypto is None else real_crypto
    net = NetworkModel()
    events: list[tuple[str, float, float]] = []
    if faults:
        net.delay_max = rng.choice([0.002, 0.005, 0.02])
        net.drop = rng.choice([0.0, 0.01, 0.05, 0.2])
        net.duplicate = rng.choice([0.0, 0.05])
        events = plan if plan is not None else sorted(
            (rng.choice(FAULT_KINDS), round(rng.uniform(0.1, HEAL_AT - 0.3), 3), round(rng.uniform(0.05, 0.8), 3))
            for _ in range(rng.randint(MIN_EVENTS, MAX_EVENTS)))
    sim, cores = _build(seed, n, clients, real, net, trace, backoff=backoff, **cfg_overrides)
    for kind, t0, duration in events:
        _schedule(sim, n, kind, t0, min(t0 + duration, HEAL_AT), random.Random(f"{seed}-{kind}-{t0}"))

    def heal() -> None:
        _note(sim, "heal: no more faults, loss or duplication")
        sim.partition(None)
        net.cut = set()
        net.drop = 0.0
        net.duplicate = 0.0
        for r in sim.replicas:
            if isinstance(r.core, _CrashMidStep):
                r.core = r.core._core
            if not r.alive:
                sim.restart(r.id)
    sim.at(HEAL_AT, heal)
    for j in range(requests):
        c = rng.randrange(clients)
        sim.at(rng.uniform(0.0, HEAL_AT), lambda c=c, j=j: sim.submit(c, f"k{j % 7}", b"v%d" % j))
    sim.run_until(HEAL_AT)
    if sim.checker.violation is None:
        sim.run_until(HEAL_AT + LIVENESS_BOUND, stop=sim.all_acked)
    return _result(sim, cores, seed, n, [f"{k}@{t0:g}+{d:g}" for k, t0, d in events],
                   f"python -m bft.sim --mode paxos --n {n} --seed {seed}" + ("" if faults else " --no-faults"))


def _note(sim: Simulation, text: str) -> None:
    if sim.trace is not None:
        sim.trace.append(f"{sim.now:.4f} *** {text}")


def _schedule(sim: Simulation, n: int, kind: str, t0: float, t1: float, rng: random.Random) -> None:
    """One fault event from t0 to t1; whom it hits is decided when it starts (who leads then)."""
    pick = rng.random()

    def follower() -> int:
        lead = _current_leader(sim)
        others = [i for i in range(n) if i != lead] or [lead]
        return others[int(pick * len(others))]

    def restart(i: int) -> None:
        node = sim.replicas[i]
        if isinstance(node.core, _CrashMidStep):
            node.core = node.core._core            # the event ends before the armed crash happened
        if not node.alive:
            _note(sim, f"r{i} restarts from its ledger and vote log")
            sim.restart(i)

    if kind in ("leader-crash", "follower-crash"):
        victim: list[int] = []

        def crash() -> None:
            victim.append(_current_leader(sim) if kind == "leader-crash" else follower())
            _note(sim, f"{kind}: r{victim[0]} crashes")
            sim.crash(victim[0])
        sim.at(t0, crash)
        sim.at(t1, lambda: restart(victim[0]))
    elif kind in ("leader-crash-mid-step", "follower-crash-mid-step"):
        victim = []

        def arm() -> None:
            i = _current_leader(sim) if kind == "leader-crash-mid-step" else follower()
            victim.append(i)
            r = sim.replicas[i]
            if r.alive:
                _note(sim, f"{kind}: r{i} will crash part-way through its next step")
                r.core = _CrashMidStep(r.core, r, rng.random())
        sim.at(t0, arm)
        sim.at(t1, lambda: restart(victim[0]))
    elif kind == "all-crash":
        for i in range(n):
            sim.at(t0 + rng.uniform(0.0, 0.02), lambda i=i: (_note(sim, f"all-crash: r{i} crashes"), sim.crash(i)))
            sim.at(t0 + rng.uniform(0.05, max(0.06, t1 - t0)), lambda i=i: restart(i))
    elif kind in ("leader-partition", "follower-partition"):
        def cut() -> None:
            v = _current_leader(sim) if kind == "leader-partition" else follower()
            clients = {CLIENT + c.id for c in sim.clients}          # the clients stay with the majority
            _note(sim, f"{kind}: r{v} is cut off")
            sim.partition([{v}, (set(range(n)) - {v}) | clients])
        sim.at(t0, cut)
        sim.at(t1, lambda: (_note(sim, "partition heals"), sim.partition(None)))
    elif kind == "partial-connectivity":
        def cut() -> None:
            lead = _current_leader(sim)
            rest = [i for i in range(n) if i != lead]
            rng.shuffle(rest)
            sim.net.cut = partial_connectivity(n, [lead] + rest)      # the leader loses a link
            _note(sim, "partial connectivity: cut " + ", ".join(f"r{a}-r{b}" for a, b in sorted(
                tuple(sorted(c)) for c in sim.net.cut)))
        sim.at(t0, cut)
        sim.at(t1, lambda: (_note(sim, "all links restored"), setattr(sim.net, "cut", set())))
    else:
        raise ValueError(f"unknown fault kind {kind!r}")


class _CrashMidStep:
    """Wraps a core until its next multi-action ``ready()``: the replica dies part-way through
    carrying it out (right after its first block append when there is one, else at a
    random cut), so the actions after the cut never happen. Persist-before-send is what
    keeps this safe."""

    def __init__(self, core, node, where: float) -> None:
        self._core = core
        self._node = node
        self._where = where

    def __getattr__(self, name):
        return getattr(self._core, name)

    def ready(self):
        out = self._core.ready()
        if len(out) < 2 or not self._node.alive:
            return out
        appends = [k for k, a in enumerate(out) if isinstance(a, AppendBlock)]
        cut = appends[0] + 1 if appends and appends[0] + 1 < len(out) else 1 + int(self._where * (len(out) - 1))
        self._node.alive = False
        self._node.core = self._core
        return out[:cut]


def audit_ledgers(sim: Simulation) -> str | None:
    """Every replica's ledger as an offline auditor would check it: links, roots, tree heads, and
    each block's certificate (the signature of its ballot's leader over its slot and batch root)."""
    core0 = sim.replicas[0].core
    keys = core0.keys
    for r in sim.replicas:
        prev, tree = None, MerkleTree()
        for b in r.blocks:
            why = link_error(b, prev, tree) or certificate_error("paxos", sim.f, keys.replicas, b.view, b.sequence,
                                                                  b.batch_root, b.cert, keys.verifier)
            if why:
                return f"replica {r.id} block {b.height} fails the audit: {why}"
            prev = b
    return None


def _result(sim: Simulation, cores: list, seed: int, n: int, faults: list[str], replay: str) -> PaxosRunResult:
    stats: Counter = Counter()
    for c in cores:
        stats.update(c.stats)
    violation = sim.checker.violation or audit_ledgers(sim)
    return PaxosRunResult(seed, "paxos", n, violation,
                          sim.checker.unacked() if violation is None else [], {}, sim.delivered,
                          dict(sim.sent), max(len(r.blocks) for r in sim.replicas), sim.checker.latencies, replay,
                          faults=faults, elections=stats["elections"], leaderships=stats["won"], stats=dict(stats),
                          trace=list(sim.trace or []))


# ---------------------------------------------------------------------------- duelling proposers
@dataclass
class DuelResult:
    seed: int
    backoff: bool
    elections: int                 # phase-1 attempts started after the duel began
    leaderships: int               # of those, the ones that won a majority
    settled_at: float | None       # first time after which one leader kept its ballot to the end
    commits_window: int            # blocks appended in the observation window (max over replicas)
    violation: str | None
    replay: str = ""


def run_duel(seed: int, n: int = 3, *, backoff: bool = True, contenders: int = 2, start: float = 0.5,
             window: tuple[float, float] = (1.5, 3.5), load_every: float = 0.02, drop: float = 0.0) -> DuelResult:
    """``contenders`` followers campaign at the same instant against a working leader, on a
    network that loses ``drop`` of all messages (so candidacies also time out and retry)."""
    rng = random.Random(f"paxos-duel-{seed}-{n}")
    net = NetworkModel(delay_min=0.0005, delay_max=rng.choice([0.002, 0.005]), drop=drop)
    sim, cores = _build(seed, n, 1, False, net, False, backoff=backoff)
    end = window[1]
    t = 0.01
    j = 0
    while t < end:
        sim.at(t, lambda j=j: sim.submit(0, f"k{j % 5}", b"v%d" % j))
        t += load_every
        j += 1
    before: dict[str, int] = {}

    def duel() -> None:
        before.update(elections=sum(c.stats["elections"] for c in cores), won=sum(c.stats["won"] for c in cores))
        lead = _current_leader(sim)
        who = [i for i in range(n) if i != lead][:contenders]
        for i in who:
            sim.replicas[i].core.campaign()
        for i in who:
            sim._carry_out(sim.replicas[i])
    sim.at(start, duel)
    heights: dict[float, int] = {}
    leaders: list[tuple[float, int, int]] = []

    def sample(at: float) -> None:
        heights[at] = max(len(r.blocks) for r in sim.replicas)
        lead = [(r.core.ballot, r.id) for r in sim.replicas if r.alive and r.core.is_primary]
        leaders.append((at, *(max(lead) if lead else (-1, -1))))
    for at in (window[0], window[1]):
        sim.at(at, lambda at=at: sample(at))
    k = start
    while k < end:
        sim.at(k, lambda k=k: sample(k))
        k += 0.05
    sim.run_until(end + 1e-9)
    elections = sum(c.stats["elections"] for c in cores) - before.get("elections", 0)
    won = sum(c.stats["won"] for c in cores) - before.get("won", 0)
    settled = None
    last = leaders[-1] if leaders else None
    if last is not None and last[1] >= 0:
        settled = last[0]
        for at, ballot, _ in reversed(leaders):
            if ballot != last[1]:
                break
            settled = at
    commits = heights.get(window[1], 0) - heights.get(window[0], 0)
    return DuelResult(seed, backoff, elections, won, settled, commits, sim.checker.violation,
                      f"bft.sim.paxos_scenario.run_duel({seed}, n={n}, backoff={backoff}, contenders={contenders}, "
                      f"drop={drop})")


# ---------------------------------------------------------------------------- one workload, both modes
def run_ops(mode: str, ops: list[bytes], seed: int = 0, *, n: int | None = None) -> list[bytes]:
    """Run ``ops`` one after another (each waits for the previous acknowledgement) on a clean
    network in ``mode``; returns the result bytes the client accepted, in order."""
    proto = quorum.protocol(mode)
    rs_n = n or proto.n(1)
    f = proto.f(rs_n)
    cs = make_signers(seed, 1, "client", False)
    rs = make_signers(seed, rs_n, "replica", False)
    if proto.byzantine:
        make = pbft_factory(rs_n, f, rs, cs, False, {}, random.Random(seed))
    else:
        make = paxos_factory(seed, paxos_config(rs_n, f), rs, cs, False)
    sim = Simulation(seed=seed, n=rs_n, f=f, mode=mode, make_core=make, client_signers=cs,
                     net=NetworkModel(), client_timeout=0.3)
    results: list[bytes] = []
    for op in ops:
        ts = sim.submit_op(0, op)
        sim.run_until(sim.now + 10.0, stop=sim.all_acked)
        if sim.checker.violation or not sim.all_acked():
            raise AssertionError(f"{mode}: operation {len(results)} not acknowledged: {sim.checker.violation}")
        results.append(next(res for h in sorted(sim.checker.acked) for (_i, tx, res) in sim.checker.acked[h]
                            if _ts_of(tx) == ts))
    return results


def _ts_of(raw: bytes) -> int:
    t = txmod.parse(raw)
    return -1 if t is None else t.timestamp
