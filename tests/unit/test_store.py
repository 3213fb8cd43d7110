"""BlockStore: round trips, recovery to identical state, torn tails, tamper detection."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from bft import wire
from ledger import state
from ledger.block import Block
from ledger.chain import Chain
from ledger.records import OVERHEAD, StoreError, frame
from ledger.store import BLOCK_MAGIC, BlockRejected, BlockStore, StoreCorrupt, segment_name
from ledger.votelog import VOTE_MAGIC

FAKE_CERT = [(0, b"s" * 64)]     # the store does not check certificates; the audit does


def make_blocks(count: int, per_block: int = 2, start_chain: Chain | None = None) -> tuple[list[Block], Chain]:
    chain = start_chain or Chain()
    out = []
    for _ in range(count):
        h = chain.height + 1
        txs = [wire.Request(j, h, state.op_put(f"k{h}.{j}", b"v" * h), b"s" * 64).encode() for j in range(per_block)]
        if per_block > 1:
            txs.append(wire.Request(0, h, state.op_get("k1.0"), b"s" * 64).encode())   # a duplicate: same (client, ts)
        out.append(chain.execute(h, 0, txs, FAKE_CERT))
    return out, chain


def record_bounds(blocks: list[Block]) -> list[int]:
    """Byte offsets where records start in a single segment, plus the end of the file."""
    bounds = [0]
    for b in blocks:
        bounds.append(bounds[-1] + OVERHEAD + len(b.encode()))
    return bounds


def client_table(chain: Chain) -> dict:
    """The exactly-once table as plain values (its record classes need not define __eq__)."""
    def plain(x: object) -> object:
        slots = getattr(type(x), "__slots__", None)
        if slots and not hasattr(x, "__dataclass_fields__"):
            return tuple(plain(getattr(x, a)) for a in slots)
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return x
    return {c: plain(st) for c, st in chain.clients.items()}


def write_store(path: Path, blocks: list[Block], **kw) -> None:
    with BlockStore.open(path, fsync=False, **kw) as s:
        s.append_many(blocks)


def seg0(path: Path) -> Path:
    return path / segment_name(0)


def test_roundtrip(tmp_path: Path) -> None:
    blocks, _ = make_blocks(5)
    with BlockStore.open(tmp_path / "s") as s:
        assert s.height == 0
        for b in blocks:
            s.append(b)
        assert s.height == 5
        assert s.head == blocks[-1].hash()
        for b in blocks:
            assert s.read(b.height).encode() == b.encode()
        assert [b.height for b in s.blocks(2, 4)] == [2, 3, 4]
        assert [b.height for b in s.blocks(4, 99)] == [4, 5]
        assert len(list(s.blocks())) == 5
        for bad in (0, 6, -1):
            with pytest.raises(IndexError):
                s.read(bad)
    assert seg0(tmp_path / "s").stat().st_size == record_bounds(blocks)[-1]


def test_reopen_recovers_identical_chain_state(tmp_path: Path) -> None:
    blocks, chain = make_blocks(6, per_block=3)
    write_store(tmp_path, blocks[:2])
    with BlockStore.open(tmp_path) as s:
        s.append_many(blocks[2:])
    with BlockStore.open(tmp_path) as s:
        assert s.height == chain.height == 6
        assert s.head == chain.head
        assert s.chain.head == chain.head
        assert s.chain.tree.size == chain.tree.size
        assert s.chain.tree.root() == chain.tree.root()
        assert s.chain.kv.root() == chain.kv.root()
        assert client_table(s.chain) == client_table(chain)
        assert s.warnings == []
        # the recovered chain continues exactly where the old one stopped
        more, chain = make_blocks(1, start_chain=chain)
        more2, _ = make_blocks(1, start_chain=s.chain)
        assert more[0].encode() == more2[0].encode()
        s.append(more2[0])
    with BlockStore.open(tmp_path) as s:
        assert s.height == 7


def test_empty_store(tmp_path: Path) -> None:
    with BlockStore.open(tmp_path / "new") as s:
        assert s.height == 0 and s.head == b"\x00" * 32 and list(s.blocks()) == []
    with pytest.raises(StoreError, match="no block store"):
        BlockStore.open(tmp_path / "absent", create=False)
    with pytest.raises(StoreError, match="no block store"):
        BlockStore.scan(tmp_path / "absent")


def test_torn_write_at_every_offset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocks, _ = make_blocks(3, per_block=1)
    src = tmp_path / "src"
    write_store(src, blocks)
    data = seg0(src).read_bytes()
    bounds = record_bounds(blocks)
    assert bounds[-1] == len(data)
    d = tmp_path / "cut"
    d.mkdir()
    for cut in range(len(data)):
        seg0(d).write_bytes(data[:cut])
        complete = max(i for i, b in enumerate(bounds) if b <= cut)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ledger.store"):
            s = BlockStore.open(d, fsync=False)
        assert s.height == complete, cut
        torn = cut != bounds[complete]
        assert len(s.warnings) == int(torn), cut
        assert any("torn" in r.message for r in caplog.records) == torn
        assert seg0(d).stat().st_size == bounds[complete]            # truncated back to a boundary
        s.append_many(blocks[complete:])
        s.close()
        with BlockStore.open(d, fsync=False) as s:
            assert s.height == 3 and s.warnings == [] and s.head == blocks[-1].hash()
        assert seg0(d).read_bytes() == data


def test_every_single_byte_flip_is_detected(tmp_path: Path) -> None:
    blocks, _ = make_blocks(3, per_block=1)
    write_store(tmp_path, blocks)
    path = seg0(tmp_path)
    data = bytearray(path.read_bytes())
    bounds = record_bounds(blocks)
    masks = (0x01, 0x80, 0xFF, 0x5A)             # a low bit, a high bit, every bit, a mixture
    for pos in range(len(data)):
        height = max(i for i, b in enumerate(bounds) if b <= pos) + 1
        mask = masks[pos % len(masks)]
        flipped = bytearray(data)
        flipped[pos] ^= mask
        path.write_bytes(flipped)
        with pytest.raises(StoreCorrupt) as ei:
            BlockStore.open(tmp_path, fsync=False)
        assert ei.value.height == height, (pos, mask, str(ei.value))
        assert str(ei.value).startswith(f"height {height}: ")
        if pos % 5 == 0:
            with pytest.raises(StoreCorrupt):
                BlockStore.scan(tmp_path)
        assert path.read_bytes() == flipped          # never "repaired" by truncation
    path.write_bytes(data)
    with BlockStore.open(tmp_path, fsync=False) as s:
        assert s.height == 3


def _reframe(path: Path, blocks: list[Block]) -> None:
    path.write_bytes(b"".join(frame(BLOCK_MAGIC, b.encode()) for b in blocks))


def test_consistent_checksums_but_broken_chain(tmp_path: Path) -> None:
    """An editor who recomputes the CRCs is caught by links, roots and re-execution."""
    blocks, _ = make_blocks(4)
    path = seg0(tmp_path)

    def corrupt_at(mutated: list[Block]) -> StoreCorrupt:
        _reframe(path, mutated)
        with pytest.raises(StoreCorrupt) as ei:
            BlockStore.open(tmp_path, fsync=False)
        return ei.value

    fresh = lambda: [Block.decode(b.encode()) for b in blocks]  # noqa: E731

    bs = fresh()
    bs[1].txs[0] = bs[1].txs[0][:-1] + b"x"
    e = corrupt_at(bs)
    assert (e.height, e.reason) == (2, "batch root does not match the transactions")

    bs = fresh()
    bs[2].prev_hash = b"\x01" * 32
    assert corrupt_at(bs).reason == "previous-block hash does not match"

    bs = fresh()
    del bs[1]
    e = corrupt_at(bs)
    assert e.height == 2 and "height 3 where 2 was expected" in e.reason

    bs = fresh()
    bs[0].sequence = 7
    assert corrupt_at(bs).height == 1

    # results consistent with their own root, but not with re-execution (last block, so no
    # later block's prev-hash catches it first)
    from crypto.merkle import root_of
    bs = fresh()
    bs[3].results[0] = state.encode_result(state.OK, b"forged")
    bs[3].results_root = root_of(bs[3].results)
    e = corrupt_at(bs)
    assert e.height == 4 and e.reason.startswith("re-execution")

    # a well-framed record that is not a block at all, and one of another kind
    path.write_bytes(frame(BLOCK_MAGIC, blocks[0].encode()) + frame(BLOCK_MAGIC, b"\x93\x01\x02\x03"))
    with pytest.raises(StoreCorrupt) as ei:
        BlockStore.open(tmp_path, fsync=False)
    assert ei.value.height == 2 and "not a block" in ei.value.reason
    # the same block, encoded with a wider integer than msgpack's canonical form
    body = blocks[0].encode()
    hb = blocks[0].header_bytes()                  # [fixarray, tag 0x42, version 1, ...]
    wide = body.replace(hb, hb[:2] + b"\xcc" + hb[2:], 1)   # version 1 as a uint8
    assert wide != body and Block.decode(wide).encode() == body
    path.write_bytes(frame(BLOCK_MAGIC, wide))
    with pytest.raises(StoreCorrupt, match="canonical"):
        BlockStore.open(tmp_path, fsync=False)
    path.write_bytes(frame(VOTE_MAGIC, blocks[0].encode()))
    with pytest.raises(StoreCorrupt, match="magic"):
        BlockStore.open(tmp_path, fsync=False)


def test_segment_rolling(tmp_path: Path) -> None:
    blocks, chain = make_blocks(7)
    one = len(frame(BLOCK_MAGIC, blocks[0].encode()))
    with BlockStore.open(tmp_path, fsync=False, segment_bytes=2 * one) as s:
        s.append_many(blocks[:3])
        for b in blocks[3:]:
            s.append(b)
        paths = s.segment_paths
    names = sorted(p.name for p in tmp_path.glob("segment-*.log"))
    assert names == [p.name for p in paths] and len(names) >= 3
    assert all(p.stat().st_size > 0 for p in paths)
    with BlockStore.open(tmp_path, fsync=False, segment_bytes=2 * one) as s:
        assert s.height == 7 and s.head == chain.head
        assert [b.encode() for b in s.blocks()] == [b.encode() for b in blocks]
    # one block per segment when the limit is tiny
    d = tmp_path / "tiny"
    write_store(d, blocks, segment_bytes=1)
    assert len(list(d.glob("segment-*.log"))) == 7
    with BlockStore.open(d, fsync=False, segment_bytes=1) as s:
        assert s.read(5).encode() == blocks[4].encode()


def test_segment_gaps_and_short_segments(tmp_path: Path) -> None:
    blocks, _ = make_blocks(4)
    write_store(tmp_path, blocks, segment_bytes=1)
    data1 = (tmp_path / segment_name(1)).read_bytes()
    (tmp_path / segment_name(1)).unlink()
    with pytest.raises(StoreCorrupt) as ei:
        BlockStore.open(tmp_path, fsync=False)
    assert ei.value.height == 2 and "segment-000001.log is missing" in ei.value.reason
    # a torn record is only a torn write at the end of the LAST segment
    (tmp_path / segment_name(1)).write_bytes(data1[:-3])
    with pytest.raises(StoreCorrupt) as ei:
        BlockStore.open(tmp_path, fsync=False)
    assert ei.value.height == 2 and "later segments exist" in ei.value.reason
    (tmp_path / segment_name(1)).write_bytes(b"")
    with pytest.raises(StoreCorrupt, match="empty but later segments exist"):
        BlockStore.open(tmp_path, fsync=False)
    (tmp_path / segment_name(1)).write_bytes(data1)
    (tmp_path / segment_name(0)).unlink()
    with pytest.raises(StoreCorrupt) as ei:
        BlockStore.open(tmp_path, fsync=False)
    assert ei.value.height == 1 and "segment-000000.log is missing" in ei.value.reason


def test_empty_last_segment_from_a_crash_while_rolling(tmp_path: Path) -> None:
    blocks, _ = make_blocks(3)
    write_store(tmp_path, blocks[:2], segment_bytes=1)
    (tmp_path / segment_name(2)).write_bytes(b"")
    with BlockStore.open(tmp_path, fsync=False, segment_bytes=1) as s:
        assert s.height == 2
        s.append(blocks[2])
    assert (tmp_path / segment_name(2)).stat().st_size > 0
    with BlockStore.open(tmp_path, fsync=False) as s:
        assert s.height == 3


def test_non_extending_blocks_are_refused(tmp_path: Path) -> None:
    blocks, _ = make_blocks(3)
    other, _ = make_blocks(3, per_block=1)       # a different history
    with BlockStore.open(tmp_path, fsync=False) as s:
        with pytest.raises(BlockRejected, match="next block must be 1"):
            s.append(blocks[1])
        s.append(blocks[0])
        size = seg0(tmp_path).stat().st_size
        with pytest.raises(BlockRejected, match="previous-block hash"):
            s.append(other[1])                   # right height, wrong parent (a fork)
        with pytest.raises(BlockRejected):
            s.append(blocks[0])                  # the same block again
        with pytest.raises(BlockRejected):
            s.append_many([blocks[1], other[2]])  # second one bad: nothing is written
        assert s.height == 1 and seg0(tmp_path).stat().st_size == size
        s.append_many([blocks[1], blocks[2]])
        assert s.height == 3


def test_scan_is_read_only(tmp_path: Path) -> None:
    blocks, _ = make_blocks(3)
    write_store(tmp_path, blocks)
    path = seg0(tmp_path)
    torn = path.read_bytes()[:-5]
    path.write_bytes(torn)
    s = BlockStore.scan(tmp_path)
    assert s.readonly and s.height == 2 and len(s.warnings) == 1 and "torn" in s.warnings[0]
    with pytest.raises(StoreError, match="read-only"):
        s.append(blocks[2])
    s.close()
    assert path.read_bytes() == torn
    with BlockStore.open(tmp_path, fsync=False) as w:          # the writer truncates
        assert w.height == 2 and len(w.warnings) == 1
        with BlockStore.scan(tmp_path) as r:                   # a scan next to a live writer
            assert r.height == 2 and r.warnings == []


def test_single_writer_lock(tmp_path: Path) -> None:
    s = BlockStore.open(tmp_path, fsync=False)
    with pytest.raises(StoreError, match="in use by another process") as held:
        BlockStore.open(tmp_path, fsync=False)
    assert held.value.pid == os.getpid() and f"(PID {os.getpid()})" in str(held.value)   # the holder, named
    s.close()
    assert (tmp_path / "LOCK").read_bytes() == b""          # released: no stale PID left behind
    BlockStore.open(tmp_path, fsync=False).close()
    with pytest.raises(StoreError, match="closed"):
        s.append(make_blocks(1)[0][0])


def test_read_rechecks_the_disk(tmp_path: Path) -> None:
    blocks, _ = make_blocks(3)
    with BlockStore.open(tmp_path, fsync=False) as s:
        s.append_many(blocks)
        fd = os.open(seg0(tmp_path), os.O_RDWR)
        try:
            pos = record_bounds(blocks)[1] + 20
            b = os.pread(fd, 1, pos)
            os.pwrite(fd, bytes([b[0] ^ 0x10]), pos)
        finally:
            os.close(fd)
        assert s.read(1).height == 1
        with pytest.raises(StoreCorrupt) as ei:
            s.read(2)
        assert ei.value.height == 2
