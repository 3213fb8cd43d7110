"""Adversaries with the primary among the faulty (GitHub issue 4).

One test per attack: a silent primary, an equivocating primary (the wrapper, and Twins:
a replica and its twin with one key running unmodified code), a primary that censors
one client, a primary that slips a forged client request into its batches, a slow
primary just under the timeout, VIEW-CHANGEs with forged certificates, replayed old-view
messages, one replica's vote offered many times. Then hundreds of seeded fault runs with
a faulty primary, the liveness bound (3 view-change timeouts), and a broken core whose
NEW-VIEW ignores P, which the checker must catch.
"""
from __future__ import annotations

import pytest

from bft.adversary import Byzantine
from bft.pbft.core import PbftCore
from bft.pbft.rules import PbftRule as P
from bft.sim.scenario import build_pbft, run_pbft
from bft.sim.world import CLIENT
from bft.unsafe import NewViewIgnoresP
from bft.wire import decode
from ledger.rules import Rule

PREPARED_CERT_RULES = [r for r in P if r.name.startswith("PREPARED_CERT_")]
CHECKPOINT_PROOF_RULES = [r for r in P if r.name.startswith("CHECKPOINT_PROOF_")]


def _core(sim, i: int) -> PbftCore:
    c = sim.nodes[i].core
    return getattr(c, "core", c)


def _drops(sim, ids, *rules: Rule) -> int:
    return sum(_core(sim, i).dropped[rule] for i in ids for rule in rules)


def _load(sim, count: int, start: float = 0.02, gap: float = 0.03, clients: int = 2) -> None:
    for j in range(count):
        sim.at(start + gap * j, lambda j=j: sim.submit(j % clients, f"k{j % 5}", b"v%d" % j))


def _finish(sim, until: float) -> None:
    sim.run_until(until)
    assert sim.checker.violation is None, sim.checker.violation
    assert sim.all_acked(), f"unacknowledged: {sim.checker.unacked()}"


def _ledgers_agree(sim, ids) -> list:
    chains = {tuple(b.hash() for b in sim.nodes[i].blocks) for i in ids}
    assert len(chains) == 1
    return sim.nodes[ids[0]].blocks


# ----------------------------------------------------------------------------- one attack each
def test_silent_primary() -> None:
    sim = build_pbft(31, 4, byzantine={0: "silent"})
    _load(sim, 10)
    _finish(sim, 3.0)
    assert {_core(sim, i).view for i in (1, 2, 3)} == {1}
    _ledgers_agree(sim, [1, 2, 3])


def test_equivocating_primary_wrapper() -> None:
    """Even backups get the real batch, odd ones another: (view 0, seq) never commits two
    digests; the view changes and everything commits."""
    sim = build_pbft(32, 4, byzantine={0: "equivocate"})
    _load(sim, 10, gap=0.0)                          # one batch of 10: the other side gets it reversed
    _finish(sim, 3.0)
    assert _drops(sim, [1, 2, 3], P.CONFLICTING_PRE_PREPARE) + _core(sim, 1).view > 0
    _ledgers_agree(sim, [1, 2, 3])


def test_equivocating_primary_twins() -> None:
    """Replica 0 and its twin (node 4) share one key and run the unmodified core. Node 0
    sits with replica 1 and node 4 with replicas 2 and 3; each half's client requests reach
    only its own primary. Both propose seq 1, with different batches: the twin's side
    commits (2f+1 = the twin, 2 and 3), replica 1 never prepares the other batch. After
    the partition heals, replica 1 catches up on the twin side's ledger; nothing else is
    ever committed at seq 1."""
    sim = build_pbft(33, 4, twins=(0,), clients=2, config=dict(batch_size=4))
    sim.partition([{0, 1, CLIENT + 0}, {4, 2, 3, CLIENT + 1}])     # node 4 is replica 0's twin
    sim.submit(0, "left", b"L")
    sim.submit(1, "right", b"R")
    sim.run_until(0.2)
    assert sim.checker.violation is None
    assert _core(sim, 2).chain.height == 1 and _core(sim, 1).chain.height == 0
    assert _core(sim, 1).log[1].pre_prepare.digest != _core(sim, 2).log[1].pre_prepare.digest
    sim.partition(None)
    _finish(sim, 4.0)
    blocks = _ledgers_agree(sim, [1, 2, 3])
    assert blocks[0].txs == sim.nodes[4].blocks[0].txs   # the twin side's batch at seq 1
    assert sum(len(b.txs) for b in blocks) >= 2


def test_primary_censoring_one_client() -> None:
    """The primary ignores client 0. Client 1 is served in view 0; client 0's requests make
    the backups time out, the view changes, and the new primary orders them."""
    sim = build_pbft(34, 4, byzantine={0: "censor"})
    _load(sim, 10)
    _finish(sim, 3.0)
    assert {_core(sim, i).view for i in (1, 2, 3)} == {1}
    blocks = _ledgers_agree(sim, [1, 2, 3])
    by_view = {}
    for b in blocks:
        for raw in b.txs:
            by_view.setdefault(b.view, []).append(raw)
    clients_in_view0 = {decode(raw).client for raw in by_view.get(0, [])}
    assert 0 not in clients_in_view0 and 1 in clients_in_view0
    assert 0 in {decode(raw).client for raw in by_view.get(1, [])}


def test_primary_slipping_a_forged_client_request_into_a_batch() -> None:
    """Every batch of the primary carries a request 'from client 0' with a made-up
    signature: the backups reject those PRE-PREPAREs, the view changes, nothing forged is
    ever executed (the checker's validity invariant), everything real commits."""
    sim = build_pbft(35, 4, byzantine={0: "forge-request"})
    _load(sim, 10)
    _finish(sim, 3.0)
    assert _drops(sim, [1, 2, 3], P.BATCH_BAD_CLIENT_SIGNATURE) > 0
    for b in _ledgers_agree(sim, [1, 2, 3]):
        assert all(b"forged" not in raw for raw in b.txs)


def test_slow_primary_just_under_the_timeout() -> None:
    """The primary's messages arrive 70% of the request timeout late. PBFT cannot tell this
    from a slow network, so it need not change the view; what is testable: every request
    still commits, and none waits anywhere near a multiple of the timeout."""
    sim = build_pbft(36, 4, byzantine={0: "slow"})
    T = sim.cfg.request_timeout
    _load(sim, 12, gap=0.05)
    _finish(sim, 5.0)
    assert max(sim.checker.latencies) < 4 * T
    _ledgers_agree(sim, [1, 2, 3])


def test_view_change_with_forged_certificates_rejected_and_counted() -> None:
    """n = 7: the primary is silent; replica 2 sends VIEW-CHANGEs with a forged prepared
    certificate or a bogus checkpoint proof (alternately). The honest replicas reject and
    count both kinds; view 1 forms without replica 2."""
    sim = build_pbft(37, 7, byzantine={0: "silent", 2: "forge-vc"})
    _load(sim, 8)
    _finish(sim, 4.0)
    honest = [1, 3, 4, 5, 6]
    assert _drops(sim, honest, *PREPARED_CERT_RULES) > 0
    assert _drops(sim, honest, *CHECKPOINT_PROOF_RULES) > 0
    assert {_core(sim, i).view for i in honest} == {1}
    _ledgers_agree(sim, honest)


def test_old_view_messages_replayed_with_a_faulty_primary() -> None:
    """n = 7: the primary is silent; replica 3 replays its old messages throughout."""
    sim = build_pbft(38, 7, byzantine={0: "silent", 3: "replay"})
    _load(sim, 8)
    sim.at(1.5, lambda: sim.crash(1))                  # another view change later: more stale messages
    sim.at(1.6, lambda: [sim.submit(j % 2, f"late{j}", b"v") for j in range(4)])
    _finish(sim, 6.0)
    honest = [2, 4, 5, 6]
    assert {_core(sim, i).view for i in honest} == {2}
    assert _drops(sim, honest, P.OTHER_VIEW) > 0
    _ledgers_agree(sim, honest)


def test_one_replicas_vote_offered_several_times_toward_a_quorum() -> None:
    """n = 7: an equivocating primary and a backup that sends every vote five times: the
    repeated votes never complete a quorum of the side that lacks one."""
    for seed in range(39, 45):
        sim = build_pbft(seed, 7, byzantine={0: "equivocate", 1: "flood"})
        _load(sim, 10, gap=0.0)
        _finish(sim, 4.0)
        _ledgers_agree(sim, [2, 3, 4, 5, 6])


# ----------------------------------------------------------------------------- seeded runs
def _chunks(n: int, seeds: range, size: int) -> list:
    return [pytest.param(n, range(s, min(s + size, seeds.stop)), id=f"n{n}-seeds{s}-{min(s + size, seeds.stop) - 1}")
            for s in range(seeds.start, seeds.stop, size)]


@pytest.mark.parametrize("n, seeds", _chunks(4, range(0, 250), 25) + _chunks(7, range(0, 150), 25))
def test_seeded_runs_with_a_faulty_primary(n: int, seeds: range) -> None:
    """The view-0 primary is faulty (silent, equivocating, censoring, forging requests, slow,
    forging view changes, wrong digests, corrupt, forged ids, replaying, flooding), plus up
    to f-1 faulty backups, over the same network faults: safety throughout, and every
    request acknowledged within the bound after healing."""
    failures = [r.describe() for r in (run_pbft(s, n, faulty_primary=True) for s in seeds) if not r.ok]
    assert not failures, f"{len(failures)} of {len(seeds)} runs failed:\n" + "\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("n, seeds", _chunks(4, range(250, 2050), 300) + _chunks(7, range(150, 830), 170))
def test_long_sweep_with_a_faulty_primary(n: int, seeds: range) -> None:
    failures = [r.describe() for r in (run_pbft(s, n, faulty_primary=True) for s in seeds) if not r.ok]
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------- liveness bound
@pytest.mark.parametrize("strategy", ["silent", "equivocate"])
@pytest.mark.parametrize("seed", range(5))
def test_requests_commit_within_three_view_change_timeouts(strategy: str, seed: int) -> None:
    """4 replicas, the primary silent or equivocating from the start (the fault at t = 0):
    requests submitted at t = 0.05 all commit by 0.05 + 3 T (T = request timeout)."""
    sim = build_pbft(50 + seed, 4, byzantine={0: strategy}, clients=2)
    T = sim.cfg.request_timeout
    for j in range(6):
        sim.at(0.05, lambda j=j: sim.submit(j % 2, f"k{j}", b"v%d" % j))
    sim.run_until(0.05 + 3 * T, stop=lambda: sim.now > 0.05 and sim.all_acked())
    assert sim.checker.violation is None
    assert sim.all_acked(), f"{strategy}: unacknowledged after 3 timeouts: {sim.checker.unacked()}"
    assert max(sim.checker.ack_times.values()) <= 0.05 + 3 * T


class LateByzantine(Byzantine):
    """Honest until virtual time ``start``, then the strategy: a primary that turns faulty."""

    def __init__(self, core, strategy, signer, rng, start: float) -> None:
        super().__init__(core, strategy, signer, rng)
        self.start, self.clock = start, 0.0

    def tick(self, now: float) -> None:
        self.clock = now
        self.core.tick(now)

    def ready(self):
        return self.core.ready() if self.clock < self.start else super().ready()


@pytest.mark.parametrize("strategy", ["silent", "equivocate"])
@pytest.mark.parametrize("seed", range(3))
def test_requests_commit_within_three_view_change_timeouts_of_a_mid_run_fault(strategy: str, seed: int) -> None:
    """Steady load (one request every 50 ms); the primary turns faulty at t = 1. Every
    request commits within 3 T of the later of its submission and the fault."""
    fault = 1.0
    sim = build_pbft(60 + seed, 4, clients=2,
                     byzantine={0: lambda core, signer, rng: LateByzantine(core, strategy, signer, rng, fault)})
    T = sim.cfg.request_timeout
    submitted = {}
    for j in range(40):
        def go(j=j):
            ts = sim.submit(j % 2, f"k{j}", b"v%d" % j)
            submitted[(j % 2, ts)] = sim.now
        sim.at(0.05 * (j + 1), go)
    sim.run_until(2.0 + 3 * T + 0.5)
    assert sim.checker.violation is None, sim.checker.violation
    assert sim.all_acked(), f"unacknowledged: {sim.checker.unacked()}"
    late = {k: (sim.checker.ack_times[k], t) for k, t in submitted.items()
            if sim.checker.ack_times[k] > max(t, fault) + 3 * T}
    assert not late, f"{strategy}: committed later than 3 timeouts after the fault: {late}"
    assert {_core(sim, i).view for i in (1, 2, 3)} == {1}


# ----------------------------------------------------------------------------- the checker can fail
def test_checker_catches_a_new_view_that_ignores_prepared_certificates() -> None:
    caught = None
    for seed in range(50):
        r = run_pbft(seed, 4, faulty_primary=True, core_cls=NewViewIgnoresP)
        if r.violation:
            caught = r
            break
    assert caught is not None, "the checker missed a NEW-VIEW that drops P in 50 faulty-primary seeds"
    assert "disagree" in caught.violation or "committed two digests" in caught.violation or \
        "acknowledged request" in caught.violation


def test_same_seeds_with_the_real_core_have_no_violation() -> None:
    bad = [r.describe() for r in (run_pbft(s, 4, faulty_primary=True) for s in range(50)) if not r.ok]
    assert not bad, "\n".join(bad)
