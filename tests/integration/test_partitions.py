"""Issue 17 on real processes: a replica frozen (SIGSTOP) under load is, to the others, a
replica cut off by a partition; SIGCONT heals it. Eight clients run put/get/cas on four keys
throughout, every operation recorded with its invocation and completion time (a timed-out
one is indeterminate), and every key's history must be linearizable (tests/linearizability.py).
After healing, the frozen replica must rejoin: the others' view, not in a view change, their
height, and every ledger audits equal.

(A partition between network namespaces, the issue's item 2, is not built yet; freezing a
process cuts it off as completely, both directions, without touching the network.)"""
from __future__ import annotations

import os
import signal

import pytest
import trio

import ledger.client
from tests.integration.conftest import MODES, settle
from tests.integration.workload import under_load
from tests.linearizability import check

CLIENTS = 8
FREEZE_AT, FROZEN_FOR, LOAD_FOR = 2.0, 5.0, 11.0


@pytest.mark.parametrize("after", ["steady load", "a trickle"])
@pytest.mark.parametrize("mode", MODES)
async def test_a_cut_off_leader_heals_and_rejoins_and_every_history_is_linearizable(make_cluster, mode,
                                                                                   after) -> None:
    lc = make_cluster(mode, clients=CLIENTS + 1)
    await lc.ready()
    leader = (await lc.status())[0]["leader"]

    async def freeze() -> None:
        await trio.sleep(FREEZE_AT)
        os.kill(lc.pid(leader), signal.SIGSTOP)             # cut off: it neither hears nor speaks
        try:
            await trio.sleep(FROZEN_FOR)
        finally:
            os.kill(lc.pid(leader), signal.SIGCONT)         # healed
        if after != "a trickle":                            # the case: little load after healing
            await trio.sleep(LOAD_FOR - FREEZE_AT - FROZEN_FOR)

    history = await under_load(lc, CLIENTS, 17, freeze)
    if after == "a trickle":
        async with ledger.client.connect(lc.directory, client=0, timeout=20) as c:
            for k in range(3):
                await c.put("trickle", b"%d" % k)
                await trio.sleep(1.0)
        st = await lc.status()
        lone = st[leader]
        others = [s for i, s in enumerate(st) if i != leader]
        assert not lone["in_view_change"] and lone["view"] == others[0]["view"], (lone, others[0]["view"])
    done = [o for o in history if not o.indeterminate]
    assert len(done) > 200, f"only {len(done)} operations completed"
    verdict = check(history)
    assert verdict.ok, str(verdict)
    async with ledger.client.connect(lc.directory, client=0, timeout=20) as c:
        st = await settle(lc, c)
    view = st[0]["view"]
    assert all(s["view"] == view and not s["in_view_change"] for s in st), st
    assert len({s["height"] for s in st}) == 1
    if mode == "pbft":
        assert view != 0                                   # the cut-off primary was replaced
    lc.stop_all()
    reports = lc.audit()
    assert all(r.ok for r in reports.values()), {i: r.reason for i, r in reports.items()}
    assert len({r.head for r in reports.values()}) == 1
    print(f"{mode}: {len(history)} operations ({len(history) - len(done)} indeterminate), {verdict}")
