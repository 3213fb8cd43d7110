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
import random
import signal

import pytest
import trio

import ledger.client
from tests.integration.conftest import MODES, settle
from tests.linearizability import CAS, GET, PUT, Op, check

KEYS = ["k0", "k1", "k2", "k3"]
CLIENTS = 8
FREEZE_AT, FROZEN_FOR, LOAD_FOR = 2.0, 5.0, 11.0


async def _client(lc, cid: int, seed: int, history: list[Op], stop: trio.Event) -> None:
    rng = random.Random(f"{seed}-{cid}")
    async with ledger.client.connect(lc.directory, client=cid, timeout=3) as c:
        i = 0
        while not stop.is_set():
            key, kind = rng.choice(KEYS), rng.choice([PUT, GET, CAS])
            op = Op(key, kind, trio.current_time(), client=cid)
            try:
                if kind == PUT:
                    op.value = b"%d-%d" % (cid, i)
                    await c.put(key, op.value)
                elif kind == GET:
                    op.result = await c.get(key)
                else:
                    op.expected = rng.choice([None, b"%d-%d" % (rng.randrange(CLIENTS), rng.randrange(i + 1))])
                    op.value = b"c%d-%d" % (cid, i)
                    op.result = (await c.cas(key, op.expected, op.value)).ok
                op.complete = trio.current_time()
            except (ledger.client.Unavailable, ledger.client.ReceiptUnavailable):
                pass                                        # indeterminate: complete stays infinite
            history.append(op)
            i += 1


@pytest.mark.parametrize("after", ["steady load", "a trickle"])
@pytest.mark.parametrize("mode", MODES)
async def test_a_cut_off_leader_heals_and_rejoins_and_every_history_is_linearizable(make_cluster, mode,
                                                                                   after) -> None:
    lc = make_cluster(mode, clients=CLIENTS + 1)
    await lc.ready()
    history: list[Op] = []
    stop = trio.Event()
    leader = (await lc.status())[0]["leader"]
    async with trio.open_nursery() as n:
        for cid in range(1, CLIENTS + 1):
            n.start_soon(_client, lc, cid, 17, history, stop)
        await trio.sleep(FREEZE_AT)
        os.kill(lc.pid(leader), signal.SIGSTOP)             # cut off: it neither hears nor speaks
        try:
            await trio.sleep(FROZEN_FOR)
        finally:
            os.kill(lc.pid(leader), signal.SIGCONT)         # healed
        if after == "a trickle":                            # the case: little load after healing
            stop.set()
        else:
            await trio.sleep(LOAD_FOR - FREEZE_AT - FROZEN_FOR)
            stop.set()
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
    assert view != 0 if mode == "pbft" else True           # the cut-off primary was replaced
    lc.stop_all()
    reports = lc.audit()
    assert all(r.ok for r in reports.values()), {i: r.reason for i, r in reports.items()}
    assert len({r.head for r in reports.values()}) == 1
    print(f"{mode}: {len(history)} operations ({len(history) - len(done)} indeterminate), {verdict}")
