"""Divergence is loud (issue 14): ``bftledger compare`` on real replica processes.

A Paxos leader that equivocates (``--byzantine equivocate``) makes its followers execute
different batches at one height; every replica's audit still passes, because each ledger is
well-formed on its own. ``compare`` finds the first height where the signed block hashes
differ, and ``status`` says that replicas at one height hold different heads."""
from __future__ import annotations

import json
import subprocess
import sys

import trio

import ledger.client


def _compare(lc) -> tuple[int, dict]:
    p = subprocess.run([sys.executable, "-m", "bft", "compare", str(lc.directory), "--json"],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, json.loads(p.stdout)


async def test_compare_finds_where_a_lying_paxos_leader_split_the_ledgers(make_cluster) -> None:
    lc = make_cluster("paxos", byzantine={0: "equivocate"})
    await lc.ready(timeout=20)
    async with ledger.client.connect(lc.directory, timeout=20) as c:
        for i in range(6):
            await c.put(f"k{i}", b"v%d" % i)
        await trio.sleep(1.0)
    code, r = await trio.to_thread.run_sync(_compare, lc)
    assert code == 1 and not r["agree"], r
    assert r["first_difference"] is not None and 1 <= r["first_difference"] <= r["common_height"], r
    assert len({h for h in r["hashes"].values() if h}) >= 2, r
    st = await lc.status()
    assert all(s["internal_errors"] == 0 for s in st)


async def test_compare_says_an_honest_pbft_cluster_agrees(make_cluster) -> None:
    lc = make_cluster("pbft")
    await lc.ready(timeout=20)
    async with ledger.client.connect(lc.directory, timeout=20) as c:
        for i in range(5):
            await c.put(f"k{i}", b"v")
        await lc.converged(timeout=10)
    code, r = await trio.to_thread.run_sync(_compare, lc)
    assert code == 0 and r["agree"] and r["first_difference"] is None and r["common_height"] >= 5, r
