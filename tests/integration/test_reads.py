"""Issue 15, "Reads don't grow the ledger", on real processes, TCP, TLS and signatures.

N puts and M plain gets leave the height at N and return the values just written; gets with
``linearizable=True`` (``bftledger get --linearizable``) are ordered and add blocks; the
replicas count the reads they answered without ordering (``reads_answered`` in status).
In pbft one replica lying about reads changes nothing a client accepts."""
from __future__ import annotations

import json

import pytest
import trio

import ledger.client

from .conftest import MODES, cli

PUTS, GETS = 6, 20


async def _heights(c) -> dict[int, int]:
    return {s["id"]: s["height"] for s in await c.status() if s.get("reachable")}


async def _settled_height(c, want: int, timeout: float = 10.0) -> dict[int, int]:
    """Every replica's height once they all reached ``want`` (they may lag the client a little)."""
    with trio.move_on_after(timeout):
        while True:
            hs = await _heights(c)
            if len(hs) == c.cluster.n and all(h >= want for h in hs.values()):
                return hs
            await trio.sleep(0.05)
    return await _heights(c)


@pytest.mark.parametrize("mode", MODES)
async def test_plain_gets_leave_the_height_alone_and_linearizable_ones_add_blocks(make_cluster, mode: str) -> None:
    lc = make_cluster(mode)
    await lc.ready()
    async with ledger.client.connect(lc.directory, timeout=30) as c:
        for i in range(PUTS):
            await c.put(f"k{i}", f"v{i}")
        before = await _settled_height(c, PUTS)
        assert set(before.values()) == {PUTS}, before
        for j in range(GETS):
            assert await c.get(f"k{j % PUTS}") == f"v{j % PUTS}".encode()
        assert await c.get("never-written") is None
        session = c._session.core
        assert session.reads_answered == GETS + 1 and session.reads_short == 0
        await trio.sleep(0.3)
        after = await _heights(c)
        assert set(after.values()) == {PUTS}, f"plain gets grew the ledger: {before} -> {after}"
        answered = {s["id"]: s["reads_answered"] for s in await c.status()}
        if mode == "pbft":
            # every replica got every read; 2f+1 answers were enough, the rest come in anyway
            assert sum(answered.values()) >= (GETS + 1) * 3, answered
        else:
            assert sorted(answered.values())[-1] == GETS + 1, answered      # the leader alone
        # ordered reads: one block each (the client waits for each), the same values
        for j in range(3):
            assert await c.get(f"k{j}", linearizable=True) == f"v{j}".encode()
        assert set((await _settled_height(c, PUTS + 3)).values()) == {PUTS + 3}
        # read your writes: a get right after a put sees it, whichever replicas answer first
        for j in range(10):
            await c.put("latest", f"x{j}")
            assert await c.get("latest") == f"x{j}".encode()
    # SyncClient: the same two kinds of get, blocking
    def sync() -> tuple:
        with ledger.client.SyncClient(lc.directory, client=1) as sc:
            return sc.get("k2"), sc.get("k2", linearizable=True)
    assert await trio.to_thread.run_sync(sync) == (b"v2", b"v2")
    # the CLI: a plain get adds nothing, --linearizable adds a block
    p = cli("get", str(lc.directory), "k1", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["value"] == "v1"
    p = cli("status", str(lc.directory), "--json")
    height = max(s["height"] for s in json.loads(p.stdout) if s.get("reachable"))
    assert height == PUTS + 3 + 10 + 1          # the puts, 3 + 1 ordered gets, the 10 puts of "latest"
    p = cli("get", str(lc.directory), "k1", "--linearizable")
    assert p.returncode == 0 and p.stdout.strip() == "v1", p.stderr
    p = cli("status", str(lc.directory), "--json")
    assert max(s["height"] for s in json.loads(p.stdout) if s.get("reachable")) == height + 1


async def test_pbft_one_replica_lying_about_reads_changes_no_answer(make_cluster) -> None:
    lc = make_cluster("pbft", byzantine={2: "lying-reads"})
    await lc.ready()
    async with ledger.client.connect(lc.directory, timeout=30) as c:
        for i in range(PUTS):
            await c.put(f"k{i}", f"v{i}")
        for j in range(GETS):
            assert await c.get(f"k{j % PUTS}") == f"v{j % PUTS}".encode()
        assert c._session.core.reads_answered == GETS        # 3 honest answers match: no fallback
        assert set((await _settled_height(c, PUTS)).values()) == {PUTS}


@pytest.mark.parametrize("mode, safety", [("pbft", "held"),
                                          pytest.param("paxos", "violated", marks=pytest.mark.slow)])
def test_the_lying_reads_lab_on_real_processes(mode: str, safety: str) -> None:
    """``bftledger lab lying-reads --real``: the load reads each put back; in pbft the liar's
    answers never reach 2f+1, in paxos the lying leader's one answer is taken."""
    p = cli("lab", "lying-reads", "--mode", mode, "--real", "--json", timeout=120)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["safety"] == safety and r["liveness"] == "held", r
    assert any("reads the key back" in n for n in r["notes"]), r["notes"]


async def test_a_client_flooding_reads_is_refused_by_rule_and_others_are_served(make_cluster) -> None:
    """Client 2 sends 12,000 reads at once to every replica over its own authenticated
    connections, never reading the answers: past its burst (4,000, then 2,000/s) each replica
    answers BUSY and counts ``read.RATE`` under c2, and client 0's reads and writes go on."""
    from bft.app import hostile
    from ledger.state import op_get
    from ledger.wire import Read, frame

    lc = make_cluster("pbft")
    await lc.ready()
    burst = b"".join(frame(Read(2, k, 0, op_get("k0")).encode()) for k in range(12_000))
    flooders = [await hostile.authenticated(lc.cluster, r, 2) for r in range(lc.n)]
    t0 = trio.current_time()
    async with ledger.client.connect(lc.directory, timeout=30) as c:
        await c.put("k0", "v0")
        async with trio.open_nursery() as nursery:
            for s in flooders:
                nursery.start_soon(s.send_all, burst)
            for j in range(20):
                assert await c.get("k0") == b"v0"
            await c.put("k1", "v1")
            assert await c.get("k1") == b"v1"
        await trio.sleep(1.0)
        st = await c.status()
    elapsed = trio.current_time() - t0
    for s in st:                       # here about 6,900 refused and 5,100 answered per replica
        refused = s["dropped"].get("read.RATE", {}).get("by_sender", {}).get("c2", 0)
        assert refused >= 12_000 - 4_000 - 2_000 * elapsed, (refused, elapsed)
    for s in flooders:
        await trio.aclose_forcefully(s)
