"""Export and verify-export (issue 16): a round trip, every single-byte corruption caught with
what and where, forged archives that keep every checksum, rollback, receipts, and the CLI."""
from __future__ import annotations

import json
import random
import zlib
from pathlib import Path

import msgpack
import pytest

from bft.app.clusterinit import init_cluster
from ledger.block import Block
from ledger.certificate import ATTEST_DOMAIN, attestation_statement
from ledger.cluster import load
from ledger.export import MAGIC, PREAMBLE, REC_CRC, REC_HEAD, ExportError, export, verify_export
from ledger.receipt import Receipt
from ledger.store import BlockStore
from tests.unit.test_audit import build, cli, one_error_line


@pytest.fixture
def pbft_dir(tmp_path: Path) -> Path:
    d = tmp_path / "c"
    init_cluster(d, "pbft", 1, clients=4)
    return d


@pytest.fixture(params=["pbft", "paxos"])
def any_dir(request, tmp_path: Path) -> Path:
    d = tmp_path / request.param
    init_cluster(d, request.param, 1, clients=4)
    return d


def regions(data: bytes) -> list[tuple[str, int, int]]:
    """(name, start, end) of the preamble and of each record's header, payload and checksum."""
    out = [("magic", 0, len(MAGIC)), ("version", len(MAGIC), PREAMBLE)]
    off, i = PREAMBLE, 0
    while off < len(data):
        kind, length = REC_HEAD.unpack_from(data, off)
        name = f"record {i} ({kind.decode()})"
        p = off + REC_HEAD.size
        out += [(f"{name} kind+length", off, p), (f"{name} payload", p, p + length),
                (f"{name} crc", p + length, p + length + REC_CRC.size)]
        off, i = p + length + REC_CRC.size, i + 1
    return out


def reseal(data: bytes, index: int, payload: bytes) -> bytes:
    """``data`` with record ``index``'s payload replaced and its checksum recomputed: a forger's edit."""
    off = PREAMBLE
    for _ in range(index):
        _, length = REC_HEAD.unpack_from(data, off)
        off += REC_HEAD.size + length + REC_CRC.size
    kind, length = REC_HEAD.unpack_from(data, off)
    head = REC_HEAD.pack(kind, len(payload))
    rec = head + payload + REC_CRC.pack(zlib.crc32(payload, zlib.crc32(head)))
    return data[:off] + rec + data[off + REC_HEAD.size + length + REC_CRC.size:]


def test_round_trip(any_dir: Path, tmp_path: Path) -> None:
    cluster = load(any_dir)
    blocks = build(any_dir, 0, 4)
    out = tmp_path / "l.bfx"
    made = export(any_dir, 0, out)
    assert made.ok and made.height == 4 and made.head == blocks[-1].hash().hex()
    got = verify_export(out, expect_head=blocks[1].hash(), expect_height=4)
    r = got.report
    assert r.ok, r.reason
    assert (r.height, r.head, r.tree_size, r.replica, r.mode) == (4, blocks[-1].hash().hex(), 12, 0, cluster.mode)
    assert r.state_root == blocks[-1].state_root.hex()
    per_block = 3 + (3 if cluster.mode == "pbft" else 1)       # every client signature and the certificate
    assert r.signatures_checked >= 4 * per_block
    assert got.cluster.cluster_id == cluster.cluster_id


def test_every_single_byte_corruption_is_reported(any_dir: Path, tmp_path: Path) -> None:
    """Every byte of a small archive, each changed (xor with a seeded non-zero value), in every
    region (magic, version, each record's kind, length, payload and checksum): each is a
    fault report naming a byte offset, never a traceback and never OK."""
    build(any_dir, 0, 2)
    out = tmp_path / "l.bfx"
    export(any_dir, 0, out)
    data = out.read_bytes()
    spans = regions(data)
    assert spans[-1][2] == len(data) and len(spans) == 2 + 3 * 4      # header, 2 blocks, trailer
    rng = random.Random(16)
    bad = tmp_path / "bad.bfx"
    seen: dict[str, int] = {}
    for pos in range(len(data)):
        b = bytearray(data)
        b[pos] ^= rng.randrange(1, 256)
        bad.write_bytes(bytes(b))
        r = verify_export(bad).report
        region = next(name for name, s, e in spans if s <= pos < e)
        assert not r.ok, f"byte {pos} ({region}) changed, still OK"
        assert r.reason.startswith("byte "), r.reason
        where = int(r.reason.split()[1].rstrip(":,"))
        assert where <= pos, (pos, region, r.reason)                 # reported at or before the change
        seen[region] = seen.get(region, 0) + 1
    assert len(seen) == len(spans)                                   # every region was hit


def test_forgeries_that_keep_every_checksum(pbft_dir: Path, tmp_path: Path) -> None:
    """Edits that recompute the checksums are caught by what the blocks prove."""
    blocks = build(pbft_dir, 0, 3)
    out = tmp_path / "l.bfx"
    export(pbft_dir, 0, out)
    data = out.read_bytes()
    bad = tmp_path / "bad.bfx"

    def verdict(d: bytes) -> str:
        assert d != data
        bad.write_bytes(d)
        r = verify_export(bad).report
        assert not r.ok
        return r.reason

    b2 = Block.decode(blocks[1].encode())
    b2.results = [b"\x92\x03\xc4\x04lies"] + b2.results[1:]                    # a different result...
    from crypto.merkle import root_of
    b2.results_root = root_of(b2.results)                             # ...under a matching root
    assert "block 2" in verdict(reseal(data, 2, b2.encode()))
    b2 = Block.decode(blocks[1].encode())
    b2.cert = b2.cert[:2]                                              # one COMMIT short
    assert "block 2" in (why := verdict(reseal(data, 2, b2.encode()))) and "signatures" in why
    # a block removed: the next one no longer links
    no2 = reseal(data, 2, blocks[2].encode())
    assert "previous" in verdict(no2) or "height" in verdict(no2)
    # the cluster swapped for another with other keys: no certificate verifies
    other = tmp_path / "other"
    init_cluster(other, "pbft", 1, clients=4)
    hdr = msgpack.unpackb(data[PREAMBLE + REC_HEAD.size:PREAMBLE + REC_HEAD.size + REC_HEAD.unpack_from(data, PREAMBLE)[1]])
    oc = load(other)
    hdr.update(cluster_toml=(other / "cluster.toml").read_text(), cluster_id=oc.cluster_id.hex())
    assert "block 1" in verdict(reseal(data, 0, msgpack.packb(hdr)))
    # the trailer's head changed
    t_index = 4
    off = PREAMBLE
    for _ in range(t_index):
        off += REC_HEAD.size + REC_HEAD.unpack_from(data, off)[1] + REC_CRC.size
    tr = msgpack.unpackb(data[off + REC_HEAD.size:len(data) - REC_CRC.size])
    tr["head"] = "00" * 32
    assert "trailer's head" in verdict(reseal(data, t_index, msgpack.packb(tr)))
    assert "truncated" in verdict(data[:off])                         # no trailer
    assert "after the trailer" in verdict(data + b"\x00")


def test_expectations_detect_rollback(pbft_dir: Path, tmp_path: Path) -> None:
    cluster = load(pbft_dir)
    blocks = build(pbft_dir, 0, 5)
    with BlockStore.open(cluster.data_dir(1), fsync=False) as store:     # replica 1 holds 3 of them
        for b in blocks[:3]:
            store.append(b)
    full, cut = tmp_path / "full.bfx", tmp_path / "cut.bfx"
    export(pbft_dir, 0, full)
    export(pbft_dir, 1, cut)
    signers = [cluster.load_replica_key(i) for i in range(cluster.n)]
    b = blocks[4]
    att = [(i, signers[i].sign(ATTEST_DOMAIN, attestation_statement(b.height, b.hash(), len(b.txs), i)))
           for i in (0, 1)]
    receipt = Receipt.from_block(b, 1, "pbft", attestations=att, cluster_id=cluster.cluster_id)
    assert verify_export(full, expect_head=b.hash(), receipts=[receipt]).report.ok
    assert verify_export(cut).report.ok                                  # a valid, shorter chain
    r = verify_export(cut, expect_head=b.hash()).report
    assert not r.ok and "not in this ledger" in r.reason
    r = verify_export(cut, receipts=[receipt]).report
    assert not r.ok and "not in this ledger" in r.reason
    # the CLI, with the receipt from a file
    rfile = tmp_path / "r.json"
    rfile.write_text(receipt.to_json() if isinstance(receipt.to_json(), str) else receipt.to_json().decode())
    p = cli("verify-export", str(cut), "--receipt", str(rfile))
    assert p.returncode == 1 and p.stdout.startswith("FAULT: ") and "not in this ledger" in p.stdout, p.stdout
    p = cli("verify-export", str(full), "--receipt", str(rfile), "--expect-head", b.hash().hex())
    assert p.returncode == 0 and p.stdout.startswith("OK: the archive of replica 0"), p.stdout + p.stderr


def test_cli(pbft_dir: Path, tmp_path: Path) -> None:
    build(pbft_dir, 2, 2)
    out = tmp_path / "l.bfx"
    p = cli("export", str(pbft_dir), "--id", "2", str(out))
    assert p.returncode == 0 and "2 blocks" in p.stdout, p.stderr
    p = cli("verify-export", str(out), "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["height"] == 2
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0x40
    out.write_bytes(bytes(data))
    p = cli("verify-export", str(out))
    assert p.returncode == 1 and p.stdout.startswith("FAULT: byte ") and "Traceback" not in p.stderr
    one_error_line(cli("export", str(pbft_dir), "--id", "9", str(out)))
    one_error_line(cli("export", str(pbft_dir), "--id", "1", str(out)))        # replica 1 never ran
    one_error_line(cli("verify-export", str(tmp_path / "missing.bfx")))
    one_error_line(cli("verify-export", str(out), "--expect-head", "xyz"))
    p = cli("verify-export", str(pbft_dir / "cluster.toml"))
    assert p.returncode == 1 and "not a bftledger export" in p.stdout


def test_export_refuses_a_ledger_that_does_not_verify(pbft_dir: Path, tmp_path: Path) -> None:
    cluster = load(pbft_dir)
    build(pbft_dir, 0, 2)
    seg = sorted(cluster.data_dir(0).glob("segment-*.log"))[0]
    data = bytearray(seg.read_bytes())
    data[-5] ^= 1
    seg.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="does not verify at height 2"):
        export(pbft_dir, 0, tmp_path / "x.bfx")
    assert not (tmp_path / "x.bfx").exists()
