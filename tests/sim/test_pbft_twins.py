"""Twins (GitHub issue 4): n = 4 plus a twin of one replica (same id, same key, unmodified
code), sampled scenarios of a few rounds, each with a leader and a partition of the five
nodes. Safety must hold in every one; a failure prints the seed, the sampled rounds and
``python -m bft.sim --twins --seed SEED``. The sampler must also find a planted bug."""
from __future__ import annotations

import pytest

from bft.pbft.certs import NewViewPlan, plan_new_view
from bft.pbft.core import PbftCore
from bft.sim import twins
from crypto.merkle import root_of

CHUNK = 250
SCENARIOS = 1000


@pytest.mark.parametrize("start", range(0, SCENARIOS, CHUNK), ids=lambda s: f"seeds{s}-{s + CHUNK - 1}")
def test_sampled_twins_scenarios_are_safe(start: int) -> None:
    bad = []
    for seed in range(start, start + CHUNK):
        r = twins.run_twins(seed)
        if r.violation:
            bad.append(r.describe())
    assert not bad, f"{len(bad)} of {CHUNK} Twins scenarios violated safety:\n" + "\n".join(bad)


@pytest.mark.slow
@pytest.mark.parametrize("start", range(SCENARIOS, 20 * SCENARIOS, 2 * SCENARIOS))
def test_many_more_twins_scenarios(start: int) -> None:
    bad = [twins.run_twins(s) for s in range(start, start + 2 * SCENARIOS)]
    bad = [r.describe() for r in bad if r.violation]
    assert not bad, "\n".join(bad)


def test_sampler_draws_varied_scenarios() -> None:
    scs = [twins.sample(s) for s in range(300)]
    assert {sc.twin_of for sc in scs} == {0, 1, 2, 3}
    sizes = {len(r.groups) for sc in scs for r in sc.rounds}
    assert sizes == {1, 2, 3}
    assert {r.leader for sc in scs for r in sc.rounds} == set(range(twins.NODES))
    assert all(sorted(a for g in r.groups for a in g) == list(range(twins.NODES)) for sc in scs for r in sc.rounds)
    assert twins.sample(7) == twins.sample(7)


def test_twins_equivocate_with_unmodified_code() -> None:
    """Across the sampled scenarios, honest replicas do see two PRE-PREPAREs for one
    (view, sequence) under the twinned key: the pair equivocates without any wrapper."""
    seen = 0
    for seed in range(200):
        r = twins.run_twins(seed)
        seen += r.conflicts > 0
    assert seen >= 20


def test_replay_command_runs_a_twins_scenario(capsys) -> None:
    from bft.sim.__main__ import main
    assert main(["--mode", "pbft", "--twins", "--seed", "3"]) == 0
    assert "seed 3 (pbft-twins" in capsys.readouterr().out


def _plan_without_p(vcs) -> NewViewPlan:
    plan = plan_new_view(vcs)
    return NewViewPlan(plan.min_s, plan.max_s, plan.stable_proof, [(s, root_of([])) for s, _d in plan.entries])


class NewViewIgnoresP(PbftCore):
    plan_new_view = staticmethod(_plan_without_p)


def test_twins_catch_a_new_view_that_ignores_prepared_certificates() -> None:
    for seed in range(100):
        r = twins.run_twins(seed, core_cls=NewViewIgnoresP)
        if r.violation:
            return
    pytest.fail("100 Twins scenarios missed a NEW-VIEW that drops P")
