"""Reads not ordered (issue 15), unit by unit: the state's ``since``, the pbft and paxos cores
answering without ordering (and every ``read.*`` rule), and the client core's quorum,
fallback, floor and redirects."""
from __future__ import annotations

import msgpack
import pytest

from bft.outputs import AppendBlock, Broadcast, Persist, Send, ToClient
from bft.paxos.ballots import Role
from bft.paxos.rules import PaxosRule
from bft.rules import ReadRule, StepRule
from bft.wire import PrePrepare, PxNack, PxPrepare, PxPromise, PxReadIndex, PxReadIndexAck, Read, ReadRedirect, ReadReply
from ledger.chain import Chain
from ledger.clientcore import EVERY_REPLICA, ClientCore
from ledger.quorum import Quorums
from ledger.state import BUSY, OK, KVStore, decode_result, encode_result, is_read_only, op_cas, op_delete, op_get, op_put
from ledger.wire import Reply, Request
from tests.unit import test_paxos_core as px
from tests.unit.test_pbft_rules import Cluster


def _to_client(out) -> list:
    return [a.msg for a in out if type(a) is ToClient]


def _ordered(out) -> list:
    """Anything that orders, persists or appends: a read must cause none of it."""
    return [a for a in out if type(a) in (Persist, AppendBlock) or
            (type(a) in (Broadcast, Send) and type(a.msg) is PrePrepare)]


# ----------------------------------------------------------------------------- the state
def test_since_is_the_height_that_last_wrote_a_key_and_query_changes_nothing() -> None:
    kv = KVStore()
    assert kv.query(op_get("k")) == (encode_result(OK, None), 0)
    for height, op in enumerate([op_put("k", b"A"), op_put("j", b"x"), op_put("k", b"B"), op_put("k", b"A"),
                                 op_delete("k"), op_cas("k", None, b"C")], start=1):
        kv.at = height
        kv.apply(op)
        if height == 4:          # A again: the same value as at height 1, but not the same "since"
            assert kv.query(op_get("k")) == (encode_result(OK, b"A"), 4)
    assert kv.query(op_get("k")) == (encode_result(OK, b"C"), 6) and kv.since("j") == 2
    digest = kv.digest()
    assert kv.query(op_put("k", b"Z")) is None and kv.read("k") == b"C" and kv.digest() == digest
    assert kv.query(b"\xc1garbage") is None
    assert is_read_only(op_get("k")) and not is_read_only(op_put("k", b"v")) and not is_read_only(b"\x90")
    assert dict(kv.written()) == {"k": 6, "j": 2}


def test_since_survives_replay() -> None:
    """A restarted replica (or one after state transfer) replays blocks: the same ``since``."""
    cl = Cluster()
    a = Chain()
    blocks = [a.execute(s, 0, [cl.req(0, key="k", value=b"v%d" % s).encode()]) for s in (1, 2, 3)]
    b = Chain()
    for blk in blocks:
        b.replay(blk)
    assert b.kv.since("k") == a.kv.since("k") == 3


# ----------------------------------------------------------------------------- pbft core
def _chain_with(cl: Cluster, *values: bytes) -> Chain:
    chain = Chain()
    for s, v in enumerate(values, start=1):
        chain.execute(s, 0, [cl.req(0, key="k", value=v).encode()])
    return chain


@pytest.mark.parametrize("replica", [0, 1])
def test_pbft_core_answers_a_read_from_its_state_without_ordering_it(replica: int) -> None:
    """The primary (0) as much as a backup (1): a REPLY-like answer, nothing proposed, persisted
    or appended, the height unchanged."""
    cl = Cluster()
    core = cl.core(replica, chain=_chain_with(cl, b"A", b"B"))
    core.step(2, Read(2, 9, 0, op_get("k")), True)
    out = core.ready()
    assert _ordered(out) == []
    (reply,) = _to_client(out)
    assert reply == ReadReply(2, 9, replica, 2, 2, encode_result(OK, b"B"))
    assert core.chain.height == 2 and not core.pending
    assert core.status()["reads_answered"] == 1


def test_pbft_core_holds_a_read_below_the_client_floor_until_it_executes_that_far() -> None:
    cl = Cluster()
    core = cl.core(chain=_chain_with(cl, b"A"))
    core.step(0, Read(0, 1, 2, op_get("k")), True)
    assert _to_client(core.ready()) == [] and core.read_desk.held == 1
    # block 2 commits through the normal case: PRE-PREPARE, 2f PREPAREs, 2f+1 COMMITs
    req = cl.req(1, key="k", value=b"B")
    pp = cl.pp(0, 2, [req])
    core.step(0, pp)
    for r in (2, 3):
        core.step(r, cl.prepare(0, 2, pp.digest, r))
    for r in (0, 2, 3):
        core.step(r, cl.commit(0, 2, pp.digest, r))
    out = core.ready()
    replies = [m for m in _to_client(out) if type(m) is ReadReply]
    assert replies == [ReadReply(0, 1, 1, 2, 2, encode_result(OK, b"B"))] and core.read_desk.held == 0


def test_pbft_read_rules(monkeypatch) -> None:
    """read.WRONG_CLIENT, read.NOT_READ_ONLY, read.RATE (BUSY), read.HELD_FULL (BUSY), read.EXPIRED."""
    cl = Cluster()
    core = cl.core(read_rate=1.0, read_burst=3, reads_held_per_client=1, read_wait=0.5)
    core.step(0, Read(1, 1, 0, op_get("k")), True)                 # names client 1 on client 0's channel
    core.step(0, Read(0, 2, 0, op_put("k", b"v")), True)           # not read-only
    core.step(0, Read(9, 3, 0, op_get("k")), True)
    assert core.drops[ReadRule.WRONG_CLIENT] == 2 and core.drops[ReadRule.NOT_READ_ONLY] == 1
    assert _to_client(core.ready()) == []
    core.step(0, Read(0, 4, 5, op_get("k")), True)                 # held (floor 5)
    core.step(0, Read(0, 5, 5, op_get("k")), True)                 # the client's one held slot is taken
    busy = _to_client(core.ready())
    assert [(m.nonce, decode_result(m.result)[0], m.height) for m in busy] == [(5, BUSY, 0)]
    assert core.drops[ReadRule.HELD_FULL] == 1
    core.step(0, Read(0, 6, 0, op_get("k")), True)                 # the third token of the bucket (3)
    assert decode_result(_to_client(core.ready())[0].result) == (OK, None)
    core.step(0, Read(0, 7, 0, op_get("k")), True)                 # the bucket is empty
    assert core.drops[ReadRule.RATE] == 1 and decode_result(_to_client(core.ready())[0].result)[0] == BUSY
    core.tick(1.0)                                                 # refills one; the held read expires
    assert core.drops[ReadRule.EXPIRED] == 1 and core.read_desk.held == 0
    core.step(0, Read(0, 8, 0, op_get("k")), True)
    assert decode_result(_to_client(core.ready())[0].result) == (OK, None)
    assert core.drops.by_sender[ReadRule.RATE] == {"c0": 1}


def test_a_client_may_send_reads_but_a_replica_may_not() -> None:
    cl = Cluster()
    core = cl.core()
    core.step(2, Read(0, 1, 0, op_get("k")))
    assert core.drops[StepRule.UNEXPECTED_TYPE] == 1
    core.step(0, ReadReply(0, 1, 0, 0, 0, b""), True)
    assert core.drops[StepRule.CLIENT_SENT_PROTOCOL] == 1


# ----------------------------------------------------------------------------- paxos core
def _probe(out) -> PxReadIndex:
    (m,) = [a.msg for a in out if type(a) in (Broadcast, Send) and type(a.msg) is PxReadIndex]
    return m


def test_paxos_leader_answers_only_after_a_majority_confirms_its_ballot() -> None:
    c = px.elected()
    c.step(0, Read(0, 1, 0, op_get("k")), True)
    c.step(1, Read(1, 1, 0, op_get("k")), True)
    out = c.ready()
    probe = _probe(out)
    assert _to_client(out) == [] and _ordered(out) == []
    assert (probe.ballot, probe.round) == (c.ballot, 1)
    c.step(1, PxReadIndexAck(c.ballot - 1, 1, 1))                   # another ballot's acknowledgement
    assert c.drops[PaxosRule.READ_ACK_NOT_LEADING] == 1 and _to_client(c.ready()) == []
    c.step(2, PxReadIndexAck(c.ballot, 1, 2))                       # own + 2 = a majority of 3
    replies = _to_client(c.ready())
    assert sorted((m.client, m.nonce, m.replica) for m in replies) == [(0, 1, 0), (1, 1, 0)]
    assert all(decode_result(m.result) == (OK, None) for m in replies)
    c.step(1, PxReadIndexAck(c.ballot, 1, 1))                       # late: the round is confirmed
    assert _to_client(c.ready()) == [] and c.chain.height == 0
    c.tick(c.now + 1.0)
    assert c.read_desk.held == 0


def test_paxos_read_index_covers_what_phase_1_re_proposed() -> None:
    """A new leader's commit index may lag what an earlier leader chose: its reads wait until the
    slots phase 1 re-proposed have executed (Raft: a leader's first entry of its term)."""
    c = px.core(0)
    c.tick(0.0)
    b = px.sends(px.prevoted(c), px.PxPrepare)[0].msg.ballot
    earlier = px.accept(1, 1, [px.req(1, 1).encode()])              # ballot 1 (replica 1's) accepted slot 1
    c.step(1, PxPromise(b, 1, 0, [earlier]))
    c.ready()
    assert c.is_primary and c.proposer.elected_top == 1 and c.commit_index == 0
    c.step(0, Read(0, 1, 0, op_get("k1")), True)
    probe = _probe(c.ready())
    c.step(1, PxReadIndexAck(b, probe.round, 1))
    assert _to_client(c.ready()) == [] and c.read_desk.held == 1  # confirmed, but slot 1 has not executed
    c.step(1, px.PxAccepted(b, 1, 1))
    replies = _to_client(c.ready())
    reads = [m for m in replies if type(m) is ReadReply]
    assert [(m.height, m.since, decode_result(m.result)) for m in reads] == [(1, 1, (OK, b"v1"))]


def test_paxos_follower_redirects_reads_and_acknowledges_rounds_of_its_leader_only() -> None:
    f = px.core(1)
    f.step(0, Read(0, 4, 0, op_get("k")), True)
    assert _to_client(f.ready()) == [ReadRedirect(0, 4, 1, 0)]
    f.step(0, PxReadIndex(3, 7, 0, 0))                               # ballot 3 is replica 0's
    assert [a.msg for a in f.ready() if type(a) is Send] == [PxReadIndexAck(3, 7, 1)]
    g = px.core(1)
    g.step(2, PxPrepare(5, 0, 2))                                    # it promises ballot 5 (replica 2's)
    g.ready()
    g.step(0, PxReadIndex(3, 8, 0, 0))                               # the old leader of ballot 3 asks
    out = g.ready()
    assert [type(a.msg) for a in out if type(a) is Send] == [PxNack]
    assert g.drops[PaxosRule.STALE_BALLOT] == 1


def test_paxos_read_at_a_candidate_is_busy_and_a_leader_stepping_down_drops_its_reads() -> None:
    c = px.core(0)
    c.tick(0.0)
    px.prevoted(c)                                                   # a candidate of ballot 3: no leader yet
    assert c.proposer.role is Role.CANDIDATE and c.leader == 0
    c.step(0, Read(0, 1, 0, op_get("k")), True)
    (busy,) = _to_client(c.ready())
    assert decode_result(busy.result)[0] == BUSY and c.drops[PaxosRule.READ_NOT_LEADING] == 1
    c.step(1, PxPromise(c.ballot, 1, 0, []))
    c.ready()
    assert c.is_primary
    c.step(0, Read(0, 2, 0, op_get("k")), True)
    c.ready()
    assert c.read_desk.held == 1
    c.step(1, PxNack(c.ballot, c.ballot + 2, 1))                     # deposed before its round confirmed
    assert _to_client(c.ready()) == [] and c.read_desk.held == 0
    assert c.drops[PaxosRule.READ_LEADERSHIP_LOST] == 1


def test_paxos_unanswered_round_is_sent_again() -> None:
    c = px.elected()
    c.step(0, Read(0, 1, 0, op_get("k")), True)
    first = _probe(c.ready())
    c.tick(c.now + c.cfg.retransmit_interval)
    again = [a for a in c.ready() if type(a) is Send and type(a.msg) is PxReadIndex]
    assert sorted(a.to for a in again) == [1, 2] and {a.msg.round for a in again} == {first.round}


# ----------------------------------------------------------------------------- the client core
RES_A = encode_result(OK, b"A")


def _rr(replica: int, nonce: int = 1, since: int = 3, result: bytes = RES_A, height: int = 5,
        client: int = 0) -> ReadReply:
    return ReadReply(client, nonce, replica, height, since, result)


def test_pbft_client_accepts_2f_plus_1_distinct_matching_answers() -> None:
    core = ClientCore("pbft", 1, 4, 0)
    assert core.need_read == Quorums("pbft", 1).read == 3
    rp = core.add_read(op_get("k"))
    assert core.read_transmit(rp) is EVERY_REPLICA
    for _ in range(3):
        assert core.on_read_reply(2, _rr(2)) is None                  # one replica thrice counts once
    assert core.on_read_reply(1, _rr(2)) is None                      # replica field != the connection's
    assert core.on_read_reply(1, _rr(1, client=1)) is None            # another client's answer
    assert core.on_read_reply(0, _rr(0, height=9)) is None            # heights may differ
    assert core.on_read_reply(3, _rr(3, since=2)) is None             # but not the height since which it held
    assert core.on_read_reply(1, _rr(1, height=7)) is rp
    assert (rp.result, rp.since, rp.replicas) == (RES_A, 3, [0, 1, 2]) and core.floor == 3
    core.remove_read(rp.nonce)
    assert core.reads_answered == 1


def test_pbft_client_falls_short_when_no_result_can_reach_the_quorum() -> None:
    core = ClientCore("pbft", 1, 4, 0)
    rp = core.add_read(op_get("k"))
    assert core.on_read_reply(0, _rr(0)) is None
    assert core.on_read_reply(1, _rr(1, result=encode_result(OK, b"B"))) is None     # 1 + 1 + 2 silent: wait
    assert core.on_read_reply(2, _rr(2, since=1, result=encode_result(OK, b"C"))) is rp  # best 1 + 1 silent < 3
    assert rp.result is None and "3 different results" in rp.short
    core.remove_read(rp.nonce)
    assert core.reads_short == 1 and core.floor == 0


def test_busy_answers_count_against_the_quorum_and_end_a_paxos_read() -> None:
    busy = msgpack.packb([BUSY, b"read over the client's read rate"])
    core = ClientCore("pbft", 1, 4, 0)
    rp = core.add_read(op_get("k"))
    assert core.on_read_reply(0, _rr(0, height=0, result=busy)) is None
    assert core.on_read_reply(1, _rr(1)) is None
    assert core.on_read_reply(2, _rr(2, height=0, result=busy)) is rp and "2 were busy" in rp.short
    px_core = ClientCore("paxos", 1, 3, 0)
    rp = px_core.add_read(op_get("k"))
    assert px_core.on_read_reply(0, _rr(0, height=0, result=busy)) is rp and rp.short


def test_floor_follows_writes_and_reads_and_travels_in_the_next_read() -> None:
    core = ClientCore("pbft", 1, 4, 0)
    p = core.add(Request(0, 7, op_put("k", b"v"), bytes(64)))
    for r in (0, 1):
        core.on_reply(r, Reply(0, 0, 7, r, 12, 0, encode_result(OK)))
    assert p.outcome is not None and core.floor == 12
    rp = core.add_read(op_get("k"))
    assert rp.message(0) == Read(0, rp.nonce, 12, op_get("k"))
    for r in (0, 1, 3):
        core.on_read_reply(r, _rr(r, nonce=rp.nonce, since=15, height=15))
    assert core.floor == 15
    rp2 = core.add_read(op_get("j"))
    for r in (0, 1, 3):
        core.on_read_reply(r, _rr(r, nonce=rp2.nonce, since=2, height=16))
    assert core.floor == 15 and core.add_read(op_get("k")).floor == 15     # never goes back


def test_paxos_client_reads_from_the_leader_and_follows_redirects() -> None:
    core = ClientCore("paxos", 1, 3, 0)
    assert core.need_read == 1
    rp = core.add_read(op_get("k"))
    assert core.read_transmit(rp) == 0
    assert core.on_read_redirect(1, ReadRedirect(0, rp.nonce, 0, 2)) is None       # replica field != sender
    assert core.on_read_redirect(0, ReadRedirect(0, rp.nonce, 0, 0)) is None       # names itself
    assert core.on_read_redirect(0, ReadRedirect(0, rp.nonce, 0, 2)) == 2 and core.leader == 2
    assert core.on_read_reply(2, _rr(2, nonce=rp.nonce)) is rp and rp.replicas == [2]
    pbft = ClientCore("pbft", 1, 4, 0)
    rp = pbft.add_read(op_get("k"))
    assert pbft.on_read_redirect(0, ReadRedirect(0, rp.nonce, 0, 2)) is None       # pbft never redirects
