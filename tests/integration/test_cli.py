"""The CLI against a running cluster, receipts and their tampering, ledger tampering, and
every user error as one line without a traceback."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from bft.app.clusterinit import init_cluster
from ledger.store import BlockStore

from .conftest import cli, one_error_line


def test_put_get_status_and_receipts(running_pbft, tmp_path: Path) -> None:
    d = str(running_pbft.directory)
    p = cli("put", d, "alice", "100")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("committed: put 'alice' at height ") and "receipt verified" in p.stdout

    p = cli("put", d, "bob", "50", "--json", "--client", "1")
    assert p.returncode == 0, p.stderr
    receipt = json.loads(p.stdout)
    assert receipt["summary"]["ok"] is True and receipt["mode"] == "pbft"
    path = tmp_path / "r.json"
    path.write_text(p.stdout)
    ok = cli("verify-receipt", str(path), "--cluster", d)
    assert ok.returncode == 0 and ok.stdout.startswith("OK: put 'bob' by client 1"), ok.stdout + ok.stderr

    def tampered(change) -> str:
        doc = json.loads(path.read_text())
        change(doc)
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(doc))
        p = cli("verify-receipt", str(bad), "--cluster", d)
        assert p.returncode == 1 and p.stdout.startswith("FAULT: "), p.stdout + p.stderr
        assert "Traceback" not in p.stderr
        return p.stdout

    def flip(hexstr: str, at: int) -> str:
        b = bytearray(bytes.fromhex(hexstr))
        b[at] ^= 0x01
        return b.hex()

    assert "signature" in tampered(lambda r: r.update(tx=flip(r["tx"], len(r["tx"]) // 4)))
    assert "certificate" in tampered(lambda r: r["certificate"][0].__setitem__(1, flip(r["certificate"][0][1], 5)))
    assert "certificate" in tampered(lambda r: r.update(certificate=r["certificate"][:2]))
    assert "certificate" in tampered(lambda r: r.update(certificate=[r["certificate"][0]] * 3))
    assert "result" in tampered(lambda r: r.update(result=flip(r["result"], 0)))
    assert "inclusion" in tampered(lambda r: r.update(index=r["index"] + 1, block=dict(r["block"], batch_size=r["index"] + 2)))
    assert "certificate" in tampered(lambda r: r["block"].update(view=r["block"]["view"] + 1))
    (tmp_path / "junk.json").write_text("{not json")
    assert "not a receipt" in one_error_line(cli("verify-receipt", str(tmp_path / "junk.json"), "--cluster", d))

    p = cli("get", d, "alice")
    assert p.returncode == 0 and p.stdout == "100\n"
    p = cli("get", d, "nobody", "--json")
    assert p.returncode == 0 and json.loads(p.stdout) == {"key": "nobody", "found": False, "value": None,
                                                          "value_hex": None}
    p = cli("get", d, "nobody")
    assert p.returncode == 1 and p.stdout == "" and "not set" in p.stderr

    p = cli("status", d, "--json")
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    assert [s["id"] for s in st] == [0, 1, 2, 3]
    for s in st:
        for k in ("pid", "mode", "view", "leader", "executed", "stable_checkpoint", "height", "head"):
            assert k in s, k
        assert s["reachable"] is True and s["mode"] == "pbft"
    p = cli("status", d)
    assert p.returncode == 0 and "4 of 4 replicas reachable" in p.stdout


def test_flipped_byte_in_a_ledger_is_found_by_height(running_pbft, tmp_path: Path) -> None:
    d = running_pbft.directory
    for i in range(3):
        assert cli("put", str(d), f"t{i}", "x", "--client", "2").returncode == 0
    copy = tmp_path / "copy"                       # a copy: the running replica keeps its own files
    copy.mkdir()
    shutil.copy(d / "cluster.toml", copy / "cluster.toml")
    shutil.copytree(d / "data" / "replica-1", copy / "data" / "replica-1",
                    ignore=shutil.ignore_patterns("LOCK", "*.lock"))
    assert cli("audit", str(copy), "--id", "1").returncode == 0
    store = BlockStore.scan(copy / "data" / "replica-1")
    height = store.height
    target = max(1, height - 1)
    seg, off, length = store._seg[target - 1], store._off[target - 1], store._len[target - 1]
    store.close()
    seg_path = copy / "data" / "replica-1" / f"segment-{seg:06d}.log"
    data = bytearray(seg_path.read_bytes())
    data[off + 12 + length // 2] ^= 0x40
    seg_path.write_bytes(bytes(data))
    p = cli("audit", str(copy), "--id", "1")
    assert p.returncode == 1 and p.stdout.startswith(f"FAULT at height {target}: "), p.stdout


def test_user_errors_are_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-cluster")
    assert "does not exist" in one_error_line(cli("put", missing, "k", "v"))
    assert "does not exist" in one_error_line(cli("status", missing))
    assert "does not exist" in one_error_line(cli("up", missing))
    assert "does not exist" in one_error_line(cli("replica", missing, "--id", "0"))
    assert "does not exist" in one_error_line(cli("verify-receipt", str(tmp_path / "r.json"), "--cluster", missing))

    d = tmp_path / "stopped"
    init_cluster(d, "pbft", 1, clients=2)            # never started: nothing listens
    e = one_error_line(cli("put", str(d), "k", "v", "--timeout", "1"))
    assert "no replica" in e and "bftledger up" in e
    e = one_error_line(cli("get", str(d), "k", "--timeout", "1"))
    assert "no replica" in e
    e = one_error_line(cli("status", str(d), "--timeout", "0.5"))
    assert "no replica" in e and "bftledger up" in e
    assert "not in this cluster" in one_error_line(cli("replica", str(d), "--id", "9"))
    assert "not in" in one_error_line(cli("put", str(d), "k", "v", "--client", "7"))
    assert "No such file" in one_error_line(cli("verify-receipt", str(tmp_path / "none.json"), "--cluster", str(d)))

    key = d / "keys" / "client-0.key"
    key.chmod(0o644)
    assert "chmod 600" in one_error_line(cli("put", str(d), "k", "v"))
    key.chmod(0o600)
    key.write_text("not hex\n")
    assert "not a hex-encoded" in one_error_line(cli("get", str(d), "k"))
    (d / "keys" / "replica-0.key").unlink()
    assert "does not exist" in one_error_line(cli("replica", str(d), "--id", "0"))

    for args in (["put", str(d), "k"], ["status", str(d), "--timeout", "soon"], ["replica", str(d)],
                 ["replica", str(d), "--id", "0", "--byzantine", "nope"], ["nonsense"], ["put"],
                 ["demo", "--fast"]):
        one_error_line(cli(*args))


def test_bad_input_to_the_newer_commands_is_one_line(tmp_path: Path) -> None:
    """Non-UTF-8 keys, huge heights, non-positive or NaN timeouts, damaged files: each was a
    traceback (or, for watch --timeout nan, a wait forever) before anything was sent."""
    d = tmp_path / "stopped"
    init_cluster(d, "pbft", 1, clients=2)            # never started: every check comes first
    c = str(d)
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{")
    huge = str(1 << 70)
    cases = [
        (["transact", c, "--delete", "\udcff"], 2, "not valid UTF-8"),
        (["transact", c, "--put", "\udcff=1"], 2, "not valid UTF-8"),
        (["get", c, "\udcff", "--proof", str(tmp_path / "p.json")], 2, "not valid UTF-8"),
        (["history", c, "\udcff"], 2, "not valid UTF-8"),
        (["scan", c, "--start", "\udcff"], 2, "not valid UTF-8"),
        (["get", c, "k", "--at-height", huge], 2, "at most"),
        (["history", c, "k", "--after", huge], 2, "at most"),
        (["scan", c, "--at-height", huge], 2, "at most"),
        (["watch", c, "--from", huge], 2, "at most"),
        (["put", c, "k", "v", "--timeout", "-1"], 2, "positive"),
        (["transact", c, "--put", "a=1", "--timeout", "nan"], 2, "positive"),
        (["watch", c, "--timeout", "nan"], 2, "positive"),
        (["add-client", c, "--timeout", "0"], 2, "positive"),
        (["get", c, "k", "--proof", str(tmp_path / "no-dir" / "p.json")], 2, "no directory"),
        (["audit", c, "--id", "0", "--receipt", str(bad)], 2, "not a receipt"),
        (["verify-export", str(bad), "--receipt", str(bad)], 2, "not a receipt"),
        (["verify-receipt", str(tmp_path), "--cluster", c], 2, "cannot read"),
        (["lab", "equivocate", "--f", huge], 2, "more than this tool supports"),
        (["export", c, "--id", "0", str(tmp_path)], 2, "directory that exists"),
        (["lab", "equivocate", "--real", "--trace", str(tmp_path / "no-dir" / "t.html")], 2, "directory that exists"),
    ]
    (d / "pending").mkdir()
    (d / "pending" / "0-12.req").write_bytes(b"damaged")
    cases.append((["outcome", c, "0-12"], 1, "not the signed request"))
    for args, code, what in cases:
        p = cli(*args, timeout=30)
        assert what in one_error_line(p) and p.returncode == code, (args, p.returncode, p.stderr)


def test_up_with_a_relative_directory_runs_every_replica_and_stops_them_all(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from .conftest import REPO

    d = tmp_path / "up"
    init_cluster(d, "pbft", 1, clients=2)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # a relative DIR (issue 11, item 4: the replicas, started elsewhere, could not find it)
    up = subprocess.Popen([sys.executable, "-m", "bft", "up", "up"], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            p = cli("status", str(d), "--json", "--timeout", "0.5")
            st = json.loads(p.stdout) if p.stdout else []
            if st and all(s["reachable"] for s in st):
                pids = [s["pid"] for s in st]
                break
            time.sleep(0.2)
        assert len(pids) == 4, "the replicas did not come up"
        assert cli("put", str(d), "k", "v").returncode == 0
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=20)
        assert up.returncode == 0
        assert "all 4 replicas are up" in out and "stopped all 4 replicas" in out
        for pid in pids:                              # no replica outlives 'up'
            assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read()
    finally:
        if up.poll() is None:        # its replicas get SIGTERM when it dies (PR_SET_PDEATHSIG)
            up.kill()
            up.wait()


def test_sync_client_put_get_cas_delete(running_pbft) -> None:
    import threading

    from ledger.client import LedgerError, SyncClient

    d = running_pbft.directory
    with SyncClient(d, client=3) as c:
        r = c.put("acct", "10")
        assert r.ok and r.height >= 1
        r.verify(d)
        assert c.get("acct") == b"10"
        assert c.cas("acct", "10", "20").ok
        miss = c.cas("acct", "10", "30")
        assert not miss.ok and miss.value == b"20"          # the current value comes back
        assert c.cas("fresh", None, "1").ok                  # expected None: the key is absent
        assert c.delete("acct").ok and not c.delete("acct").ok
        assert c.get("acct") is None
        done = []

        def writer(i: int) -> None:
            done.append(c.put(f"thread-{i}", str(i)).ok)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert done == [True] * 16
    try:
        c.get("acct")
        raise AssertionError("a closed SyncClient must refuse")
    except LedgerError:
        pass
