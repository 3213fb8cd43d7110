"""Issue 14 on real processes: ``bftledger lab ATTACK --real`` starts real replicas on
127.0.0.1 (``replica --byzantine ...``, ``--byzantine collude --group ...``), reads the drops
from their status, the ledgers from their files, and merges their ``--trace-log`` event logs
into a chart."""
from __future__ import annotations

import json
import re
from html import unescape

import pytest

from bft.app.attacks import ATTACKS
from tests.integration.conftest import cli, one_error_line


def lab(*args: str) -> dict:
    p = cli("lab", *args, "--real", "--json", timeout=120)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["real"] is True and "--real" in r["replay"]
    return r


def test_collusion_of_f_holds_and_of_f_plus_1_breaks_safety_on_real_processes(tmp_path) -> None:
    held = lab("collude", "--byzantine-count", "1")
    assert (held["safety"], held["liveness"]) == ("held", "held"), held
    trace = tmp_path / "collude.html"
    broken = lab("collude", "--byzantine-count", "2", "--trace", str(trace))
    assert broken["safety"] == "violated", broken
    assert sorted(broken["byzantine"]) == ["0", "1"]
    blocks = broken["divergence"]["blocks"]
    assert set(blocks) == {"2", "3"} and blocks["2"]["block"] != blocks["3"]["block"]
    # the honest replicas saw the team's tricks and said so, by rule and by sender
    assert broken["attacker_drops"], broken
    # the chart is merged from the four replicas' own --trace-log event logs
    page = trace.read_text()
    meta = json.loads(unescape(re.search(r'data-meta="([^"]*)"', page).group(1)))
    noted = next(n for n in broken["notes"] if n.startswith("the trace holds"))
    assert meta["arrows"] == page.count('<g class="msg') == int(noted.split()[3]) > 100
    assert meta["dropped"] == page.count('<g class="msg dropped"') > 0
    assert meta["byzantine"] == ["r0", "r1"]
    assert "pre-prepare v=0 n=1" in page and "DROPPED pbft." in page


@pytest.mark.slow            # the simulator's lab and handout 4 show it in make test
def test_a_lying_paxos_leader_diverges_the_real_ledgers() -> None:
    r = lab("equivocate", "--mode", "paxos")
    assert r["safety"] == "violated" and r["divergence"]["height"] >= 1, r


def test_hostile_client_attacks_are_dropped_by_rule_and_sender_on_real_processes() -> None:
    r = lab("bad-signatures")
    assert (r["safety"], r["liveness"]) == ("held", "held"), r
    assert r["drops_by_sender"]["request.BAD_CLIENT_SIGNATURE"].get("c2", 0) > 0, r
    r = lab("client-flood")
    assert r["attacker_drops"].get("request.CLIENT_QUOTA_FULL", 0) > 0, r


def test_an_attack_that_acts_in_a_view_change_gets_one_on_real_processes() -> None:
    r = lab("forge-vc")
    assert (r["safety"], r["liveness"]) == ("held", "held"), r
    assert all(v >= 1 for v in r["views"].values()), r
    assert any(rule.startswith(("pbft.PREPARED_CERT", "pbft.CHECKPOINT_PROOF")) for rule in r["attacker_drops"]), r


def test_what_real_processes_cannot_run_is_refused_in_one_line() -> None:
    p = cli("lab", "split-brain", "--real")
    assert p.returncode == 2 and "only the simulator" in one_error_line(p)
    p = cli("lab", "equivocate", "--real", "--unsafe-disable", "quorum-size")
    assert p.returncode == 2 and "simulator only" in one_error_line(p)
    p = cli("lab", "equivocate", "--keep-dir", "/tmp/nowhere")
    assert p.returncode == 2 and "--real" in one_error_line(p)


def test_a_collusion_replica_needs_its_group(make_cluster) -> None:
    lc = make_cluster("pbft", start=False)
    p = cli("replica", str(lc.directory), "--id", "1", "--byzantine", "collude")
    assert p.returncode == 2 and "--group" in one_error_line(p)
    p = cli("replica", str(lc.directory), "--id", "1", "--byzantine", "silent", "--group", "0,1")
    assert p.returncode == 2 and "--group" in one_error_line(p)
    p = cli("replica", str(lc.directory), "--id", "2", "--byzantine", "collude", "--group", "0,1")
    assert p.returncode == 2 and "this replica" in one_error_line(p)
    p = cli("replica", str(lc.directory), "--id", "1", "--byzantine", "collude", "--group", "0,x")
    assert p.returncode == 2 and "commas" in one_error_line(p)


REAL = [(a.name, mode) for a in ATTACKS for mode in ("pbft", "paxos") if a.outcome(mode) and a.real_command(mode)]


@pytest.mark.slow
@pytest.mark.parametrize("name,mode", REAL)
def test_every_real_command_in_the_catalogue_runs(name: str, mode: str) -> None:
    """The catalogue's real_command of every attack runs and reports the outcome the catalogue
    states (the sweep takes a few minutes: behind the slow marker)."""
    a = next(a for a in ATTACKS if a.name == name)
    p = cli(*a.real_command(mode).split()[1:], "--json", timeout=180)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["safety"] == a.outcome(mode).safety, (name, mode, r)


def test_sigterm_stops_every_replica_even_a_frozen_one_and_removes_the_directory(tmp_path) -> None:
    """SIGTERM while replica 0 is frozen (SIGSTOP) used to kill the lab alone: the frozen replica
    kept its parent-death SIGTERM pending forever, and the temporary directory stayed."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tests.integration.conftest import REPO

    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=str(REPO))
    lab = subprocess.Popen([sys.executable, "-m", "bft", "lab", "forge-vc", "--real"], cwd=REPO, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def state(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return "gone"

    children: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(state(c) == "T" for c in children):
            time.sleep(0.1)
            try:
                children = [int(c) for c in Path(f"/proc/{lab.pid}/task/{lab.pid}/children").read_text().split()]
            except OSError:
                pytest.skip("no /proc/PID/task/PID/children here")
        assert any(state(c) == "T" for c in children), "replica 0 was never frozen"
        lab.send_signal(signal.SIGTERM)
        assert lab.wait(30) == 130, lab.stderr.read()
    finally:
        if lab.poll() is None:
            lab.kill()
            lab.wait()
        for c in children:                      # a failing run must not leave them behind either
            if state(c) not in ("gone", "Z"):
                os.kill(c, signal.SIGKILL)
    time.sleep(0.5)
    assert all(state(c) in ("gone", "Z") for c in children), [state(c) for c in children]
    assert not list(tmp_path.glob("bftledger-lab-*"))
