"""Named regression scenarios for the known bugs of the field (GitHub issue 4).

Each test builds one precise situation in the simulator (real cores, a network whose
drops are chosen message by message through ``sim.drop_if``) or drives a core directly,
and checks the one property its name states. The invariant checker watches every run.
"""
from __future__ import annotations

from ledger import quorum
from bft.outputs import Broadcast, Persist, Send
from bft.pbft.certs import checkpoint_proof_error, new_view_error, prepared_cert_error
from bft.pbft.core import PbftCore
from bft.sim.scenario import build_pbft
from bft.sim.world import CLIENT
from bft.wire import (Checkpoint, Commit, NewView, PrePrepare, Prepare, PreparedCert, Reply, Request, ViewChange)
from crypto.merkle import root_of
from ledger.certificate import certificate_error
from ledger.rules import LedgerRule
from bft.pbft.rules import PbftRule as P
from ledger.chain import Chain
from ledger.state import op_put


def _core(sim, i: int) -> PbftCore:
    c = sim.nodes[i].core
    return getattr(c, "core", c)


def _run(sim, until: float) -> None:
    """Run to virtual time ``until`` (the whole way: later faults and submissions are
    scheduled events); the invariant checker must stay quiet."""
    sim.run_until(until)
    assert sim.checker.violation is None, sim.checker.violation


def _observe(sim, kind) -> list:
    """Record every message of ``kind`` handed to the network (drops nothing)."""
    seen = []
    prev = sim.drop_if

    def hook(src, dst, msg):
        if type(msg) is kind:
            seen.append((src, dst, msg))
        return prev(src, dst, msg) if prev else False
    sim.drop_if = hook
    return seen


def _same_ledgers(sim, replicas) -> list:
    heads = {tuple(b.hash() for b in sim.nodes[i].blocks) for i in replicas}
    assert len(heads) == 1, "honest ledgers differ"
    return sim.nodes[replicas[0]].blocks


# ----------------------------------------------------------------------------- view change keeps P
def _single_holder(holder: int):
    """View 0: only ``holder`` collects the PREPAREs of seq 1 (prepared there and nowhere
    else), no COMMIT gets through, the request times out, view 1 (primary 1) starts."""
    sim = build_pbft(11, 4, clients=1, config=dict(batch_size=1))

    def drop(src, dst, msg):
        if type(msg) is Prepare and msg.view == 0:
            return dst != holder
        if type(msg) is Commit and msg.view == 0:
            return True
        if type(msg) is ViewChange and holder != 1:
            return src not in (1, holder) and src != 0      # keep the holder's VIEW-CHANGE in V
        return False
    sim.drop_if = drop
    nvs = _observe(sim, NewView)
    sim.submit(0, "k", b"v")
    _run(sim, 3.0)
    return sim, nvs


def test_prepared_certificate_held_by_single_honest_replica_survives_view_change() -> None:
    for holder in (1, 2):
        sim, nvs = _single_holder(holder)
        assert sim.all_acked()
        pp0 = _core(sim, holder)
        assert pp0.view == 1
        nv = nvs[0][2]
        assert holder in [vc.replica for vc in nv.view_changes]
        held = [vc for vc in nv.view_changes if vc.replica == holder][0].prepared
        assert [c.pre_prepare.seq for c in held] == [1]
        # digests only, in V and in O; the batch reached every replica that lacked it by BatchRequest
        assert nv.pre_prepares[0].digest == held[0].pre_prepare.digest and not nv.pre_prepares[0].batch
        assert not held[0].pre_prepare.batch
        for b in _same_ledgers(sim, [0, 1, 2, 3])[:1]:
            assert (b.height, b.sequence, b.view) == (1, 1, 1)
            assert b.batch_root == held[0].pre_prepare.digest     # the same batch, not a null request


# ----------------------------------------------------------------------------- gaps in O
def test_new_view_whose_O_has_gaps_filled_by_null_requests() -> None:
    """Seqs 1..3 pre-prepared in view 0; seq 2's PREPAREs all lost, nothing commits. The
    NEW-VIEW carries P for 1 and 3, so O = [1: batch, 2: null, 3: batch]; the request of
    seq 2 is proposed again afterwards, at seq 4."""
    sim = build_pbft(12, 4, clients=3, config=dict(batch_size=1, pipeline=8))
    sim.drop_if = lambda s, d, m: m.__class__ in (Prepare, Commit) and m.view == 0 and (
        type(m) is Commit or m.seq == 2)
    nvs = _observe(sim, NewView)
    reqs = [sim.submit(c, f"k{c}", b"v") for c in range(3)]
    assert reqs == [1, 1, 1]
    _run(sim, 4.0)
    assert sim.all_acked()
    nv = nvs[0][2]
    empty = root_of([])
    assert [(p.seq, p.digest == empty, len(p.batch)) for p in nv.pre_prepares] == [
        (1, False, 0), (2, True, 0), (3, False, 0)]                  # digests only; seq 2 is the null request
    assert nv.pre_prepares[1].digest == root_of([])
    blocks = _same_ledgers(sim, [0, 1, 2, 3])
    assert [(b.sequence, len(b.txs), b.view) for b in blocks] == [(1, 1, 1), (2, 0, 1), (3, 1, 1), (4, 1, 1)]


# ----------------------------------------------------------------------------- watermarks
def test_sequence_numbers_at_exactly_h_and_H() -> None:
    """K = 2, L = 4, one request per batch, a deep pipeline and 12 concurrent requests: the
    primary fills the window up to exactly H = h + L, waits for the next stable
    checkpoint, and never proposes above H; every backup accepts seq H."""
    K, L = 2, 4
    sim = build_pbft(13, 4, clients=3, config=dict(checkpoint_interval=K, log_size=L, batch_size=1, pipeline=64))
    primary = _core(sim, 0)
    proposed = []

    def watch(src, dst, msg):
        if type(msg) is PrePrepare and src == 0 and dst == 1:
            proposed.append((msg.seq, primary.h))
        return False
    sim.drop_if = watch
    for j in range(12):
        sim.submit(j % 3, f"k{j}", b"v")
    _run(sim, 5.0)
    assert sim.all_acked()
    assert all(h < seq <= h + L for seq, h in proposed)
    assert any(seq == h + L for seq, h in proposed), "the window was never filled up to H"
    assert sorted(s for s, _ in proposed) == list(range(1, 13))
    assert min(_core(sim, i).h for i in range(4)) >= 10


# ----------------------------------------------------------------------------- checkpoint + view change
def test_view_change_during_a_checkpoint() -> None:
    """Seq 4 = K executes everywhere, but the CHECKPOINTs reach only replicas 0 and 1; the
    primary crashes at that moment. Replica 1's VIEW-CHANGE carries the stable proof,
    the NEW-VIEW starts at 4, and replicas 2 and 3 adopt the checkpoint from it."""
    K = 4
    sim = build_pbft(14, 4, clients=1, config=dict(checkpoint_interval=K, log_size=2 * K, batch_size=1))
    sim.drop_if = lambda s, d, m: type(m) is Checkpoint and d in (2, 3)
    for j in range(K):
        sim.submit(0, f"k{j}", b"v")
        _run(sim, sim.now + 1.0)
        assert sim.all_acked()
    _run(sim, sim.now + 0.05)
    assert [_core(sim, i).h for i in range(4)] == [K, K, 0, 0]
    sim.crash(0)
    sim.drop_if = None
    nvs = _observe(sim, NewView)
    for j in range(3):
        sim.submit(0, f"after{j}", b"v")
    _run(sim, sim.now + 3.0)
    assert sim.all_acked()
    nv = nvs[0][2]
    assert nv.view == 1 and max(vc.stable_seq for vc in nv.view_changes) == K
    for i in (1, 2, 3):
        assert _core(sim, i).h >= K and _core(sim, i).view == 1
    blocks = _same_ledgers(sim, [1, 2, 3])
    assert len(blocks) == K + 3 and [b.view for b in blocks[K:]] == [1, 1, 1]


# ----------------------------------------------------------------------------- faulty next primary
def test_two_view_changes_in_a_row_next_primary_faulty_too() -> None:
    """n = 7: the primaries of views 0 and 1 are both silent. The backups time out in view 0,
    then (timer doubled) in view 1, and view 2's primary orders everything."""
    sim = build_pbft(15, 7, byzantine={0: "silent", 1: "silent"}, clients=2)
    for j in range(6):
        sim.at(0.01 * j, lambda j=j: sim.submit(j % 2, f"k{j}", b"v"))
    T = sim.cfg.request_timeout
    _run(sim, 0.05 + T + 2 * T + 1.0)
    assert sim.all_acked()
    assert {_core(sim, i).view for i in range(2, 7)} == {2}
    assert max(sim.checker.ack_times.values()) < 0.05 + T + 2 * T + 0.2
    blocks = _same_ledgers(sim, [2, 3, 4, 5, 6])
    assert {b.view for b in blocks} == {2}


# ----------------------------------------------------------------------------- restart
def test_restart_does_not_forget_a_vote() -> None:
    """Replica 2 PREPAREs digest D for (view 0, seq 1), crashes and restarts from its blocks
    and vote log. Offered a PRE-PREPARE for another digest at (0, 1) by the same primary,
    it must not PREPARE it. A replica restarted with an empty vote log would: the control."""
    sim = build_pbft(16, 4, clients=2, config=dict(batch_size=1))
    sim.drop_if = lambda s, d, m: type(m) in (Prepare, Commit)      # nothing prepares
    sim.submit(0, "k", b"v")
    sim.run_until(0.1)
    first = _core(sim, 2).log[1].pre_prepare
    assert _core(sim, 2).log[1].my_prepare.digest == first.digest
    other = Request(1, 1, op_put("k", b"other")).signed(sim.client_signers[1])
    conflicting = PrePrepare(0, 1, root_of([other.encode()]), [other.encode()], 0).signed(sim.replica_signers[0])

    sim.crash(2)
    sim.restart(2)
    core = _core(sim, 2)
    core.step(0, conflicting)
    acts = core.ready()
    prepares = [a.msg for a in acts if isinstance(a, (Broadcast, Send)) and type(a.msg) is Prepare]
    assert all(p.digest == first.digest for p in prepares)
    assert core.log[1].pre_prepare.digest == first.digest
    assert core.dropped[P.CONTRADICTS_OWN_VOTE] + core.dropped[P.CONFLICTING_PRE_PREPARE] == 1

    amnesiac = sim.make_core(2, Chain(), [], sim.now)                  # the bug: forget the vote log
    amnesiac.step(0, conflicting)
    assert [a.msg.digest for a in amnesiac.ready() if isinstance(a, Broadcast) and type(a.msg) is Prepare] == \
        [conflicting.digest]


def test_restart_persists_votes_before_sending_them() -> None:
    sim = build_pbft(17, 4, clients=1)
    sim.submit(0, "k", b"v")
    core = _core(sim, 1)
    order = []
    real_ready = core.ready

    def ready():
        acts = real_ready()
        order.extend(type(a).__name__ + ":" + getattr(getattr(a, "msg", None), "NAME", "") for a in acts)
        return acts
    core.ready = ready
    _run(sim, 1.0)
    assert sim.all_acked()
    first_prepare = order.index("Broadcast:prepare")
    first_commit = order.index("Broadcast:commit")
    assert "Persist:" in order[:first_prepare] and "Persist:" in order[first_prepare + 1:first_commit]
    assert Persist.__name__ == "Persist"


# ----------------------------------------------------------------------------- duplicate signers
def test_duplicate_signers_do_not_make_a_quorum() -> None:
    """Every quorum counts distinct replica ids: a prepared certificate, a checkpoint proof, a
    NEW-VIEW's V, a block's commit certificate and a client's f+1 replies."""
    sim = build_pbft(18, 4, clients=1, config=dict(checkpoint_interval=2, log_size=4))
    for j in range(2):
        sim.submit(0, f"k{j}", b"v")
        _run(sim, sim.now + 1.0)
    core = _core(sim, 1)
    keys, f = core.keys, core.f
    rs = sim.replica_signers
    block = sim.nodes[1].blocks[0]

    # commit certificate: one valid signer three times
    one = [block.cert[0]] * 3
    assert certificate_error("pbft", f, keys.replicas, block.view, block.sequence, block.batch_root, block.cert,
                             keys.verifier) is None
    why = certificate_error("pbft", f, keys.replicas, block.view, block.sequence, block.batch_root, one,
                            keys.verifier)
    assert why.rule is LedgerRule.CERT_TOO_FEW_COMMITS
    # prepared certificate: one backup's PREPARE twice
    pp = PrePrepare(0, 3, root_of([]), [], 0).signed(rs[0])
    p1 = Prepare(0, 3, pp.digest, 1).signed(rs[1])
    assert prepared_cert_error(keys, f, PreparedCert(pp, [p1, p1]), 1, 2, 6).rule is P.PREPARED_CERT_REPEATS
    assert prepared_cert_error(keys, f, PreparedCert(pp, [p1, Prepare(0, 3, pp.digest, 2).signed(rs[2])]),
                               1, 2, 6) is None
    # checkpoint proof: one replica's CHECKPOINT three times
    proof = core.stable_proof
    assert checkpoint_proof_error(keys, f, 2, proof) is None
    assert checkpoint_proof_error(keys, f, 2, [proof[0]] * 3).rule is P.CHECKPOINT_PROOF_REPEATS
    # NEW-VIEW: one VIEW-CHANGE three times
    vc = ViewChange(1, 2, proof, [], 2).signed(rs[2])
    nv = NewView(1, [vc, vc, vc], [], 1).signed(rs[1])
    assert new_view_error(keys, f, nv, 4)[0].rule is P.NEW_VIEW_REPEATS
    # a client's reply quorum: replica 3 answers three times, nobody else gets through
    sim.drop_if = lambda s, d, m: type(m) is Reply and s != 3
    ts = sim.submit(0, "k9", b"v")
    sim.run_until(sim.now + 0.2)
    rec = sim.clients[0]
    assert ts in rec.outstanding
    reply = Reply(1, 0, ts, 3, 3, 0, b"")
    for _ in range(3):                                  # as if replica 3's channel carried it 3 times
        sim._deliver(3, CLIENT + 0, reply, sim.now)
    assert ts in rec.outstanding and quorum.reply_quorum(f) == 2
    sim.drop_if = None
    _run(sim, sim.now + 1.0)
    assert sim.all_acked()


# ----------------------------------------------------------------------------- stale views
def test_stale_view_replay_is_ignored() -> None:
    """n = 7, the view-0 primary is silent and replica 3 replays its own old messages
    (view-0 PREPAREs, COMMITs, VIEW-CHANGEs, CHECKPOINTs) all run long. Nothing replayed
    counts in view 1: no violation, everything commits, the old ones are dropped."""
    sim = build_pbft(19, 7, byzantine={3: "replay"}, clients=2)
    for j in range(8):
        sim.at(0.05 * j, lambda j=j: sim.submit(j % 2, f"k{j}", b"v"))
    sim.at(0.2, lambda: sim.crash(0))
    for j in range(8, 16):
        sim.at(1.0 + 0.05 * j, lambda j=j: sim.submit(j % 2, f"k{j}", b"v"))
    _run(sim, 6.0)
    assert sim.all_acked()
    honest = [1, 2, 4, 5, 6]
    assert {_core(sim, i).view for i in honest} == {1}
    assert sum(_core(sim, i).dropped[P.OTHER_VIEW] for i in honest) > 0
    _same_ledgers(sim, honest)


def test_stale_view_messages_have_no_effect_on_a_core() -> None:
    """A core in view 1 offered view-0 messages for a fresh sequence number: a complete
    set that would prepare and commit it in view 0. Nothing happens."""
    sim = build_pbft(20, 4, clients=2)
    sim.submit(0, "k", b"v")
    _run(sim, 1.0)
    sim.crash(0)
    sim.submit(1, "k2", b"v")
    _run(sim, 3.0)
    core = _core(sim, 2)
    assert core.view == 1 and not core.in_view_change
    rs = sim.replica_signers
    req = Request(0, 99, op_put("stale", b"x")).signed(sim.client_signers[0])
    pp = PrePrepare(0, 9, root_of([req.encode()]), [req.encode()], 0).signed(rs[0])
    before = (core.chain.height, core.dropped[P.OTHER_VIEW])
    core.step(0, pp)
    for r in (1, 3):
        core.step(r, Prepare(0, 9, pp.digest, r).signed(rs[r]))
    for r in (0, 1, 3):
        core.step(r, Commit(0, 9, pp.digest, r).signed(rs[r]))
    core.step(3, ViewChange(1, core.h, list(core.stable_proof), [], 3).signed(rs[3]))
    acts = core.ready()
    assert not [a for a in acts if isinstance(a, Broadcast) and type(a.msg) in (Prepare, Commit)]
    assert core.chain.height == before[0] and 9 not in core.log
    assert core.dropped[P.OTHER_VIEW] - before[1] == 6
