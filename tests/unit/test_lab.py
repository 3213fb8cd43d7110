"""The attack catalogue and the lab (issue 14, first part): every listed command runs, and
every run shows what the catalogue says (a listed rule fires against the attacker; safety
and liveness are as stated)."""
from __future__ import annotations

import json

import pytest

from bft.app.attacks import ATTACKS, BY_NAME
from bft.app.cli import main
from bft.app.rules_table import families
from bft.sim.lab import SCENARIOS, run_lab
from bft.switches import SWITCHES

ENTRIES = [(a.name, mode) for a in ATTACKS for mode in ("pbft", "paxos") if a.outcome(mode) is not None]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_catalogue_lists_at_least_20_attacks_each_with_a_rule_and_a_command(capsys) -> None:
    code, out, _ = _run(capsys, "attacks", "--json")
    assert code == 0
    listed = json.loads(out)
    labels = {rule.label for fam in families() for rule in fam}
    with_rules = [a for a in listed if any(m["rules"] for m in a["modes"].values())]
    assert len(with_rules) >= 20, [a["name"] for a in listed]
    assert {a["kind"] for a in listed} == {"replica", "client", "network"}
    for a in listed:
        assert a["modes"], a["name"]
        for mode, m in a["modes"].items():
            assert m["command"] == f"bftledger lab {a['name']} --mode {mode}"
            assert set(m["rules"]) <= labels, (a["name"], set(m["rules"]) - labels)
    assert {a.name for a in ATTACKS} == set(SCENARIOS)          # every lab scenario is catalogued


@pytest.mark.parametrize("name, mode", ENTRIES)
def test_every_catalogued_command_runs_and_shows_what_the_catalogue_says(capsys, name: str, mode: str) -> None:
    expected = BY_NAME[name].outcome(mode)
    for seed in (1, 2):
        code, out, err = _run(capsys, "lab", name, "--mode", mode, "--seed", str(seed), "--json")
        assert code == 0, err
        r = json.loads(out)
        assert (r["safety"], r["liveness"]) == (expected.safety, expected.liveness), (seed, r["violation"])
        seen = set(r["attacker_drops"]) | set(r["suspicions_by_rule"])
        if BY_NAME[name].kind == "network":
            seen |= set(r["drops_by_rule"])
        if expected.rules:
            assert seen & set(expected.rules), (seed, sorted(seen))
        assert r["replay"].startswith(f"bftledger lab {name} --mode {mode}")


def test_the_replay_command_replays_the_same_run(capsys) -> None:
    code, out, _ = _run(capsys, "lab", "censor", "--seed", "7", "--json")
    first = json.loads(out)
    argv = first["replay"].split()[1:] + ["--json"]
    code2, out2, _ = _run(capsys, *argv)
    assert code == code2 == 0 and json.loads(out2) == first


def test_paxos_with_one_equivocating_leader_diverges_and_pbft_does_not() -> None:
    """Issue 14: 'show that in Paxos mode one lying replica is enough'."""
    assert run_lab("equivocate", mode="paxos", seed=3).safety == "violated"
    assert run_lab("equivocate", mode="pbft", seed=3).safety == "held"


def test_an_attack_that_does_not_apply_is_refused_in_one_line(capsys) -> None:
    code, out, err = _run(capsys, "lab", "wrong-digest", "--mode", "paxos")
    assert code == 2 and not out
    assert err.count("\n") == 1 and "does not apply to paxos" in err
    code, _, err = _run(capsys, "lab", "lying-receipts")
    assert code == 2 and "real cluster" in err and err.count("\n") == 1
    code, _, err = _run(capsys, "lab", "no-such-attack")
    assert code == 2 and "bftledger attacks" in err


def test_the_narrative_names_the_attacker_the_rules_and_the_outcome(capsys) -> None:
    code, out, _ = _run(capsys, "lab", "forge-request")
    assert code == 0
    assert "attacker: replica 0" in out and "pbft.BATCH_BAD_CLIENT_SIGNATURE" in out
    assert "safety: held" in out and "liveness: held" in out
    assert "replay: bftledger lab forge-request --mode pbft --f 1 --seed 1" in out


def test_a_paxos_replica_refuses_a_strategy_that_does_nothing_to_it(tmp_path, capsys) -> None:
    """Issue 14: 'wrong-digest, forge-request and forge-vc do nothing in paxos, yet status labels
    the replica [byzantine: wrong-digest]'. Now the replica refuses to start."""
    d = str(tmp_path / "px")
    assert _run(capsys, "init", d, "--mode", "paxos", "--f", "1")[0] == 0
    for strategy in ("wrong-digest", "forge-request", "forge-vc"):
        code, out, err = _run(capsys, "replica", d, "--id", "1", "--byzantine", strategy)
        assert code == 2 and err.count("\n") == 1 and "does nothing to a paxos replica" in err, err


@pytest.mark.parametrize("f", [1, 2])
def test_f_colluding_replicas_cannot_break_safety_and_f_plus_1_can(f: int) -> None:
    """Issue 14: with K = f safety holds on every seed tried; with K = f+1 the lab finds a
    violation within a few seeds and shows where the honest ledgers differ."""
    for seed in range(1, 6):
        assert run_lab("collude", f=f, count=f, seed=seed).safety == "held", seed
    broken = [run_lab("collude", f=f, count=f + 1, seed=seed) for seed in range(1, 4)]
    assert all(r.safety == "violated" for r in broken), [r.seed for r in broken if r.safety == "held"]
    assert any(r.divergence for r in broken)


def test_the_f_plus_1_narrative_prints_the_two_ledgers(capsys) -> None:
    code, out, _ = _run(capsys, "lab", "collude", "--byzantine-count", "2")
    assert code == 0
    assert "2 Byzantine replicas exceed f=1" in out and "safety: VIOLATED" in out
    assert "the honest ledgers differ at height" in out and out.count("batch root") == 2
    assert "replay: bftledger lab collude --mode pbft --f 1 --byzantine-count 2 --seed 1" in out


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_every_rule_switch_goes_from_held_to_violated(capsys, switch: str) -> None:
    """Issue 14: each switch has a lab scenario that holds with the rule on and breaks safety
    with it off, on every seed tried; its command is the one the catalogue prints."""
    sw = SWITCHES[switch]
    argv = sw.command(switch).split()[1:]
    if "--seed" in argv:
        del argv[argv.index("--seed"):argv.index("--seed") + 2]
    on = [a for a in argv if a not in ("--unsafe-disable", switch)]
    for seed in map(str, sw.seeds):
        code, out, _ = _run(capsys, *on, "--seed", seed, "--json")
        r = json.loads(out)
        assert code == 0 and (r["safety"], r["liveness"]) == ("held", "held"), (switch, seed)
        code, out, _ = _run(capsys, *argv, "--seed", seed, "--json")
        r = json.loads(out)
        assert code == 0 and r[sw.breaks] == "violated" and r["unsafe_disable"] == switch, (switch, seed)
        assert f"--unsafe-disable {switch}" in r["replay"]


def test_a_switch_of_the_other_mode_or_an_unknown_one_is_refused(capsys) -> None:
    code, _, err = _run(capsys, "lab", "split-brain", "--unsafe-disable", "paxos-majority")
    assert code == 2 and "add --mode paxos" in err
    code, _, err = _run(capsys, "lab", "split-brain", "--unsafe-disable", "nonsense")
    assert code == 2 and "invalid choice" in err


def test_no_real_replica_takes_a_rule_switch(capsys) -> None:
    code, _, err = _run(capsys, "replica", "/nonexistent", "--id", "0", "--unsafe-disable", "quorum-size")
    assert code == 2 and "unrecognized arguments" in err
