"""ledger.history: what counts as a write, the index beside the block store (built, caught up,
rebuilt when missing or damaged), and scans of the state in key order."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from bft import wire
from ledger import state
from ledger.chain import Chain
from ledger.history import INDEX_NAME, HistoryIndex, writes_of
from ledger.state import KVStore
from ledger.store import BlockStore

CERT = [(0, b"s" * 64)]


def _tx(client: int, ts: int, op: bytes) -> bytes:
    return wire.Request(client, ts, op, b"s" * 64).encode()


def _ledger(path: Path, rounds: int, client: int = 0) -> list[tuple[int, int, bytes | None]]:
    """A store whose blocks write "k" in every way there is; returns the expected history of "k"."""
    chain, expected, ts = Chain(), [], 0
    with BlockStore.open(path, fsync=False) as s:
        for r in range(rounds):
            h = chain.height + 1
            ops = [state.op_put("k", b"v%d" % r), state.op_put("other", b"x"),
                   state.op_cas("k", b"nope", b"never"),                               # fails: no version
                   state.op_cas("k", b"v%d" % r, b"c%d" % r),
                   state.op_txn({"a": b"1"}, ["k"], {}),
                   state.op_delete("k"),                                               # absent: no version
                   state.op_txn({"k": b"t%d" % r}, [], {"a": b"2"})]                   # requirement fails
            txs = []
            for op in ops:
                ts += 1
                txs.append(_tx(client, ts, op))
            txs.append(txs[0])                                                         # a duplicate
            s.append(chain.execute(h, 0, txs, CERT))
            expected += [(h, 0, b"v%d" % r), (h, 3, b"c%d" % r), (h, 4, None)]
    return expected


def _history(idx: HistoryIndex, key: str) -> list[tuple[int, int]]:
    return idx.positions(key, 0, 1000)[0]


def test_writes_of_counts_what_changed_the_key_and_nothing_else() -> None:
    ok, failed = state.encode_result(state.OK), state.encode_result(state.FAILED)
    assert writes_of(_tx(1, 1, state.op_put("a", b"1")), ok) == [("a", b"1")]
    assert writes_of(_tx(1, 1, state.op_cas("a", None, b"2")), ok) == [("a", b"2")]
    assert writes_of(_tx(1, 1, state.op_cas("a", None, b"2")), failed) == []
    assert writes_of(_tx(1, 1, state.op_delete("a")), ok) == [("a", None)]
    assert writes_of(_tx(1, 1, state.op_delete("a")), failed) == []
    assert writes_of(_tx(1, 1, state.op_get("a")), state.encode_result(state.OK, b"1")) == []
    assert sorted(writes_of(_tx(1, 1, state.op_txn({"b": b"1", "a": b"0"}, ["c"], {"d": None})), ok)) == \
        [("a", b"0"), ("b", b"1"), ("c", None)]
    assert writes_of(b"not a request", ok) == []
    assert writes_of(_tx(1, 1, state.op_put("a", b"1")), b"garbage") == []


def test_the_index_is_built_caught_up_and_reloaded(tmp_path: Path) -> None:
    expected = _ledger(tmp_path, 5)
    with BlockStore.open(tmp_path, fsync=False) as s:
        idx = HistoryIndex.open(tmp_path, s)
        assert idx.rebuilt == "it is missing"
        assert [(h, i) for h, i, _ in expected] == _history(idx, "k")
        assert _history(idx, "other") == [(h, 1) for h in range(1, 6)]
        page, more = idx.positions("k", 2, 4)
        assert page == [(3, 0), (3, 3), (3, 4), (4, 0)] and more
        idx.close()
    expected += _ledger_more(tmp_path)
    with BlockStore.open(tmp_path, fsync=False) as s:
        idx = HistoryIndex.open(tmp_path, s)                    # behind the store: caught up, not rebuilt
        assert idx.rebuilt is None and idx.height == s.height == 6
        assert _history(idx, "k") == [(h, i) for h, i, _ in expected]
        idx.close()


def _ledger_more(path: Path) -> list[tuple[int, int, bytes | None]]:
    with BlockStore.open(path, fsync=False) as s:
        chain = s.chain
        b = chain.execute(s.height + 1, 0, [_tx(2, 1, state.op_put("k", b"late"))], CERT)
        s.append(b)
        return [(b.height, 0, b"late")]


@pytest.mark.parametrize("damage", ["flip", "truncate", "append-garbage", "other-ledger", "ahead"])
def test_a_damaged_index_is_detected_and_rebuilt(tmp_path: Path, damage: str) -> None:
    expected = _ledger(tmp_path / "a", 4)
    with BlockStore.open(tmp_path / "a", fsync=False) as s:
        HistoryIndex.open(tmp_path / "a", s).close()
    path = tmp_path / "a" / INDEX_NAME
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        data = data[:-3]
    elif damage == "append-garbage":
        data += b"BFH1garbage!"
    elif damage == "other-ledger":                  # a well-formed index of a ledger with other blocks
        _ledger(tmp_path / "b", 4, client=1)
        with BlockStore.open(tmp_path / "b", fsync=False) as other:
            HistoryIndex.open(tmp_path / "b", other).close()
        data = bytearray((tmp_path / "b" / INDEX_NAME).read_bytes())
    elif damage == "ahead":
        _ledger(tmp_path / "b", 6)
        with BlockStore.open(tmp_path / "b", fsync=False) as other:
            HistoryIndex.open(tmp_path / "b", other).close()
        data = bytearray((tmp_path / "b" / INDEX_NAME).read_bytes())
    path.write_bytes(bytes(data))
    with BlockStore.open(tmp_path / "a", fsync=False) as s:
        idx = HistoryIndex.open(tmp_path / "a", s)
        assert idx.rebuilt is not None, damage
        assert _history(idx, "k") == [(h, i) for h, i, _ in expected]
        idx.close()
        again = HistoryIndex.open(tmp_path / "a", s)          # the rebuilt file is trusted next time
        assert again.rebuilt is None and _history(again, "k") == _history(idx, "k")
        again.close()


def test_scan_walks_the_state_in_key_order_within_prefix_and_bounds() -> None:
    kv = KVStore()
    keys = [f"key-{i:04d}" for i in range(1000)] + ["a", "kez", "k\u00e9y", "key"]
    for i, k in enumerate(reversed(keys)):
        kv.apply(state.op_put(k, b"%d" % i))
    kv.apply(state.op_delete("key-0500"))
    kv.root()
    everything, more = kv.scan("", None, "", 10_000)
    assert [k for k, _ in everything] == sorted(set(keys) - {"key-0500"}) and not more
    page, more = kv.scan("", None, "key-", 10)
    assert [k for k, _ in page] == [f"key-{i:04d}" for i in range(10)] and more
    page, more = kv.scan("key-0498", "key-0503", "key-", 10)
    assert [k for k, _ in page] == ["key-0498", "key-0499", "key-0501", "key-0502"] and not more
    kv.apply(state.op_put("key-0500", b"back"))                # not yet in the tree: scan syncs it
    assert kv.scan("key-0500", None, "", 1)[0] == [("key-0500", b"back")]


async def test_a_replica_scans_the_past_by_replay_within_its_bound(tmp_path: Path, monkeypatch) -> None:
    """QueryServer on a real store: a scan at a past height replays the blocks (the pages of
    one scan, and later heights, continue from the kept state), with proofs on request; a
    height beyond the bound is refused and counted (wire.QUERY_TOO_DEEP)."""
    from bft.runtime import queries
    from ledger.net.transport import Problems
    from ledger.rangeproof import in_range, verify_page
    from ledger.rules import WireRule
    from ledger.statetree import StateProof
    from ledger.wire import ScanRequest

    _ledger(tmp_path, 6)                                  # 8 transactions a block
    with BlockStore.open(tmp_path, fsync=False) as s:
        server = queries.QueryServer(0, s, s.chain, HistoryIndex.open(tmp_path, s), Problems())
        a = await server.scan(ScanRequest(1, b"", b"", b"", 3, 10, 1), "client 0")
        assert a.height == 3 and [k for k, _ in a.pairs] == [b"a", b"other"] and not a.error
        verify_page(s.read(3).state_root, "", in_range("", None), [(k.decode(), v) for k, v in a.pairs],
                    [StateProof.decode(p) for p in a.proofs], bool(a.more))
        assert dict(a.pairs)[b"a"] == b"1"
        now = await server.scan(ScanRequest(2, b"", b"", b"", 0, 10, 0), "client 0")
        assert now.height == 6 and [k for k, _ in now.pairs] == [b"a", b"other"]
        monkeypatch.setattr(queries, "MAX_REPLAY_TXS", 16)
        refused = await server.scan(ScanRequest(3, b"", b"", b"", 5, 10, 0), "client 0")
        assert b"over this replica's bound" in refused.error and refused.pairs == []
        assert server.problems.counts[WireRule.QUERY_TOO_DEEP] == 1
        assert (await server.scan(ScanRequest(4, b"\xff", b"", b"", 0, 10, 0), "client 0")) is None
        assert server.problems.counts[WireRule.QUERY_INVALID] == 1


def test_a_past_state_is_rebuilt_from_the_writes_within_bounds_and_checked_against_the_root(tmp_path: Path) -> None:
    """PastState (what past proofs and past scans share): each height's state has the root its
    block carries, a call applies at most its bounds and goes on from there, a lower height
    starts over, and blocks that do not give their state root are caught, never kept."""
    import dataclasses

    from ledger.chain import ReplayError
    from ledger.history import PastState

    _ledger(tmp_path, 6)                                  # 8 transactions a block
    with BlockStore.open(tmp_path, fsync=False) as s:
        past = PastState(s)
        assert past.blocks_to(4) == 4
        assert past.advance(4, 2, 1000) == 2 and past.kv.root() == s.read(2).state_root
        assert past.blocks_to(4) == 2 and past.advance(4, 100, 9) == 4       # 9 transactions: 2 blocks
        assert past.kv.root() == s.read(4).state_root
        assert past.advance(6, 100, 1000) == 6 and past.kv.root() == s.read(6).state_root
        assert past.blocks_to(3) == 3 and past.advance(3, 100, 1000) == 3   # lower: from block 1
        assert past.kv.root() == s.read(3).state_root

        class Lying:                                      # a store whose block 5 carries another root
            height = s.height

            def blocks(self, lo, hi):
                for b in s.blocks(lo, hi):
                    yield dataclasses.replace(b, state_root=bytes(32)) if b.height == 5 else b

        bad = PastState(Lying())
        assert bad.advance(4, 100, 1000) == 4
        with pytest.raises(ReplayError):
            bad.advance(5, 100, 1000)
        assert bad.height == 0 and bad.kv.root() == KVStore().root()


async def test_alternating_past_heights_pay_for_every_replay(tmp_path: Path, monkeypatch) -> None:
    """A scan is charged against the state kept when it is queued; queued scans alternating
    heights K+1 and K would each make the replica replay from block 1 for the price of one
    block. The difference is charged when the scan is served, and one over budget is dropped
    (wire.SERVE_RATE), never served."""
    import trio

    from bft.runtime import queries
    from ledger.net.transport import Problems
    from ledger.rules import WireRule
    from ledger.wire import ScanRequest

    monkeypatch.setattr(queries, "REPLAY_BLOCKS_PER_TOKEN", 1)
    _ledger(tmp_path, 6)

    class Conn:
        name, role, ident = "client 0", 1, 0

        def send(self, fr: bytes) -> None:
            pass

    charged: list[int] = []

    def charge(conn, tokens: int) -> bool:                  # a budget of 12 tokens
        if sum(charged) + tokens > 12:
            return False
        charged.append(tokens)
        return True

    with BlockStore.open(tmp_path, fsync=False) as s:
        server = queries.QueryServer(0, s, s.chain, HistoryIndex.open(tmp_path, s), Problems(), charge=charge)
        await server.scan(ScanRequest(0, b"", b"", b"", 4, 10, 0), "client 0")       # the state kept: 4
        conn = Conn()
        for nonce, h in enumerate([5, 4, 5, 4], 1):
            server.submit(conn, ScanRequest(nonce, b"", b"", b"", h, 10, 0))
        assert charged == [2, 1, 2, 1]                       # 1 + the blocks from the state kept
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.run)
            while server._queue.statistics().current_buffer_used:
                await trio.sleep(0.01)
            await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert charged == [2, 1, 2, 1, 4]                    # at 4 again: 4 blocks more from block 1
        assert server.problems.counts[WireRule.SERVE_RATE] == 1 and server.served == 3


async def test_a_bug_in_a_query_handler_does_not_stop_the_query_task(tmp_path: Path, monkeypatch) -> None:
    """The query task runs in the replica's nursery: an exception escaping it would take the
    replica down. A handler's bug is logged and counted, and the next query is served."""
    import trio

    from bft.runtime import queries
    from ledger.net.transport import LocalFault, Problems
    from ledger.wire import HistoryRequest

    _ledger(tmp_path, 2)

    class Conn:
        name, role, ident = "client 0", 1, 0

        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def send(self, fr: bytes) -> None:
            self.sent.append(fr)

    with BlockStore.open(tmp_path, fsync=False) as s:
        server = queries.QueryServer(0, s, s.chain, HistoryIndex.open(tmp_path, s), Problems())
        real, calls = server._history, []

        def buggy(m, who):
            calls.append(m.nonce)
            if len(calls) == 1:
                raise KeyError("a bug")
            return real(m, who)

        monkeypatch.setattr(server, "_history", buggy)
        conn = Conn()
        server.submit(conn, HistoryRequest(1, b"k", 0, 10))
        server.submit(conn, HistoryRequest(2, b"k", 0, 10))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.run)
            while server.served < 1:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert calls == [1, 2] and len(conn.sent) == 1
        assert server.problems.counts[LocalFault.CANNOT_SERVE_QUERY] == 1


def test_an_index_path_that_cannot_be_read_or_written_is_rebuilt_in_memory(tmp_path: Path) -> None:
    """history.idx that is not a file (here a directory) can be neither read nor replaced: the
    replica indexes in memory, with a warning, and never stops for its index."""
    expected = _ledger(tmp_path, 3)
    (tmp_path / INDEX_NAME).mkdir()
    with BlockStore.open(tmp_path, fsync=False) as s:
        idx = HistoryIndex.open(tmp_path, s)
        assert idx.rebuilt is not None and "cannot be read" in idx.rebuilt
        assert _history(idx, "k") == [(h, i) for h, i, _ in expected]
        idx.close()


async def test_one_client_cannot_fill_the_query_queue(tmp_path: Path) -> None:
    """A burst of queries from one client takes at most its share of the queue; the rest are
    dropped and counted (wire.QUERY_QUEUE_FULL), and another client's query still gets in.
    The share is given back as its queries are served."""
    import trio

    from bft.runtime import queries
    from ledger.net.transport import Problems
    from ledger.rules import WireRule
    from ledger.wire import HistoryRequest

    _ledger(tmp_path, 2)

    class Conn:
        role = 1

        def __init__(self, ident: int) -> None:
            self.ident, self.name, self.sent = ident, f"client {ident}", []

        def send(self, fr: bytes) -> None:
            self.sent.append(fr)

    with BlockStore.open(tmp_path, fsync=False) as s:
        server = queries.QueryServer(0, s, s.chain, HistoryIndex.open(tmp_path, s), Problems())
        hog, other = Conn(0), Conn(1)
        for nonce in range(queries.MAX_QUEUED):
            server.submit(hog, HistoryRequest(nonce, b"k", 0, 10))
        server.submit(other, HistoryRequest(1, b"k", 0, 10))
        share = queries.MAX_QUEUED_PER_CALLER
        assert server.problems.counts[WireRule.QUERY_QUEUE_FULL] == queries.MAX_QUEUED - share
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.run)
            while server.served < share + 1:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert len(hog.sent) == share and len(other.sent) == 1 and server._waiting == {}
        server.submit(hog, HistoryRequest(99, b"k", 0, 10))                  # its share is back
        assert server.problems.counts[WireRule.QUERY_QUEUE_FULL] == queries.MAX_QUEUED - share
