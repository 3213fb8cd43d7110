"""The offline audit (library and CLI), and the CLI's init / audit / demo as real processes."""
from __future__ import annotations

import json
import os
import random
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bft import wire
from bft.app.clusterinit import PORT_HIGH, init_cluster
from bft.app.demo_offline import OfflineLedger
from crypto.merkle import root_of
from ledger import state
from ledger.audit import audit
from ledger.block import Block
from ledger.cluster import ClusterError, load
from ledger.records import HEADER_SIZE, OVERHEAD, StoreError
from ledger.store import BlockStore, segment_name

REPO = Path(__file__).resolve().parents[2]


def put(ledger: OfflineLedger, client: int, key: str, value: str) -> bytes:
    return ledger.request(client, state.op_put(key, value.encode()))


def build(cluster_dir: Path, replica: int = 0, count: int = 3,
          tweak=None) -> list[Block]:
    """Commit ``count`` blocks of signed puts; ``tweak(ledger, height, txs)`` may return a
    (txs, cert) to commit instead, to plant a fault at that height."""
    ledger = OfflineLedger(load(cluster_dir))
    out = []
    with BlockStore.open(ledger.cluster.data_dir(replica), fsync=False) as store:
        for h in range(1, count + 1):
            txs = [put(ledger, c % len(ledger.clients), f"k{h}", f"v{h}.{c}") for c in range(3)]
            cert = None
            if tweak is not None:
                changed = tweak(ledger, h, txs)
                if changed is not None:
                    txs, cert = changed
            block = ledger.commit(txs, cert=cert)
            store.append(block)
            out.append(block)
    return out


@pytest.fixture
def pbft_dir(tmp_path: Path) -> Path:
    d = tmp_path / "c"
    init_cluster(d, "pbft", 1, clients=4)
    return d


def test_audit_ok(pbft_dir: Path) -> None:
    blocks = build(pbft_dir)
    r = audit(pbft_dir, 0)
    assert r.ok and r.first_bad_height is None and r.reason is None and r.warnings == []
    assert r.height == 3 and r.head == blocks[-1].hash().hex()
    assert r.tree_size == 9 and r.tree_root == blocks[-1].tree_root.hex()
    assert r.trust_model.startswith("byzantine") and r.mode == "pbft"
    assert r.signatures_checked == 9 + 3 * 3
    d = r.to_dict()
    assert json.loads(json.dumps(d))["ok"] is True
    assert r.summary_lines()[0].startswith("OK")


def test_audit_user_errors(pbft_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no block store"):
        audit(pbft_dir, 0)                           # replica 0 never ran
    with pytest.raises(ClusterError, match="not in this cluster"):
        audit(pbft_dir, 4)
    with pytest.raises(ClusterError):
        audit(tmp_path / "nowhere", 0)
    (pbft_dir / "data" / "replica-1").mkdir()
    r = audit(pbft_dir, 1)
    assert r.ok and r.height == 0 and "empty" in r.warnings[0]


def test_flipped_byte_names_the_height(pbft_dir: Path) -> None:
    blocks = build(pbft_dir)
    seg = load(pbft_dir).data_dir(0) / segment_name(0)
    data = bytearray(seg.read_bytes())
    data[OVERHEAD + len(blocks[0].encode()) + HEADER_SIZE + 40] ^= 0x04
    seg.write_bytes(bytes(data))
    r = audit(pbft_dir, 0)
    assert not r.ok and r.first_bad_height == 2 and "checksum" in r.reason
    assert r.height == 1 and r.head == blocks[0].hash().hex()     # the verified prefix
    assert r.summary_lines()[0].startswith("FAULT at height 2")


def test_torn_tail_is_a_warning(pbft_dir: Path) -> None:
    build(pbft_dir)
    seg = load(pbft_dir).data_dir(0) / segment_name(0)
    data = seg.read_bytes()
    seg.write_bytes(data[:-7])
    r = audit(pbft_dir, 0)
    assert r.ok and r.height == 2 and len(r.warnings) == 1 and "torn" in r.warnings[0]
    assert seg.stat().st_size == len(data) - 7               # audit never modifies the store


@pytest.mark.parametrize("fault, expected", [
    ("two-signatures", "2 valid distinct signatures, needs 3"),
    ("duplicate-signer", "2 valid distinct signatures, needs 3"),
    ("unknown-signer", "2 valid distinct signatures, needs 3"),
    ("wrong-sequence", "0 valid distinct signatures, needs 3"),
    ("forged-tx", "transaction 1: client 1's signature does not verify"),
    ("unknown-client", "transaction 0 names client 9, which is not in cluster.toml"),
    ("garbage-tx", "transaction 2 is not a well-formed signed client request"),
])
def test_signature_faults(pbft_dir: Path, fault: str, expected: str) -> None:
    def tweak(ledger: OfflineLedger, h: int, txs: list[bytes]):
        if h != 2:
            return None
        root = root_of(txs)
        if fault == "two-signatures":
            return txs, ledger.certificate(0, 2, root, signers=[0, 1])
        if fault == "duplicate-signer":
            c = ledger.certificate(0, 2, root, signers=[0, 1])
            return txs, [c[0], c[0], c[1]]                       # replica 0 counted twice?
        if fault == "unknown-signer":
            c = ledger.certificate(0, 2, root, signers=[0, 1])
            return txs, c + [(7, c[0][1])]
        if fault == "wrong-sequence":
            return txs, ledger.certificate(0, 1, root)           # a valid cert, for another block
        if fault == "forged-tx":
            # client 2 signs a request that claims to come from client 1
            forged = wire.Request(1, 99, state.op_put("k2", b"stolen")).signed(ledger.clients[2]).encode()
            txs = [txs[0], forged, txs[2]]
            return txs, ledger.certificate(0, 2, root_of(txs))    # honest-looking COMMITs
        if fault == "unknown-client":
            txs = [wire.Request(9, 1, state.op_put("x", b"y")).signed(ledger.clients[0]).encode()] + txs[1:]
            return txs, ledger.certificate(0, 2, root_of(txs))
        if fault == "garbage-tx":
            txs = txs[:2] + [b"\x93not a request"]
            return txs, ledger.certificate(0, 2, root_of(txs))
        raise AssertionError(fault)

    build(pbft_dir, tweak=tweak)
    r = audit(pbft_dir, 0)
    assert not r.ok
    assert r.first_bad_height == 2 and r.height == 1
    assert expected in r.reason


def test_paxos_leader_certificates(tmp_path: Path) -> None:
    d = tmp_path / "px"
    init_cluster(d, "paxos", 1, clients=2)
    ledger = OfflineLedger(load(d))
    assert ledger.cluster.n == 3
    with BlockStore.open(ledger.cluster.data_dir(0), fsync=False) as store:
        for view in (0, 4, 4):                   # ballot 4 -> leader 4 mod 3 = 1
            store.append(ledger.commit([put(ledger, 0, "k", str(view))], view=view))
    r = audit(d, 0)
    assert r.ok and r.height == 3 and r.trust_model.startswith("crash-fault")
    # the ballot's leader is replica 1; replica 2's signature is no certificate
    txs = [put(ledger, 1, "k", "x")]
    bad = ledger.commit(txs, view=4, cert=ledger.certificate(4, 4, root_of(txs), signers=[2]))
    with BlockStore.open(ledger.cluster.data_dir(0), fsync=False) as store:
        store.append(bad)
    r = audit(d, 0)
    assert not r.ok and r.first_bad_height == 4 and "leader is replica 1" in r.reason


# ----------------------------------------------------------------------------- the real CLI
def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "bft", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=60)


def one_error_line(p: subprocess.CompletedProcess) -> str:
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("bftledger: error: "), p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    return lines[0]


def listening_port() -> socket.socket:
    """A listener on a free port below the ephemeral range (a 'busy' port for init)."""
    rng = random.Random()
    for _ in range(200):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", rng.randint(20000, PORT_HIGH - 10)))
        except OSError:
            s.close()
            continue
        s.listen()
        return s
    raise RuntimeError("no free port")


def test_cli_init(tmp_path: Path) -> None:
    d = tmp_path / "cl"
    p = cli("init", str(d), "--mode", "pbft", "--f", "1", "--clients", "2")
    assert p.returncode == 0, p.stderr
    assert "Created a pbft cluster" in p.stdout
    c = load(d)
    assert c.n == 4 and len(c.clients) == 2 and (d / "data").is_dir()
    assert all(r.host == "127.0.0.1" and 1024 <= r.port < 32768 for r in c.replicas)
    assert len({r.port for r in c.replicas}) == 4
    key_files = sorted((d / "keys").iterdir())
    assert [k.name for k in key_files] == ["client-0.key", "client-1.key"] + [f"replica-{i}.key" for i in range(4)]
    for k in key_files:
        assert stat.S_IMODE(k.stat().st_mode) == 0o600, k
    assert stat.S_IMODE((d / "keys").stat().st_mode) == 0o700
    assert c.replicas[0].public_key == c.load_replica_key(0).public_key

    again = cli("init", str(d), "--mode", "pbft", "--f", "1")
    assert again.returncode == 1 and "--force" in one_error_line(again)
    assert load(d).replicas[0].public_key == c.replicas[0].public_key     # untouched

    build(d)                                     # replica 0 now has a ledger
    forced = cli("init", str(d), "--mode", "paxos", "--f", "1", "--force")
    assert forced.returncode == 0, forced.stderr
    c2 = load(d)
    assert c2.mode == "paxos" and c2.n == 3 and len(c2.clients) == 4
    assert c2.replicas[0].public_key != c.replicas[0].public_key
    assert not (d / "keys" / "replica-3.key").exists()                    # old keys gone
    assert not (d / "data" / "replica-0").exists()                        # old ledger gone


def test_cli_user_errors_are_one_line(tmp_path: Path) -> None:
    d = str(tmp_path / "e")
    for args, code, needle in [
        (("init", d, "--mode", "pbft", "--f", "0"), 2, "--f: must be at least 1"),
        (("init", d, "--mode", "raft", "--f", "1"), 2, "invalid choice"),
        (("init", d, "--mode", "pbft", "--f", "one"), 2, "must be an integer"),
        (("init", d, "--mode", "pbft", "--f", "1", "--base-port", "70000"), 2, "65535"),
        (("init", d, "--mode", "pbft", "--f", "1", "--base-port", "65534"), 1, "outside 1..65535"),
        (("audit", d, "--id", "0"), 1, "does not exist"),
        ((), 2, "required"),
        (("frobnicate",), 2, "invalid choice"),
    ]:
        p = cli(*args)
        assert p.returncode == code, (args, p.stderr)
        assert needle in one_error_line(p), (args, p.stderr)
    assert not Path(d).exists()                  # failed inits leave nothing behind


def test_cli_busy_port(tmp_path: Path) -> None:
    s = listening_port()
    try:
        port = s.getsockname()[1]
        p = cli("init", str(tmp_path / "b"), "--mode", "paxos", "--f", "1", "--base-port", str(port))
        assert p.returncode == 1
        assert f"port {port} on 127.0.0.1 is already in use" in one_error_line(p)
        assert not (tmp_path / "b").exists()
    finally:
        s.close()


def test_cli_audit(tmp_path: Path) -> None:
    d = tmp_path / "a"
    init_cluster(d, "pbft", 1)
    blocks = build(d)
    p = cli("audit", str(d), "--id", "0", "--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["ok"] is True and report["height"] == 3 and report["head"] == blocks[-1].hash().hex()
    human = cli("audit", str(d), "--id", "0")
    assert human.returncode == 0 and human.stdout.startswith("OK")
    p = cli("audit", str(d), "--id", "0", "--expect-height", "4")
    assert p.returncode == 1 and p.stdout.startswith("FAULT at height 4: the ledger ends at height 3")
    p = cli("audit", str(d), "--id", "0", "--expect-head", blocks[1].hash().hex())
    assert p.returncode == 0, p.stdout
    p = cli("audit", str(d), "--id", "0", "--expect-head", "zz")
    assert p.returncode == 2 and "not a hex block hash" in one_error_line(p)
    p = cli("audit", str(d), "--id", "0", "--receipt", str(tmp_path / "missing.json"))
    assert p.returncode == 2 and "cannot read receipt" in one_error_line(p)

    seg = d / "data" / "replica-0" / segment_name(0)
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0x80                             # the last block's trailing checksum
    seg.write_bytes(bytes(data))
    p = cli("audit", str(d), "--id", "0", "--json")
    assert p.returncode == 1 and p.stderr == ""
    report = json.loads(p.stdout)
    assert report["ok"] is False and report["first_bad_height"] == 3
    human = cli("audit", str(d), "--id", "0")
    assert human.returncode == 1 and human.stdout.startswith("FAULT at height 3: ")

    p = cli("audit", str(d), "--id", "9")
    assert p.returncode == 1 and "not in this cluster" in one_error_line(p)
    p = cli("audit", str(d), "--id", "1")
    assert p.returncode == 1 and "no block store" in one_error_line(p)    # replica 1 never ran
    for k in (d / "keys").iterdir():
        k.chmod(0o644)                           # unusable private keys: the audit needs none
    assert cli("audit", str(d), "--id", "0").stdout.startswith("FAULT at height 3")
    (d / "cluster.toml").write_text("mode = 3\n")
    p = cli("audit", str(d), "--id", "0")
    assert p.returncode == 1 and "cluster.toml" in one_error_line(p)


def test_cli_demo_and_help() -> None:
    p = cli("demo", "--offline")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "FAULT at height 2" in p.stdout and "OK" in p.stdout and p.stderr == ""
    h = cli("--help")
    assert h.returncode == 0 and "init" in h.stdout and "audit" in h.stdout and "demo" in h.stdout
    assert cli("init", "--help").returncode == 0


def test_init_force_refuses_while_a_replica_runs(pbft_dir: Path) -> None:
    from bft.app.clusterinit import InitError
    c = load(pbft_dir)
    with BlockStore.open(c.data_dir(2), fsync=False):          # replica 2 holds its store lock
        with pytest.raises(InitError, match="replica-2 of .* is running"):
            init_cluster(pbft_dir, "pbft", 1, force=True)
    assert load(pbft_dir).replicas[0].public_key == c.replicas[0].public_key
    with pytest.raises(InitError, match="not a hostname"):
        init_cluster(pbft_dir / "x", "pbft", 1, host='127.0.0.1"\nmode = "paxos')
    with pytest.raises(InitError, match="cannot create the cluster"):
        init_cluster(Path("/proc/no/such/dir"), "pbft", 1)


def test_a_clean_rollback_is_caught_by_what_the_auditor_expects(pbft_dir: Path) -> None:
    """Issue 11, item 14: with its last blocks cut off a ledger is still a valid chain, and the
    audit said OK. A head, a height or a receipt known from elsewhere now catch it, and the
    replica's own vote log (a stable checkpoint above the ledger's end) raises a warning."""
    import msgpack

    from bft.wire import Checkpoint
    from ledger.certificate import ATTEST_DOMAIN, attestation_statement
    from ledger.receipt import Receipt
    from ledger.votelog import VoteLog

    cluster = load(pbft_dir)
    blocks = build(pbft_dir, replica=0, count=5)
    with BlockStore.open(cluster.data_dir(1), fsync=False) as store:     # replica 1: the first 3 only
        for b in blocks[:3]:
            store.append(b)
    signers = [cluster.load_replica_key(i) for i in range(cluster.n)]

    def receipt(block: Block) -> Receipt:
        h = block.hash()
        att = [(i, signers[i].sign(ATTEST_DOMAIN, attestation_statement(block.height, h, len(block.txs), i))) for i in (0, 1)]
        return Receipt.from_block(block, 1, "pbft", attestations=att, cluster_id=cluster.cluster_id)

    assert audit(pbft_dir, 1).ok                                        # a valid, shorter chain
    full = audit(pbft_dir, 0, expect_head=blocks[4].hash(), expect_height=5, receipts=[receipt(blocks[4])])
    assert full.ok, full.reason
    cut = audit(pbft_dir, 1, expect_head=blocks[4].hash())
    assert not cut.ok and "not in this ledger" in cut.reason
    cut = audit(pbft_dir, 1, expect_height=5)
    assert not cut.ok and "ends at height 3" in cut.reason
    cut = audit(pbft_dir, 1, receipts=[receipt(blocks[4])])
    assert not cut.ok and "not in this ledger" in cut.reason
    assert audit(pbft_dir, 1, receipts=[receipt(blocks[1])]).ok         # its tree head is a prefix
    cp = Checkpoint(4, blocks[3].hash(), blocks[3].tree_size, blocks[3].tree_root, 0).signed(signers[0])
    vl = VoteLog.open(cluster.data_dir(1) / "votes.log", fsync=False)
    vl.append(msgpack.packb(["stable", [cp.encode()]], use_bin_type=True))
    vl.close()
    warned = audit(pbft_dir, 1)
    assert warned.ok and any("stable checkpoint at 4" in w for w in warned.warnings), warned.warnings
