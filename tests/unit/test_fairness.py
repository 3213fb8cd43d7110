"""Issue 12 at the unit level: fair rounds and the per-client share of a batch, the bad
signature blacklist, the post-paid intake, and the monitor's rules on a hand-driven clock."""
from __future__ import annotations
from bft.pbft.certs import Keys
from bft.pbft.monitor import CALIBRATION, CENSORSHIP, HEARTBEAT, THROUGHPUT, MonitorConfig, PrimaryMonitor
from bft.requests import (BAD_SIGNATURE_BURST, BLACKLIST_SECONDS, CLIENT_SHARE, DROP, NEW, REFUSED, FairQueue,
                          RequestPool)
from bft.runtime.admission import Intake
from bft.rules import RequestRule
from bft.wire import MAX_OP, Request
from crypto.signing import HashSigner, HashVerifier
from ledger.chain import Chain
from ledger.state import op_put

CS = [HashSigner(b"fair-client-%d" % i) for i in range(3)]


def pool(**kw) -> RequestPool:
    keys = Keys([], [s.public_key for s in CS], HashVerifier(CS))
    return RequestPool(keys, Chain(), 100_000, **kw)


def req(client: int, ts: int, value: bytes = b"v", sig: bytes | None = None) -> Request:
    r = Request(client, ts, op_put(f"k{ts}", value))
    return r.signed(CS[client]) if sig is None else Request(r.client, r.timestamp, r.op, sig)


def test_fair_queue_serves_clients_in_rounds_and_skips_dead_keys() -> None:
    q = FairQueue()
    for ts in range(5):
        q.append((0, ts))                     # a burst from client 0 first ...
    q.append((1, 0))                          # ... then one request each from clients 1 and 2
    q.append((2, 0))
    dead = {(0, 1)}
    order = []
    while (k := q.take(lambda key: key not in dead, 0.0)) is not None:
        order.append(k)
    assert order == [(0, 0), (1, 0), (2, 0), (0, 2), (0, 3), (0, 4)]
    assert len(q) == 0 and not q


def test_one_client_fills_at_most_its_share_of_a_batch() -> None:
    p = pool(client_bytes=64 * 1024 * 1024)
    big = b"x" * (MAX_OP - 64)
    for ts in range(20):
        assert p.admit(0, req(0, ts, big), 0.0)[0] == NEW
        p.queue.append((0, ts))
    for ts in range(20):
        assert p.admit(1, req(1, ts), 0.0)[0] == NEW
        p.queue.append((1, ts))
    batch, reqs = p.take_batch(128, 1024 * 1024)
    mine = [r for r in reqs if r.client == 0]
    assert len(mine) == 1 and len([r for r in reqs if r.client == 1]) == 20
    assert len(mine[0].op) * CLIENT_SHARE > 1024 * 1024 // 2
    alone, _ = p.take_batch(128, 1024 * 1024)           # alone, it still gets one request per batch
    assert len(alone) == 1


def test_bad_signatures_blacklist_their_client_for_a_while() -> None:
    p = pool()
    garbage = bytes(64)
    verdicts = [p.admit(0, req(0, ts, sig=garbage), 0.0)[1] for ts in range(int(BAD_SIGNATURE_BURST) + 1)]
    assert verdicts[0] is RequestRule.BAD_CLIENT_SIGNATURE and p.blacklisted == 1
    assert p.admit(0, req(0, 100), 1.0) == (DROP, RequestRule.BLACKLISTED)
    assert p.admit(1, req(1, 100), 1.0)[0] == NEW                  # others are not touched
    assert p.admit(0, req(0, 101), BLACKLIST_SECONDS + 0.1)[0] == NEW
    # a relayed request with a bad signature is the relaying replica's doing, not the client's
    q = pool()
    for ts in range(50):
        q.admit(2, req(2, ts, sig=garbage), 0.0, direct=False)
    assert q.blacklisted == 0


def test_a_client_over_its_quota_or_throttled_is_flooding() -> None:
    p = pool(client_requests=4)
    for ts in range(4):
        assert p.admit(0, req(0, ts), 0.0)[0] == NEW
    assert p.flooding(0, 0.0, 2.0)                              # holds its whole quota
    assert p.admit(0, req(0, 9), 0.0)[0] == REFUSED
    assert not p.flooding(1, 0.0, 2.0)
    p.throttled(1, 5.0)
    assert p.flooding(1, 6.0, 2.0) and not p.flooding(1, 8.0, 2.0)


def test_intake_is_post_paid_and_charges_useless_messages_more() -> None:
    i = Intake(rate=100.0, burst=200.0)
    assert i.charge((0, 1), 0.0, 100, 0, 0) == 0.0
    assert i.charge((0, 1), 0.0, 10, 0, 10) > 0.0                # 10 + 150 tokens: 60 in debt
    assert i.paused == {(0, 1): 1}
    assert i.charge((0, 2), 0.0, 150, 0, 0) == 0.0                # another peer has its own bucket
    assert i.charge((0, 1), 1.0, 1, 0, 0) == 0.0                  # refilled


def test_monitor_rules_on_a_hand_driven_clock() -> None:
    cfg = MonitorConfig()
    m = PrimaryMonitor(cfg, 4, 0.0)
    T = 1.0
    assert m.verdict(0.5, (0.0, 3), T) is None
    rule, _ = m.verdict(0.8, (0.0, 3), T)                        # waited T/2 + heartbeat, no useful batch
    assert rule == HEARTBEAT
    m.useful_pre_prepare(0.8)
    assert m.verdict(0.9, (0.0, 3), T) is None                    # useful batches keep coming ...
    m.useful_pre_prepare(1.0)
    rule, _ = m.verdict(1.05, (0.0, 3), T)                        # ... but client 3 waits a timeout
    assert rule == CENSORSHIP
    # a view with demand and no record ends after `calibration`
    m = PrimaryMonitor(cfg, 4, 0.0)
    for t in (1.0, 2.0):
        m.executed(500)
        m.useful_pre_prepare(t)
        found = m.verdict(t, (t - 0.2, 1), T)
    assert found[0] == CALIBRATION
    m.start_view(2.0)
    assert list(m.records) == [500.0]
    # with a record, a window under 0.6 of it, under demand, after the grace period
    for t in (3.0, 4.0):
        m.executed(100)
        m.useful_pre_prepare(t)
        found = m.verdict(t, (t - 0.2, 1), T)
    assert found[0] == THROUGHPUT and m.required(4.0) > 0.6 * 500
    # without demand (nothing waits 0.1 s) the same low rate is the load's doing
    m.start_view(4.0)
    for t in (5.0, 6.0):
        m.executed(100)
        m.useful_pre_prepare(t)
        assert m.verdict(t, None, T) is None


def test_the_pool_is_changed_through_its_methods_only() -> None:
    """Issue 13: a view change or a Paxos leader stepping down no longer clears the pool's
    internals by hand; ``new_view`` keeps the held requests, ``forget`` drops them too."""
    p = pool()
    for ts in range(3):
        assert p.admit(0, req(0, ts), 0.0)[0] == NEW
        p.enqueue((0, ts))
    assert p.queued == 3 and p.oldest_queued(0.0) == (0.0, 0)
    batch, reqs = p.take_batch(2, 1024 * 1024)
    assert len(batch) == 2 and not p.live((0, 0)) and p.live((0, 2))
    assert not p.mark_in_batch(reqs)                    # already in a batch: nothing new, not useful
    p.new_view()
    assert p.queued == 0 and p.live((0, 0)) and len(p.pending) == 3
    assert p.mark_in_batch(reqs) and not p.live((0, 0))   # marked again, and not executed: useful
    p.forget()
    assert p.queued == 0 and not p.pending and not p.live((0, 2))
    assert p.nbytes == 0 and not p.per_client           # the budgets come back with the requests


def test_a_paxos_leader_stepping_down_many_times_keeps_its_whole_pool() -> None:
    """Issue 13's review: ``forget`` cleared the held requests but kept their bytes and counts
    charged, so every step-down of a Paxos leader shrank its pool until it refused everyone."""
    p = pool(client_requests=8)
    for round_ in range(50):
        for ts in range(4):
            assert p.admit(0, req(0, 100 * round_ + ts), 0.0)[0] == NEW
        p.forget()
    assert p.admit(0, req(0, 10_000), 0.0)[0] == NEW and p.per_client[0][0] == 1
