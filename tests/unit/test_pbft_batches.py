"""Batches by digest (issue 11, item 1): what a VIEW-CHANGE and a NEW-VIEW may carry, how a
replica that lacks a batch fetches it, and the byte cap on a batch. Each test is named
after the attack or the rule. Same cluster as test_pbft_rules: n = 4, f = 1, K = 2, L = 4."""
from __future__ import annotations

import pytest

from bft.outputs import AppendBlock, Send
from bft.pbft.certs import view_change_error
from bft.pbft.config import PbftConfig
from bft.pbft.rules import PbftRule as P
from bft.wire import MAX_BATCH, BatchRequest, BatchResponse, NewView, PrePrepare, PreparedCert
from crypto.merkle import root_of
from ledger.state import op_get
from test_pbft_rules import (F, L, N, Cluster, core_vc, drops, out, prepare_and_commit, prepared_cert, sent,
                             time_out)


@pytest.fixture
def cl() -> Cluster:
    return Cluster()


def test_own_view_change_carries_digests_not_batches(cl):
    core = cl.core()
    reqs = [cl.req(value=b"x" * 1000) for _ in range(4)]
    prepare_and_commit(cl, core, 0, 1, reqs)
    assert core.prepared_certs[1].pre_prepare.batch            # kept in full locally
    time_out(cl, core)
    vc = core.my_view_change
    assert vc.prepared and all(c.pre_prepare.batch == [] for c in vc.prepared)
    assert len(vc.encode()) < 1500                              # does not grow with the 4 KB batch
    assert view_change_error(cl.keys(), F, vc, L) is None


def test_padded_view_change_is_refused(cl):
    """A Byzantine replica pads a valid VIEW-CHANGE with repeated entries (issue 11: the copies
    used to be skipped, so a padded VIEW-CHANGE pushed the new primary's NEW-VIEW over the
    frame cap)."""
    core = cl.core(2)
    good = prepared_cert(cl, 0, 1, [cl.req()])
    padded = PreparedCert(good.pre_prepare, good.prepares + good.prepares)
    repeated = PreparedCert(good.pre_prepare, [good.prepares[0], good.prepares[0]])
    with_batch = PreparedCert(cl.pp(0, 1, [cl.req()]), good.prepares)
    for cert in (padded, repeated, with_batch):
        core.step(3, core_vc(cl, core, 3, 1, prepared=[cert]))
    assert drops(core, P.PREPARED_CERT_SIZE) == 1
    assert drops(core, P.PREPARED_CERT_REPEATS) == 1
    assert drops(core, P.PREPARED_CERT_CARRIES_BATCH) == 1
    assert 3 not in core.view_changes.get(1, {})
    core.step(3, core_vc(cl, core, 3, 1, prepared=[good]))
    assert 3 in core.view_changes[1]


def _new_view_naming_an_unseen_batch(cl, reqs):
    """NEW-VIEW of view 2 (primary 2) whose O holds sequence 1, prepared in view 0 elsewhere."""
    cert = prepared_cert(cl, 0, 1, reqs)
    vcs = [core_vc(cl, None, r, 2, prepared=[cert] if r == 0 else []) for r in (0, 2, 3)]
    o = [PrePrepare(2, 1, cert.pre_prepare.digest, [], 2).signed(cl.rs[2])]
    return cert.pre_prepare.digest, NewView(2, vcs, o, 2).signed(cl.rs[2])


def test_a_replica_that_lacks_a_batch_fetches_it_and_then_executes(cl):
    core = cl.core()
    reqs = [cl.req(key=f"k{i}") for i in range(3)]
    digest, nv = _new_view_naming_an_unseen_batch(cl, reqs)
    core.step(2, nv)
    acts = out(core)
    assert core.view == 2 and not core.in_view_change
    asks = [a for a in acts if isinstance(a, Send) and type(a.msg) is BatchRequest]
    assert len(asks) == 1 and asks[0].msg.digest == digest
    for b in (0, 3):
        core.step(b, cl.prepare(2, 1, digest, b))
    for b in (0, 2):
        core.step(b, cl.commit(2, 1, digest, b))
    acts = out(core)
    assert core.log[1].is_committed_local
    assert not [a for a in acts if isinstance(a, AppendBlock)]     # committed, waiting for its batch
    core.step(0, BatchResponse(digest, [cl.req().encode()], 0))     # a lying peer: refused
    core.step(3, BatchResponse(root_of([]), [], 3))                 # unsolicited: refused
    assert drops(core, P.BATCH_DIGEST) == 1
    assert drops(core, P.UNSOLICITED_BATCH) == 1
    core.tick(core.now + 0.3)                                      # asks the next peer
    acts = out(core)
    again = [a for a in acts if isinstance(a, Send) and type(a.msg) is BatchRequest]
    assert again and again[0].to != asks[0].to
    core.step(again[0].to, BatchResponse(digest, [r.encode() for r in reqs], again[0].to))
    made = [a.block for a in out(core) if isinstance(a, AppendBlock)]
    assert len(made) == 1 and made[0].txs == [r.encode() for r in reqs]


def test_batch_requests_are_served_and_rate_limited(cl):
    core = cl.core()
    reqs = [cl.req()]
    prepare_and_commit(cl, core, 0, 1, reqs)
    digest = root_of([r.encode() for r in reqs])
    for _ in range(40):
        core.step(3, BatchRequest(digest, 3))
    answers = [m for m in sent(out(core)) if type(m) is BatchResponse]
    assert 1 <= len(answers) <= 16 and answers[0].batch == [r.encode() for r in reqs]
    assert drops(core, P.BATCH_FETCH_RATE) == 40 - len(answers)
    core.step(3, BatchRequest(root_of([b"unknown"]), 3))
    assert drops(core, P.UNHELD_BATCH) == 1


def test_batches_are_capped_by_weight_at_the_primary_and_at_backups(cl):
    cap = 128 * 1024
    primary = cl.core(0, batch_bytes=cap)
    gets = [cl.req(key=f"g{i}") for i in range(3)]
    gets = [type(g)(g.client, g.timestamp, op_get(f"g{i}")).signed(cl.cs[0]) for i, g in enumerate(gets)]
    for g in gets:
        primary.step(0, g, True)
    pps = [m for m in sent(out(primary)) if type(m) is PrePrepare]
    assert [len(p.batch) for p in pps] == [1, 1, 1]               # a get may return a whole value
    backup = cl.core(batch_bytes=cap)
    backup.step(0, cl.pp(0, 1, gets))
    assert drops(backup, P.BATCH_OVER_CAP) == 1


def test_config_refuses_a_batch_size_the_wire_cannot_carry():
    with pytest.raises(ValueError, match="batch_size"):
        PbftConfig(n=N, f=F, batch_size=MAX_BATCH + 1)
    with pytest.raises(ValueError, match="batch_bytes"):
        PbftConfig(n=N, f=F, batch_bytes=64 * 1024 * 1024)
