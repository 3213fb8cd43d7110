"""The Multi-Paxos core, driven by hand: acceptor rules, persistence order, restart, phase 1
re-proposal (highest ballot, no-op gaps), learners, clients, state transfer, dropped input."""
from __future__ import annotations

import random
from collections import deque

import msgpack
import pytest

from bft.outputs import (AppendBlock, Broadcast, CompactVotes, Persist, Send, ServeBlocks, ToClient)
from bft.paxos.config import PaxosConfig
from bft.paxos.acceptor import AcceptorState
from bft.paxos.ballots import NOOP_DIGEST, PaxosStateError, Role, next_ballot
from bft.paxos.core import PaxosCore
from bft.paxos.rules import PaxosRule
from bft.rules import RequestRule, StepRule
from ledger.rules import LedgerRule
from bft.pbft.certs import Keys
from bft.wire import (Commit, PxAccept, PxAccepted, PxHeartbeat, PxNack, PxPrepare, PxPreVote, PxPreVoteGrant,
                      PxPromise, Redirect,
                      Reply, Request, StateRequest, StateResponse, decode)
from crypto.merkle import root_of
from crypto.signing import HashSigner, HashVerifier
from ledger.chain import Chain
from ledger.state import decode_result, op_get, op_put

RS = [HashSigner(b"px-replica-%d" % i) for i in range(5)]
CS = [HashSigner(b"px-client-%d" % i) for i in range(2)]


def cfg(n: int = 3, **kw) -> PaxosConfig:
    base = dict(heartbeat_interval=0.05, election_timeout=(0.3, 0.6), retransmit_interval=0.1,
                transfer_timeout=0.2, checkpoint_interval=4, batch_size=4, pipeline=2)
    base.update(kw)
    return PaxosConfig(n=n, f=(n - 1) // 2, **base)


def keys(n: int) -> Keys:
    return Keys([s.public_key for s in RS[:n]], [s.public_key for s in CS], HashVerifier(RS[:n] + CS))


def core(i: int, n: int = 3, records=(), chain: Chain | None = None, now: float = 0.0, **kw) -> PaxosCore:
    return PaxosCore(cfg(n, **kw), i, RS[i], keys(n), chain or Chain(), list(records), now, random.Random(i))


def prevoted(c: PaxosCore, by: int = 1) -> list:
    """Answer the pre-vote ``c`` just broadcast with ``by``'s grant; return c's output."""
    pv = sends(c.ready(), PxPreVote)
    assert len(pv) == 1, "expected one PX-PREVOTE"
    c.step(by, PxPreVoteGrant(pv[0].msg.ballot, by))
    return c.ready()


def elected(**kw) -> PaxosCore:
    """Replica 0 after its first election (pre-vote and phase 1 with replica 1), output drained."""
    c = core(0, **kw)
    c.tick(0.0)
    b = sends(prevoted(c), PxPrepare)[0].msg.ballot
    c.step(1, PxPromise(b, 1, 0, []))
    c.ready()
    assert c.is_primary
    return c


def req(client: int, ts: int, op: bytes | None = None) -> Request:
    return Request(client, ts, op if op is not None else op_put(f"k{ts}", b"v%d" % ts)).signed(CS[client])


def accept(ballot: int, slot: int, batch: list[bytes], n: int = 3, commit_index: int = 0) -> PxAccept:
    leader = ballot % n
    return PxAccept(ballot, slot, root_of(batch), batch, commit_index, leader).signed(RS[leader])


def sends(out, kind) -> list:
    return [a for a in out if type(a) in (Send, Broadcast) and type(a.msg) is kind]


def records_of(out) -> list[bytes]:
    return [a.record for a in out if type(a) is Persist]


class Cluster:
    """Every core of a cluster with a FIFO network between them, a filter to lose messages,
    and what they persisted and appended, so that a replica can be restarted from it."""

    def __init__(self, n: int = 3, **kw) -> None:
        self.n = n
        self.kw = kw
        self.now = 0.0
        self.cores = [core(i, n, **kw) for i in range(n)]
        self.votes: list[list[bytes]] = [[] for _ in range(n)]
        self.blocks: list[list] = [[] for _ in range(n)]
        self.alive = [True] * n
        self.to_clients: list[tuple[int, int, object]] = []
        self.net: deque = deque()
        self.lose = lambda src, dst, msg: False
        self.tick(0.0)                      # replica 0 campaigns at its first tick and wins (phase 1)

    def carry_out(self, i: int) -> None:
        for a in self.cores[i].ready():
            t = type(a)
            if t is Broadcast:
                for d in range(self.n):
                    if d != i:
                        self.net.append((i, d, a.msg))
            elif t is Send:
                self.net.append((i, a.to, a.msg))
            elif t is ToClient:
                self.to_clients.append((i, a.client, a.msg))
            elif t is Persist:
                self.votes[i].append(a.record)
            elif t is CompactVotes:
                self.votes[i] = list(a.records)
            elif t is AppendBlock:
                self.blocks[i].append(a.block)
            elif t is ServeBlocks:
                blocks = [b.encode() for b in self.blocks[i][a.from_height - 1: a.to_height]]
                self.net.append((i, a.to, StateResponse(i, blocks, [])))

    def run(self, limit: int = 100_000) -> None:
        for i in range(self.n):
            if self.alive[i]:
                self.carry_out(i)
        steps = 0
        while self.net and steps < limit:
            src, dst, msg = self.net.popleft()
            steps += 1
            if not self.alive[dst] or not self.alive[src] or self.lose(src, dst, msg):
                continue
            self.cores[dst].step(src, msg)
            self.carry_out(dst)

    def tick(self, dt: float) -> None:
        self.now += dt
        for i in range(self.n):
            if self.alive[i]:
                self.cores[i].tick(self.now)
        self.run()

    def client(self, i: int, r: Request) -> None:
        self.cores[i].step(r.client, r, from_client=True)
        self.carry_out(i)
        self.run()

    def restart(self, i: int) -> None:
        chain = Chain()
        for b in self.blocks[i]:
            chain.replay(b)
        self.cores[i] = PaxosCore(cfg(self.n, **self.kw), i, RS[i], keys(self.n), chain, list(self.votes[i]),
                                  self.now, random.Random(100 + i))
        self.alive[i] = True

    def replies(self) -> list:
        return [(src, m) for src, _c, m in self.to_clients if type(m) is Reply]


# ============================================================================ configuration
def test_config_validates() -> None:
    PaxosConfig(n=3, f=1)
    PaxosConfig(n=1, f=0)
    with pytest.raises(ValueError, match="2f\\+1"):
        PaxosConfig(n=4, f=2)
    with pytest.raises(ValueError):
        PaxosConfig(n=3, f=1, election_timeout=(0.6, 0.3))
    with pytest.raises(ValueError):
        PaxosConfig(n=3, f=1, heartbeat_interval=0.5)
    with pytest.raises(ValueError):
        PaxosConfig(n=3, f=1, backoff_multiplier=0.5)
    with pytest.raises(ValueError):
        PaxosConfig(n=3, f=1, transfer_chunk=1000)
    c = PaxosConfig(n=3, f=1, election_timeout=[0.2, 0.4])
    assert c.election_timeout == (0.2, 0.4)
    assert c.batch_size == 128 and c.pipeline == 4 and c.backoff and c.transfer_chunk == 64


def test_ballots_belong_to_their_leader() -> None:
    for n in (3, 5):
        for i in range(n):
            for above in range(0, 12):
                b = next_ballot(above, i, n)
                assert b > above and b % n == i and b - above <= n


# ============================================================================ start-up and status
def test_fresh_replica_zero_campaigns_at_once_with_a_phase_1_and_a_restarted_one_does_not() -> None:
    """Issue 11, item 15: a fresh replica 0 used to lead ballot 0 with no phase 1, and so did a
    replica 0 whose disk was replaced; now it runs phase 1 at its first tick."""
    c0, c1 = core(0), core(1)
    assert not c0.is_primary and not c1.is_primary and c1.leader == 0 and c1.in_view_change
    c0.tick(0.0)
    prepares = sends(prevoted(c0), PxPrepare)
    assert len(prepares) == 1 and prepares[0].msg.ballot > 0 and not c0.is_primary
    restarted = core(0, records=[msgpack.packb(["promise", 0])])
    restarted.tick(0.0)
    assert not sends(restarted.ready(), PxPreVote) and restarted.role is Role.FOLLOWER
    cl = Cluster()                                       # the election completes in one round trip
    c0 = cl.cores[0]
    assert c0.is_primary and c0.leader == 0 and not c0.in_view_change
    s = c0.status()
    for k in ("mode", "view", "leader", "in_view_change", "executed", "stable_checkpoint", "height", "head",
              "pending", "dropped"):
        assert k in s
    assert s["mode"] == "paxos" and c0.mode == "paxos" and c0.id == 0 and c0.n == 3 and c0.f == 1


# ============================================================================ acceptor rules
def test_acceptor_promises_only_higher_ballots() -> None:
    c = core(1)
    c.step(2, PxPrepare(2, 0, 2))
    out = c.ready()
    promise = sends(out, PxPromise)
    assert len(promise) == 1 and promise[0].to == 2 and promise[0].msg.ballot == 2
    assert c.acceptor.promised == 2 and c.leader == 2
    c.step(0, PxPrepare(0, 0, 0))                       # lower: refused with the ballot it promised
    out = c.ready()
    nack = sends(out, PxNack)
    assert [(a.to, a.msg.ballot, a.msg.promised) for a in nack] == [(0, 0, 2)]
    assert not records_of(out) and not sends(out, PxPromise)
    c.step(2, PxPrepare(2, 0, 2))                       # the same candidate again: answered, nothing new
    out = c.ready()
    assert len(sends(out, PxPromise)) == 1 and not records_of(out)
    c2 = core(2, n=5)
    c2.step(0, PxPrepare(5, 0, 0))
    c2.ready()
    c2.step(3, PxPrepare(3, 0, 3))                      # higher than seen before but not than promised
    assert sends(c2.ready(), PxNack)


def test_acceptor_accepts_only_at_or_above_promised() -> None:
    c = core(1)
    c.step(2, PxPrepare(2, 0, 2))
    c.ready()
    c.step(0, accept(0, 1, [req(0, 1).encode()]))
    out = c.ready()
    assert sends(out, PxNack) and not sends(out, PxAccepted) and not records_of(out)
    assert 1 not in c.acceptor.accepted
    c.step(2, accept(2, 1, [req(0, 1).encode()]))
    out = c.ready()
    assert [a.msg.slot for a in sends(out, PxAccepted)] == [1]
    c.step(2, accept(5, 1, [req(0, 2).encode()]))   # ballot 5 belongs to replica 2 in n=3
    out = c.ready()
    assert [a.msg.ballot for a in sends(out, PxAccepted)] == [5] and c.acceptor.accepted[1].ballot == 5


def test_acceptor_class_refuses_contrary_votes() -> None:
    a = AcceptorState()
    a.promise(3)
    assert not a.may_promise(3) and not a.may_promise(2) and a.may_promise(4)
    assert not a.may_accept(2) and a.may_accept(3)
    with pytest.raises(PaxosStateError):
        a.promise(3)
    with pytest.raises(PaxosStateError):
        a.accept(accept(2, 1, []))


def test_promise_and_accept_are_persisted_before_they_are_sent() -> None:
    c = core(1)
    c.step(2, PxPrepare(2, 0, 2))
    c.step(2, accept(2, 1, [req(0, 1).encode()]))
    c.step(2, accept(2, 2, [req(0, 2).encode()]))
    out = c.ready()
    durable: list[bytes] = []
    for a in out:
        if type(a) is Persist:
            durable.append(a.record)
        elif type(a) is Send and type(a.msg) is PxPromise:
            assert msgpack.packb(["promise", a.msg.ballot]) in durable
        elif type(a) is Send and type(a.msg) is PxAccepted:
            persisted = [decode(msgpack.unpackb(r)[1]) for r in durable if msgpack.unpackb(r)[0] == "accept"]
            assert any((x.ballot, x.slot) == (a.msg.ballot, a.msg.slot) for x in persisted)
    assert len(sends(out, PxPromise)) == 1 and len(sends(out, PxAccepted)) == 2
    # a candidate's own promise and a leader's own accept are durable before PREPARE / ACCEPT leave
    cand = core(2)
    cand.campaign()
    out = cand.ready()
    kinds = [type(a).__name__ if type(a) is Persist else type(a.msg).__name__ for a in out]
    assert kinds.index("Persist") < kinds.index("PxPrepare")
    lead = elected()
    lead.step(0, req(0, 1), from_client=True)
    out = lead.ready()
    kinds = [type(a).__name__ if type(a) is Persist else type(a.msg).__name__ for a in out]
    assert kinds.index("Persist") < kinds.index("PxAccept")


def test_restart_from_vote_records_never_contradicts() -> None:
    c = core(1)
    votes: list[bytes] = []
    c.step(2, PxPrepare(2, 0, 2))
    value = [req(0, 1).encode()]
    c.step(2, accept(2, 1, value))
    votes += records_of(c.ready())
    c.tick(c.now + 0.35)                                  # leader 2 quiet past the stickiness window
    c.step(0, PxPrepare(3, 0, 0))                         # promised 3, then crashes
    votes += records_of(c.ready())
    r = core(1, records=votes)
    assert r.acceptor.promised == 3 and r.acceptor.accepted[1].digest == root_of(value)
    assert r.role is Role.FOLLOWER and r.ballot == 3
    r.step(2, accept(2, 2, [req(0, 2).encode()]))          # below the promise it forgot nothing of
    out = r.ready()
    assert sends(out, PxNack) and not sends(out, PxAccepted)
    r.step(2, PxPrepare(2, 0, 2))
    assert sends(r.ready(), PxNack)
    r.step(0, PxPrepare(3, 0, 0))                         # the same candidate re-sends: same answer
    p = sends(r.ready(), PxPromise)
    assert len(p) == 1 and [a.digest for a in p[0].msg.accepted] == [root_of(value)]
    r.step(2, PxPrepare(5, 0, 2))                         # a higher ballot hears of the accepted value
    p = sends(r.ready(), PxPromise)[0].msg
    assert [(a.ballot, a.slot, a.batch) for a in p.accepted] == [(2, 1, value)]
    # a restarted candidate never reuses its ballot
    cand = core(2)
    cand.campaign()
    rec = records_of(cand.ready())
    again = core(2, records=rec)
    again.campaign()
    assert again.ballot > cand.ballot and again.ballot % 3 == 2


def test_malformed_vote_log_is_an_error_not_silence() -> None:
    with pytest.raises(ValueError):
        core(1, records=[b"\xc1not msgpack"])
    with pytest.raises(ValueError):
        core(1, records=[msgpack.packb(["promise", "x"])])
    with pytest.raises(ValueError):
        core(1, records=[msgpack.packb(["accept", b"junk"])])


# ============================================================================ proposer: phase 1
def _promise_from(replica: int, ballot: int, commit_index: int, accepted: list[PxAccept]) -> PxPromise:
    return PxPromise(ballot, replica, commit_index, accepted)


def test_new_leader_fills_gaps_with_no_ops() -> None:
    c = core(1)
    c.campaign()
    out = c.ready()
    b = c.ballot
    assert b == 1 and sends(out, PxPrepare)[0].msg.ballot == 1
    x, y = [req(0, 1).encode()], [req(1, 1).encode()]
    c.step(2, _promise_from(2, b, 0, [accept(0, 1, x), accept(0, 3, y)]))
    out = c.ready()
    assert c.is_primary
    props = [(a.msg.slot, a.msg.ballot, a.msg.digest, a.msg.batch) for a in sends(out, PxAccept)]
    assert props == [(1, b, root_of(x), x), (2, b, NOOP_DIGEST, []), (3, b, root_of(y), y)]
    for a in sends(out, PxAccept):
        assert a.msg.replica == 1 and a.msg.verify(HashVerifier(RS[:3]), RS[1].public_key)
    assert c.proposer.next_slot == 4


def test_new_leader_re_proposes_the_value_of_the_highest_ballot() -> None:
    c = core(1)
    x, y = [req(0, 1).encode()], [req(0, 2).encode()]
    c.step(0, accept(0, 1, x))                           # my own acceptor holds x from ballot 0
    c.ready()
    c.step(0, PxHeartbeat(3, 0, 0))                      # ballot 3 (replica 0) is current
    c.ready()
    c.campaign()
    c.ready()
    assert c.ballot == 4
    c.step(2, _promise_from(2, 4, 0, [accept(3, 1, y)]))  # replica 2 accepted y in ballot 3 > 0
    out = c.ready()
    props = [(a.msg.slot, a.msg.batch) for a in sends(out, PxAccept)]
    assert props == [(1, y)]
    # and the other order of arrival picks the same value
    d = core(1, n=5)
    d.step(0, PxHeartbeat(5, 0, 0))
    d.campaign()
    d.ready()
    assert d.ballot == 6
    d.step(2, _promise_from(2, d.ballot, 0, [accept(5, 1, y, n=5)]))
    d.step(3, _promise_from(3, d.ballot, 0, [accept(0, 1, x, n=5)]))
    out = d.ready()
    assert [(a.msg.slot, a.msg.batch) for a in sends(out, PxAccept)] == [(1, y)]


def test_promises_with_bad_values_are_dropped() -> None:
    c = core(1)
    c.campaign()
    c.ready()
    forged = PxAccept(0, 1, root_of([b"x"]), [b"x"], 0, 0).signed(RS[2])   # not ballot 0's leader's key
    c.step(2, _promise_from(2, c.ballot, 0, [forged]))
    assert not c.is_primary and c.dropped[PaxosRule.PROMISE_VALUE_SIGNATURE] == 1
    wrong_digest = PxAccept(0, 1, root_of([b"y"]), [b"x"], 0, 0).signed(RS[0])
    c.step(2, _promise_from(2, c.ballot, 0, [wrong_digest]))
    assert not c.is_primary and c.dropped[PaxosRule.PROMISE_VALUE_FOREIGN] == 1
    c.step(2, _promise_from(2, c.ballot, 0, [accept(c.ballot, 1, [b"x"])]))
    assert not c.is_primary and c.dropped[PaxosRule.PROMISE_VALUE_ABOVE_BALLOT] == 1
    c.step(2, _promise_from(2, c.ballot, 0, [accept(0, 1, [b"x"]), accept(0, 1, [b"x"])]))
    assert not c.is_primary and c.dropped[PaxosRule.PROMISE_SLOT_NOT_ASKED] == 1
    c.step(2, _promise_from(2, c.ballot + 3, 0, []))
    assert not c.is_primary and c.dropped[PaxosRule.PROMISE_NOT_RUNNING] == 1


def test_leader_behind_the_promises_fetches_the_chosen_prefix() -> None:
    cl = Cluster()
    cl.lose = lambda src, dst, msg: dst == 2 or src == 2          # replica 2 is cut off
    for ts in range(1, 4):
        cl.client(0, req(0, ts))
    cl.tick(0.06)
    assert [len(b) for b in cl.blocks] == [3, 3, 0]
    cl.alive[0] = False                                           # the leader crashes, 2 reconnects
    cl.lose = lambda src, dst, msg: False
    cl.tick(0.31)                                                 # 1 no longer hears a live leader
    cl.cores[2].campaign()
    cl.run()
    c2 = cl.cores[2]
    assert c2.is_primary and c2.chain.height == 0 and c2.commit_index == 3 and c2.proposer.catchup_peer == 1
    assert not [m for _s, _d, m in cl.net if type(m) is PxAccept]  # nothing to re-propose above 3
    for _ in range(3):
        cl.tick(0.1)
    assert c2.chain.height == 3
    assert [b.hash() for b in cl.blocks[2]] == [b.hash() for b in cl.blocks[1]]
    cl.client(2, req(1, 1))
    assert cl.replies()[-1][0] == 2 and cl.replies()[-1][1].height == 4


# ============================================================================ clients
def test_followers_redirect_clients_to_the_leader() -> None:
    c = core(2)
    c.step(0, req(0, 7), from_client=True)
    out = c.ready()
    assert len(out) == 1 and type(out[0]) is ToClient and out[0].client == 0
    m = out[0].msg
    assert type(m) is Redirect and (m.client, m.timestamp, m.replica, m.leader) == (0, 7, 2, 0)
    c.step(1, PxPrepare(1, 0, 1))
    c.ready()
    c.step(0, req(0, 8), from_client=True)
    assert c.ready()[0].msg.leader == 1


def test_leader_alone_replies_once_executed_and_exactly_once() -> None:
    cl = Cluster()
    r = req(1, 1, op_put("a", b"1"))
    cl.client(0, r)
    reps = cl.replies()
    assert [src for src, _ in reps] == [0]
    rep = reps[0][1]
    assert (rep.client, rep.timestamp, rep.height, rep.index) == (1, 1, 1, 0) and decode_result(rep.result)[0] == 0
    cl.tick(0.06)                                          # heartbeat carries the commit index
    assert [len(b) for b in cl.blocks] == [1, 1, 1]
    assert [c.chain.head for c in cl.cores].count(cl.cores[0].chain.head) == 3
    cl.to_clients.clear()
    cl.client(0, r)                                       # retransmitted: the cached reply, no new block
    reps = cl.replies()
    assert len(reps) == 1 and (reps[0][1].height, reps[0][1].index, reps[0][1].result) == (1, 0, rep.result)
    assert len(cl.blocks[0]) == 1
    cl.client(0, req(1, 2, op_get("a")))
    assert decode_result(cl.replies()[-1][1].result) == (0, b"1")


def test_leader_pipelines_at_most_pipeline_slots() -> None:
    c = elected(pipeline=2, batch_size=1)
    for ts in range(1, 6):
        c.step(0, req(0, ts), from_client=True)
    out = c.ready()
    assert [a.msg.slot for a in sends(out, PxAccept)] == [1, 2]
    c.step(1, PxAccepted(c.ballot, 1, 1))
    out = c.ready()
    assert [a.msg.slot for a in sends(out, PxAccept)] == [3]
    assert [type(a.block).__name__ for a in out if type(a) is AppendBlock] == ["Block"]
    assert [a.msg.timestamp for a in out if type(a) is ToClient] == [1]


def test_bad_client_input_is_dropped() -> None:
    c = elected()
    bad = req(0, 1)
    bad.sig = bytes(64)
    c.step(0, bad, from_client=True)
    c.step(1, req(0, 2), from_client=True)                # client 1 sending client 0's request
    c.step(9, Request(9, 1, b"x", bytes(64)), from_client=True)
    c.step(0, PxHeartbeat(0, 0, 0), from_client=True)
    assert not [a for a in c.ready() if type(a) is Broadcast and type(a.msg) is PxAccept]
    assert c.dropped.total() == 4
    assert c.dropped[RequestRule.BAD_CLIENT_SIGNATURE] == 1 and c.dropped[RequestRule.UNKNOWN_CLIENT] == 2
    assert c.dropped[StepRule.CLIENT_SENT_PROTOCOL] == 1


# ============================================================================ learners
def test_follower_executes_only_values_of_the_announcing_ballot() -> None:
    c = core(1)
    x = [req(0, 1).encode()]
    c.step(0, accept(0, 1, x))                             # accepted in ballot 0
    c.ready()
    c.step(2, PxHeartbeat(2, 1, 2))                        # ballot 2's leader says slot 1 is chosen
    out = c.ready()
    assert not [a for a in out if type(a) is AppendBlock] and c.chain.height == 0
    c.step(2, accept(2, 1, x, commit_index=1))              # re-proposed in ballot 2: now it executes
    out = c.ready()
    blocks = [a.block for a in out if type(a) is AppendBlock]
    assert [(b.height, b.view) for b in blocks] == [(1, 2)]
    assert blocks[0].cert[0][0] == 2 and len(blocks[0].cert) == 1
    assert not [a for a in out if type(a) is ToClient]     # followers never reply


def test_vote_log_is_compacted_at_checkpoints() -> None:
    cl = Cluster(checkpoint_interval=2)
    for ts in range(1, 6):
        cl.client(0, req(0, ts))
    cl.tick(0.06)
    assert all(len(b) == 5 for b in cl.blocks)
    for i in range(3):
        kinds = [msgpack.unpackb(r)[0] for r in cl.votes[i]]
        assert kinds[0] == "promise" and kinds.count("accept") <= 3
        assert cl.cores[i].status()["stable_checkpoint"] == 4
    cl.restart(1)
    assert cl.cores[1].chain.height == 5 and not cl.cores[1].acceptor.accepted


# ============================================================================ state transfer
def test_lagging_replica_catches_up_and_checks_certificates() -> None:
    cl = Cluster()
    cl.lose = lambda src, dst, msg: dst == 2 and type(msg) is PxAccept
    for ts in range(1, 5):
        cl.client(0, req(0, ts))
    cl.lose = lambda src, dst, msg: False
    cl.tick(0.06)
    assert cl.cores[2].chain.height == 0 and cl.cores[2].commit_index == 4
    cl.tick(0.25)                                          # lag detected: fetch from the leader
    assert cl.cores[2].chain.height == 4
    assert cl.blocks[2][-1].hash() == cl.blocks[0][-1].hash()
    # a peer serving a block with a bad certificate is refused
    d = core(2)
    d.step(0, PxHeartbeat(0, 2, 0))
    d.ready()
    d.tick(0.3)
    rq = sends(d.ready(), StateRequest)
    assert rq and rq[0].to == 0 and rq[0].msg.from_height == 1
    good = cl.blocks[0][0]
    forged = type(good).decode(good.encode())
    forged.cert = [(0, bytes(64))]
    d.step(0, StateResponse(0, [forged.encode()], []))
    rq = sends(d.ready(), StateRequest)
    assert d.chain.height == 0 and d.dropped[LedgerRule.CERT_NO_LEADER_ACCEPT] == 1
    assert rq and rq[-1].to == 1                          # tries the next peer at once
    d.step(1, StateResponse(1, [b.encode() for b in cl.blocks[1][:2]], []))
    d.ready()
    assert d.chain.height == 2
    d.step(0, StateResponse(0, [], []))                   # nothing asked of replica 0 now
    assert d.dropped[PaxosRule.UNSOLICITED_STATE] == 1


def test_state_request_is_served_from_the_store() -> None:
    cl = Cluster()
    for ts in range(1, 4):
        cl.client(0, req(0, ts))
    c = cl.cores[0]
    c.step(1, StateRequest(2, 100, 1))
    out = c.ready()
    assert [(a.to, a.from_height, a.to_height) for a in out if type(a) is ServeBlocks] == [(1, 2, 3)]
    c.step(1, StateRequest(9, 100, 1))
    out = c.ready()
    assert [type(a.msg) for a in out] == [StateResponse] and out[0].msg.blocks == []


# ============================================================================ elections
def test_leader_failure_elects_a_new_leader_that_keeps_chosen_values() -> None:
    cl = Cluster()
    for ts in range(1, 3):
        cl.client(0, req(0, ts))
    cl.alive[0] = False
    for _ in range(20):
        cl.tick(0.1)
    leaders = [c for i, c in enumerate(cl.cores) if cl.alive[i] and c.is_primary]
    assert len(leaders) == 1 and leaders[0].ballot > 0
    new = leaders[0]
    assert new.chain.height == 2
    cl.client(new.id, req(0, 3))
    assert cl.replies()[-1][0] == new.id and cl.replies()[-1][1].height == 3
    cl.restart(0)                                          # the old leader comes back as a follower
    cl.tick(0.06)
    cl.tick(0.3)
    assert not cl.cores[0].is_primary and cl.cores[0].chain.height == 3


def test_pre_empted_proposer_backs_off_and_naive_one_retries_at_once() -> None:
    for backoff in (True, False):
        c = core(1, backoff=backoff)
        c.campaign()
        c.ready()
        assert c.stats["elections"] == 1
        c.step(2, PxPrepare(2, 0, 2))                      # pre-empted by a higher ballot
        out = c.ready()
        assert sends(out, PxPromise)
        if backoff:
            assert c.role is Role.FOLLOWER and c.proposer.attempts == 1 and c.stats["elections"] == 1
            assert c.proposer.deadline - c.now >= 0.3
        else:
            assert c.stats["elections"] == 2 and c.ballot == 4 and sends(out, PxPrepare)
    # timeouts grow with consecutive failures, capped
    c = core(1, backoff=True, backoff_multiplier=2.0, backoff_cap=4.0)
    c.proposer.attempts = 10
    assert all(0.3 * 4 <= c.proposer.election_timeout() <= 0.6 * 4 for _ in range(50))
    c.step(0, PxHeartbeat(0, 0, 0))                       # a live leader resets the backoff
    assert c.proposer.attempts == 0


def test_nack_steps_a_stale_leader_down() -> None:
    c = elected()                                          # ballot 3
    c.step(0, req(0, 1), from_client=True)
    c.ready()
    c.step(1, PxNack(3, 7, 1))
    c.ready()
    assert not c.is_primary and c.proposer.max_seen == 7 and not c.pending
    c.campaign()
    assert c.ballot == 9


# ============================================================================ dropped, never raised
def test_malformed_and_out_of_ballot_input_is_counted_and_dropped() -> None:
    c = core(1)
    before = c.dropped.total()
    c.step(7, PxHeartbeat(0, 0, 7))                                   # non-member
    c.step(1, PxHeartbeat(1, 0, 1))                                   # from myself
    c.step(0, PxHeartbeat(0, 0, 2))                                   # sender field differs
    c.step(0, PxHeartbeat(1, 0, 0))                                   # ballot 1 is not replica 0's
    c.step(0, Commit(0, 1, bytes(32), 0, bytes(64)))                  # a pbft message
    c.step(0, req(0, 1))                                              # a request from a replica
    bad = accept(0, 1, [b"x"])
    bad.sig = bytes(64)
    c.step(0, bad)                                                    # bad signature
    c.step(0, PxAccept(0, 1, bytes(32), [b"x"], 0, 0).signed(RS[0]))  # digest mismatch
    c.step(0, accept(0, 0, []))                                       # slot 0
    c.step(0, accept(0, 10**6, []))                                   # far above the window
    c.step(0, PxAccepted(0, 1, 0))                                    # not leading
    c.step(0, PxPromise(9, 0, 0, []))                                 # not campaigning
    c.step(0, PxNack(3, 9, 0))                                        # not proposing
    c.step(0, StateResponse(0, [b"garbage"], []))                     # unsolicited
    c.step(0, PxPrepare(2, 0, 0))                                     # ballot 2 is not replica 0's
    assert c.dropped.total() - before == 15
    assert c.dropped[StepRule.NOT_A_MEMBER] == 2 and c.dropped[StepRule.SENDER_MISMATCH] == 1
    assert c.dropped[StepRule.UNEXPECTED_TYPE] == 2 and c.dropped[PaxosRule.NOT_BALLOT_OWNER] == 2
    for rule in (PaxosRule.ACCEPT_SIGNATURE, PaxosRule.ACCEPT_DIGEST, PaxosRule.ACCEPT_SLOT_ZERO,
                 PaxosRule.ACCEPT_FAR_AHEAD, PaxosRule.ACCEPTED_NOT_LEADING, PaxosRule.PROMISE_NOT_RUNNING,
                 PaxosRule.NACK_NOT_RUNNING, PaxosRule.UNSOLICITED_STATE):
        assert c.dropped[rule] == 1, rule
    assert c.chain.height == 0 and not c.acceptor.accepted and c.acceptor.promised == 0


def test_replica_zero_with_a_replaced_disk_keeps_what_the_cluster_chose() -> None:
    """Issue 11, item 15: a replica 0 whose disk was replaced looked like a first start and led
    ballot 0 without phase 1, while followers acknowledged slots at or below their height
    without storing them: it could choose new values for chosen slots. It runs phase 1 now."""
    cl = Cluster()
    for ts in range(1, 6):
        cl.client(0, req(0, ts))
    cl.tick(0.06)
    before = [b.hash() for b in cl.blocks[1]]
    assert len(before) >= 1
    cl.votes[0], cl.blocks[0] = [], []                    # a new, blank disk
    cl.restart(0)
    cl.client(0, req(1, 1, op_put("after", b"wipe")))     # a client reaches it at once
    for _ in range(30):
        cl.tick(0.1)
    leader = [c for c in cl.cores if c.is_primary]
    assert len(leader) == 1
    cl.client(leader[0].id, req(1, 2, op_put("later", b"x")))
    for _ in range(10):
        cl.tick(0.1)
    chains = [[b.hash() for b in blocks] for blocks in cl.blocks]
    top = min(len(c) for c in chains)
    assert top > len(before)
    assert all(c[:len(before)] == before for c in chains), "a chosen block was replaced"
    assert len({tuple(c[:top]) for c in chains}) == 1, "the ledgers diverged"


def test_a_live_leader_is_not_deposed_by_a_candidate_that_cannot_hear_it() -> None:
    """Leader stickiness (issue 17: a follower back from a partition campaigned and forced a
    round of elections, ballot 13 in one run): an acceptor that heard the leader within the
    low end of the election timeout grants no promise; once the leader is quiet, it does."""
    c = core(1)
    c.step(2, PxPrepare(2, 0, 2))
    c.step(2, accept(2, 1, [req(0, 1).encode()]))
    c.ready()
    c.step(0, PxPrepare(3, 0, 0))
    assert not sends(c.ready(), PxPromise) and c.ballot == 2
    c.tick(c.now + 0.35)
    c.step(0, PxPrepare(3, 0, 0))
    assert sends(c.ready(), PxPromise) and c.ballot == 3


@pytest.mark.parametrize("prevote", [True, False])
def test_isolated_follower_rejoins_without_deposing_the_leader(prevote: bool) -> None:
    """Issue 17: a follower cut off for 12 s campaigned with ever higher ballots; on healing it
    refused the leader's ACCEPTs with a PxNack that deposed the leader, and the cluster took
    8 to 14 s to settle. With the pre-vote it never raises its ballot while it cannot reach a
    majority, so healing costs nothing. ``prevote=False`` shows the old behaviour."""
    cl = Cluster(prevote=prevote)
    leader = cl.cores[0]
    assert leader.is_primary
    ballot, promised_before = leader.ballot, cl.cores[2].acceptor.promised
    cl.lose = lambda src, dst, msg: 2 in (src, dst)
    for ts in range(1, 121):                                 # 12 s of load without replica 2
        cl.client(0, req(0, ts))
        cl.tick(0.1)
    cut = cl.cores[2]
    if prevote:
        assert cut.acceptor.promised == promised_before and cut.stats["elections"] == 0
        assert cut.stats["pre-votes"] >= 3 and cut.status()["role"] == "pre-candidate"
    else:
        assert cut.acceptor.promised > ballot                # it raised its ballot while alone
    cl.lose = lambda src, dst, msg: False
    for _ in range(10):                                      # heal: one second
        cl.tick(0.1)
    if not prevote:
        assert not leader.is_primary or leader.ballot != ballot
        return
    assert leader.is_primary and leader.ballot == ballot and leader.stats["pre-empted"] == 0
    assert cut.leader == 0 and cut.role is Role.FOLLOWER and not cut.in_view_change
    assert cut.chain.height == leader.chain.height == 120


def test_prevote_is_granted_only_without_a_live_leader_and_teaches_the_ballot() -> None:
    c = core(1)
    c.step(2, PxPrepare(2, 0, 2))
    c.step(2, PxHeartbeat(2, 0, 2))
    c.ready()
    c.step(0, PxPreVote(3, 0))                                # the leader (2) spoke just now
    assert not sends(c.ready(), PxPreVoteGrant) and c.dropped[PaxosRule.LEADER_ALIVE] == 1
    c.tick(c.now + 0.35)
    c.step(0, PxPreVote(3, 0))
    assert sends(c.ready(), PxPreVoteGrant) and c.ballot == 2 and c.acceptor.promised == 2   # nothing changed
    c.step(0, PxPreVote(0, 0))                                # below what it promised: told to go higher
    nack = sends(c.ready(), PxNack)
    assert nack and nack[0].msg.promised == 2
    c.step(2, PxPreVote(4, 2))                                # ballot 4 is not replica 2's
    assert c.dropped[PaxosRule.NOT_BALLOT_OWNER] == 1
    # the pre-candidate: grants for another ballot are dropped, a NACK raises its next ballot
    p = core(0)
    p.tick(0.0)
    b = sends(p.ready(), PxPreVote)[0].msg.ballot
    p.step(1, PxPreVoteGrant(b + 3, 1))
    assert p.dropped[PaxosRule.PREVOTE_GRANT_NOT_RUNNING] == 1 and p.role is Role.PRE_CANDIDATE
    p.step(2, PxNack(b, 11, 2))
    p.tick(p.proposer.deadline)
    assert sends(p.ready(), PxPreVote)[0].msg.ballot == 12 and p.acceptor.promised == 0


def test_an_illegal_local_transition_raises_a_typed_error() -> None:
    """Peer input never raises; a replica that tries to lead without a majority of promises
    (a bug of its own) does, with PaxosStateError, instead of going on silently."""
    c = core(1)
    c.campaign()
    c.ready()
    assert c.role is Role.CANDIDATE and len(c.proposer.promises) == 1
    with pytest.raises(PaxosStateError):
        c.proposer._become_leader()
    assert c.role is Role.CANDIDATE
    with pytest.raises(PaxosStateError):
        AcceptorState.recover([msgpack.packb(["promise", 5])], 0).promise(5)


def test_a_new_leader_that_sees_two_values_in_one_ballot_says_the_old_leader_equivocated(caplog) -> None:
    """Issue 14: Paxos cannot outvote a lying leader, but a replica that can tell says so."""
    d = core(1, n=5)
    d.step(0, PxHeartbeat(5, 0, 0))
    d.campaign()
    d.ready()
    x, y = [req(0, 1).encode()], [req(0, 2).encode()]
    with caplog.at_level("WARNING", logger="bft.paxos"):
        d.step(2, _promise_from(2, d.ballot, 0, [accept(5, 1, x, n=5)]))
        d.step(3, _promise_from(3, d.ballot, 0, [accept(5, 1, y, n=5)]))     # ballot 5's leader told them apart
        d.ready()
    assert d.status()["equivocations_seen"] == 1 and (5, 1) in d.equivocations
    assert "EQUIVOCATED" in caplog.text and "slot 1 in ballot 5" in caplog.text


def test_an_acceptor_sent_two_values_for_one_slot_in_one_ballot_says_so() -> None:
    c = core(2)
    x, y = [req(0, 1).encode()], [req(0, 2).encode()]
    c.step(0, accept(0, 1, x))
    c.step(0, accept(0, 1, y))
    assert c.drops.by_rule[PaxosRule.ACCEPT_TWICE] == 1
    assert c.status()["equivocations_seen"] == 1 and "two values for slot 1" in c.equivocations[(0, 1)]


def test_a_leader_whose_accept_signature_fails_is_not_waited_on_for_ever() -> None:
    """The real-process finding of issue 14: a corrupt leader's heartbeats kept its followers
    from electing another, and nothing ever committed. A leader that only crashes never signs
    wrong: after one bad ACCEPT its heartbeats no longer count, the follower's election timer
    runs out and it campaigns (and grants a pre-vote to another)."""
    from dataclasses import replace

    c = core(1)
    c.step(0, PxHeartbeat(3, 0, 0))                     # ballot 3, replica 0 leads
    c.ready()
    bad = replace(accept(3, 1, [req(0, 1).encode()]), sig=bytes(64))
    c.step(0, bad)
    assert c.drops.by_rule[PaxosRule.ACCEPT_SIGNATURE] == 1 and c.stats["leaders distrusted"] == 1
    t = 0.0
    for _ in range(200):                                 # heartbeats keep coming, as a corrupt leader sends them
        t += 0.05
        c.step(0, PxHeartbeat(3, 0, 0))
        c.tick(t)
        if sends(c.ready(), PxPreVote):
            break
    else:
        raise AssertionError("the follower waited on the corrupt leader for 10 s")
    assert t < 2 * c.cfg.election_timeout[1]
    # the same heartbeats from a leader that never signed wrong keep a follower waiting
    d = core(1)
    t = 0.0
    for _ in range(200):
        t += 0.05
        d.step(0, PxHeartbeat(3, 0, 0))
        d.tick(t)
        assert not sends(d.ready(), PxPreVote)
