"""Issue 15 on real clusters: atomic multi-key transactions, and exactly-once outcomes of
writes that timed out (``Uncertain``, ``Client.outcome``, ``bftledger outcome``)."""
from __future__ import annotations

import dataclasses
import random

import pytest
import trio

import ledger.client
from ledger.receipt import Receipt

from .conftest import MODES, cli, one_error_line

ACCOUNTS = [f"acct-{i}" for i in range(5)]


@pytest.mark.parametrize("mode", MODES)
async def test_concurrent_transfers_conserve_money_and_each_is_one_verifiable_transaction(make_cluster,
                                                                                         mode: str) -> None:
    lc = make_cluster(mode)
    await lc.ready()
    seed = 15
    rng = random.Random(seed)
    async with ledger.client.connect(lc.directory, timeout=30) as c:
        r = await c.transact(puts={a: b"100" for a in ACCOUNTS}, require={a: None for a in ACCOUNTS})
        assert r.ok and r.operation["kind"] == "transact" and set(r.operation["puts"]) == set(ACCOUNTS)
        done: list[Receipt] = []
        retries = [0]

        async def transfer(k: int) -> None:
            src, dst = rng.sample(ACCOUNTS, 2)
            amount = rng.randint(1, 30)
            while True:
                a, b = await c.get(src), await c.get(dst)
                new_a, new_b = int(a) - amount, int(b) + amount
                if new_a < 0:
                    return
                r = await c.transact(puts={src: b"%d" % new_a, dst: b"%d" % new_b}, require={src: a, dst: b})
                if r.ok:
                    done.append(r)
                    return
                assert set(r.failed) <= {src, dst} and r.failed, r.failed     # what moved under it
                retries[0] += 1

        async with trio.open_nursery() as nursery:
            for k in range(20):
                nursery.start_soon(transfer, k)
        balances = [int(await c.get(a)) for a in ACCOUNTS]
        assert sum(balances) == 500, (seed, balances)
        assert len(done) >= 15, (seed, len(done), retries[0])
        for r in done:
            v = Receipt.from_json(r.to_json()).verify(lc.directory)         # offline, public keys only
            assert v.block_hash == r.block_hash and len(r.operation["puts"]) == 2


@pytest.mark.parametrize("mode", MODES)
async def test_a_failed_requirement_applies_nothing_and_names_what_it_found(make_cluster, mode: str) -> None:
    lc = make_cluster(mode)
    await lc.ready()
    async with ledger.client.connect(lc.directory, timeout=30) as c:
        await c.put("x", b"1")
        r = await c.transact(puts={"x": b"2", "y": b"2"}, deletes=["z"], require={"x": b"1", "y": b"9", "w": None})
        assert not r.ok and r.failed == {"y": None}
        assert await c.get("x") == b"1" and await c.get("y") is None
        r.verify(lc.directory)
        with pytest.raises(ValueError, match="both put and deleted"):
            await c.transact(puts={"a": b"1"}, deletes=["a"])
    p = cli("transact", str(lc.directory), "--put", "x=3", "--delete", "nothing", "--require", "x=1")
    assert p.returncode == 0 and "operation: transact" in p.stdout and "require 'x' = b'1'" in p.stdout, p
    p = cli("transact", str(lc.directory), "--put", "x=4", "--require", "x=1")
    assert p.returncode == 1 and "not applied: 'x' holds b'3'" in p.stderr, p
    p = cli("transact", str(lc.directory))
    assert p.returncode == 2 and "at least one" in one_error_line(p)


@pytest.mark.parametrize("mode", MODES)
async def test_a_write_that_timed_out_is_uncertain_and_its_outcome_is_found_exactly_once(make_cluster,
                                                                                        mode: str) -> None:
    """Without a quorum a put times out: Uncertain names the request. After the replicas come
    back, outcome() returns its receipt, as often as asked, and the value was written once."""
    lc = make_cluster(mode)
    await lc.ready()
    down = [1, 2]                                     # no quorum left (3 of 4 in pbft, 2 of 3 in paxos)
    async with ledger.client.connect(lc.directory, timeout=30) as c:
        await c.put("before", b"0")
        for i in down:
            lc.stop(i)
        c.timeout = 2
        with pytest.raises(ledger.client.Uncertain) as info:
            await c.put("late", b"1")
        e = info.value
        assert e.request_id.startswith(f"{c.id}-") and "may still commit" in str(e)
        lc.start(down)
        await lc.ready(down)
        c.timeout = 30
        first = await c.outcome(e.request_id)
        again = await c.outcome(e.request)                       # by its bytes, as another process would
        assert first.ok and (first.height, first.index) == (again.height, again.index)
        assert first.operation == {"kind": "put", "key": "late", "value": b"1"}
        first.verify(lc.directory)
        assert await c.get("late") == b"1"


async def test_the_cli_keeps_an_uncertain_write_and_outcome_finds_it(make_cluster) -> None:
    lc = make_cluster("pbft")
    await lc.ready()
    d = str(lc.directory)
    for i in (1, 2):
        lc.stop(i)
    p = cli("put", d, "k", "v", "--timeout", "2")
    assert p.returncode == 3 and "may still commit" in p.stderr, p
    rid = p.stderr.split("it is ")[1].split(",")[0]
    assert (lc.directory / "pending" / f"{rid}.req").exists()
    lc.start([1, 2])
    await lc.ready([1, 2])
    p = cli("outcome", d, rid)
    assert p.returncode == 0 and "committed: put 'k'" in p.stdout and "operation: put 'k' = b'v'" in p.stdout, p
    assert not (lc.directory / "pending" / f"{rid}.req").exists()
    p = cli("outcome", d, rid)
    assert p.returncode == 2 and "no kept request" in one_error_line(p)
    p = cli("outcome", d, "nonsense")
    assert p.returncode == 2 and "CLIENT-TIMESTAMP" in one_error_line(p)


async def test_a_cluster_that_is_not_running_is_unavailable_not_uncertain(make_cluster) -> None:
    """Nothing was sent, so nothing can commit: Unavailable, and no outcome to ask about."""
    lc = make_cluster("pbft", start=False)
    async with ledger.client.connect(lc.directory, timeout=10) as c:
        with pytest.raises(ledger.client.Unavailable) as info:
            await c.put("k", b"v")
        assert not isinstance(info.value, ledger.client.Uncertain)


@pytest.mark.parametrize("mode", MODES)
async def test_add_client_registers_a_key_on_the_running_ledger_for_every_replica(make_cluster, mode: str) -> None:
    """Issue 15: onboarding without a restart or a wipe. The administrator's transaction
    registers the key; every replica takes the new client at once and after a restart; a
    client that is not the administrator cannot register one."""
    from crypto import keys, tls

    lc = make_cluster(mode)
    await lc.ready()
    d = str(lc.directory)
    p = cli("add-client", d)
    assert p.returncode == 0 and "registered client 4" in p.stdout, p
    p = cli("put", d, "from-4", "hello", "--client", "4")
    assert p.returncode == 0 and "committed: put 'from-4'" in p.stdout, p
    # a non-administrator's registration is dropped by every replica (no block, a timeout)
    s = keys.generate()
    async with ledger.client.connect(d, client=1, timeout=3) as c:
        c.cluster = dataclasses.replace(c.cluster, admin=1)     # past the client's own check
        with pytest.raises(ledger.client.Unavailable):
            await c.register_client(tls.make_certificate(s.seed, "intruder"))
    st = await lc.status()
    assert any(x["dropped"].get("request.REGISTRATION_NOT_ADMIN", {}).get("total", 0) for x in st), st
    # every replica restarted: the key comes back from the ledger
    lc.stop_all()
    lc.start()
    await lc.ready()
    async with ledger.client.connect(d, client=4, timeout=30) as c:
        r = await c.put("after-restart", b"1")
        assert r.client == 4 and await c.get("from-4") == b"hello"
    p = cli("put", d, "k", "v", "--client", "5")
    assert p.returncode == 1 and "add-client" in one_error_line(p)


def test_transact_and_outcome_from_sync_code_and_asyncio(make_cluster) -> None:
    """The same API from blocking code (SyncClient) and under asyncio (AsyncioClient)."""
    import asyncio

    lc = make_cluster("pbft")
    from bft.runtime.procs import wait_ready

    wait_ready(lc.cluster, timeout=30, procs=list(lc.procs.values()))
    with ledger.client.SyncClient(lc.directory, timeout=30) as c:
        r = c.transact({"s1": "1", "s2": "2"}, None, {"s1": None})
        assert r.ok and c.get("s2") == b"2"
        with pytest.raises(ledger.client.LedgerError, match="holds no uncertain request"):
            c.outcome("0-1")

    async def main() -> None:
        async with ledger.client.connect(lc.directory, client=1, timeout=30) as c:
            r = await c.transact(puts={"a1": b"x"}, deletes=["s1"], require={"s2": b"2"})
            assert r.ok and r.operation["deletes"] == ["s1"]
            again = await c.outcome(r.tx)
            assert (again.height, again.index) == (r.height, r.index)

    asyncio.run(main())
