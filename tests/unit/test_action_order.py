"""One definition of how a driver carries out ``ready()`` (``bft.outputs.plan``), followed by
both drivers, and a crash between any two durable writes (issue 11, item 2: the runtime
compacted the vote log before appending the blocks that came earlier in the same list; a
crash in that window restarted a replica with its stable checkpoint above its ledger)."""
from __future__ import annotations

from pathlib import Path

import pytest

from bft.outputs import AppendBlock, CompactVotes, Persist, plan
from bft.pbft.core import PbftCore
from bft.runtime.replica import apply_durable
from bft.sim.world import Simulation
from ledger.chain import Chain
from ledger.store import BlockStore
from ledger.votelog import VoteLog
from test_pbft_rules import Cluster, out, prepare_and_commit


@pytest.fixture
def cl() -> Cluster:
    return Cluster()


def _stabilising_step(cl: Cluster) -> tuple[PbftCore, list, list]:
    """Replica 1 executes sequence 2 and, in the same ready(), makes checkpoint 2 stable (the
    CHECKPOINTs of replicas 2 and 3 arrived first): one action list with AppendBlock before
    CompactVotes. Returns the core, the actions of sequence 1 and those of sequence 2."""
    a, b = cl.core(1), cl.core(2)
    reqs = [[cl.req()], [cl.req()]]
    first = prepare_and_commit(cl, a, 0, 1, reqs[0])
    prepare_and_commit(cl, b, 0, 1, reqs[0])
    prepare_and_commit(cl, b, 0, 2, reqs[1])
    for r in (2, 3):
        a.step(r, cl.checkpoint_of(b, r))
    out(a)
    second = prepare_and_commit(cl, a, 0, 2, reqs[1])
    assert a.h == 2
    return a, first, second


def test_the_plan_keeps_durable_actions_in_list_order(cl):
    _, _, acts = _stabilising_step(cl)
    kinds = [type(x) for x in acts if type(x) in (Persist, AppendBlock, CompactVotes)]
    assert kinds.index(AppendBlock) < kinds.index(CompactVotes)
    steps, rest = plan(acts)
    assert [k for k, _ in steps].index("blocks") < [k for k, _ in steps].index("compact")
    assert rest and all(type(x) not in (Persist, AppendBlock, CompactVotes) for x in rest)


class _Recorder:
    """Stands for the vote log and the store: records what a driver writes, in order."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, int]] = []

    def append_many(self, items) -> None:
        items = list(items)
        self.ops.append(("blocks" if items and hasattr(items[0], "height") else "votes", len(items)))

    def compact(self, records) -> None:
        self.ops.append(("compact", len(records)))


class _SimNode:
    """The simulator's view of a replica, enough for ``Simulation._carry_out``; records the
    durable writes as the runtime's recorder does (a compaction is an assignment of votes)."""

    def __init__(self, actions, ops: list) -> None:
        self.core = type("Core", (), {"ready": lambda _self: list(actions)})()
        self.ops = ops
        self.blocks = _Blocks(ops)
        self._votes = _Votes(ops)
        self.honest = False
        self.addr = self.id = 1
        self.send_delay = 0.0

    @property
    def votes(self) -> list:
        return self._votes

    @votes.setter
    def votes(self, records) -> None:
        self.ops.append(("compact", len(records)))
        self._votes = _Votes(self.ops, records)


class _Votes(list):
    def __init__(self, ops: list, items=()) -> None:
        super().__init__(items)
        self.ops = ops

    def extend(self, items) -> None:
        self.ops.append(("votes", len(items)))
        super().extend(items)


class _Blocks(list):
    """The simulator appends blocks one by one; a run of them counts as one write."""

    def __init__(self, ops: list) -> None:
        super().__init__()
        self.ops = ops

    def append(self, block) -> None:
        if self.ops and self.ops[-1][0] == "blocks" and self and self[-1].height == block.height - 1:
            self.ops[-1] = ("blocks", self.ops[-1][1] + 1)
        else:
            self.ops.append(("blocks", 1))
        super().append(block)


def test_the_runtime_and_the_simulator_carry_out_one_action_list_alike(cl):
    _, _, acts = _stabilising_step(cl)
    rec = _Recorder()
    apply_durable(plan(acts)[0], rec, rec)                    # the runtime's executor
    sim_ops: list = []
    sim = Simulation.__new__(Simulation)                      # only _carry_out is used
    sim._send = lambda *a, **k: None
    sim.nodes, sim._by_id = [], {}
    Simulation._carry_out(sim, _SimNode(acts, sim_ops))
    assert sim_ops == rec.ops, (sim_ops, rec.ops)
    assert [k for k, _ in rec.ops].index("blocks") < [k for k, _ in rec.ops].index("compact")


def _apply(steps, d: Path) -> None:
    store = BlockStore.open(d)
    votes = VoteLog.open(d / "votes.log")
    try:
        apply_durable(steps, votes, store)
    finally:
        votes.close()
        store.close()


def _restart(cl: Cluster, d: Path) -> PbftCore:
    store = BlockStore.open(d)
    votes = VoteLog.open(d / "votes.log")
    try:
        chain = Chain()
        for blk in store.blocks(1, store.height):
            chain.replay(blk)
        return PbftCore(cl.cfg(), 1, cl.rs[1], cl.keys(), chain, votes.records(), 0.0)
    finally:
        votes.close()
        store.close()


@pytest.mark.parametrize("order", ["plan", "compact first (the old runtime)"])
def test_a_crash_between_any_two_durable_writes_leaves_the_ledger_at_or_above_the_checkpoint(
        cl, tmp_path: Path, order: str):
    _, first, second = _stabilising_step(cl)
    steps = plan(second)[0]
    if order != "plan":
        steps = [s for s in steps if s[0] == "compact"] + [s for s in steps if s[0] != "compact"]
    broken = []
    for k in range(len(steps) + 1):                         # crash after k of the durable writes
        d = tmp_path / f"crash-{k}"
        _apply(plan(first)[0], d)
        _apply(steps[:k], d)
        core = _restart(cl, d)
        if core.h > core.chain.height:
            broken.append(k)
    if order == "plan":
        assert broken == [], broken
    else:
        assert broken, "the old order must show the window this test guards"
