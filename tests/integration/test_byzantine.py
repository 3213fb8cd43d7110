"""One pbft replica runs each Byzantine strategy over real TCP; the honest ones keep committing
and end with identical, fully verifying ledgers."""
from __future__ import annotations

import pytest
import trio

import ledger.client
from bft.adversary import STRATEGIES

from .conftest import settle

# every strategy on a backup, and the ones that matter most on the primary itself
CASES = [(name, 3) for name in STRATEGIES] + [("silent", 0), ("equivocate", 0)]


@pytest.mark.parametrize("strategy,replica", CASES, ids=[f"{s}-replica{r}" for s, r in CASES])
async def test_byzantine_replica(make_cluster, strategy: str, replica: int) -> None:
    lc = make_cluster("pbft", byzantine={replica: strategy})
    await lc.ready()
    honest = [i for i in range(lc.n) if i != replica]
    async with ledger.client.connect(lc.directory, timeout=30) as c:
        receipts = []

        async def put(i: int) -> None:
            receipts.append(await c.put(f"k{i}", f"v{i}"))

        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(put, i)
        for i in range(100, 110):
            receipts.append(await c.put(f"k{i}", f"v{i}"))
        assert len(receipts) == 110 and all(r.ok for r in receipts)
        assert await c.get("k7") == b"v7" and await c.get("k105") == b"v105"
        st = await settle(lc, c, honest)
    if replica == 0:
        assert all(st[i]["view"] > 0 for i in honest), "the Byzantine primary should have been replaced"
    lc.stop_all()
    reports = lc.audit(honest)
    assert all(r.ok for r in reports.values()), {i: r.reason for i, r in reports.items()}
    assert len({r.head for r in reports.values()}) == 1
    assert reports[honest[0]].tree_size >= 110          # the two gets are not ordered: no transactions
