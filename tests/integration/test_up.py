"""``bftledger up`` as a user runs it (issue 15): a real ``python -m bft up DIR`` process.

"all N replicas are up" only once they really are; a second ``up`` on the same directory
fails with one line per replica and leaves the first cluster alone; Ctrl-C at any moment,
also while the replicas are still importing, stops every replica without a traceback. The
Ctrl-C is sent as a terminal sends it: SIGINT to the whole foreground process group, which
here is ``up``'s own (the test starts it as a group leader). Every replica is found by the PID
``up`` prints as it starts it, and must be gone when ``up`` has exited.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bft.app.clusterinit import init_cluster

from .conftest import REPO, cli

PID_LINE = re.compile(r"^  replica (\d+)  pid (\d+)  ", re.M)
LOCKED = re.compile(r"^bftledger: error: replica (\d+) is already running: another process \(PID (\d+)\) "
                    r"holds its lock .*; stop that process first$")


class Up:
    """One ``bftledger up DIR``, output to files (nothing to drain), killed and its replicas
    ended by PID when the test ends, also when it fails."""

    def __init__(self, directory: Path, name: str) -> None:
        self.out_path = directory.parent / f"{name}.out"
        self.err_path = directory.parent / f"{name}.err"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "bft", "up", str(directory)], cwd=REPO, env=env,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         start_new_session=True)      # its own process group, as in a shell
        self.seen: dict[int, int] = {}

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def pids(self) -> dict[int, int]:
        """replica id -> PID, as ``up`` printed them (remembered for the clean-up)."""
        self.seen.update({int(i): int(p) for i, p in PID_LINE.findall(self.out)})
        return dict(self.seen)

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.out:
            assert self.proc.poll() is None, f"up exited ({self.proc.returncode}):\n{self.out}\n{self.err}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout:g} s:\n{self.out}\n{self.err}"
            time.sleep(0.02)

    def ctrl_c(self) -> None:
        """What the terminal does on Ctrl-C: SIGINT to every process of the foreground group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def wait(self, timeout: float = 20.0) -> int:
        code = self.proc.wait(timeout)
        self.pids()
        return code

    def close(self) -> None:
        self.pids()
        if self.proc.poll() is None:
            self.proc.kill()                  # its replicas get SIGTERM from the kernel (PR_SET_PDEATHSIG)
            self.proc.wait()
        for pid in self.seen.values():
            if replica_alive(pid):
                os.kill(pid, signal.SIGKILL)


def replica_alive(pid: int) -> bool:
    """A live (not zombie) ``bftledger replica`` process with this PID."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return b"replica" in cmdline and state != "Z"


def assert_all_gone(pids: dict[int, int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while any(replica_alive(p) for p in pids.values()):
        assert time.monotonic() < deadline, f"replicas still running: {pids}"
        time.sleep(0.05)


def assert_quiet(up: Up) -> None:
    """No traceback, and on stderr nothing but the replicas' own log lines."""
    out, err = up.out, up.err
    assert "Traceback" not in out and "Traceback" not in err, out + err
    assert "KeyboardInterrupt" not in err, err
    for line in err.splitlines():
        assert re.match(r"^\S+ \S+ replica-\d+ INFO ", line), f"unexpected stderr line: {line!r}\n{err}"


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Path:
    d = tmp_path / "c"
    init_cluster(d, "pbft", 1, clients=1)
    return d


@pytest.fixture
def ups():
    started: list[Up] = []

    def start(d: Path) -> Up:
        up = Up(d, f"up{len(started)}")
        started.append(up)
        return up

    try:
        yield start
    finally:
        for up in started:
            up.close()


def test_up_twice_on_one_directory_fails_with_one_line_per_replica_and_leaves_the_first_alone(
        cluster_dir: Path, ups) -> None:
    first = ups(cluster_dir)
    first.wait_for("bftledger: all 4 replicas are up")
    running = first.pids()
    assert sorted(running) == [0, 1, 2, 3]

    second = ups(cluster_dir)
    assert second.wait(30) == 1
    out, err = second.out, second.err
    assert "Traceback" not in out + err, out + err
    assert "are up" not in out, out                 # the first cluster's answers are not its replicas'
    errors = [line for line in err.splitlines() if line.startswith("bftledger:")]
    assert errors[-1] == "bftledger: error: none of the 4 replicas could start", err
    holders = {}
    for line in errors[:-1]:
        m = LOCKED.match(line)
        assert m, f"not a lock error: {line!r}\n{err}"
        holders[int(m[1])] = int(m[2])
    assert holders == running, err                  # each names the first cluster's replica, once
    assert_all_gone(second.pids())

    # the first cluster runs on, unharmed: the same processes answer and commit
    st = json.loads(cli("status", str(cluster_dir), "--json", "--timeout", "2").stdout)
    assert {s["id"]: s.get("pid") for s in st} == running
    assert cli("put", str(cluster_dir), "k", "v").returncode == 0
    assert first.proc.poll() is None

    first.ctrl_c()
    assert first.wait() == 130
    assert first.out.rstrip().endswith("bftledger: stopped all 4 replicas"), first.out
    assert_quiet(first)
    assert_all_gone(running)


@pytest.mark.parametrize("delay", [0.1, 0.3])
def test_ctrl_c_while_the_replicas_start_stops_them_quietly(cluster_dir: Path, ups, delay: float) -> None:
    up = ups(cluster_dir)
    up.wait_for("  replica 3  pid ")               # every replica started, none ready yet
    time.sleep(delay)
    up.ctrl_c()
    assert up.wait() == 130
    pids = up.pids()
    assert sorted(pids) == [0, 1, 2, 3]
    assert up.out.rstrip().endswith("bftledger: stopped all 4 replicas"), up.out
    assert up.out.count("stopped") == 1
    assert_quiet(up)
    assert_all_gone(pids)


def test_ctrl_c_while_up_itself_loads_is_quiet(cluster_dir: Path, ups) -> None:
    up = ups(cluster_dir)
    time.sleep(0.05)
    up.ctrl_c()
    # 130, or killed by the SIGINT itself when it came before Python set up its handler (a shell
    # reports both as 130); never a traceback
    assert up.wait() in (130, -signal.SIGINT)
    assert_quiet(up)
    assert_all_gone(up.pids())


def test_ctrl_c_after_ready_stops_every_replica(cluster_dir: Path, ups) -> None:
    up = ups(cluster_dir)
    up.wait_for("bftledger: all 4 replicas are up")
    pids = up.pids()
    st = json.loads(cli("status", str(cluster_dir), "--json", "--timeout", "2").stdout)
    assert {s["id"]: s.get("pid") for s in st} == pids     # up's PIDs are the replicas that answer
    up.ctrl_c()
    assert up.wait() == 130
    assert up.out.rstrip().endswith("bftledger: stopped all 4 replicas"), up.out
    assert_quiet(up)
    assert_all_gone(pids)


def test_up_names_the_replica_that_cannot_start_and_stops_the_others(cluster_dir: Path, ups) -> None:
    import socket

    from ledger.cluster import load

    r = load(cluster_dir).replicas[2]
    with socket.socket() as taken:                # a stranger on replica 2's port
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind((r.host, r.port))
        taken.listen()
        up = ups(cluster_dir)
        assert up.wait(30) == 1
    out, err = up.out, up.err
    assert "Traceback" not in out + err and "are up" not in out, out + err
    errors = [line for line in err.splitlines() if line.startswith("bftledger:")]
    assert errors == [f"bftledger: error: replica 2 cannot listen on {r.host}:{r.port}: address already in use; "
                      "is it already running?",
                      "bftledger: error: 1 of 4 replicas could not start; stopped the other 3"], err
    assert_all_gone(up.pids())
