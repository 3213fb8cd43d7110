"""Commits through real clusters: many concurrent puts, and the leader killed under load."""
from __future__ import annotations

import time

import pytest
import trio

import ledger.client
from ledger.store import BlockStore

from .conftest import MODES, settle, wait_for


def ledger_txs(lc, replica: int) -> dict[int, list[bytes]]:
    """height -> transactions of one replica's ledger, read from its files."""
    store = BlockStore.scan(lc.cluster.data_dir(replica))
    try:
        return {b.height: b.txs for b in store.blocks()}
    finally:
        store.close()


@pytest.mark.parametrize("mode", MODES)
async def test_500_concurrent_puts_commit_and_read_back(make_cluster, mode: str) -> None:
    lc = make_cluster(mode)
    await lc.ready()
    async with ledger.client.connect(lc.directory, timeout=60) as c:
        receipts: dict[int, object] = {}

        async def put(i: int) -> None:
            receipts[i] = await c.put(f"key-{i}", f"value-{i}")

        t0 = time.monotonic()
        async with trio.open_nursery() as nursery:
            for i in range(500):
                nursery.start_soon(put, i)
        took = time.monotonic() - t0
        assert len(receipts) == 500
        assert all(r.ok and r.mode == mode for r in receipts.values())
        assert len({(r.height, r.index) for r in receipts.values()}) == 500
        assert len({r.height for r in receipts.values()}) < 500 / 4, "the primary should batch requests"
        receipts[0].verify(lc.directory)

        values: dict[int, bytes | None] = {}

        async def get(i: int) -> None:
            values[i] = await c.get(f"key-{i}")

        async with trio.open_nursery() as nursery:
            for i in range(500):
                nursery.start_soon(get, i)
        assert values == {i: f"value-{i}".encode() for i in range(500)}
        assert await c.get("never-written") is None
        st = await settle(lc, c)
    print(f"{mode}: 500 concurrent puts in {took:.2f} s ({500 / took:.0f}/s)")
    lc.stop_all()
    reports = lc.audit()
    assert all(r.ok for r in reports.values()), {i: r.reason for i, r in reports.items()}
    assert len({r.head for r in reports.values()}) == 1
    assert reports[0].height == st[0]["height"]


@pytest.mark.parametrize("mode", MODES)
async def test_kill_leader_under_load_then_restart(make_cluster, mode: str) -> None:
    lc = make_cluster(mode)
    await lc.ready()
    acked = []
    async with ledger.client.connect(lc.directory, timeout=30) as c:
        stop = trio.Event()

        async def writer(w: int) -> None:
            i = 0
            while not stop.is_set():
                acked.append(await c.put(f"w{w}-{i}", f"v{w}-{i}"))
                i += 1

        async with trio.open_nursery() as nursery:
            for w in range(8):
                nursery.start_soon(writer, w)
            await wait_for(lambda: len(acked) >= 100, 20, "100 puts before the kill")
            st = await lc.status()
            leader = st[0]["leader"]
            assert all(s["leader"] == leader for s in st)
            lc.kill(leader)                                   # SIGKILL: no shutdown at all
            at_kill = len(acked)
            await wait_for(lambda: len(acked) >= at_kill + 200, 30, "200 puts after the kill")
            stop.set()
        live = [i for i in range(lc.n) if i != leader]
        st = await settle(lc, c, live)
        assert all(st[i]["leader"] != leader for i in live)
        assert st[live[0]]["view"] > 0

        lc.start([leader])                                    # the killed replica comes back
        await lc.ready([leader])
        assert await c.get("w0-0") == b"v0-0"
        st = await settle(lc, c)
        assert st[leader]["height"] == st[live[0]]["height"] > 0

    lc.stop_all()
    reports = lc.audit()
    assert all(r.ok for r in reports.values()), {i: r.reason for i, r in reports.items()}
    assert len({r.head for r in reports.values()}) == 1, {i: r.height for i, r in reports.items()}
    for i in range(lc.n):                                     # every acknowledged put, on every ledger
        txs = ledger_txs(lc, i)
        missing = [r for r in acked if txs.get(r.height, [])[r.index:r.index + 1] != [r.tx]]
        assert not missing, f"replica {i} lacks {len(missing)} of {len(acked)} acknowledged puts"


@pytest.mark.parametrize("mode", MODES)
async def test_an_older_clock_still_commits_and_each_request_runs_once(make_cluster, mode: str) -> None:
    """A second process with an older clock (or Client.outcome sending an old request again):
    the ledger's window counts executed requests, not clock time, so its requests are not
    stale; they execute once, and a copy of an executed one gets the cached reply."""
    lc = make_cluster(mode)
    await lc.ready()
    async with ledger.client.connect(lc.directory, timeout=20) as c:
        first = await c.put("fresh", "1")
        c._session._ts -= 10 ** 6             # what a second process with an older clock would send
        older = await c.put("older", "2")
        assert older.ok and older.timestamp < first.timestamp
        again = await c.outcome(ledger.client.decode(first.tx).encode())   # the very same signed request
        assert (again.height, again.index) == (first.height, first.index)
        assert await c.get("older") == b"2"
