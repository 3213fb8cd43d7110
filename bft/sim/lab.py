"""One lab run: a cluster in the simulator under one named attack, and what it shows.

A student names an attack, a mode and a seed; the lab runs the real cores on a clean
simulated network with a steady load from two honest clients, the attack in place, and
reports what a course asks about: what the honest replicas dropped, by rule and by sender
(the attacker's messages apart from the ordinary late or repeated ones); whether safety
held (the invariant checker: honest replicas never disagree, no client accepts a result
that was not executed); whether liveness held (every request acknowledged); and the
command that replays the very same run.

Attacks come in three kinds: a Byzantine replica strategy (``bft.adversary``), a hostile
client (client 2, with its own key), and the network. Which attack applies to which mode
is explicit (``applies``): one that does nothing in a mode is refused, never silently
labelled, so that nobody concludes that Paxos tolerated an attack it never saw.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from bft.adversary import PAXOS_STRATEGIES, RUNTIME_STRATEGIES, STRATEGIES, Byzantine
from bft.collusion import Collusion
from bft.paxos.core import PaxosCore
from bft.pbft.core import PbftCore
from bft.sim.paxos_scenario import paxos_config, paxos_factory
from bft.sim.scenario import build_pbft, make_signers
from bft.sim.trace import TraceRecorder
from bft.sim.world import CLIENT, Simulation
from bft.switches import SWITCHES
from bft.unsafe import PAXOS_CORES, PBFT_CORES
from bft.wire import Checkpoint, Commit, Prepare, Request
from ledger import quorum
from ledger.rules import Rule
from ledger.state import op_put

RUNTIME_ONLY = RUNTIME_STRATEGIES             # they act in a replica process, not in its core
PBFT_STRATEGIES = tuple(s for s in STRATEGIES if s not in RUNTIME_ONLY)
AS_LEADER = ("equivocate", "equivocate-all", "censor", "forge-request", "empty-batches", "replay-executed", "slow",
             "collude", "byzantine-ledger", "lying-reads")
# in paxos, corrupt acts as the leader: a corrupt follower's ACCEPTEDs carry no signature to check
PAXOS_AS_LEADER = ("corrupt",)
# the war story "byzantine-ledger": the leader tells the replicas different ledgers (it equivocates)
STORIES = {"byzantine-ledger": "equivocate"}
IN_VIEW_CHANGE = ("forge-vc", "padded-vc", "false-checkpoint")   # they act only while replicas change views
AS_NEXT_PRIMARY = ("forge-new-view",)          # replica 1, the primary of view 1
CUT_PRIMARY = (0.8, 2.0)                       # the network fault that causes that view change
HOSTILE = 2                                    # the hostile client's id (clients 0 and 1 are honest)
RUN_FOR = 3.0                                  # virtual seconds of load
SETTLE = 12.0                                  # then this long for every request to be acknowledged
QUOTA = 8                                      # requests a client may have held (the client-flood lab)


class LabError(ValueError):
    """A lab that cannot run as asked (one line for the user)."""


def _cut_primary(sim: Simulation, n: int, rng: random.Random, notes: list[str]) -> None:
    others = set(range(1, n)) | {CLIENT + c for c in range(3)}
    sim.at(CUT_PRIMARY[0], lambda: sim.partition([{0}, others]))
    sim.at(CUT_PRIMARY[1], lambda: sim.partition(None))
    notes.append(f"the network cuts replica 0 (the first primary or leader) off from t={CUT_PRIMARY[0]} "
                 f"to t={CUT_PRIMARY[1]}")


def _split_brain(sim: Simulation, n: int, rng: random.Random, notes: list[str]) -> None:
    half = set(range(n // 2))
    side_a = half | {CLIENT}
    side_b = (set(range(n)) - half) | {CLIENT + 1, CLIENT + 2}
    sim.at(0.5, lambda: sim.partition([side_a, side_b]))
    sim.at(2.5, lambda: sim.partition(None))
    notes.append(f"the network splits replicas {sorted(half)} with client 0 from the others with client 1, "
                 "from t=0.5 to t=2.5")


def _lost_commits(sim: Simulation, n: int, rng: random.Random, notes: list[str]) -> None:
    late = set(range(2, n))
    sim.drop_if = lambda src, dst, m: type(m) in (Commit, Checkpoint) and dst in late and 0.5 <= sim.now < 0.9
    others = set(range(1, n)) | {CLIENT + c for c in range(3)}
    sim.at(0.9, lambda: sim.partition([{0}, others]))
    sim.at(2.0, lambda: sim.partition(None))
    notes.append(f"from t=0.5 to t=0.9 the COMMITs to replicas {sorted(late)} are lost (replica 1 commits, they "
                 "only prepare); at t=0.9 the network cuts the primary off until t=2: a view change")


def _lost_commits_new_primary(sim: Simulation, n: int, rng: random.Random, notes: list[str]) -> None:
    _lost_commits(sim, n, rng, notes)
    notes[-1] = notes[-1].replace("replica 1 commits", "replicas 0 and 1 commit") + \
        ", whose primary is the attacker"


LAG = (0.3, 1.8)                               # replica 2 is cut off, then catches up by state transfer


def _cut_backup(sim: Simulation, n: int, rng: random.Random, notes: list[str]) -> None:
    others = (set(range(n)) - {2}) | {CLIENT + c for c in range(3)}
    sim.at(LAG[0], lambda: sim.partition([{2}, others]))
    sim.at(LAG[1], lambda: sim.partition(None))
    notes.append(f"the network cuts replica 2 off from t={LAG[0]} to t={LAG[1]}: it falls behind, then "
                 "fetches the blocks it missed from its peers in turn, a few per request (state transfer)")


DUEL_AT, DUEL_WINDOW = 0.5, (1.0, 3.0)


def _duel(sim: Simulation, n: int, rng: random.Random, notes: list[str]) -> None:
    def campaign() -> None:
        lead = max((r for r in sim.replicas if r.core.is_primary), key=lambda r: r.core.ballot, default=None)
        for r in sim.replicas:
            if r is not lead:
                r.core.campaign()
                sim._carry_out(r)
    sim.at(DUEL_AT, campaign)
    notes.append(f"at t={DUEL_AT} every follower campaigns at once (duelling proposers); the lab counts the "
                 f"elections and the blocks committed from t={DUEL_WINDOW[0]} to t={DUEL_WINDOW[1]}")


def _bad_signatures(sim: Simulation, n: int, rng: random.Random, notes: list[str]) -> None:
    for k in range(40):
        req = Request(HOSTILE, 1000 + k, op_put("x", b"y"), rng.randbytes(64))
        sim.at(0.05 * k, lambda req=req: [sim.client_sends(HOSTILE, r, req) for r in range(n)])
    notes.append("client 2 sends 40 requests with made-up signatures to every replica")


def _impersonate(sim: Simulation, n: int, rng: random.Random, notes: list[str]) -> None:
    for k in range(10):
        req = Request(0, 5000 + k, op_put("stolen", b"%d" % k), rng.randbytes(64))
        sim.at(0.2 * k, lambda req=req: [sim.client_sends(HOSTILE, r, req) for r in range(n)])
    notes.append("client 2, on its own authenticated connection, sends requests that name client 0")


def _client_flood(sim: Simulation, n: int, rng: random.Random, notes: list[str]) -> None:
    signer = sim.clients[HOSTILE].signer
    reqs = [Request(HOSTILE, 100 + k, op_put(f"flood{k}", bytes(512))).signed(signer) for k in range(60)]
    for req in reqs:
        sim.checker.on_submit(HOSTILE, req.timestamp, req.encode(), 0.0)   # valid: it may execute
    sim.at(1.0, lambda: [sim.client_sends(HOSTILE, r, req) for req in reqs for r in range(n)])
    notes.append(f"client 2 sends 60 valid requests at once, at t=1 (its quota of held requests is {QUOTA})")


def _client_protocol(sim: Simulation, n: int, rng: random.Random, notes: list[str]) -> None:
    for k in range(10):
        msg = Prepare(0, 1 + k, rng.randbytes(32), 1, rng.randbytes(64))
        sim.at(0.1 * k, lambda msg=msg: [sim.client_sends(HOSTILE, r, msg) for r in range(n)])
    notes.append("client 2 sends PREPAREs in replica 1's name")


READS = 40                                     # reads not ordered in the labs that need them


def _reads(sim: Simulation, n: int, rng: random.Random, notes: list[str]) -> None:
    for k in range(READS):
        c = k % 2
        sim.at(rng.uniform(0.2, RUN_FOR), lambda c=c, k=k: sim.read(c, f"k{k % 7}"))
    notes.append(f"clients 0 and 1 also read {READS} times without ordering, on the keys they write")


@dataclass(frozen=True)
class Scenario:
    kind: str                                       # "replica", "client" or "network"
    modes: tuple[str, ...]
    arrange: Callable[[Simulation, int, random.Random, list[str]], None] | None = None
    config: dict = field(default_factory=dict)      # pbft core settings this lab needs


SCENARIOS: dict[str, Scenario] = {
    **{s: Scenario("replica", ("pbft", "paxos") if s in PAXOS_STRATEGIES else ("pbft",)) for s in PBFT_STRATEGIES},
    "collude": Scenario("replica", ("pbft",)),          # bft.collusion: K replicas split the honest ones
    "byzantine-ledger": Scenario("replica", ("pbft", "paxos")),
    "bad-signatures": Scenario("client", ("pbft", "paxos"), _bad_signatures),
    "impersonate-client": Scenario("client", ("pbft", "paxos"), _impersonate),
    "client-flood": Scenario("client", ("pbft", "paxos"), _client_flood, {"client_requests": QUOTA}),
    "client-sends-protocol": Scenario("client", ("pbft", "paxos"), _client_protocol),
    "partition-primary": Scenario("network", ("pbft", "paxos"), _cut_primary),
    "split-brain": Scenario("network", ("pbft", "paxos"), _split_brain),
    "lost-commits": Scenario("network", ("pbft",), _lost_commits),
    "great-livelock": Scenario("network", ("paxos",), _duel),
    # replica attacks that need the network's help to matter: a batch committed at some replicas
    # only, or a replica that must catch up
    "forge-new-view": Scenario("replica", ("pbft",), _lost_commits_new_primary),
    "forge-transfer": Scenario("replica", ("pbft",), _cut_backup, {"transfer_chunk": 4}),
    # a liar about reads needs reads to lie about
    "lying-reads": Scenario("replica", ("pbft", "paxos"), _reads),
}


def attackers(name: str, mode: str, n: int, count: int) -> list[int]:
    """Which replicas run a replica attack: the first primary or leader for the attacks that act
    as one, the next primary for those that act in its place, else the last ``count``."""
    if name in AS_LEADER or name in RUNTIME_STRATEGIES or (mode == "paxos" and name in PAXOS_AS_LEADER):
        first = 0
    elif name in AS_NEXT_PRIMARY:
        first = 1
    else:
        first = n - count
    return list(range(first, first + count))


def applies(name: str, mode: str) -> bool:
    s = SCENARIOS.get(name)
    return s is not None and mode in s.modes


@dataclass
class LabResult:
    scenario: str
    kind: str
    mode: str
    n: int
    f: int
    seed: int
    byzantine: list[int]
    violation: str | None
    unacked: int
    requests: int
    drops_by_rule: dict[str, int]
    drops_by_sender: dict[str, dict[str, int]]
    suspicions: dict[str, int]               # pbft: SUSPECTs by rule (bft.pbft.monitor.SuspicionRule)
    heights: dict[int, int]
    views: dict[int, int]
    replay: str
    notes: list[str] = field(default_factory=list)
    divergence: dict = field(default_factory=dict)   # the first height where honest ledgers differ
    unsafe: str | None = None                        # the rule switched off (bft.unsafe), if any
    stalled: bool = False                            # nothing committed in a scenario's watch window
    real: bool = False                               # real processes (bft.app.reallab), not the simulator

    @property
    def safety(self) -> str:
        return "violated" if self.violation else "held"

    @property
    def liveness(self) -> str:
        if self.violation and not self.real:
            return "not measured"            # the run stops at the first safety violation
        return "held" if self.unacked == 0 and not self.stalled else "violated"

    @property
    def attackers(self) -> list[str]:
        """How the drop counters name the attacker(s)."""
        return [f"r{i}" for i in self.byzantine] + ([f"c{HOSTILE}"] if self.kind == "client" else [])

    def attacker_drops(self) -> dict[str, int]:
        """Drops, by rule, of what the attacker sent."""
        out = {}
        for rule, by in self.drops_by_sender.items():
            k = sum(by.get(a, 0) for a in self.attackers)
            if k:
                out[rule] = k
        return out

    def as_json(self) -> dict:
        return {"scenario": self.scenario, "kind": self.kind, "mode": self.mode, "n": self.n, "f": self.f,
                "seed": self.seed, "byzantine": {str(i): self.scenario for i in self.byzantine},
                "safety": self.safety, "violation": self.violation,
                "liveness": self.liveness, "unacknowledged": self.unacked, "requests": self.requests,
                "drops_by_rule": self.drops_by_rule, "drops_by_sender": self.drops_by_sender,
                "attacker_drops": self.attacker_drops(), "suspicions_by_rule": self.suspicions,
                "heights": {str(i): h for i, h in self.heights.items()},
                "views": {str(i): v for i, v in self.views.items()}, "divergence": self.divergence,
                "unsafe_disable": self.unsafe, "real": self.real,
                "notes": self.notes, "replay": self.replay}


def run_lab(name: str, *, mode: str = "pbft", f: int = 1, count: int = 1, seed: int = 1,
            requests: int = 40, unsafe: str | None = None, recorder: TraceRecorder | None = None) -> LabResult:
    """Run attack ``name`` on a ``mode`` cluster tolerating ``f`` faults (``count`` Byzantine
    replicas for a replica strategy)."""
    proto = quorum.protocol(mode)
    scenario = SCENARIOS.get(name)
    if scenario is None:
        if name in RUNTIME_ONLY:
            raise LabError(f"{name!r} acts in a replica process, not in its core: run it on a real cluster "
                           f"(bftledger replica DIR --id 3 --byzantine {name})")
        raise LabError(f"unknown attack {name!r}; 'bftledger attacks' lists them")
    if mode not in scenario.modes:
        runs = [s for s, sc in SCENARIOS.items() if mode in sc.modes and sc.kind == scenario.kind]
        raise LabError(f"{name!r} does not apply to {mode}: it acts on messages {mode} does not have; "
                       f"{scenario.kind} attacks in {mode}: {', '.join(runs)}")
    core_cls = None
    if unsafe is not None:
        switch = SWITCHES.get(unsafe)
        if switch is None:
            raise LabError(f"unknown rule switch {unsafe!r}; one of: {', '.join(SWITCHES)}")
        if switch.mode != mode:
            raise LabError(f"the switch {unsafe!r} is a {switch.mode} rule; add --mode {switch.mode}")
        core_cls = (PBFT_CORES if proto.byzantine else PAXOS_CORES).get(unsafe)     # None: only settings
    n = proto.n(f)
    if not 1 <= count < n:
        raise LabError(f"--byzantine-count must be between 1 and {n - 1} for n={n}")
    faulty = attackers(name, mode, n, count) if scenario.kind == "replica" else []
    rng = random.Random(f"lab-{mode}-{name}-{seed}")
    if name == "collude":
        team = Collusion(n, faulty)
        byzantine = {i: team.member for i in faulty}
    else:
        byzantine = {i: STORIES.get(name, name) for i in faulty}
    config = dict(scenario.config)
    if unsafe is not None:
        config.update(dict(SWITCHES[unsafe].config))
    sim = _build(mode, n, f, seed, byzantine, rng, config, core_cls)
    sim.recorder = recorder
    notes: list[str] = []
    if unsafe is not None:
        notes.append(f"UNSAFE: every replica runs with the rule '{unsafe}' turned off: {SWITCHES[unsafe].rule}")
    if len(faulty) > f:
        notes.append(f"{len(faulty)} Byzantine replicas exceed f={f}: {mode} promises nothing beyond f")
    if scenario.arrange is not None:
        scenario.arrange(sim, n, rng, notes)
    elif name in IN_VIEW_CHANGE:
        _cut_primary(sim, n, rng, notes)
        notes[-1] += ", to cause the view change this attack acts in"
    window: list[int] = []
    if name == "great-livelock":
        for t in DUEL_WINDOW:
            sim.at(t, lambda: window.append(max(len(r.blocks) for r in sim.replicas)))
    for j in range(requests):
        c = j % 2
        sim.at(rng.uniform(0.0, RUN_FOR), lambda c=c, j=j: sim.submit(c, f"k{j % 7}", b"v%d" % j))
    sim.run_until(RUN_FOR)
    if sim.checker.violation is None:
        sim.run_until(RUN_FOR + SETTLE, stop=sim.all_acked)
    if recorder is not None:
        recorder.close(sim.now)
    honest = [r for r in sim.replicas if r.honest]
    by_rule: Counter[str] = Counter()
    by_sender: dict[str, Counter[str]] = {}
    suspicions: Counter[str] = Counter()
    for r in honest:
        for key, k in _core(r.core).stats.items():
            if isinstance(key, Rule):
                suspicions[key.label] += k
        for label, d in _core(r.core).drops.as_json().items():
            by_rule[label] += d["total"]
            for who, k in d["by_sender"].items():
                by_sender.setdefault(label, Counter())[who] += k
    replay = f"bftledger lab {name} --mode {mode} --f {f}" + (f" --byzantine-count {count}" if count != 1 else "") \
        + (f" --unsafe-disable {unsafe}" if unsafe else "") + f" --seed {seed}"
    # liveness is the honest clients' (the hostile one's refused requests never complete)
    unacked = [k for k in sim.checker.unacked() if k[0] != HOSTILE]
    if sim.read_outcomes:
        kinds = Counter(o.kind for o in sim.read_outcomes.values())
        need = quorum.Quorums(mode, f).read
        notes.append(f"reads: {kinds['fast']} accepted without ordering ({need} matching answer"
                     f"{'s' if need > 1 else ''} each), {kinds['ordered']} fell back to ordered reads")
    stalled = len(window) == 2 and window[0] == window[1]
    if len(window) == 2:
        elections = sum(_core(r.core).stats["elections"] for r in sim.replicas)
        notes.append(f"{elections} elections in all; {window[1] - window[0]} blocks committed from "
                     f"t={DUEL_WINDOW[0]} to t={DUEL_WINDOW[1]}")
        if stalled:
            notes.append("LIVELOCK: nothing committed in the window while the proposers duelled")
    return LabResult(name, scenario.kind, mode, n, f, seed, faulty, sim.checker.violation,
                     0 if sim.checker.violation else len(unacked), requests,
                     dict(sorted(by_rule.items())), {k: dict(sorted(v.items())) for k, v in sorted(by_sender.items())},
                     dict(sorted(suspicions.items())),
                     {r.id: len(r.blocks) for r in sim.replicas}, {r.id: _core(r.core).view for r in honest},
                     replay, notes, _divergence(honest), unsafe, stalled)


def _build(mode: str, n: int, f: int, seed: int, byzantine: dict, rng: random.Random,
           config: dict, core_cls=None) -> Simulation:
    if quorum.protocol(mode).byzantine:
        return build_pbft(seed, n, byzantine=byzantine, rng=rng, clients=3, config=config,
                          core_cls=core_cls or PbftCore)
    rs = make_signers(seed, n, "replica", False)
    cs = make_signers(seed, 3, "client", False)
    honest_make = paxos_factory(seed, paxos_config(n, f, **config), rs, cs, False, core_cls=core_cls or PaxosCore)

    def make(i: int, chain, votes, now):
        core = honest_make(i, chain, votes, now)
        strategy = byzantine.get(i)
        return core if strategy is None else Byzantine(core, strategy, rs[i], random.Random(f"lab-byz-{seed}-{i}"))

    sim = Simulation(seed=seed, n=n, f=f, mode=mode, make_core=make, client_signers=cs, client_timeout=0.3)
    for i in byzantine:
        sim.replicas[i].honest = False
    return sim


def _divergence(honest: list) -> dict:
    """{"height": h, "blocks": {replica: {block, batch_root, transactions}}} at the first height
    where two honest replicas hold different blocks; {} when their ledgers agree."""
    top = max((len(r.blocks) for r in honest), default=0)
    for h in range(top):
        there = [r for r in honest if len(r.blocks) > h]
        if len({r.blocks[h].hash() for r in there}) > 1:
            return {"height": h + 1, "blocks": {str(r.id): {"block": r.blocks[h].hash().hex()[:16],
                                                           "batch_root": r.blocks[h].batch_root.hex()[:16],
                                                           "transactions": len(r.blocks[h].txs)} for r in there}}
    return {}


def _core(c):
    return c.core if isinstance(c, Byzantine) else c
