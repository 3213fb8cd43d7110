"""Issue 11's Byzantine strategies that reach beyond the core's normal-case output, each on a
backup of a real pbft cluster: the cluster keeps committing, receipts verify, a view change
completes, and a replica that restarts far behind catches up, whatever the faulty backup does.

Killing the primary is a fault too: with padded VIEW-CHANGEs (refused by everyone) the
faulty backup takes no part in the view change, so that case runs with f = 2 (n = 7)."""
from __future__ import annotations
import pytest

import ledger.client
from tests.integration.conftest import settle
from bft.pbft.rules import PbftRule as P
from tests.integration.workload import dropped

# what the honest replicas count when the strategy is at work (where it shows in their counters)
SEEN = {"state-flood": [P.STATE_REQUEST_RATE], "descending-vc": [P.VIEW_CHANGE_REGRESSES],
        "padded-vc": [r for r in P if r.name.startswith(("PREPARED_CERT_", "CHECKPOINT_PROOF_"))]}
STRATEGIES = ["lying-receipts", "empty-transfer", "drip-transfer", "state-flood", "padded-vc", "descending-vc",
              "far-checkpoints"]


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_a_byzantine_backup_cannot_stop_commits_receipts_view_changes_or_catch_up(make_cluster,
                                                                                      strategy) -> None:
    f = 2 if strategy == "padded-vc" else 1
    bad = 3 * f
    lc = make_cluster("pbft", f=f, byzantine={bad: strategy})
    await lc.ready()
    honest = [i for i in range(lc.n) if i != bad]
    async with ledger.client.connect(lc.directory, timeout=30) as c:
        for i in range(20):
            r = await c.put(f"a{i}", b"x")
            r.verify(lc.directory)                 # f+1 true attestations, whatever replica 3 signs
        lc.kill(0)                                 # the primary: a view change with replica 3 in it
        for i in range(80):                        # more than two checkpoints (K = 32) behind
            await c.put(f"b{i}", b"y")
        lc.start([0])
        await lc.ready([0], timeout=20)
        st = await settle(lc, c, honest)
    assert st[1]["view"] >= 1 and st[0]["height"] == st[1]["height"] >= 100
    assert all(st[i]["internal_errors"] == 0 for i in honest)
    if strategy in SEEN:
        seen = sum(dropped(st[i], rule) for i in honest for rule in SEEN[strategy])
        assert seen > 0, [st[i]["dropped"] for i in honest]
    lc.stop_all()
    reports = lc.audit(honest)
    assert all(rep.ok for rep in reports.values()), {i: rep.reason for i, rep in reports.items()}
    assert len({rep.head for rep in reports.values()}) == 1
