"""Data-driven scenario scripts (tests/testdata/{pbft,paxos}/*.txt), one test per file.

Each script drives the real cores through ``tests.scripts``; the output of every command
must equal the output checked in below it. ``pytest --rewrite`` writes the outputs
produced instead (then read the diff before committing it). The format and the commands
are described in tests/testdata/README.md.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from tests.scripts import all_scripts, parse, render, run_file

ROOT = Path(__file__).resolve().parent.parent / "testdata"
SCRIPTS = all_scripts(ROOT)

# Rules no core can count, whatever a script sends it: checked by clients and auditors
# (attestations), or by code paths the cores never reach. The test below fails if one of
# them turns up in a script (then remove it here) as well as when another rule is missing.
NOT_COUNTED_BY_A_CORE = {
    "ledger.CERT_UNKNOWN_MODE": "the cores pass their own mode; only a caller with a bad mode string gets it",
    "ledger.ATTEST_TOO_FEW": "execution attestations are checked by clients and auditors, not by a core",
    "ledger.BLOCK_LINK": "a served block at the wrong height is skipped (not counted); a wrong header is "
                         "counted as pbft.STATE_WRONG_HEADER",
    "paxos.PROMISE_TOO_LARGE": "a defensive bound: an acceptor holds at most accept_window <= MAX_LIST values "
                               "above its execution, and PROMISE_SLOT_BEYOND_WINDOW keeps a new leader from "
                               "accepting more, so no run reaches it",
}


# Scripts whose expected output shows a core raising on peer input (a core bug; "RAISED" in
# the output). Strict: once the core is fixed the test fails until the entry goes and the
# script is rewritten.
KNOWN_CORE_BUGS: dict[str, str] = {}      # script name -> the core bug its output records (strict xfail)


def _param(p: Path):
    name = f"{p.parent.name}/{p.stem}"
    marks = [pytest.mark.xfail(reason=KNOWN_CORE_BUGS[name], strict=True)] if name in KNOWN_CORE_BUGS else []
    return pytest.param(p, id=name, marks=marks)


@pytest.mark.parametrize("path", [_param(p) for p in SCRIPTS])
def test_script(path: Path, request) -> None:
    cases, got, trailer = run_file(path)
    if request.config.getoption("--rewrite"):
        text = render(got, trailer)
        if text != path.read_text():
            path.write_text(text)
        if "RAISED" not in text:
            return
    raised = [f"{path.name}:{c.line}: {c.cmd}" for c in got if "RAISED" in c.expected]
    assert not raised, "a core raised on peer input:\n" + "\n".join(raised)
    failures = []
    for want, have in zip(cases, got):
        if want.expected != have.expected:
            diff = "\n".join(difflib.unified_diff(want.expected.split("\n"), have.expected.split("\n"),
                                                  "expected", "got", lineterm="", n=2))
            failures.append(f"{path.name}:{want.line}: {want.cmd}\n{diff}")
    assert not failures, "\n\n".join(failures) + "\n\n(pytest --rewrite regenerates the expected outputs)"


def test_there_are_enough_scripts() -> None:
    assert len(SCRIPTS) >= 30, len(SCRIPTS)


def _families() -> list:
    mods = ["ledger.rules", "bft.rules", "bft.pbft.rules"]
    if importlib.util.find_spec("bft.paxos.rules") is not None:
        mods.append("bft.paxos.rules")
    from ledger.rules import Rule
    fams = []
    for name in mods:
        mod = importlib.import_module(name)
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, Rule) and obj is not Rule and obj.__module__ == name:
                fams.append(obj)
    return fams


def test_every_rule_is_exercised_by_a_script() -> None:
    """Every member of the rule vocabulary (but the runtime's WireRule) shows up as a counted
    drop in some script's expected output."""
    from ledger.rules import WireRule

    text = "\n".join(c.expected for p in SCRIPTS for c in parse(p.read_text())[0])
    seen = set(re.findall(r"\b([a-z]+\.[A-Z][A-Z0-9_]+)\b", text))
    wanted = {m.label for fam in _families() if fam is not WireRule for m in fam}
    missing = sorted(wanted - seen - set(NOT_COUNTED_BY_A_CORE))
    if importlib.util.find_spec("bft.paxos.rules") is None:
        # paxos still counts prose: its certificate rule shows once bft.paxos.rules lands
        missing = [m for m in missing if m != "ledger.CERT_NO_LEADER_ACCEPT"]
    assert not missing, "rules no script exercises:\n  " + "\n  ".join(missing)
    stale = sorted(set(NOT_COUNTED_BY_A_CORE) & seen)
    assert not stale, f"now exercised by a script, remove from NOT_COUNTED_BY_A_CORE: {stale}"
