"""Seeded pbft runs in the simulator (GitHub issue 3).

- Hundreds of seeded runs (n = 4 and 7) over drops, duplicates, reordering, a partition,
  a crash and up to f Byzantine backups: no invariant violated, every request
  acknowledged after the network heals. Chunked so that a failing test names its seeds;
  the assertion prints each failing run's description and its replay command.
- The message pattern of the normal case matches PBFT: per committed batch n-1
  PRE-PREPAREs, (n-1)^2 PREPAREs and n(n-1) COMMITs.
- The checker can fail: a core that counts one replica's repeated vote several times,
  attacked by a colluding equivocating primary and backup that flood their votes, is
  caught within a bounded number of seeds; the real core under the same attack is not.
"""
from __future__ import annotations

import pytest

from bft.collusion import Collusion
from bft.unsafe import DuplicateVotesCore
from bft.pbft.core import PbftCore
from bft.sim import scenario
from bft.sim.__main__ import main as sim_main
from bft.sim.scenario import build_pbft, run_pbft


def _chunks(n: int, seeds: range, size: int) -> list:
    return [pytest.param(n, range(s, min(s + size, seeds.stop)), id=f"n{n}-seeds{s}-{min(s + size, seeds.stop) - 1}")
            for s in range(seeds.start, seeds.stop, size)]


SWEEP = _chunks(4, range(0, 250), 25) + _chunks(7, range(0, 150), 25)     # 400 runs; every 10th seed Ed25519


def _failures(n: int, seeds, **kw) -> list[str]:
    return [r.describe() for r in (run_pbft(s, n, **kw) for s in seeds) if not r.ok]


@pytest.mark.parametrize("n, seeds", SWEEP)
def test_seeded_runs_with_faults_and_byzantine_backups(n: int, seeds: range) -> None:
    failures = _failures(n, seeds)
    assert not failures, f"{len(failures)} of {len(seeds)} runs failed:\n" + "\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("n, seeds", _chunks(4, range(250, 3050), 400) + _chunks(7, range(150, 1030), 220)
                         + _chunks(10, range(0, 300), 100))
def test_long_sweep(n: int, seeds: range) -> None:
    failures = _failures(n, seeds)
    assert not failures, "\n".join(failures)


def test_a_seed_replays_exactly() -> None:
    for seed in (3, 10, 134):                   # 10 runs real Ed25519
        a, b = run_pbft(seed, 4), run_pbft(seed, 4)
        assert (a.events, a.sent, a.latencies, a.blocks) == (b.events, b.sent, b.latencies, b.blocks)


def test_replay_command_runs_the_seed(capsys) -> None:
    assert sim_main(["--mode", "pbft", "--n", "4", "--seed", "134"]) == 0
    assert "seed 134 (pbft, n=4" in capsys.readouterr().out


def test_failure_message_names_seed_and_replay_command() -> None:
    r = run_pbft(5, 4)
    r.violation = "t=1.0: made up"
    d = r.describe()
    assert "seed 5" in d and "python -m bft.sim --mode pbft --n 4 --seed 5" in d and "made up" in d


# ----------------------------------------------------------------------------- message pattern
@pytest.mark.parametrize("n", [4, 7, 10])
def test_normal_case_message_pattern_per_batch(n: int) -> None:
    """Clean network, no faults, one request at a time: every batch holds one request and
    costs exactly the three all-to-all phases of PBFT, nothing retransmitted."""
    sim = build_pbft(1, n, clients=1, config=dict(retransmit_interval=1e9, request_timeout=1e9))
    batches = 12
    for j in range(batches):
        sim.submit(0, f"k{j}", b"v")
        sim.run_until(sim.now + 5.0, stop=sim.all_acked)
        assert sim.all_acked()
    sim.run_until(sim.now + 0.5)                     # let the last COMMITs land everywhere
    assert sim.checker.violation is None
    assert all(len(r.blocks) == batches for r in sim.replicas)
    assert all(len(b.txs) == 1 for b in sim.replicas[0].blocks)
    got = {k: sim.sent.get(k, 0) / batches for k in ("pre-prepare", "prepare", "commit")}
    assert got == {"pre-prepare": n - 1, "prepare": (n - 1) * (n - 1), "commit": n * (n - 1)}
    assert "view-change" not in sim.sent


# ----------------------------------------------------------------------------- the checker can fail
def _colluding_runs(core_cls, seeds, stop_at_first: bool):
    results = []
    for seed in seeds:
        team = Collusion(7, [0, 1])           # an equivocating primary and a backup: within f = 2
        r = run_pbft(seed, 7, byzantine={0: team.member, 1: team.member}, core_cls=core_cls, real_crypto=False)
        results.append(r)
        if stop_at_first and r.violation:
            break
    return results


def test_checker_catches_a_core_that_counts_duplicate_votes() -> None:
    runs = _colluding_runs(DuplicateVotesCore, range(50), stop_at_first=True)
    caught = [r for r in runs if r.violation]
    assert caught, "the invariant checker missed a core that counts duplicate votes in 50 seeds"
    assert "committed two digests" in caught[0].violation or "disagree" in caught[0].violation


def test_real_core_under_the_same_collusion_has_no_violation() -> None:
    runs = _colluding_runs(PbftCore, range(50), stop_at_first=False)
    bad = [r.describe() for r in runs if not r.ok]
    assert not bad, "\n".join(bad)


def test_sim_config_is_what_the_sweeps_use() -> None:
    cfg = scenario.pbft_config(4, 1)
    assert (cfg.checkpoint_interval, cfg.log_size, cfg.batch_size) == (8, 32, 16)
    assert cfg.request_timeout == 0.3


def test_the_simulator_takes_byzantine_replicas_and_prints_a_replay_that_runs(capsys) -> None:
    """Issue 14: 'the simulator has no --byzantine option'."""
    assert sim_main(["--seed", "3", "--byzantine", "3=wrong-digest"]) == 0
    out = capsys.readouterr().out
    replay = next(line.split("replay: ")[1] for line in out.splitlines() if "replay: " in line)
    assert replay == "python -m bft.sim --mode pbft --n 4 --seed 3 --byzantine 3=wrong-digest"
    assert sim_main(replay.split()[3:]) == 0
    assert capsys.readouterr().out == out
