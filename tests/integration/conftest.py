"""Real clusters for the integration tests: replica processes, TCP on 127.0.0.1, fsync'd disks.

Every replica a test starts is a ``LocalCluster`` process, ended by PID when the test
(or the module, for the shared cluster) finishes, also when it fails. Ports come from
``init_cluster``: free ones below 32768, outside the kernel's ephemeral range.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from bft.app.clusterinit import init_cluster
from bft.runtime.procs import LocalCluster

REPO = Path(__file__).resolve().parents[2]
MODES = ["pbft", "paxos"]


def cli(*args: str, timeout: float = 60, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run([sys.executable, "-m", "bft", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=timeout, input=stdin)


def one_error_line(p: subprocess.CompletedProcess) -> str:
    """The CLI's contract for a user error: non-zero exit, one line on stderr, no traceback."""
    assert p.returncode != 0, p.stdout
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("bftledger: error: "), lines[0]
    return lines[0]


@pytest.fixture
def make_cluster(tmp_path: Path):
    """make_cluster(mode, byzantine={id: strategy}) -> a started LocalCluster; all stopped at the end."""
    clusters: list[LocalCluster] = []

    def make(mode: str = "pbft", *, f: int = 1, byzantine: dict[int, str] | None = None,
             start: bool = True, clients: int = 4, insecure_plaintext: bool = False) -> LocalCluster:
        d = tmp_path / f"{mode}-{len(clusters)}"
        init_cluster(d, mode, f, clients=clients, insecure_plaintext=insecure_plaintext)
        lc = LocalCluster(d)
        clusters.append(lc)
        if start:
            lc.start(byzantine=byzantine)
        return lc

    try:
        yield make
    finally:
        for lc in clusters:
            lc.stop_all()


@pytest.fixture(scope="module")
def running_pbft(tmp_path_factory):
    """One pbft cluster (f=1) shared by a module's tests; stopped when the module ends."""
    d = tmp_path_factory.mktemp("shared") / "pbft"
    init_cluster(d, "pbft", 1, clients=4)
    lc = LocalCluster(d)
    try:
        lc.start()
        from bft.runtime.procs import wait_ready

        wait_ready(lc.cluster, timeout=30, procs=list(lc.procs.values()))
        yield lc
    finally:
        lc.stop_all()


async def settle(lc: LocalCluster, client, ids: list[int] | None = None, prefix: str = "settle") -> list[dict]:
    """Until ``ids`` (default: every running replica) hold one height and head.

    A replica that fell behind the others' normal case catches up by state transfer to the
    next stable checkpoint (every 32 sequence numbers), so when waiting is not enough, single
    writes are made until the heights meet (at the latest, at the next checkpoint)."""
    try:
        return await lc.converged(ids, timeout=3)
    except TimeoutError:
        pass
    for i in range(100):
        await client.put(f"{prefix}-{i}", b"s")
        try:
            return await lc.converged(ids, timeout=0.5)
        except TimeoutError:
            pass
    return await lc.converged(ids, timeout=10)


async def wait_for(pred, timeout: float, what: str) -> None:
    with trio.move_on_after(timeout):
        while not pred():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
