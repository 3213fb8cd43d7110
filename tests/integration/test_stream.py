"""Block streams on real processes (issue 16): every block exactly once, verified, while the
replica the stream reads from is killed and restarted and the primary is killed, under
writes; a slow subscriber is told and resumes; ``bftledger watch`` (and its Ctrl-C) and
``export``/``verify-export`` against a running cluster. What a stream refuses from a lying
replica is tested with real signed blocks in ``tests/unit/test_stream.py``."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import trio

import ledger.client
from ledger.block import Block
from ledger.store import BlockStore
from ledger.stream import Lagging

from .conftest import MODES, REPO, cli, one_error_line, settle, wait_for


def stored_hashes(lc, replica: int) -> dict[int, bytes]:
    store = BlockStore.scan(lc.cluster.data_dir(replica))
    try:
        return {b.height: b.hash() for b in store.blocks()}
    finally:
        store.close()


@pytest.mark.parametrize("mode", MODES)
async def test_exactly_once_across_a_restart_and_a_view_change(make_cluster, mode: str) -> None:
    lc = make_cluster(mode)
    await lc.ready()
    with trio.fail_after(240):
        await _exactly_once(lc, mode)


async def _exactly_once(lc, mode: str) -> None:
    got: list[Block] = []
    acked: list[int] = []
    events: list[str] = []
    async with ledger.client.connect(lc.directory, timeout=60) as c, \
            ledger.client.connect(lc.directory, client=1, timeout=60) as reader:
        stop = trio.Event()
        stream = reader.blocks(from_height=1)

        async def writer(w: int) -> None:
            i = 0
            while not stop.is_set():
                acked.append((await c.put(f"w{w}-{i}", f"v{i}")).height)
                i += 1

        async def consume() -> None:
            async for block in stream:
                got.append(block)

        async def progress(what: str, writes: int = 30, blocks: int = 5) -> None:
            """Writes commit and the stream follows them (not merely drains its backlog)."""
            a, top = len(acked), max(acked, default=0)
            await wait_for(lambda: len(acked) >= a + writes, 40, f"{writes} writes {what}")
            await wait_for(lambda: len(got) >= top + blocks, 40, f"the stream past height {top + blocks} {what}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            for w in range(4):
                nursery.start_soon(writer, w)
            await wait_for(lambda: len(got) >= 10, 30, "10 blocks streamed")
            victim = stream._replica                       # the replica the stream reads from now
            lc.kill(victim)
            events.append(f"killed replica {victim} at {len(got)}")
            await progress("with the stream's replica down")
            lc.start([victim])
            await lc.ready([victim])
            events.append(f"restarted replica {victim} at {len(got)}")
            await progress("after the restart")
            st = await settle(lc, c, list(range(lc.n)))            # the restarted one caught up
            leader = st[0]["leader"]
            view = st[0]["view"]
            lc.kill(leader)
            events.append(f"killed the leader {leader} (view {view}) at {len(got)}")
            await progress("after the leader died")
            stop.set()
            live = [i for i in range(lc.n) if i != leader]
            st = await settle(lc, c, live)
            final = st[live[0]]["height"]
            assert st[live[0]]["view"] > view, events
            await wait_for(lambda: len(got) >= final, 30, f"the stream to reach height {final}")
            nursery.cancel_scope.cancel()
    heights = [b.height for b in got]
    assert heights == list(range(1, len(got) + 1)), events      # no gap, no repeat, in order
    lc.stop_all()
    stored = stored_hashes(lc, live[0])
    assert all(stored[b.height] == b.hash() for b in got)       # the very blocks of the ledger
    for prev, b in zip(got, got[1:]):
        assert b.prev_hash == prev.hash()
    print(f"{mode}: {len(got)} blocks, {events}, stream switched replicas {stream.switches} times")


async def test_a_slow_subscriber_is_told_and_resumes(running_pbft) -> None:
    lc = running_pbft
    with trio.fail_after(60):
        await _slow(lc)


async def _slow(lc) -> None:
    async with ledger.client.connect(lc.directory, timeout=30) as c:
        for i in range(12):
            await c.put(f"slow-{i}", "x")
        st = await settle(lc, c)
        head = st[0]["height"]
        got: list[int] = []
        with pytest.raises(Lagging) as e:
            async for block in c.blocks(from_height=1, max_lag=2):
                got.append(block.height)
        assert e.value.resume_from == len(got) + 1 and e.value.head >= head and got == list(range(1, len(got) + 1))
        assert "nothing was skipped" in str(e.value)
        # it resumes where it stopped: from there on, nothing missing and nothing twice
        async for block in c.blocks(from_height=e.value.resume_from):
            got.append(block.height)
            if block.height == head:
                break
        assert got == list(range(1, head + 1))
        # a stream from the middle checks its first block against the one below it
        s = c.blocks(from_height=head - 1)
        first = await s.__anext__()
        assert first.height == head - 1 and s._prev is first


async def test_watch_and_export_of_a_running_cluster(running_pbft, tmp_path) -> None:
    with trio.fail_after(120):
        await _watch(running_pbft, tmp_path)


async def _watch(lc, tmp_path) -> None:
    async with ledger.client.connect(lc.directory, timeout=30) as c:
        for i in range(3):
            await c.put("watched", f"yes-{i}")
        st = await settle(lc, c)
    height = st[0]["height"]
    p = await trio.to_thread.run_sync(lambda: cli("watch", str(lc.directory), "--count", "2", "--timeout", "10", timeout=40))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("block 1  view ") and any(line.startswith("block 2 ") for line in lines)
    assert all(line.startswith(("block ", "  1.", "  2.")) for line in lines), lines
    p = await trio.to_thread.run_sync(lambda: cli("watch", str(lc.directory), "--from", str(height), "--count", "1",
                                                  "--json"))
    assert p.returncode == 0 and json.loads(p.stdout)["height"] == height, p.stdout + p.stderr
    assert any("put 'watched'" in tx["op"] for tx in json.loads(p.stdout)["txs"])
    one_error_line(await trio.to_thread.run_sync(lambda: cli("watch", str(tmp_path / "nope"))))
    # Ctrl-C stops it cleanly (while it waits at the head)
    proc = subprocess.Popen([sys.executable, "-m", "bft", "watch", str(lc.directory), "--from", str(height)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        first = await trio.to_thread.run_sync(proc.stdout.readline)
        assert first.startswith(f"block {height} "), first
        proc.send_signal(signal.SIGINT)
        _, err = await trio.to_thread.run_sync(lambda: proc.communicate(timeout=20))
        assert proc.returncode == 130 and "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
    # export next to the running replica, verify anywhere
    out = tmp_path / "l.bfx"
    p = await trio.to_thread.run_sync(lambda: cli("export", str(lc.directory), "--id", "1", str(out)))
    assert p.returncode == 0, p.stderr
    head = st[1]["head"]
    p = await trio.to_thread.run_sync(lambda: cli("verify-export", str(out), "--expect-head", head))
    assert p.returncode == 0 and p.stdout.startswith("OK: the archive of replica 1"), p.stdout + p.stderr
