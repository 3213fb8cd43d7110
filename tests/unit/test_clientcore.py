"""ledger.clientcore: the sans-I/O client core shared by the trio session and the simulator."""
from __future__ import annotations

import msgpack

from crypto.signing import HashSigner
from ledger.clientcore import EVERY_REPLICA, ClientCore
from ledger.quorum import Quorums
from ledger.state import BUSY
from ledger.wire import Redirect, Reply, Request

RESULT = msgpack.packb([0, None])


def _req(ts: int = 7, client: int = 0) -> Request:
    return Request(client, ts, b"op").signed(HashSigner(b"client-0"))


def _reply(replica: int, ts: int = 7, height: int = 3, result: bytes = RESULT, client: int = 0) -> Reply:
    return Reply(0, client, ts, replica, height, 0, result)


def test_pbft_needs_reply_quorum_of_distinct_matching_replicas() -> None:
    core = ClientCore("pbft", 1, 4, 0)
    assert core.need == Quorums("pbft", 1).reply
    p = core.add(_req())
    assert core.transmit(p) is EVERY_REPLICA
    for _ in range(3):                                   # one replica saying it three times counts once
        assert core.on_reply(2, _reply(2)) is None
    assert core.on_reply(3, _reply(3, result=b"other")) is None      # a different answer does not match
    assert core.on_reply(1, _reply(2)) is None           # the replica field must be the connection's
    done = core.on_reply(0, _reply(0))
    assert done is p and p.outcome.replicas == [0, 2] and p.outcome.height == 3
    assert core.on_reply(1, _reply(1)) is None           # already answered


def test_busy_is_a_hint_never_an_outcome() -> None:
    core = ClientCore("paxos", 1, 3, 0)
    p = core.add(_req())
    busy = msgpack.packb([BUSY, b"full"])
    assert core.on_reply(0, _reply(0, height=0, result=busy)) is None
    assert p.busy == 1 and p.outcome is None
    assert core.on_reply(0, _reply(0)) is p              # paxos: the leader's one reply


def test_paxos_leader_redirects_and_retransmission() -> None:
    core = ClientCore("paxos", 1, 3, 0, retransmit_first=1.0, retransmit_max=4.0)
    p = core.add(_req())
    assert core.transmit(p) == 0 and core.retransmit_after(p) == 1.0
    assert core.on_redirect(0, Redirect(0, 7, 0, 2)) == 2 and core.leader == 2
    assert core.on_redirect(1, Redirect(0, 7, 0, 2)) is None          # the replica field must be the sender
    assert core.on_redirect(2, Redirect(0, 7, 2, 2)) is None          # naming itself
    assert core.on_redirect(2, Redirect(0, 7, 2, 9)) is None          # no such replica
    for _ in range(5):                                                # bounded per transmission
        core.on_redirect(0, Redirect(0, 7, 0, 1))
    assert p.redirects == core.n
    assert core.transmit(p) == 2 and p.redirects == 0                 # a retransmission moves on
    assert [core.retransmit_after(p)] == [2.0]
    core.transmit(p)
    core.transmit(p)
    assert core.retransmit_after(p) == 4.0
    # an unreachable leader is skipped, and a broken link to the leader moves on at once
    before = core.leader
    assert core.pick_leader(lambda r: r != before) == (before + 1) % 3 == core.leader
    core.leader = 1
    assert core.on_link_down(0) is None
    assert core.on_link_down(1, lambda r: r == 0) == 0
    assert core.on_reply(0, _reply(0)) is p and core.leader == 0


def test_a_replica_that_answers_becomes_the_paxos_leader_but_not_in_pbft() -> None:
    pbft = ClientCore("pbft", 1, 4, 0)
    pbft.add(_req())
    pbft.on_reply(3, _reply(3))
    pbft.on_reply(2, _reply(2))
    assert pbft.leader == 0 and pbft.on_link_down(0) is None
