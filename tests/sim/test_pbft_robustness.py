"""Issue 12: Byzantine faults may slow the ledger, not stop it. The real core, driven by the
simulator under closed-loop load, against a primary that stays under the request timer
(slow), proposes empty batches, replays executed requests or censors one client, and a
client that floods: each is replaced, or cannot crowd others out, within a stated bound.
Each test prints its seed's figures; the same seed replays the same run. The request
timeout is the runtime's (1 s), so that the request timer alone would not catch these."""
from __future__ import annotations

from bft.requests import is_duplicate
from bft.pbft.monitor import CALIBRATION, CENSORSHIP, HEARTBEAT, THROUGHPUT
from bft.adversary import slow_delay
from bft.sim.scenario import build_pbft

FLOOD = 2000
RUNTIME_TIMING = dict(request_timeout=1.0, retransmit_interval=0.25)


def _core(sim, i: int):
    c = sim.nodes[i].core
    return getattr(c, "core", c)


def closed_loop(sim, clients: list[int], in_flight: int, until: float, every: float = 0.005) -> None:
    """Keep ``in_flight`` requests outstanding per client until ``until`` (virtual seconds)."""
    count = [0]

    def top_up() -> None:
        for c in clients:
            while len(sim.clients[c].outstanding) < in_flight:
                count[0] += 1
                sim.submit(c, f"c{c}k{count[0] % 16}", b"v%d" % count[0])
        if sim.now + every < until:
            sim.at(sim.now + every, top_up)

    sim.at(0.01, top_up)


def view_entries(sim, replica: int, until: float, step: float = 0.01) -> list[tuple[float, int]]:
    """(time, view) each time ``replica`` enters a new view (not in a view change), sampled."""
    seen: list[tuple[float, int]] = []

    def sample() -> None:
        c = _core(sim, replica)
        if not c.in_view_change and (not seen or seen[-1][1] != c.view):
            seen.append((sim.now, c.view))
        if sim.now + step < until:
            sim.at(sim.now + step, sample)

    sim.at(0.0, sample)
    return seen


def suspected(sim, ids, rule: str) -> int:
    return sum(_core(sim, i).stats[rule] for i in ids)


def executed_fresh(sim, i: int) -> int:
    return sum(len(b.txs) for b in sim.nodes[i].blocks)


def test_slow_primary_of_view_zero_is_rotated_out_by_calibration() -> None:
    """A primary whose messages arrive 70% of the request timeout late never trips the request
    timer. With no throughput record yet, a view under demand ends after ``calibration``
    seconds (2 s): bound 2 s + a view change."""
    seed = 120
    sim = build_pbft(seed, 4, byzantine={0: "slow"}, clients=2, config=RUNTIME_TIMING)
    closed_loop(sim, [0, 1], 8, until=6.0)
    views = view_entries(sim, 1, 6.0)
    sim.run_until(6.0)
    assert sim.checker.violation is None, sim.checker.violation
    left = next(t for t, v in views if v >= 1)
    print(f"seed {seed}: view 0 (slow primary) left at t={left:.2f} s; views {views[:6]}")
    assert left <= 2.0 + 0.5, f"seed {seed}: the slow primary kept view 0 until {left:.2f} s"
    assert suspected(sim, [1, 2, 3], CALIBRATION) >= 2


def test_slow_primary_is_voted_out_under_the_throughput_bar() -> None:
    """View 0 runs well and sets the record (its primary then crashes and restarts, so view 1
    begins). At t=4 s the primary of view 1 turns slow: it is held to ``ratio`` of view 0's
    record and voted out once a whole window has run slow (bound: two windows, two checks
    and a view change)."""
    seed = 121
    sim = build_pbft(seed, 4, clients=2, config=RUNTIME_TIMING)
    closed_loop(sim, [0, 1], 8, until=9.0)
    views = view_entries(sim, 2, 9.0)

    def turn_slow() -> None:
        sim.replicas[1].send_delay = slow_delay(sim.cfg)
        sim.replicas[1].honest = False

    sim.at(1.5, lambda: sim.crash(0))
    sim.at(2.0, lambda: sim.restart(0))
    sim.at(4.0, turn_slow)
    sim.run_until(9.0)
    assert sim.checker.violation is None, sim.checker.violation
    assert any(v == 1 for _, v in views) and _core(sim, 2).monitor.records, views
    after = next(t for t, v in views if v > 1)
    m = sim.cfg.monitor
    bound = 2 * m.window + 2 * m.check_interval + 0.5          # 0.5: SUSPECTs, VIEW-CHANGE, NEW-VIEW
    print(f"seed {seed}: view 1's primary slow from 4.00 s, view {views[-1][1]} at {after:.2f} s "
          f"(bound {4 + bound:.2f} s); records at replica 2: {list(_core(sim, 2).monitor.records)}; views {views}")
    assert after - 4.0 <= bound, f"seed {seed}: the slow primary held view 1 until {after:.2f} s"
    assert suspected(sim, [2, 3], THROUGHPUT) >= 1      # with replica 0 (restarted: no record yet, calibration)
    assert {_core(sim, i).view for i in (0, 2, 3)} == {2}


def primary_left_view_zero(seed: int, strategy: str, until: float = 3.0):
    """Replica 0 (the primary of view 0) runs ``strategy`` under closed-loop load from two
    clients; (the simulation, when replica 1 entered a later view)."""
    sim = build_pbft(seed, 4, byzantine={0: strategy}, clients=2, config=RUNTIME_TIMING)
    closed_loop(sim, [0, 1], 4, until=until)
    views = view_entries(sim, 1, until)
    sim.run_until(until)
    assert sim.checker.violation is None, sim.checker.violation
    left = next(t for t, v in views if v >= 1)
    print(f"seed {seed}: view 0 ({strategy}) left at t={left:.2f} s")
    return sim, left


def test_primary_sending_empty_batches_is_replaced_by_the_heartbeat() -> None:
    """Empty batches used to count as progress: the primary was suspected only after
    CENSOR_GRACE request timeouts per request. Bound now: T/2 + heartbeat + a view change."""
    sim, left = primary_left_view_zero(122, "empty-batches")
    assert left <= sim.cfg.request_timeout / 2 + sim.cfg.monitor.heartbeat + 0.3
    assert suspected(sim, [1, 2, 3], HEARTBEAT) >= 2
    assert any(not b.txs for b in sim.nodes[1].blocks), "the primary's empty batches never committed"
    assert executed_fresh(sim, 1) > 50


def test_primary_replaying_executed_requests_is_replaced_by_the_heartbeat() -> None:
    sim, left = primary_left_view_zero(123, "replay-executed")
    assert left <= sim.cfg.request_timeout / 2 + sim.cfg.monitor.heartbeat + 0.3
    assert suspected(sim, [1, 2, 3], HEARTBEAT) >= 2
    replayed = [b for b in sim.nodes[1].blocks if b.view == 0 and b.txs and all(map(is_duplicate, b.results))]
    assert replayed, "the primary's replayed batches never committed"


def test_primary_censoring_one_client_is_replaced_within_a_request_timeout() -> None:
    """Client 0 is ignored while client 1 is served: fair rounds make client 0's oldest
    request wait a whole timeout, which only censorship explains (it took CENSOR_GRACE
    timeouts before)."""
    sim, left = primary_left_view_zero(124, "censor")
    assert left <= sim.cfg.request_timeout + sim.cfg.monitor.check_interval + 0.3
    assert suspected(sim, [1, 2, 3], CENSORSHIP) >= 2


def test_a_flooding_client_does_not_crowd_out_a_quiet_one() -> None:
    """Client 1 has one request at a time throughout; from t=1 s client 0 sends bursts of
    FLOOD requests (near its quota) every 0.25 s. Served in rounds, client 1's requests wait
    about one batch more than alone, not behind client 0's queue (served in arrival order,
    the worst waited 4 times its p50 alone); and no honest primary is
    suspected for client 0's queue."""
    seed = 125
    sim = build_pbft(seed, 4, clients=2, client_timeout=2.0, config=RUNTIME_TIMING)
    for k in range(4):
        sim.at(1.0 + 0.25 * k, lambda: [sim.submit(0, f"f{i % 16}", b"x") for i in range(FLOOD)])
    alone: list[float] = []
    crowded: list[float] = []
    sent: dict[int, float] = {}

    def quiet_loop() -> None:
        c = sim.clients[1]
        for ts in [t for t in sent if t not in c.outstanding]:
            (alone if sim.now < 1.0 else crowded).append(sim.now - sent.pop(ts))
        if not c.outstanding:
            sent[sim.submit(1, "quiet", b"q")] = sim.now
        if sim.now < 2.5:
            sim.at(sim.now + 0.002, quiet_loop)

    sim.at(0.1, quiet_loop)
    sim.run_until(2.5)
    assert sim.checker.violation is None, sim.checker.violation
    alone.sort()
    crowded.sort()
    p50_alone, p50, worst = alone[len(alone) // 2], crowded[len(crowded) // 2], crowded[-1]
    flood = executed_fresh(sim, 1) - len(alone) - len(crowded)
    print(f"seed {seed}: quiet client alone p50 {p50_alone * 1000:.1f} ms; beside the flood {len(crowded)} "
          f"requests, p50 {p50 * 1000:.1f} ms, worst {worst * 1000:.1f} ms; flooding client's executed {flood}")
    assert len(crowded) > 100 and flood >= 4 * FLOOD * 0.9
    assert worst <= 3 * p50_alone, "the quiet client waited behind the flood"
    assert {_core(sim, i).view for i in range(4)} == {0}, "an honest primary was voted out"
