"""Reads not ordered (issue 15) in the simulator, on the real cores and the real client core.

- N puts and M reads leave every ledger at height N, in both modes.
- Seeded runs with loss, duplication, a partition and a crash: every read a client accepts
  is a value its key held (the invariant checker replays the honest ledger), and, with no
  faulty replica, it sees every put acknowledged before it began (linearizable).
- pbft: f replicas lying about reads (``lying-reads``) never make a client accept a value,
  and neither do f+1 of them (they cannot reach 2f+1); 2f+1 liars can, and the checker says so.
- pbft: two lagging replicas answering first with the old value cannot make a client miss a
  put that another client saw acknowledged: the 2f+1 quorum, not f+1.
"""
from __future__ import annotations

import random

import pytest

from bft.sim.lab import _build
from bft.sim.scenario import build_pbft
from bft.sim.world import CLIENT, NetworkModel, Simulation
from bft.wire import Commit, Checkpoint, ReadReply
from ledger import tx as txmod
from ledger.state import decode_result, encode_result, OK


def _sim(mode: str, seed: int, *, byzantine: dict[int, str] | None = None, net: NetworkModel | None = None,
         clients: int = 3) -> Simulation:
    if mode == "pbft":
        return build_pbft(seed, 4, byzantine=byzantine or {}, clients=clients, net=net)
    sim = _build("paxos", 3, 1, seed, byzantine or {}, random.Random(seed), {})
    if net is not None:
        sim.net = net
    return sim


def _value(result: bytes | None) -> bytes | None:
    status, value = decode_result(result)
    assert status == OK
    return value


@pytest.mark.parametrize("mode", ["pbft", "paxos"])
def test_puts_then_reads_leave_the_height_at_the_puts(mode: str) -> None:
    sim = _sim(mode, 5)
    for i in range(8):
        sim.at(0.05 * i, lambda i=i: sim.submit(0, f"k{i}", b"v%d" % i))
    sim.run_until(1.0, stop=sim.all_acked)
    sim.run_until(1.2)
    assert {len(r.blocks) for r in sim.replicas} == {len(sim.replicas[0].blocks)}
    height = len(sim.replicas[0].blocks)
    for j in range(30):
        sim.at(1.3 + 0.01 * j, lambda j=j: sim.read(1 + j % 2, f"k{j % 8}"))
    sim.run_until(3.0)
    assert sim.checker.violation is None
    outcomes = list(sim.read_outcomes.values())
    assert [o.kind for o in outcomes] == ["fast"] * 30
    assert [_value(o.result) for o in outcomes] == [b"v%d" % (j % 8) for j in range(30)]
    assert sim.checker.reads_checked == 30
    assert {len(r.blocks) for r in sim.replicas} == {height}, "reads grew a ledger"
    answered = sum(r.core.read_desk.answered for r in sim.replicas)
    assert answered >= 30 * (3 if mode == "pbft" else 1)


def _linearizable_against_puts(sim: Simulation, puts: dict[tuple[int, int], str]) -> list[str]:
    """Every accepted fast read saw every put to its key acknowledged before the read began:
    the value it returned still held at the height of each such put."""
    checker = sim.checker
    checker._advance()
    acked: dict[str, list[tuple[float, int]]] = {}          # key -> [(ack time, height)]
    for height, entries in checker.acked.items():
        for _index, raw, _result in entries:
            t = txmod.parse(raw)
            key = puts.get((t.client, t.timestamp))
            if key is not None:
                acked.setdefault(key, []).append((checker.ack_times[(t.client, t.timestamp)], height))
    bad = []
    for (client, nonce), o in sim.read_outcomes.items():
        if o.kind != "fast":
            continue
        later = [at for at, _v in checker._history.get(o.key, []) if at > o.since]
        until = min(later) - 1 if later else checker._canon.height
        for when, height in acked.get(o.key, []):
            if when < o.started and height > until:
                bad.append(f"client {client}'s read {nonce} of {o.key} (t={o.started:.4f}, since {o.since}, value "
                           f"held until {until}) missed the put at height {height} acknowledged at t={when:.4f}")
    return bad


def _faulty_run(mode: str, seed: int, byzantine: dict[int, str] | None = None) -> tuple[Simulation, list[str]]:
    rng = random.Random(f"reads-{mode}-{seed}")
    net = NetworkModel(delay_max=rng.choice([0.002, 0.005, 0.02]), drop=rng.choice([0.0, 0.02, 0.05]),
                       duplicate=rng.choice([0.0, 0.05]))
    sim = _sim(mode, seed, byzantine=byzantine, net=net)
    n = len(sim.replicas)
    clients = {CLIENT + c for c in range(3)}
    victim = rng.randrange(n)
    t0 = rng.uniform(0.2, 1.0)
    sim.at(t0, lambda: sim.partition([{victim}, (set(range(n)) - {victim}) | clients]))
    sim.at(t0 + rng.uniform(0.2, 0.8), lambda: sim.partition(None))
    other = rng.randrange(n)
    t1 = rng.uniform(0.2, 1.5)
    sim.at(t1, lambda: sim.crash(other))
    sim.at(t1 + rng.uniform(0.1, 0.6), lambda: sim.restart(other))

    def heal() -> None:
        sim.partition(None)
        net.drop = net.duplicate = 0.0
    sim.at(2.0, heal)
    puts: dict[tuple[int, int], str] = {}
    for j in range(40):
        # two values only: a key that changes and changes back (A, B, A) must not pass for one state
        c, key, value = rng.randrange(3), f"k{j % 4}", rng.choice([b"A", b"B"])
        sim.at(rng.uniform(0.0, 2.0), lambda c=c, key=key, value=value: puts.__setitem__(
            (c, sim.submit(c, key, value)), key))
    for j in range(60):
        sim.at(rng.uniform(0.0, 2.0), lambda c=rng.randrange(3), key=f"k{j % 4}": sim.read(c, key))
    sim.run_until(2.0)
    if sim.checker.violation is None:
        sim.run_until(12.0, stop=sim.all_acked)
    problems = [sim.checker.violation] if sim.checker.violation else []
    if not sim.all_acked():
        problems.append(f"unacknowledged: {sim.checker.unacked()}")
    return sim, problems + (_linearizable_against_puts(sim, puts) if not byzantine else [])


@pytest.mark.parametrize("mode", ["pbft", "paxos"])
def test_seeded_faulty_runs_reads_are_values_held_and_linearizable_without_liars(mode: str) -> None:
    failures, fast, ordered = [], 0, 0
    for seed in range(120):         # with an f+1 read quorum (on purpose), pbft seeds 6 and 30 fail
        sim, problems = _faulty_run(mode, seed)
        fast += sum(o.kind == "fast" for o in sim.read_outcomes.values())
        ordered += sum(o.kind == "ordered" for o in sim.read_outcomes.values())
        failures += [f"{mode} seed {seed}: {p}" for p in problems]
    assert not failures, "\n".join(failures[:20])
    assert fast > ordered, (fast, ordered)          # most reads need no ordering even with faults


@pytest.mark.parametrize("liars", [{3: "lying-reads"}, {0: "lying-reads"}, {2: "lying-reads", 3: "lying-reads"}])
def test_pbft_liars_about_reads_never_make_a_client_accept_a_wrong_value(liars: dict[int, str]) -> None:
    """One liar (f) anywhere, or two (f+1, beyond what pbft tolerates): still never a wrong value,
    since a lie needs 2f+1 = 3 matching answers; with two liars the reads fall back to ordering."""
    failures = []
    for seed in range(10):
        sim, problems = _faulty_run("pbft", seed, liars)
        failures += [f"seed {seed}: {p}" for p in problems]
        kinds = {o.kind for o in sim.read_outcomes.values()}
        if len(liars) == 2:
            assert kinds <= {"ordered", "waiting"} or sim.checker.violation, kinds
    assert not failures, "\n".join(failures)


def test_pbft_2f_plus_1_liars_are_caught_by_the_checker() -> None:
    """The checker is not blind: with 2f+1 = 3 colluding liars the lie gathers its quorum."""
    sim = _sim("pbft", 1, byzantine={1: "lying-reads", 2: "lying-reads", 3: "lying-reads"})
    sim.at(0.0, lambda: sim.submit(0, "k", b"v"))
    sim.at(0.5, lambda: sim.read(1, "k"))
    sim.run_until(2.0)
    assert sim.checker.violation and "never held it" in sim.checker.violation


def test_pbft_two_lagging_replicas_cannot_hide_an_acknowledged_put() -> None:
    """Client 0's put commits and executes at replicas 0 and 1 (f+1: acknowledged) while the
    COMMITs to replicas 2 and 3 are lost, so those two still hold the old value. Client 1 then
    reads; 0's and 1's answers to it are lost. 2 and 3 agree on the old value: f+1 = 2 matching
    answers would accept it (a stale read after an acknowledged write); 2f+1 do not, and the
    read falls back to an ordered one, which returns the new value."""
    sim = _sim("pbft", 3)
    sim.at(0.0, lambda: sim.submit(0, "k", b"old"))
    sim.run_until(0.5, stop=sim.all_acked)
    assert sim.all_acked()
    sim.run_until(0.6)
    lagging = {2, 3}
    sim.drop_if = lambda src, dst, m: ((type(m) in (Commit, Checkpoint) and dst in lagging and sim.now < 1.5)
                                       or (type(m) is ReadReply and src not in lagging and sim.now < 1.5))
    sim.at(0.7, lambda: sim.submit(0, "k", b"new"))
    sim.run_until(0.71)
    sim.run_until(1.0, stop=sim.all_acked)
    assert sim.all_acked(), "the put should be acknowledged by replicas 0 and 1"
    assert [len(sim.replicas[i].blocks) for i in range(4)] == [2, 2, 1, 1]
    sim.at(1.05, lambda: sim.read(1, "k"))
    sim.run_until(1.1)
    sim.run_until(3.0, stop=sim.all_acked)
    (o,) = sim.read_outcomes.values()
    assert _value(o.result) == b"new", f"a stale read after an acknowledged put: {o}"
    assert o.kind == "ordered"
    assert sim.checker.violation is None


def test_a_replica_below_the_client_floor_waits_for_it() -> None:
    """Read your writes: the READ carries the height of the client's last put, and a replica
    that has not executed it yet answers only once it has."""
    sim = _sim("pbft", 4)
    slow = 3
    sim.drop_if = lambda src, dst, m: type(m) in (Commit, Checkpoint) and dst == slow and sim.now < 0.3
    sim.at(0.0, lambda: sim.submit(0, "k", b"mine"))
    sim.run_until(0.2, stop=sim.all_acked)
    assert sim.all_acked() and len(sim.replicas[slow].blocks) == 0
    floor = sim.clients[0].core.floor
    assert floor == 1
    sim.at(0.21, lambda: sim.read(0, "k"))
    sim.run_until(0.25)
    assert sim.replicas[slow].core.read_desk.held == 1          # below the floor: held, not answered
    sim.run_until(2.0)
    (o,) = sim.read_outcomes.values()
    assert (o.kind, _value(o.result)) == ("fast", b"mine")
    assert sim.replicas[slow].core.read_desk.held == 0


def test_result_encoding_matches_an_ordered_get() -> None:
    """A read's result is byte for byte what the ordered get returns, so one decoder serves both."""
    sim = _sim("paxos", 6)
    sim.at(0.0, lambda: sim.submit(0, "k", b"x"))
    sim.run_until(1.0, stop=sim.all_acked)
    sim.at(1.1, lambda: sim.read(0, "k"))
    sim.run_until(2.0)
    (o,) = sim.read_outcomes.values()
    assert o.result == encode_result(OK, b"x")


def test_paxos_a_deposed_leader_cut_off_with_a_client_never_answers_from_its_stale_state() -> None:
    """The leader and client 0 are cut off from the rest; the majority elects a new leader and
    client 1's put of a new value is acknowledged there. Client 0 then reads at the old leader,
    which still believes it leads: its read-index round cannot gather a majority, so it answers
    nothing, and the read (ordered after the heal) returns the new value. A lease, or no round
    at all, would have answered with the old value."""
    sim = _sim("paxos", 7)
    sim.at(0.0, lambda: sim.submit(0, "k", b"old"))
    sim.run_until(1.0, stop=sim.all_acked)
    assert sim.all_acked()
    (old,) = [r.id for r in sim.replicas if r.core.is_primary]
    rest = set(range(3)) - {old}
    sim.at(1.0, lambda: sim.partition([{old, CLIENT}, rest | {CLIENT + 1, CLIENT + 2}]))
    sim.at(1.1, lambda: sim.submit(1, "k", b"new"))
    sim.run_until(1.11)
    sim.run_until(4.0, stop=lambda: not sim.clients[1].outstanding)
    assert not sim.clients[1].outstanding, "the majority side should commit the new value"
    assert sim.replicas[old].core.is_primary, "the cut-off leader still believes it leads"
    sim.clients[0].core.leader = old
    sim.at(sim.now + 0.01, lambda: sim.read(0, "k"))
    sim.at(sim.now + 1.5, lambda: sim.partition(None))
    sim.run_until(sim.now + 0.02)
    sim.run_until(sim.now + 10.0, stop=sim.all_acked)
    (o,) = sim.read_outcomes.values()
    assert _value(o.result) == b"new", o
    assert sim.checker.violation is None
