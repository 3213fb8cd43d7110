"""Issue 11's attacks on the pbft core, each test named after the attack: what one client or
one faulty peer can make a replica do, and what it retains. n = 4, f = 1, K = 2, L = 4."""
from __future__ import annotations

import pytest

from bft.outputs import Send
from bft.pbft.rules import PbftRule as P
from bft.rules import RequestRule
from bft.wire import PrePrepare, Request
from test_pbft_rules import Cluster, drops, out, sent


@pytest.fixture
def cl() -> Cluster:
    return Cluster()


def test_a_request_sent_to_one_backup_alone_is_relayed_and_forces_no_view_change(cl):
    """Issue 11, item 6: backups never relayed, so a request given to one backup alone made it
    time out and start a view change on its own."""
    backup, primary = cl.core(), cl.core(0)
    r = cl.req()
    backup.step(0, r, True)
    out(backup)
    backup.tick(0.3)
    assert not [a for a in out(backup) if isinstance(a, Send) and type(a.msg) is Request]
    backup.tick(0.6)                                   # half the request timeout: relay, once
    relays = [a for a in out(backup) if isinstance(a, Send) and type(a.msg) is Request]
    assert [(a.to, a.msg) for a in relays] == [(0, r)]
    backup.tick(0.9)
    assert not [a for a in out(backup) if isinstance(a, Send) and type(a.msg) is Request]
    primary.step(1, relays[0].msg)
    pps = [m for m in sent(out(primary)) if type(m) is PrePrepare]
    assert len(pps) == 1 and pps[0].batch == [r.encode()]
    assert not backup.in_view_change


def test_a_relayed_request_with_a_forged_signature_is_dropped(cl):
    primary = cl.core(0)
    forged = Request(0, 99, cl.req().op, b"\x01" * 64)
    primary.step(2, forged)
    assert drops(primary, RequestRule.BAD_CLIENT_SIGNATURE) == 1
    assert primary.drops.by_sender[RequestRule.BAD_CLIENT_SIGNATURE] == {"r2": 1}     # the relaying replica
    assert not [m for m in sent(out(primary)) if type(m) is PrePrepare]


def _behind(cl: Cluster):
    """Replica 1 at height 0 learns from f+1 CHECKPOINTs that the others are at sequence 6 (above
    its high watermark): it starts a state transfer."""
    from bft.wire import Checkpoint
    from crypto.merkle import root_of

    core = cl.core()
    head = root_of([b"somewhere ahead"])
    for r in (0, 2):
        core.step(r, Checkpoint(6, head, 6, head, r).signed(cl.rs[r]))
    asks = [a for a in out(core) if isinstance(a, Send) and type(a.msg).__name__ == "StateRequest"]
    assert len(asks) == 1 and core.transfer is not None
    return core, asks[0].to


@pytest.mark.parametrize("answer", ["empty", "silent"])
def test_state_transfer_pinned_by_one_byzantine_peer_moves_on(cl, answer):
    """Issue 11, item 5: an empty StateResponse made the replica ask the same peer again and
    reset the deadline, for ever. Now each request goes to the next peer, and a transfer that
    no peer serves is abandoned after a bounded number of rounds."""
    from bft.wire import StateResponse

    core, first = _behind(cl)
    asked = [first]
    for _ in range(10):
        if answer == "empty":
            core.step(asked[-1], StateResponse(asked[-1], [], []))
        else:
            core.tick(core.now + core.cfg.transfer_timeout + 0.01)
        if core.transfer is None:
            break
        nxt = [a.to for a in out(core) if isinstance(a, Send) and type(a.msg).__name__ == "StateRequest"]
        assert len(nxt) == 1
        asked.append(nxt[0])
    assert all(a != b for a, b in zip(asked, asked[1:])), asked       # never the same peer twice in a row
    assert set(asked) == {0, 2}
    assert core.transfer is None and drops(core, P.STATE_NOBODY_SERVED) == 1


def test_one_client_cannot_fill_the_pool_and_is_told_busy(cl):
    """Issue 11, item 7: no per-client quota, no byte budget, and a full pool dropped everyone's
    requests without a word. A client over its quota now gets BUSY; others are unaffected."""
    from bft.outputs import ToClient
    from ledger.state import BUSY, decode_result

    core = cl.core(client_requests=3)
    for _ in range(5):
        core.step(0, cl.req(0), True)
    busy = [a.msg for a in out(core) if isinstance(a, ToClient)]
    assert len(busy) == 2 and all(m.height == 0 and decode_result(m.result)[0] == BUSY for m in busy)
    assert drops(core, RequestRule.CLIENT_QUOTA_FULL) == 2
    core.step(2, cl.req(2), True)                          # another client still gets in
    assert len(core.pending) == 4 and not [a for a in out(core) if isinstance(a, ToClient)]
    big = cl.core(client_bytes=300_000)                    # the byte quota: 64 KiB requests, 2x held
    for _ in range(3):
        big.step(0, cl.req(0, value=b"x" * 60_000), True)
    assert len(big.pending) == 2 and drops(big, RequestRule.CLIENT_QUOTA_FULL) == 1


def retained(core) -> int:
    """Everything a core keeps that a peer's messages can add to, in entries."""
    return (len(core.log) + len(core.ahead) + len(core.early) + len(core.votes) + len(core.prepared_certs)
            + len(core.checkpoint_votes) + sum(len(v) for v in core.checkpoint_votes.values())
            + len(core.view_changes) + sum(len(v) for v in core.view_changes.values())
            + len(core.batches) + len(core.missing) + len(core.pending) + len(core.committed)
            + len(core.retransmitter.helped) + len(core.view_changer.helped) + len(core.suspicion.answered)
            + len(core.fetcher.served) + len(core.catchup.served) + len(core.relay_queue))


FLOOD = 2000
# n = 4, L = 4, K = 2: a window of 4 slots, 'ahead' up to 2K beyond it, 4 unstable CHECKPOINTs
# per peer, one VIEW-CHANGE per peer. Whatever one peer sends, the core keeps at most this:
RETAINED_BOUND = 40


def _flood(cl: Cluster, kind: str):
    from bft.wire import BatchRequest, Checkpoint, Commit, NewView, Prepare, StateRequest, ViewChange
    from crypto.merkle import root_of

    d = root_of([b"x"])
    for i in range(1, FLOOD + 1):
        if kind == "pre-prepare":                 # the (faulty) primary, every sequence number
            yield 0, PrePrepare(0, i, d, [], 0).signed(cl.rs[0])
        elif kind == "prepare":
            yield 3, Prepare(0, i, d, 3).signed(cl.rs[3])
        elif kind == "commit":
            yield 3, Commit(0, i, d, 3).signed(cl.rs[3])
        elif kind == "checkpoint":                # far-future sequence numbers
            yield 3, Checkpoint(2 * i, d, i, d, 3).signed(cl.rs[3])
        elif kind == "view-change-descending":
            yield 3, ViewChange(FLOOD + 1 - i, 0, [], [], 3).signed(cl.rs[3])
        elif kind == "new-view":
            yield 3, NewView(i, [], [], 3).signed(cl.rs[3])
        elif kind == "state-request":
            yield 3, StateRequest(1, 10 ** 9, 3)
        elif kind == "batch-request":
            yield 3, BatchRequest(d, 3)
        elif kind == "relayed-request":
            yield 3, cl.req(0)


@pytest.mark.parametrize("kind", ["pre-prepare", "prepare", "commit", "checkpoint", "view-change-descending",
                                  "new-view", "state-request", "batch-request", "relayed-request"])
def test_a_flood_of_one_message_type_from_one_peer_retains_a_bounded_state(cl, kind):
    """Issue 11, item 8: 20,000 descending VIEW-CHANGEs were all kept, far-future CHECKPOINTs
    and VIEW-CHANGEs left empty dicts behind. Every structure a peer feeds is bounded."""
    core = cl.core(client_requests=16)
    for i, (sender, msg) in enumerate(_flood(cl, kind)):
        core.step(sender, msg)
        if i % 100 == 0:
            core.tick(core.now + 0.001)
            out(core)
    core.tick(core.now + 0.001)
    acts = out(core)
    assert retained(core) <= RETAINED_BOUND, (kind, retained(core))
    assert len(acts) <= 64, (kind, len(acts))


def test_a_request_in_a_non_canonical_encoding_is_refused_in_a_batch(cl):
    """Issue 11, item 13: backups accepted another msgpack encoding of a valid request, so a
    Byzantine primary could commit bytes that the client's receipt check would not find."""
    import msgpack

    from bft.wire import decode
    from crypto.merkle import root_of

    r = cl.req()
    fields = r.to_list()
    raw = b"\xdc" + len(fields).to_bytes(2, "big") + b"".join(msgpack.packb(x, use_bin_type=True) for x in fields)
    assert decode(raw) == r and raw != r.encode()          # same request, a 'array 16' header
    core = cl.core()
    core.step(0, PrePrepare(0, 1, root_of([raw]), [raw], 0).signed(cl.rs[0]))
    assert drops(core, P.BATCH_MALFORMED_REQUEST) == 1


def test_status_alerts_name_a_lone_view_change_and_a_replica_behind():
    """Issue 17, item 4: a replica alone in a view change, or behind by more than a checkpoint
    interval, looked fine in 'status'; it is now marked with a one-line reason."""
    from bft.runtime.procs import alerts

    ok = {"reachable": True, "view": 1, "in_view_change": False, "height": 100, "checkpoint_interval": 32}
    st = [dict(ok, id=0), dict(ok, id=1), dict(ok, id=2),
          dict(ok, id=3, view=2, in_view_change=True, height=60, view_change_seconds=60.0, view_change_joined=1)]
    a = alerts(st, 3)
    assert list(a) == [3]
    assert "in a view change to view 2 for 60 s that only 1 of the 3 needed joined" in a[3]
    assert "behind by 40 blocks" in a[3]
    assert alerts([dict(ok, id=i) for i in range(4)], 3) == {}
