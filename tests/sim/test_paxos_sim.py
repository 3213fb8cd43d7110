"""Seeded Multi-Paxos runs in the simulator: safety and liveness over hundreds of fault
schedules, duelling proposers with and without backoff, and the same client-facing
behaviour as pbft. A failing seed prints the one command that replays it."""
from __future__ import annotations

import statistics

import pytest

from bft.sim import paxos_scenario as ps
from bft.sim.__main__ import main as sim_main
from ledger.state import decode_result, op_cas, op_delete, op_get, op_put

SWEEP = {3: range(0, 500), 5: range(0, 300)}      # 800 seeded runs in make test; every 10th real Ed25519


def _sweep(n: int, seeds) -> tuple[list[str], int, int, int]:
    failures, elections, leaderships, real = [], 0, 0, 0
    for seed in seeds:
        r = ps.run_paxos(seed, n)
        elections += r.elections
        leaderships += r.leaderships
        real += seed % 10 == 0
        if not r.ok:
            failures.append(r.describe())
    return failures, elections, leaderships, real


@pytest.mark.parametrize("n", sorted(SWEEP))
def test_seeded_sweep_has_no_violation_and_every_request_commits(n: int, capsys) -> None:
    failures, elections, leaderships, real = _sweep(n, SWEEP[n])
    ratio = elections / max(1, leaderships)
    with capsys.disabled():
        print(f"\npaxos sweep n={n}: {len(SWEEP[n])} seeds ({real} with Ed25519), {len(failures)} failing; "
              f"{elections} elections for {leaderships} leadership changes = {ratio:.2f} per change")
    assert not failures, "\n".join(failures)
    # isolated replicas campaign in vain until they heal, so a little above 1 is expected
    assert leaderships > len(SWEEP[n]) // 2 and ratio < 2.0


@pytest.mark.slow
@pytest.mark.parametrize("n", [3, 5, 7])
def test_long_sweep(n: int) -> None:
    failures, *_ = _sweep(n, range(1000, 3000))
    assert not failures, "\n".join(failures)


def test_every_fault_kind_on_its_own() -> None:
    failures = []
    for n in (3, 5):
        for k, kind in enumerate(ps.FAULT_KINDS):
            for seed in range(4):
                r = ps.run_paxos(900 + seed, n, plan=[(kind, 0.3 + 0.2 * seed, 0.6), (kind, 1.5, 0.5)])
                if not r.ok:
                    failures.append(r.describe())
    assert not failures, "\n".join(failures)


def test_clean_network_commits_everything_after_one_election() -> None:
    """The first leadership runs phase 1 too (issue 11, item 15), so exactly one election."""
    for n in (3, 5):
        for seed in range(5):
            r = ps.run_paxos(seed, n, faults=False)
            assert r.ok, r.describe()
            assert r.elections == 1 and r.sent.get("redirect", 0) == 0 and r.blocks > 0


def test_a_seed_replays_exactly(capsys) -> None:
    a = ps.run_paxos(7, 5)
    b = ps.run_paxos(7, 5)
    assert (a.events, a.sent, a.blocks, a.latencies, a.faults) == (b.events, b.sent, b.blocks, b.latencies, b.faults)
    assert a.replay == "python -m bft.sim --mode paxos --n 5 --seed 7"
    assert sim_main(["--mode", "paxos", "--n", "3", "--seed", "4"]) == 0
    assert "replay: python -m bft.sim --mode paxos --n 3 --seed 4" in capsys.readouterr().out


def test_partial_connectivity_leaves_everyone_a_different_majority() -> None:
    for n in (3, 5, 7, 9):
        order = list(range(n))[::-1]
        cut = ps.partial_connectivity(n, order)
        seen = []
        for a in range(n):
            view = frozenset(b for b in range(n) if b == a or frozenset((a, b)) not in cut)
            assert len(view) >= n // 2 + 1
            seen.append(view)
        assert len(set(seen)) == n, f"n={n}: two replicas see the same majority"


# ---------------------------------------------------------------------------- duelling proposers
def test_duelling_proposers_settle_with_backoff(capsys) -> None:
    lines = []
    for n in (3, 5):
        contenders = n - 1
        for drop in (0.0, 0.1):
            results = [ps.run_duel(seed, n, backoff=True, contenders=contenders, drop=drop) for seed in range(12)]
            for r in results:
                assert r.violation is None, r.replay
                assert r.settled_at is not None and r.settled_at <= 1.5, r.replay
                assert r.commits_window > 0, r.replay
            per_change = [r.elections / max(1, r.leaderships) for r in results]
            extra = [r.elections - contenders for r in results]
            lines.append(f"n={n}, {contenders} contenders, loss {drop:.0%}: {statistics.mean(per_change):.2f} "
                         f"elections per leadership change (max {max(per_change):.2f}; {statistics.mean(extra):.2f} "
                         f"beyond each contender's first), settled by t={max(r.settled_at for r in results):.2f}")
            # each contender campaigns about once, then follows the winner
            assert statistics.mean(per_change) <= contenders + 1 and max(extra) <= 2 * contenders
    with capsys.disabled():
        print("\npaxos duel at t=0.5 with backoff:\n  " + "\n  ".join(lines))


def test_naive_proposers_livelock_without_backoff(capsys) -> None:
    """backoff=False: a pre-empted proposer retries at once with a higher ballot. With four
    such proposers against each other the simulator sees elections go on and nothing commit."""
    naive = [ps.run_duel(seed, 5, backoff=False, contenders=4) for seed in range(6)]
    livelocked = [r for r in naive if r.commits_window == 0 and r.elections > 1000 and r.settled_at is None]
    for r in naive:
        assert r.violation is None, r.replay             # livelock costs liveness, never safety
    assert len(livelocked) >= 4, [(r.seed, r.elections, r.commits_window) for r in naive]
    with_backoff = [ps.run_duel(r.seed, 5, backoff=True, contenders=4) for r in livelocked]
    assert all(r.commits_window > 0 and r.elections <= 12 for r in with_backoff)
    # n=3 duels do end by luck, but only after far more elections than the 2 that backoff needs
    n3 = [ps.run_duel(seed, 3, backoff=False, contenders=2) for seed in range(6)]
    mean3 = statistics.mean(r.elections for r in n3)
    with capsys.disabled():
        print(f"\npaxos duel without backoff: n=5 {len(livelocked)}/{len(naive)} seeds livelocked "
              f"({statistics.mean(r.elections for r in livelocked):.0f} elections, 0 commits in the window); "
              f"n=3 {mean3:.0f} elections before a leader settles (backoff: 2)")
    assert mean3 > 20 and all(r.violation is None for r in n3)


# ---------------------------------------------------------------------------- same client behaviour
def test_the_same_operations_give_the_same_results_in_both_modes() -> None:
    ops = [op_put("a", b"1"), op_get("a"), op_cas("a", b"1", b"2"), op_cas("a", b"1", b"3"), op_get("a"),
           op_delete("a"), op_get("a"), op_cas("a", None, b"x"), op_get("a"), op_get("missing"),
           op_put("b", b""), op_get("b"), op_delete("nothing"), op_cas("b", None, b"y"), op_get("b")]
    pbft = ps.run_ops("pbft", ops)
    paxos = ps.run_ops("paxos", ops)
    paxos5 = ps.run_ops("paxos", ops, seed=3, n=5)
    assert pbft == paxos == paxos5
    assert [decode_result(r) for r in paxos][:5] == [(0, None), (0, b"1"), (0, None), (1, b"2"), (0, b"2")]
