"""Issue 16 on real clusters: the history of a key (every version, each with a receipt that
verifies offline), paged; scans in key order, now and at a past height; the CLI."""
from __future__ import annotations

import json

import pytest
import trio

import ledger.client
from ledger.receipt import Receipt

from .conftest import MODES, cli, one_error_line, settle


@pytest.mark.parametrize("mode", MODES)
async def test_a_key_written_50_times_has_50_versions_that_verify(make_cluster, mode: str) -> None:
    lc = make_cluster(mode)
    await lc.ready()
    async with ledger.client.connect(lc.directory, timeout=30) as c:
        written = []
        for i in range(47):
            r = await c.put("hist", b"v%d" % i)
            written.append((r.height, b"v%d" % i))
            if i % 10 == 0:
                await c.put("noise", b"n%d" % i)
        r = await c.delete("hist")
        written.append((r.height, None))
        r = await c.cas("hist", None, b"back")
        written.append((r.height, b"back"))
        assert not (await c.cas("hist", b"wrong", b"never")).ok          # did not swap: not a version
        r = await c.transact(puts={"hist": b"txn", "other": b"o"})
        written.append((r.height, b"txn"))
        assert not (await c.transact(puts={"hist": b"never"}, require={"other": b"x"})).ok

        versions = await c.history("hist")
        assert len(versions) == 50 and not versions.more
        assert [(v.height, v.value) for v in versions] == written
        assert versions[47].deleted and versions[49].receipt.operation["kind"] == "transact"
        for v in versions:
            back = Receipt.from_json(v.receipt.to_json())                  # offline, public keys only
            assert back.verify(lc.directory).block_hash == v.receipt.block_hash
            assert back.height == v.height

        pages, after = [], None
        while True:                                                        # paged: the same 50, in order
            page = await c.history("hist", limit=7, after=after)
            pages += page
            if not page.more:
                break
            after = page[-1].height
        assert [(v.height, v.value) for v in pages] == written
        assert await c.history("never-written") == []
        later = await c.history("hist", after=written[-2][0])
        assert [(v.height, v.value) for v in later] == written[-1:]

    p = cli("history", str(lc.directory), "hist", "--json", "--limit", "5", "--after", str(written[9][0]))
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert [v["value"] for v in doc["versions"]] == ["v10", "v11", "v12", "v13", "v14"] and doc["more"]
    Receipt.from_dict(doc["versions"][0]["receipt"]).verify(lc.directory)
    p = cli("history", str(lc.directory), "hist")
    assert p.returncode == 0 and len(p.stdout.strip().splitlines()) == 50 + 1, p.stdout   # + a summary line
    assert "deleted" in p.stdout
    one_error_line(cli("history", str(lc.directory), "hist", "--limit", "0"))


@pytest.mark.parametrize("mode", MODES)
async def test_a_scan_over_1000_keys_returns_them_in_order_and_at_height_the_state_as_it_was(make_cluster,
                                                                                             mode: str) -> None:
    lc = make_cluster(mode)
    await lc.ready()
    async with ledger.client.connect(lc.directory, timeout=30) as c:
        keys = [f"item-{i:04d}" for i in range(1000)]
        order = keys[::7] + [k for k in keys if k not in set(keys[::7])]     # not written in key order

        async def write(chunk: list[str]) -> None:
            for k in chunk:
                await c.put(k, k.encode())

        async with trio.open_nursery() as nursery:
            for j in range(20):
                nursery.start_soon(write, order[j::20])
        await c.put("other", b"x")
        before = (await c.put("item-0000", b"changed")).height
        await c.delete("item-0001")
        r = await c.put("item-0002", b"changed too")

        got = await c.scan(prefix="item-")
        assert [k for k, _ in got] == [k for k in keys if k != "item-0001"] and not got.more
        assert got[0] == ("item-0000", b"changed") and got[1] == ("item-0002", b"changed too")
        assert got.height >= r.height
        assert len(await c.scan()) == 1000                                   # 999 items and "other"
        page = await c.scan(start="item-0500", end="item-0510")
        assert [k for k, _ in page] == keys[500:510]
        limited = await c.scan(prefix="item-", limit=10)
        assert len(limited) == 10 and limited.more

        past = await c.scan(prefix="item-", at_height=before)
        assert [k for k, _ in past] == keys and past.height == before
        assert dict(past)["item-0000"] == b"changed" and dict(past)["item-0002"] == b"item-0002"
        earlier = await c.scan(prefix="item-", at_height=before - 1)
        assert dict(earlier)["item-0000"] == b"item-0000"
        assert len(await c.scan(prefix="item-", at_height=2)) < len(await c.scan(prefix="item-", at_height=40))

        proven = await c.scan(prefix="item-", verified=True)              # pages of 250, each with proofs
        assert list(proven) == list(got) and proven.proof is not None
        assert proven.proof.verify(lc.directory) == list(got)             # offline, public keys only
        proven_past = await c.scan(prefix="item-", at_height=before, verified=True)
        assert list(proven_past) == list(past) and proven_past.proof.height == before
        proven_past.proof.verify(lc.directory)
        none = await c.scan(prefix="nothing-", verified=True)
        assert list(none) == [] and none.proof.verify(lc.directory) == []

    p = cli("scan", str(lc.directory), "item-00", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert [e["key"] for e in doc["pairs"]] == [f"item-{i:04d}" for i in range(100) if i != 1]
    p = cli("scan", str(lc.directory), "item-099")
    assert p.returncode == 0 and p.stdout.splitlines()[0].startswith("item-0990"), p.stdout
    one_error_line(cli("scan", str(lc.directory), "--at-height", "999999"))
    p = cli("scan", str(lc.directory), "item-01", "--verified", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["verified"] and len(doc["block_hash"]) == 64 and len(doc["pairs"]) == 100
    p = cli("scan", str(lc.directory), "item-01", "--verified")
    assert p.returncode == 0 and "verified against the state root" in p.stderr, p.stderr


async def test_a_replica_lying_about_history_can_neither_hide_nor_invent_a_version(make_cluster) -> None:
    """pbft, replica 3 runs 'lying-history': in turn it leaves out every other version, and
    adds a position whose transaction does not write the key. The client asks f+1 replicas
    and checks every position against its certified block: the history stays whole and true."""
    lc = make_cluster("pbft", byzantine={3: "lying-history"})
    await lc.ready()
    async with ledger.client.connect(lc.directory, timeout=30) as c:
        written = []
        for i in range(20):
            r = await c.put("watched", b"w%d" % i)
            written.append((r.height, b"w%d" % i))
            await c.put("bystander", b"b%d" % i)
        omitted_and_merged = invented_and_caught = False
        for _ in range(60):                     # until the liar was among the first f+1 answers both ways
            versions = await c.history("watched")
            assert [(v.height, v.value) for v in versions] == written
            omitted_and_merged |= 3 in versions.replicas
            invented_and_caught |= any(e.startswith("replica 3: claimed") for e in versions.rejected)
            pages, after = [], None
            while True:
                page = await c.history("watched", limit=3, after=after)
                pages += page
                if not page.more:
                    break
                after = page[-1].height
            assert [(v.height, v.value) for v in pages] == written
            if omitted_and_merged and invented_and_caught:
                break
        assert omitted_and_merged and invented_and_caught
        for v in versions:
            v.receipt.verify(lc.directory)
        # with only the liar and one honest replica up, every history is whole or refused, never short
        lc.stop(0)
        lc.stop(1)
        whole = refused = 0
        for _ in range(4):
            try:
                versions = await c.history("watched")
            except ledger.client.Unavailable as e:
                assert "needs 2 replicas' answers" in str(e) and "replica 3: claimed" in str(e), e
                refused += 1
                continue
            assert [(v.height, v.value) for v in versions] == written and versions.replicas == [2, 3]
            whole += 1
        assert whole and refused


async def test_a_missing_or_damaged_index_is_rebuilt_from_the_blocks_at_restart(make_cluster) -> None:
    """Replica 0's index loses a byte, replica 1's is deleted, replica 2's ends inside a
    record: each is detected at restart and rebuilt, and each replica answers the whole history."""
    from ledger.history import INDEX_NAME
    from ledger.wire import HistoryRequest

    lc = make_cluster("pbft")
    await lc.ready()
    async with ledger.client.connect(lc.directory, timeout=30) as c:
        heights = [(await c.put("kept", b"%d" % i)).height for i in range(12)]
        await settle(lc, c)
    lc.stop_all()
    d = [lc.cluster.data_dir(i) / INDEX_NAME for i in range(3)]
    raw = bytearray(d[0].read_bytes())
    raw[len(raw) // 3] ^= 0x40
    d[0].write_bytes(bytes(raw))
    d[1].unlink()
    d[2].write_bytes(d[2].read_bytes()[:-5])                               # a torn tail
    lc.start()
    await lc.ready()
    async with ledger.client.connect(lc.directory, timeout=30) as c:
        for r in range(4):
            a = await c._session.ask(r, lambda nonce: HistoryRequest(nonce, b"kept", 0, 100), 5)
            assert a is not None and [h for h, _ in a.positions] == heights, r
        assert [v.height for v in await c.history("kept")] == heights
        st = await c.status()
        assert [s["history_index"]["rebuilt"] is not None for s in st] == [True, True, True, False]
        assert all(s["history_index"]["height"] >= heights[-1] for s in st)
    for i in range(3):
        assert "rebuilding it from the blocks" in lc.log_path(i).read_text(), i
    assert "rebuilding" not in lc.log_path(3).read_text()                  # its index was whole: kept


def test_the_blocking_client_and_what_a_replica_drops_from_a_client(make_cluster) -> None:
    """SyncClient takes history and scan with keywords; a query whose key is not UTF-8 is
    dropped and counted (wire.QUERY_INVALID), and a burst of queries over the queue is
    dropped and counted (wire.QUERY_QUEUE_FULL), the replica answering the rest."""
    from ledger.wire import HistoryRequest, frame

    lc = make_cluster("pbft")
    trio.run(lc.ready)
    with ledger.client.SyncClient(lc.directory) as c:
        c.put("sync", "1")
        c.put("sync", "2")
        assert [v.value for v in c.history("sync", limit=10)] == [b"1", b"2"]
        assert c.scan(prefix="sync", verified=True).proof.verify(lc.directory) == [("sync", b"2")]

    async def abuse() -> dict:
        async with ledger.client.connect(lc.directory, timeout=30) as c:
            assert await c._session.ask(0, lambda nonce: HistoryRequest(nonce, b"\xff\xfe", 0, 10), 1.0) is None
            burst = b"".join(frame(HistoryRequest(10_000 + i, b"sync", 0, 10).encode()) for i in range(200))
            c._session.links[0].send(burst)
            await trio.sleep(0.5)
            assert await c._session.ask(0, lambda nonce: HistoryRequest(nonce, b"sync", 0, 10), 5.0) is not None
            return (await c.status())[0]["transport_problems"]

    problems = trio.run(abuse)
    assert problems.get("wire.QUERY_INVALID") == 1, problems
    assert problems.get("wire.QUERY_QUEUE_FULL", 0) >= 100, problems
