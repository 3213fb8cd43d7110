"""VoteLog: durable opaque records, torn-tail recovery, tamper detection, atomic compaction."""
from __future__ import annotations

import logging
from pathlib import Path

import msgpack
import pytest

from ledger.records import OVERHEAD, StoreError
from ledger.votelog import VoteLog, VoteLogCorrupt

RECORDS = [msgpack.packb(["prepare", v, n, b"d" * 32]) for v, n in ((0, 1), (0, 2), (1, 2))] + [b""]


def bounds(records: list[bytes]) -> list[int]:
    out = [0]
    for r in records:
        out.append(out[-1] + OVERHEAD + len(r))
    return out


def test_roundtrip_and_reopen(tmp_path: Path) -> None:
    p = tmp_path / "votes.log"
    with VoteLog.open(p) as vl:
        assert vl.records() == []
        vl.append(RECORDS[0])
        vl.append_many(RECORDS[1:])
        vl.append_many([])
        assert vl.records() == RECORDS and len(vl) == 4
    with VoteLog.open(p) as vl:
        assert vl.records() == RECORDS and vl.warnings == []
        vl.append(b"more")
    with VoteLog.open(p) as vl:
        assert vl.records() == RECORDS + [b"more"]
    assert p.stat().st_mode & 0o777 == 0o600


def test_records_must_be_bytes(tmp_path: Path) -> None:
    with VoteLog.open(tmp_path / "v.log", fsync=False) as vl:
        with pytest.raises(TypeError):
            vl.append("text")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            vl.append_many([b"ok", 3])  # type: ignore[list-item]
        assert vl.records() == []          # a bad batch writes nothing
        with pytest.raises(TypeError):
            vl.compact([None])  # type: ignore[list-item]


def test_torn_tail_at_every_offset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "src.log"
    with VoteLog.open(src, fsync=False) as vl:
        vl.append_many(RECORDS)
    data = src.read_bytes()
    b = bounds(RECORDS)
    assert b[-1] == len(data)
    p = tmp_path / "votes.log"
    for cut in range(len(data) + 1):
        p.write_bytes(data[:cut])
        complete = max(i for i, x in enumerate(b) if x <= cut)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ledger.votelog"):
            vl = VoteLog.open(p, fsync=False)
        torn = cut != b[complete]
        assert vl.records() == RECORDS[:complete], cut
        assert len(vl.warnings) == int(torn) and bool(caplog.records) == torn
        vl.append_many(RECORDS[complete:])
        vl.close()
        assert p.read_bytes() == data
        with VoteLog.open(p, fsync=False) as vl:
            assert vl.records() == RECORDS and vl.warnings == []


def test_every_single_byte_flip_is_detected(tmp_path: Path) -> None:
    p = tmp_path / "votes.log"
    with VoteLog.open(p, fsync=False) as vl:
        vl.append_many(RECORDS)
    data = p.read_bytes()
    b = bounds(RECORDS)
    for pos in range(len(data)):
        flipped = bytearray(data)
        flipped[pos] ^= 0x40
        p.write_bytes(flipped)
        with pytest.raises(VoteLogCorrupt) as ei:
            VoteLog.open(p, fsync=False)
        assert ei.value.record == max(i for i, x in enumerate(b) if x <= pos) + 1, pos
        assert p.read_bytes() == flipped


def test_compact_replaces_atomically(tmp_path: Path) -> None:
    p = tmp_path / "votes.log"
    with VoteLog.open(p) as vl:
        vl.append_many(RECORDS)
        vl.compact([RECORDS[2]])
        assert vl.records() == [RECORDS[2]]
        vl.append(b"after")
        assert vl.records() == [RECORDS[2], b"after"]
    with VoteLog.open(p) as vl:
        assert vl.records() == [RECORDS[2], b"after"]
    assert not (tmp_path / "votes.log.tmp").exists()
    # a compaction that died before its rename leaves a temporary file: ignored and removed
    (tmp_path / "votes.log.tmp").write_bytes(b"half-written garbage")
    with VoteLog.open(p) as vl:
        assert vl.records() == [RECORDS[2], b"after"]
        vl.compact([])
        assert vl.records() == []
    assert not (tmp_path / "votes.log.tmp").exists()
    assert p.read_bytes() == b""


def test_single_writer_and_closed(tmp_path: Path) -> None:
    p = tmp_path / "votes.log"
    vl = VoteLog.open(p, fsync=False)
    with pytest.raises(StoreError, match="in use"):
        VoteLog.open(p, fsync=False)
    vl.close()
    with pytest.raises(StoreError, match="closed"):
        vl.append(b"x")
    with pytest.raises(StoreError, match="does not exist"):
        VoteLog.open(tmp_path / "missing" / "votes.log")
