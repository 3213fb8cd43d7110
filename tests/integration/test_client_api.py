"""The client API for applications (issue 15), on real replica processes over TCP:

- ``connect`` under trio and under asyncio, every public method, cancellation, and no
  thread left behind;
- ``SyncClient`` from several threads at once, and its clear refusal inside a running
  trio or asyncio loop;
- the key and operation limits (library ``TooLarge``, CLI one line, exit 2), values from
  ``--file`` and standard input, and the ``cas`` / ``delete`` commands;
- fast failure when every replica refuses the connection, and none when a quorum is up,
  when a replica restarts, or when the hosts are silent rather than refusing.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import trio

import ledger.client
from bft.app import cmd_client
from bft.app.clusterinit import init_cluster
from ledger import state
from ledger.client import (MAX_KEY, MAX_OP, AsyncioClient, Client, InsideEventLoop, LedgerError, SyncClient,
                           TooLarge, Unavailable)
from ledger.cluster import load
from ledger.net.session import REFUSALS_TO_FAIL

from .conftest import MODES, cli, one_error_line

BIG = b"v" * 100_000
LONG_KEY = "k" * (MAX_KEY + 1)


def public_coroutine_methods() -> list[str]:
    return [n for n, f in inspect.getmembers(Client) if not n.startswith("_") and inspect.iscoroutinefunction(f)]


async def scenario(c, prefix: str, gather) -> None:
    """The same calls under either event loop: only the client's own methods are awaited."""
    d = c.cluster.directory
    r = await c.put(f"{prefix}-acct", "10")
    assert r.ok and r.height >= 1
    r.verify(d)
    assert await c.get(f"{prefix}-acct") == b"10"
    assert (await c.cas(f"{prefix}-acct", "10", b"20")).ok
    miss = await c.cas(f"{prefix}-acct", "10", "30")
    assert not miss.ok and miss.value == b"20"
    assert (await c.cas(f"{prefix}-fresh", None, "1")).ok
    proof = await c.get_verified(f"{prefix}-fresh")
    assert proof.value == b"1" and proof.verify(d).value == b"1"
    with pytest.raises(TooLarge):
        await c.get_verified(LONG_KEY)
    assert (await c.delete(f"{prefix}-acct")).ok and not (await c.delete(f"{prefix}-acct")).ok
    assert await c.get(f"{prefix}-acct") is None
    st = await c.status()
    assert len(st) == c.cluster.n and all(s["reachable"] for s in st)
    receipts = await gather([c.put(f"{prefix}-{i}", str(i)) for i in range(40)])
    assert all(r.ok for r in receipts) and len({(r.height, r.index) for r in receipts}) == 40
    values = await gather([c.get(f"{prefix}-{i}") for i in range(40)])
    assert values == [str(i).encode() for i in range(40)]
    for name in public_coroutine_methods():         # also any method added to Client later
        assert callable(getattr(c, name)), name
    with pytest.raises(TooLarge):
        await c.put(LONG_KEY, "v")


async def trio_gather(coros: list) -> list:
    out: list = [None] * len(coros)

    async def one(i: int, coro) -> None:
        out[i] = await coro

    async with trio.open_nursery() as nursery:
        for i, coro in enumerate(coros):
            nursery.start_soon(one, i, coro)
    return out


async def asyncio_gather(coros: list) -> list:
    return list(await asyncio.gather(*coros))


# ----------------------------------------------------------------------------- trio and asyncio
def test_connect_under_trio_and_under_asyncio(running_pbft) -> None:
    d = running_pbft.directory
    before = threading.active_count()

    async def under_trio() -> str:
        async with ledger.client.connect(d, client=1) as c:
            assert type(c) is Client
            await scenario(c, "trio", trio_gather)
        return "done"

    async def under_asyncio() -> str:
        async with ledger.client.connect(d, client=1) as c:
            assert type(c) is AsyncioClient and c.id == 1 and c.timeout == ledger.client.DEFAULT_TIMEOUT
            await scenario(c, "asyncio", asyncio_gather)
        return "done"

    assert trio.run(under_trio) == "done"
    assert asyncio.run(under_asyncio()) == "done"
    assert threading.active_count() == before, "the asyncio client's thread outlived its block"


def test_asyncio_errors_cancellation_and_close_leave_no_thread(running_pbft, tmp_path: Path) -> None:
    before = threading.active_count()
    d = tmp_path / "silent"
    init_cluster(d, "pbft", 1, clients=2)
    with silent_listeners(d):
        async def main() -> None:
            # a cluster that accepts connections and never answers: the call waits until cancelled
            async with ledger.client.connect(d, timeout=None) as c:
                t0 = time.monotonic()
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(c.put("k", "v"), 0.5)
                assert time.monotonic() - t0 < 2
                for _ in range(100):                  # the cancelled call ended in the trio thread too
                    if not c._host._calls.child_tasks:
                        break
                    await asyncio.sleep(0.01)
                assert not c._host._calls.child_tasks
                stuck = [asyncio.create_task(c.get(f"k{i}")) for i in range(20)]
                await asyncio.sleep(0.2)
            # leaving the block cancelled the 20 calls in flight and ended the client's thread
            done, _ = await asyncio.wait(stuck, timeout=5)
            assert len(done) == 20 and all(isinstance(t.exception(), LedgerError) for t in done)
            with pytest.raises(ledger.client.ClusterError):
                async with ledger.client.connect(tmp_path / "missing"):
                    pass
            # the whole block cancelled from outside, while it waits
            with pytest.raises(asyncio.TimeoutError):
                async with asyncio.timeout(0.5):
                    async with ledger.client.connect(d, timeout=None) as c:
                        await c.put("k", "v")
            async with ledger.client.connect(running_pbft.directory, client=2) as c:   # still usable after
                assert (await c.put("after-cancel", "1")).ok

        asyncio.run(main())
    assert threading.active_count() == before


class silent_listeners:
    """Sockets on every replica port of ``d`` that accept TCP connections and never answer."""

    def __init__(self, d: Path) -> None:
        self.socks: list[socket.socket] = []
        for r in load(d).replicas:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((r.host, r.port))
            s.listen(64)
            self.socks.append(s)

    def __enter__(self) -> "silent_listeners":
        return self

    def __exit__(self, *exc: object) -> None:
        for s in self.socks:
            s.close()


# ----------------------------------------------------------------------------- SyncClient
def test_sync_client_from_threads_and_its_refusal_inside_event_loops(running_pbft) -> None:
    d = running_pbft.directory
    with SyncClient(d, client=2) as c:
        results: dict[str, list[bool]] = {"a": [], "b": []}
        errors: list[BaseException] = []

        def worker(name: str) -> None:
            try:
                for i in range(10):
                    results[name].append(c.put(f"sync-{name}-{i}", name).ok)
                    assert c.get(f"sync-{name}-{i}") == name.encode()
            except BaseException as e:                 # reported to the test below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,)) for n in results]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and results == {"a": [True] * 10, "b": [True] * 10}

        async def in_trio() -> str:
            with pytest.raises(InsideEventLoop) as e:
                c.put("k", "v")
            assert "trio event loop" in str(e.value) and "connect(" in str(e.value)
            return (await trio.to_thread.run_sync(c.get, "sync-a-0")).decode()   # a worker thread may block

        async def in_asyncio() -> str:
            with pytest.raises(InsideEventLoop) as e:
                c.get("k")
            assert "asyncio event loop" in str(e.value) and "connect(" in str(e.value)
            return (await asyncio.to_thread(c.get, "sync-b-0")).decode()

        assert trio.run(in_trio) == "a"
        assert asyncio.run(in_asyncio()) == "b"
        for name in public_coroutine_methods():
            assert callable(getattr(c, name)), name
    with pytest.raises(LedgerError):
        c.get("k")


# ----------------------------------------------------------------------------- limits
def test_limits_refuse_before_sending_and_the_largest_operation_commits(running_pbft) -> None:
    assert (cmd_client.MAX_OP, cmd_client.MAX_KEY) == (MAX_OP, MAX_KEY) == (64 * 1024, state.MAX_KEY)

    async def main() -> None:
        async with ledger.client.connect(running_pbft.directory, client=3) as c:
            ts = c._session._ts
            for call in (c.put(LONG_KEY, "v"), c.get(LONG_KEY), c.delete(LONG_KEY), c.cas(LONG_KEY, None, "v")):
                with pytest.raises(TooLarge, match="1,025 bytes"):
                    await call
            for call in (c.put("k", BIG), c.cas("k", None, BIG), c.cas("k", BIG, "v")):
                with pytest.raises(ValueError, match=r"over the ledger's limit of 65,536 bytes"):
                    await call
            assert c._session._ts == ts, "an oversized request was signed and sent"
            # the documented promise: key and value totalling 65,525 bytes always fit
            key = "K" * MAX_KEY
            value = os.urandom(MAX_OP - 11 - MAX_KEY)
            assert len(state.op_put(key, value)) == MAX_OP
            assert (await c.put(key, value)).ok
            assert await c.get(key) == value
            with pytest.raises(TooLarge, match="65,537 bytes"):
                await c.put(key, value + b"x")

    trio.run(main)


def usage_error(p) -> str:
    """Oversized input is a bad argument: one line, exit status 2 (like argparse's errors)."""
    line = one_error_line(p)
    assert p.returncode == 2, line
    return line


def test_cli_limits_file_stdin_cas_delete(running_pbft, tmp_path: Path) -> None:
    d = str(running_pbft.directory)
    t0 = time.monotonic()
    e = usage_error(cli("put", d, "k", BIG.decode()))
    assert "100,012 bytes" in e and "65,536" in e
    assert "1,025 bytes" in usage_error(cli("put", d, LONG_KEY, "v"))
    assert "1,025 bytes" in one_error_line(cli("get", d, LONG_KEY))
    assert "1,025 bytes" in one_error_line(cli("delete", d, LONG_KEY))
    big = tmp_path / "big"
    big.write_bytes(BIG)
    assert "is 100,000 bytes" in usage_error(cli("put", d, "k", "--file", str(big)))
    assert "more than 65,536" in one_error_line(cli("put", d, "k", "-", stdin=BIG.decode()))
    assert "65,536" in one_error_line(cli("cas", d, "k", "--absent", "--file", str(big)))
    assert "cannot read --file" in one_error_line(cli("put", d, "k", "--file", str(tmp_path / "none")))
    assert "not both" in one_error_line(cli("put", d, "k", "v", "--file", str(big)))
    assert "standard input" in one_error_line(cli("put", d, "k"))
    assert time.monotonic() - t0 < 20, "the refusals should not wait for the cluster"

    blob = bytes(range(256)) * 200                    # 51,200 bytes, not UTF-8
    f = tmp_path / "blob"
    f.write_bytes(blob)
    p = cli("put", d, "cli-file", "--file", str(f))
    assert p.returncode == 0 and p.stdout.startswith("committed: put 'cli-file'"), p.stderr
    got = json.loads(cli("get", d, "cli-file", "--json").stdout)
    assert bytes.fromhex(got["value_hex"]) == blob
    p = cli("put", d, "cli-stdin", "-", stdin="two\nlines\n")
    assert p.returncode == 0, p.stderr
    assert cli("get", d, "cli-stdin").stdout == "two\nlines\n\n"   # the value's own newline, and get's

    p = cli("cas", d, "cli-stdin", "new", "--expect", "wrong")
    assert p.returncode == 1 and "outcome failed" in p.stdout and "not swapped" in p.stderr, p.stdout + p.stderr
    p = cli("cas", d, "cli-stdin", "-", "--expect", "two\nlines\n", stdin="swapped")
    assert p.returncode == 0 and p.stdout.startswith("committed: cas 'cli-stdin'"), p.stderr
    assert cli("get", d, "cli-stdin").stdout == "swapped\n"
    assert cli("cas", d, "cli-new", "1", "--absent").returncode == 0
    p = cli("cas", d, "cli-new", "2", "--absent", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["summary"]["status"] == "failed", p.stdout
    assert cli("delete", d, "cli-new").returncode == 0
    p = cli("delete", d, "cli-new")
    assert p.returncode == 1 and "was not set" in p.stderr
    assert cli("get", d, "cli-new").returncode == 1

    for cmd in ("put", "get", "delete", "cas"):
        text = " ".join(cli(cmd, "--help").stdout.split())
        assert "1,024 bytes" in text and "65,536 bytes" in text, cmd


# ----------------------------------------------------------------------------- fast failure
@pytest.mark.parametrize("mode", MODES)
def test_every_replica_refusing_fails_fast_with_the_status_message(tmp_path: Path, mode: str) -> None:
    d = tmp_path / mode
    init_cluster(d, mode, 1, clients=2)                # initialised, never started: every port refuses
    status = one_error_line(cli("status", str(d)))

    async def main() -> float:
        async with ledger.client.connect(d, timeout=15) as c:
            t0 = time.monotonic()
            with pytest.raises(Unavailable) as e:
                await c.put("k", "v")
            took = time.monotonic() - t0
            assert f"bftledger: error: {e.value}" == status
            t1 = time.monotonic()
            with pytest.raises(Unavailable):             # the next one fails at once
                await c.get("k")
            assert time.monotonic() - t1 < 0.1
        return took

    took = trio.run(main)
    assert took < 1.5, f"took {took:.2f} s"
    with SyncClient(d, timeout=15) as c:
        t0 = time.monotonic()
        with pytest.raises(Unavailable):
            c.get("k")
        assert time.monotonic() - t0 < 1.5
    for args in (["put", str(d), "k", "v"], ["get", str(d), "k"]):
        t0 = time.monotonic()
        assert one_error_line(cli(*args)) == status
        took = time.monotonic() - t0
        assert took < 2, f"{args[0]} took {took:.2f} s"


def test_silent_hosts_are_not_refusals(tmp_path: Path) -> None:
    """A host that accepts and then says nothing may yet answer: wait the whole timeout."""
    d = tmp_path / "silent"
    init_cluster(d, "pbft", 1, clients=2)
    with silent_listeners(d):
        t0 = time.monotonic()
        p = cli("put", str(d), "k", "v", "--timeout", "3")
        assert time.monotonic() - t0 > 2.9
        assert p.returncode == 1 and "handshake timed out at" in p.stderr.splitlines()[-1], p.stderr


@pytest.mark.parametrize("mode", MODES)
async def test_a_quorum_up_commits_although_the_others_refuse_and_restart(make_cluster, mode: str) -> None:
    lc = make_cluster(mode)
    await lc.ready()
    down = lc.n - 1
    lc.stop(down)                                      # its port refuses from now on
    async with ledger.client.connect(lc.directory, timeout=20) as c:
        for i in range(5):
            assert (await c.put(f"quorum-{i}", "v")).ok
            await trio.sleep(0.3)                      # the refused replica's dials keep failing meanwhile
        assert await c.get("quorum-0") == b"v"
        assert c._session.links[down].refusals >= REFUSALS_TO_FAIL      # refused throughout, yet no failure
        for i in range(6):                             # the same replica going down and up under requests
            if i % 2 == 0:
                lc.procs[down].start()
            else:
                lc.kill(down)
            assert (await c.put(f"restart-{i}", "v")).ok
            await trio.sleep(0.2)
