"""Issue 17, item 1: a replica cut off and healed must rejoin, in the simulator (the real cores).

The schedule that left a real cluster with one replica out for good: the primary is cut off
under load, the others change view without it and move far ahead (beyond its high
watermark), the network heals. The old primary used to enter view 1, drop PRE-PREPAREs above
its high watermark, time out two seconds later and start a view change to view 2 alone, and
stay there. With SUSPECT (bft.pbft.suspicion) it never leaves view 1 alone, learns the
stable checkpoint from the others and catches up; the same for an isolated backup."""
from __future__ import annotations

import pytest

from bft.pbft.core import PbftCore
from bft.sim.scenario import build_pbft
from bft.sim.world import CLIENT

CUT_AT, HEAL_AT, END = 0.3, 3.0, 8.0


def _core(sim, i: int) -> PbftCore:
    c = sim.nodes[i].core
    return getattr(c, "core", c)


def _run(seed: int, isolated: int):
    sim = build_pbft(seed, 4, clients=2)
    others = {r for r in range(4) if r != isolated} | {CLIENT, CLIENT + 1}
    sim.at(CUT_AT, lambda: sim.partition([{isolated}, others]))
    sim.at(HEAL_AT, lambda: sim.partition(None))
    t = 0.05
    j = 0
    while t < HEAL_AT:                                    # heavy load until healing: the others get far
        sim.at(t, lambda j=j: sim.submit(j % 2, f"k{j % 7}", b"v%d" % j))   # beyond the cut-off one's H
        t += 0.01
        j += 1
    for k in range(4):                                    # then only a trickle: no checkpoint comes soon
        sim.at(HEAL_AT + 0.5 + k, lambda k=k: sim.submit(k % 2, "late", b"%d" % k))
    sim.run_until(END)
    return sim


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("isolated", [0, 2], ids=["primary", "backup"])
def test_a_replica_cut_off_then_healed_rejoins_and_catches_up(seed: int, isolated: int) -> None:
    sim = _run(seed, isolated)
    assert sim.checker.violation is None, sim.checker.violation
    assert sim.all_acked(), f"seed {seed}: unacknowledged {sim.checker.unacked()}"
    cores = [_core(sim, i) for i in range(4)]
    lone = cores[isolated]
    rest = [c for i, c in enumerate(cores) if i != isolated]
    assert not lone.in_view_change, f"seed {seed}: replica {isolated} sits in a view change to view {lone.view}"
    assert lone.view == rest[0].view, (lone.view, [c.view for c in rest])
    top = max(c.chain.height for c in rest)
    assert top > sim.cfg.log_size                          # the others did move beyond its old H
    assert lone.chain.height == top, (lone.chain.height, top)
    if isolated == 0:
        assert rest[0].view >= 1                           # they replaced the cut-off primary
    else:
        assert rest[0].view == 0                           # a cut-off backup forces no view change


def test_f_faulty_replicas_alone_cannot_force_a_view_change() -> None:
    """SUSPECT needs f+1: one replica that keeps suspecting (f = 1) moves nobody."""
    from bft.wire import Suspect

    sim = build_pbft(3, 4, clients=2)
    for j in range(40):
        sim.at(0.05 + 0.02 * j, lambda j=j: sim.submit(j % 2, "k", b"v%d" % j))
    lying = sim.replica_signers[3]
    for k in range(100):
        sim.at(0.05 + 0.02 * k, lambda: [sim._send(sim.nodes[3].addr, sim.nodes[r].addr,
                                                   Suspect(0, 3).signed(lying), 0.0) for r in range(3)])
    sim.run_until(3.0)
    assert sim.all_acked()
    assert all(_core(sim, i).view == 0 and not _core(sim, i).in_view_change for i in range(3))
