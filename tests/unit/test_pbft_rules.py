"""The acceptance rules of the pbft core, one test per rule, named after it.

Each test drives a real ``PbftCore`` directly: hand-built, signed messages go in through
``step``, and what the core asks its driver to do comes out of ``ready``. Most tests use
the fast keyed-hash signer; those parametrized over ``scheme`` also run with Ed25519.
Cluster: n = 4, f = 1, primary of view v is v mod 4; the core under test is a backup
(replica 1) unless a test says otherwise. Watermarks: K = 2, L = 4, so H = h + 4.
"""
from __future__ import annotations

import random

import msgpack
import pytest

from ledger import quorum
from bft.outputs import AppendBlock, Broadcast, CompactVotes, Persist, Send, ToClient
from bft.pbft.certs import Keys, new_view_error, plan_new_view, primary, strip
from bft.pbft.config import PbftConfig
from bft.pbft.core import PbftCore
from bft.wire import (Checkpoint, Commit, NewView, PrePrepare, Prepare, PreparedCert, Request, Suspect,
                      ViewChange, decode)
from crypto.merkle import root_of
from crypto.signing import Ed25519Signer, Ed25519Verifier, HashSigner, HashVerifier
from ledger.certificate import certificate_error
from ledger.rules import Rule
from bft.pbft.rules import PbftRule as P
from bft.rules import RequestRule, StepRule
from ledger.chain import Chain
from ledger.state import DUPLICATE, decode_result, op_put

N, F = 4, 1
K, L = 2, 4
ME = 1


class Cluster:
    """Keys of 4 replicas and 3 clients, and builders of signed messages."""

    def __init__(self, scheme: str = "hash") -> None:
        self.scheme = scheme
        if scheme == "ed25519":
            rnd = random.Random(7)
            self.rs = [Ed25519Signer(rnd.randbytes(32)) for _ in range(N)]
            self.cs = [Ed25519Signer(rnd.randbytes(32)) for _ in range(3)]
        else:
            self.rs = [HashSigner(b"replica-%d" % i) for i in range(N)]
            self.cs = [HashSigner(b"client-%d" % i) for i in range(3)]
        self.ts = 0

    def keys(self) -> Keys:
        verifier = Ed25519Verifier() if self.scheme == "ed25519" else HashVerifier(self.rs + self.cs)
        return Keys([s.public_key for s in self.rs], [s.public_key for s in self.cs], verifier, admin=0)

    def cfg(self, **kw) -> PbftConfig:
        base = dict(checkpoint_interval=K, log_size=L, batch_size=16, pipeline=4, request_timeout=1.0,
                    retransmit_interval=0.25)
        base.update(kw)
        return PbftConfig(n=N, f=F, **base)

    def core(self, i: int = ME, *, votes=(), chain: Chain | None = None, **cfg) -> PbftCore:
        return PbftCore(self.cfg(**cfg), i, self.rs[i], self.keys(), chain or Chain(), list(votes), 0.0)

    # -- messages
    def req(self, client: int = 0, ts: int | None = None, key: str = "k", value: bytes = b"v") -> Request:
        if ts is None:
            self.ts += 1
            ts = self.ts
        return Request(client, ts, op_put(key, value)).signed(self.cs[client])

    def pp(self, view: int, seq: int, reqs: list[Request], *, by: int | None = None, signer=None,
           digest: bytes | None = None) -> PrePrepare:
        by = primary(view, N) if by is None else by
        batch = [r.encode() for r in reqs]
        return PrePrepare(view, seq, root_of(batch) if digest is None else digest, batch, by).signed(
            signer or self.rs[by])

    def prepare(self, view: int, seq: int, digest: bytes, by: int, signer=None) -> Prepare:
        return Prepare(view, seq, digest, by).signed(signer or self.rs[by])

    def commit(self, view: int, seq: int, digest: bytes, by: int, signer=None) -> Commit:
        return Commit(view, seq, digest, by).signed(signer or self.rs[by])

    def checkpoint_of(self, core: PbftCore, by: int, signer=None) -> Checkpoint:
        ch = core.chain
        return Checkpoint(ch.height, ch.head, ch.tree.size, ch.tree.root(), by).signed(signer or self.rs[by])


@pytest.fixture
def cl() -> Cluster:
    return Cluster()


# ----------------------------------------------------------------------------- helpers
def out(core: PbftCore) -> list:
    return core.ready()


def sent(actions, cls=None) -> list:
    msgs = [a.msg for a in actions if isinstance(a, (Broadcast, Send))]
    return [m for m in msgs if cls is None or type(m) is cls]


def time_out(cl: Cluster, core: PbftCore) -> None:
    """A client request that nobody orders: the timer fires, the core SUSPECTs the primary and,
    with one other replica's SUSPECT (f+1), asks for view+1."""
    v = core.view
    core.step(2, cl.req(2), True)
    core.tick(core.now + core.cfg.request_timeout + 0.01)
    assert core.suspecting and not core.in_view_change
    other = next(r for r in range(N) if r != core.id)
    core.step(other, Suspect(v, other).signed(cl.rs[other]))
    assert core.in_view_change and core.view == v + 1
    out(core)


def blocks(actions) -> list:
    return [a.block for a in actions if isinstance(a, AppendBlock)]


def drops(core: PbftCore, rule: Rule) -> int:
    return core.dropped[rule]


def prepare_and_commit(cl: Cluster, core: PbftCore, view: int, seq: int, reqs: list[Request]) -> list:
    """Feed a backup everything that commits (view, seq): PRE-PREPARE, PREPAREs of the
    other backups, COMMITs of two others. Returns the actions."""
    p = primary(view, N)
    pp = cl.pp(view, seq, reqs)
    acts = []
    core.step(p, pp)
    acts += out(core)
    for b in range(N):
        if b not in (p, core.id):
            core.step(b, cl.prepare(view, seq, pp.digest, b))
    acts += out(core)
    for r in [x for x in range(N) if x != core.id][:2]:
        core.step(r, cl.commit(view, seq, pp.digest, r))
    acts += out(core)
    return acts


def run_to(cl: Cluster, core: PbftCore, upto: int, view: int = 0) -> None:
    for s in range(core.chain.height + 1, upto + 1):
        prepare_and_commit(cl, core, view, s, [cl.req()])
    assert core.chain.height == upto


def make_stable(cl: Cluster, core: PbftCore, seq: int) -> None:
    """Let ``core`` (already at height >= seq) see 2f+1 matching CHECKPOINTs for seq."""
    ch = Chain()
    for b in blocks_of(core, seq):
        ch.replay(b)
    for r in range(N):
        if r != core.id:
            core.step(r, Checkpoint(seq, ch.head, ch.tree.size, ch.tree.root(), r).signed(cl.rs[r]))
    out(core)
    assert core.h == seq


def blocks_of(core: PbftCore, upto: int) -> list:
    return [b for b in core.disk if b.height <= upto]


def tracked(core: PbftCore) -> PbftCore:
    """Remember every block the core appends (its 'disk'), for checkpoints and restarts. Kept on
    the core itself: a table keyed by id(core) handed a new core the blocks of a collected one
    whose id it reused (a flaky test_garbage_collection_at_stable_checkpoint)."""
    store = core.disk = []
    ready = core.ready

    def wrapped():
        acts = ready()
        store.extend(blocks(acts))
        return acts
    core.ready = wrapped
    return core


# ============================================================================ PRE-PREPARE
@pytest.mark.parametrize("scheme", ["hash", "ed25519"])
def test_pre_prepare_from_primary_accepted_and_prepared(scheme):
    cl = Cluster(scheme)
    core = cl.core()
    pp = cl.pp(0, 1, [cl.req()])
    core.step(0, pp)
    acts = out(core)
    assert [(p.view, p.seq, p.digest, p.replica) for p in sent(acts, Prepare)] == [(0, 1, pp.digest, ME)]
    # the PRE-PREPARE is persisted before the PREPARE leaves
    kinds = [type(a) for a in acts]
    assert kinds.index(Persist) < kinds.index(Broadcast)
    assert sent(acts, Prepare)[0].verify(cl.keys().verifier, cl.rs[ME].public_key)


def test_pre_prepare_rejected_outside_watermarks(cl):
    core = tracked(cl.core())
    run_to(cl, core, 2)
    make_stable(cl, core, 2)                           # h = 2, H = 6
    for seq in (0, 1, 2, 7, 11, 100):
        core.step(0, cl.pp(0, seq, [cl.req()]))
        assert not sent(out(core), Prepare), seq
    assert drops(core, P.OUTSIDE_WATERMARKS) == 5
    assert drops(core, P.ABOVE_WATERMARK) == 1        # 7: held, see the next test
    assert 7 not in core.log


def test_pre_prepare_above_H_held_until_the_window_moves(cl):
    """A backup learns of a stable checkpoint a little after the primary, which may already
    propose above the backup's H. Messages in (H, H + min(L, 2K)] wait (bounded, re-checked
    in full) instead of being lost; a forged one is still rejected when its turn comes."""
    core = tracked(cl.core())
    run_to(cl, core, 2)                                # h = 0, H = 4
    pp5 = cl.pp(0, 5, [cl.req()])
    forged6 = cl.pp(0, 6, [cl.req()], signer=cl.rs[3])
    core.step(0, pp5)
    core.step(0, forged6)
    core.step(2, cl.prepare(0, 5, pp5.digest, 2))
    core.step(2, cl.pp(0, 5, [cl.req()], by=2))        # not the primary: not even held
    assert not sent(out(core)) and 5 not in core.log
    assert len(core.ahead) == 3
    run_to(cl, core, 4)
    make_stable(cl, core, 2)                           # h = 2, H = 6: 5 and 6 now inside
    assert core.log[5].pre_prepare.digest == pp5.digest
    assert sorted(core.log[5].prepares) == [1, 2] and core.log[5].is_prepared
    assert 6 not in core.log or core.log[6].pre_prepare is None
    assert drops(core, P.BAD_SIGNATURE) == 1
    assert not core.ahead


def test_pre_prepare_accepted_at_exactly_h_plus_1_and_H(cl):
    core = tracked(cl.core())
    run_to(cl, core, 2)
    make_stable(cl, core, 2)
    for seq in (3, 2 + L):                             # h < n <= H, both ends
        core.step(0, cl.pp(0, seq, [cl.req()]))
        assert [p.seq for p in sent(out(core), Prepare)] == [seq]


def test_pre_prepare_rejected_from_non_primary(cl):
    core = cl.core()
    core.step(2, cl.pp(0, 1, [cl.req()], by=2))
    assert not sent(out(core))
    assert drops(core, P.NOT_FROM_PRIMARY) == 1


def test_pre_prepare_rejected_wrong_view(cl):
    core = cl.core()
    core.step(2, cl.pp(2, 1, [cl.req()]))             # future views, each from its own primary
    core.step(3, cl.pp(3, 1, [cl.req()]))
    assert not sent(out(core), Prepare)
    assert drops(core, P.OTHER_VIEW) == 2
    assert core.view == 0 and not core.log.get(1)


def test_pre_prepare_rejected_from_an_older_view(cl):
    core = cl.core()
    time_out(cl, core)
    for r in (0, 2, 3):
        core.step(r, core_vc(cl, core, r, 1))
    out(core)
    assert core.view == 1 and not core.in_view_change
    core.step(0, cl.pp(0, 1, [cl.req()]))
    assert not sent(out(core), Prepare)
    assert drops(core, P.OTHER_VIEW) == 1


@pytest.mark.parametrize("scheme", ["hash", "ed25519"])
def test_pre_prepare_rejected_bad_primary_signature(scheme):
    cl = Cluster(scheme)
    core = cl.core()
    core.step(0, cl.pp(0, 1, [cl.req()], signer=cl.rs[2]))     # replica 0's name, replica 2's key
    tampered = cl.pp(0, 2, [cl.req()])
    tampered.sig = bytes(64)
    core.step(0, tampered)
    assert not sent(out(core))
    assert drops(core, P.BAD_SIGNATURE) == 2


@pytest.mark.parametrize("scheme", ["hash", "ed25519"])
def test_pre_prepare_rejected_bad_client_signature_in_batch(scheme):
    cl = Cluster(scheme)
    core = cl.core()
    good, forged = cl.req(0), cl.req(1)
    forged.sig = cl.cs[0].sign(forged.DOMAIN, forged.signable())     # client 1's request, client 0's key
    core.step(0, cl.pp(0, 1, [good, forged]))
    assert not sent(out(core))
    assert drops(core, P.BATCH_BAD_CLIENT_SIGNATURE) == 1


def test_a_client_registration_needs_the_administrator_and_a_new_key():
    """Issue 15 (ledger.clients): a backup drops a batch with a registration its sender may
    not make, and a replica drops one sent to it directly, by the named rules."""
    from crypto import tls
    from crypto.signing import Ed25519Signer
    from ledger.state import op_addclient

    cl = Cluster("ed25519")
    fresh = Ed25519Signer(random.Random(9).randbytes(32))
    def registration(client: int, seed: bytes) -> Request:
        cl.ts += 1
        return Request(client, cl.ts, op_addclient(tls.make_certificate(seed, "c"))).signed(cl.cs[client])
    core = cl.core()
    core.step(0, cl.pp(0, 1, [registration(1, fresh.seed)]))             # client 1 is not the administrator
    assert not sent(out(core)) and drops(core, P.BATCH_BAD_REGISTRATION) == 1
    core = cl.core()
    core.step(0, cl.pp(0, 1, [registration(0, cl.cs[2].seed)]))          # client 2's key: taken
    assert not sent(out(core)) and drops(core, P.BATCH_BAD_REGISTRATION) == 1
    core = cl.core()
    core.step(0, cl.pp(0, 1, [registration(0, fresh.seed)]))             # the administrator, a new key
    assert sent(out(core)) and drops(core, P.BATCH_BAD_REGISTRATION) == 0
    core = cl.core()
    core.step(1, registration(1, fresh.seed), True)
    assert drops(core, RequestRule.REGISTRATION_NOT_ADMIN) == 1 and not core.pending


def test_pre_prepare_rejected_request_from_unknown_client(cl):
    core = cl.core()
    stranger = Request(9, 1, op_put("k", b"v")).signed(HashSigner(b"stranger"))
    core.step(0, cl.pp(0, 1, [stranger]))
    assert not sent(out(core))
    assert drops(core, P.BATCH_BAD_CLIENT_SIGNATURE) == 1


def test_pre_prepare_rejected_malformed_or_non_request_in_batch(cl):
    core = cl.core()
    for i, junk in enumerate([b"\x93\x01\x02", cl.prepare(0, 1, bytes(32), 2).encode()]):
        batch = [cl.req().encode(), junk]
        core.step(0, PrePrepare(0, 1 + i, root_of(batch), batch, 0).signed(cl.rs[0]))
    assert not sent(out(core))
    assert drops(core, P.BATCH_MALFORMED_REQUEST) == 2


def test_pre_prepare_rejected_digest_mismatch(cl):
    core = cl.core()
    r1, r2 = cl.req(), cl.req()
    pp = cl.pp(0, 1, [r1], digest=root_of([r2.encode()]))      # signed digest of another batch
    core.step(0, pp)
    assert not sent(out(core))
    assert drops(core, P.BATCH_DIGEST) == 1


def test_pre_prepare_rejected_conflicting_digest_same_view_seq(cl):
    core = cl.core()
    a, b = cl.pp(0, 1, [cl.req()]), cl.pp(0, 1, [cl.req()])
    core.step(0, a)
    first = sent(out(core), Prepare)
    core.step(0, b)
    assert sent(out(core), Prepare) == []
    assert [p.digest for p in first] == [a.digest]
    assert core.log[1].pre_prepare.digest == a.digest
    assert drops(core, P.CONFLICTING_PRE_PREPARE) == 1


def test_pre_prepare_sender_field_must_match_authenticated_sender(cl):
    core = cl.core()
    core.step(2, cl.pp(0, 1, [cl.req()]))             # replica 0's message, relayed by replica 2
    assert not sent(out(core))
    assert drops(core, StepRule.SENDER_MISMATCH) == 1


def test_pre_prepare_rejected_during_view_change(cl):
    core = cl.core()
    time_out(cl, core)
    out(core)
    core.step(0, cl.pp(0, 1, [cl.req()]))
    assert not sent(out(core), Prepare)
    assert drops(core, P.OTHER_VIEW) == 1


def test_primary_assigns_consecutive_sequence_numbers_and_batches(cl):
    core = cl.core(0, pipeline=1, batch_size=2)
    reqs = [cl.req(0), cl.req(1), cl.req(2)]
    for r in reqs:
        core.step(r.client, r, True)
    pps = sent(out(core), PrePrepare)
    assert [(p.view, p.seq, len(p.batch)) for p in pps] == [(0, 1, 2)]   # a full batch; pipeline of 1
    assert pps[0].verify(cl.keys().verifier, cl.rs[0].public_key)
    for b in (1, 2):
        core.step(b, cl.prepare(0, 1, pps[0].digest, b))
    for b in (1, 2):
        core.step(b, cl.commit(0, 1, pps[0].digest, b))
    acts = out(core)
    assert core.chain.height == 1
    assert [(p.view, p.seq, len(p.batch)) for p in sent(acts, PrePrepare)] == [(0, 2, 1)]


# ============================================================================ PREPARE
def test_prepare_from_primary_ignored(cl):
    core = cl.core()
    pp = cl.pp(0, 1, [cl.req()])
    core.step(0, pp)
    core.step(0, cl.prepare(0, 1, pp.digest, 0))      # the primary's PREPARE would be the 2nd
    assert not sent(out(core), Commit)
    assert not core.log[1].is_prepared
    assert drops(core, P.PREPARE_FROM_PRIMARY) == 1


def test_prepare_duplicate_replica_counts_once(cl):
    core = cl.core()
    pp = cl.pp(0, 1, [cl.req()])
    core.step(0, pp)
    out(core)
    p2 = cl.prepare(0, 1, pp.digest, 2)
    for _ in range(3):
        core.step(2, p2)
    assert core.log[1].is_prepared                        # own + replica 2 = 2f: prepared, once
    acts = out(core)
    assert len([a for a in acts if isinstance(a, Broadcast) and type(a.msg) is Commit]) == 1
    assert len(core.log[1].prepares) == 2
    # a repeated vote is answered (the peer may miss ours), never counted
    assert all(a.to == 2 for a in acts if isinstance(a, Send))
    fresh = cl.core()
    fresh.step(0, pp)
    fresh.step(3, cl.prepare(0, 1, bytes(32), 3))     # wrong digest
    fresh.step(2, p2)
    fresh.step(2, p2)
    assert fresh.log[1].is_prepared and len(fresh.log[1].prepares) == 3


def test_prepare_same_replica_repeated_does_not_reach_quorum_alone(cl):
    """f = 2 needs 4 distinct backups: one peer's PREPARE repeated 10 times never gets there."""
    rs = [HashSigner(b"r%d" % i) for i in range(7)]
    cs = [HashSigner(b"c0")]
    keys = Keys([s.public_key for s in rs], [s.public_key for s in cs], HashVerifier(rs + cs))
    core = PbftCore(PbftConfig(n=7, f=2, checkpoint_interval=2, log_size=4), 1, rs[1], keys, Chain())
    req = Request(0, 1, op_put("k", b"v")).signed(cs[0])
    pp = PrePrepare(0, 1, root_of([req.encode()]), [req.encode()], 0).signed(rs[0])
    core.step(0, pp)
    for _ in range(10):
        core.step(2, Prepare(0, 1, pp.digest, 2).signed(rs[2]))
        core.step(3, Prepare(0, 1, pp.digest, 3).signed(rs[3]))
    assert not core.log[1].is_prepared
    core.step(4, Prepare(0, 1, pp.digest, 4).signed(rs[4]))
    assert core.log[1].is_prepared


def test_prepare_sender_field_must_match_authenticated_sender(cl):
    core = cl.core()
    pp = cl.pp(0, 1, [cl.req()])
    core.step(0, pp)
    core.step(3, cl.prepare(0, 1, pp.digest, 2))       # replica 2's PREPARE, relayed by 3
    assert not core.log[1].is_prepared
    assert drops(core, StepRule.SENDER_MISMATCH) == 1


def test_prepare_bad_signature_rejected(cl):
    core = cl.core()
    pp = cl.pp(0, 1, [cl.req()])
    core.step(0, pp)
    core.step(2, cl.prepare(0, 1, pp.digest, 2, signer=cl.rs[3]))
    assert not core.log[1].is_prepared
    assert drops(core, P.BAD_SIGNATURE) == 1
    core.step(2, cl.prepare(0, 1, pp.digest, 2))      # the genuine one still counts afterwards
    assert core.log[1].is_prepared


def test_prepare_for_another_digest_does_not_count(cl):
    core = cl.core()
    pp = cl.pp(0, 1, [cl.req()])
    core.step(0, pp)
    core.step(2, cl.prepare(0, 1, root_of([b"other"]), 2))
    core.step(3, cl.prepare(0, 1, root_of([b"other"]), 3))
    assert not core.log[1].is_prepared and not sent(out(core), Commit)


def test_prepare_second_conflicting_vote_of_one_replica_ignored(cl):
    core = cl.core()
    pp = cl.pp(0, 1, [cl.req()])
    core.step(2, cl.prepare(0, 1, root_of([b"other"]), 2))   # arrives first, for another digest
    core.step(2, cl.prepare(0, 1, pp.digest, 2))
    core.step(0, pp)
    assert not core.log[1].is_prepared
    assert drops(core, P.DUPLICATE_VOTE) == 1


def test_prepare_wrong_view_or_outside_watermarks_rejected(cl):
    core = cl.core()
    pp = cl.pp(0, 1, [cl.req()])
    core.step(0, pp)
    core.step(2, cl.prepare(1, 1, pp.digest, 2))
    core.step(2, cl.prepare(0, 1 + L, pp.digest, 2))
    assert not core.log[1].is_prepared
    assert drops(core, P.OTHER_VIEW) == 1 and drops(core, P.ABOVE_WATERMARK) == 1
    core.step(2, cl.prepare(0, 100, pp.digest, 2))
    assert drops(core, P.OUTSIDE_WATERMARKS) == 1


def test_prepared_needs_the_pre_prepare(cl):
    core = cl.core()
    pp = cl.pp(0, 1, [cl.req()])
    core.step(2, cl.prepare(0, 1, pp.digest, 2))
    core.step(3, cl.prepare(0, 1, pp.digest, 3))
    assert not sent(out(core), Commit)                # 2f PREPAREs, but no PRE-PREPARE yet
    core.step(0, pp)
    acts = out(core)
    assert len(sent(acts, Commit)) == 1 and core.log[1].is_prepared
    # the prepared certificate is persisted before the COMMIT leaves
    kinds = [type(a) for a in acts]
    persisted = [decode(msgpack.unpackb(a.record)[1]).NAME for a in acts if type(a) is Persist]
    assert "prepared-cert" in persisted
    assert max(i for i, k in enumerate(kinds) if k is Persist) < max(i for i, k in enumerate(kinds) if k is Broadcast)


# ============================================================================ COMMIT
@pytest.mark.parametrize("scheme", ["hash", "ed25519"])
def test_commit_needs_2f_plus_1_distinct(scheme):
    cl = Cluster(scheme)
    core = cl.core()
    pp = cl.pp(0, 1, [cl.req()])
    core.step(0, pp)
    core.step(2, cl.prepare(0, 1, pp.digest, 2))
    assert core.log[1].is_prepared
    c2 = cl.commit(0, 1, pp.digest, 2)
    for _ in range(5):
        core.step(2, c2)                               # own + 2 (many times) = 2 distinct
    assert not blocks(out(core)) and core.chain.height == 0
    core.step(0, cl.commit(0, 1, pp.digest, 0))       # the primary's COMMIT counts: 3 distinct
    bs = blocks(out(core))
    assert [b.height for b in bs] == [1] and core.chain.height == 1
    cert = bs[0].cert
    assert len(cert) == quorum.commit_quorum(F) and len({r for r, _ in cert}) == len(cert)
    assert certificate_error("pbft", F, [s.public_key for s in cl.rs], 0, 1, pp.digest, cert,
                             cl.keys().verifier) is None


def test_commit_duplicate_replica_counts_once(cl):
    core = cl.core()
    pp = cl.pp(0, 1, [cl.req()])
    core.step(0, pp)
    core.step(2, cl.prepare(0, 1, pp.digest, 2))
    for _ in range(4):
        core.step(3, cl.commit(0, 1, pp.digest, 3))
    assert core.chain.height == 0


def test_commit_requires_prepared(cl):
    core = cl.core()
    pp = cl.pp(0, 1, [cl.req()])
    core.step(0, pp)
    for r in (0, 2, 3):
        core.step(r, cl.commit(0, 1, pp.digest, r))     # 3 COMMITs but only own PREPARE
    assert core.chain.height == 0 and not blocks(out(core))
    core.step(3, cl.prepare(0, 1, pp.digest, 3))        # now prepared: the stored COMMITs count
    assert core.chain.height == 1


def test_commit_bad_signature_or_sender_rejected(cl):
    core = cl.core()
    pp = cl.pp(0, 1, [cl.req()])
    core.step(0, pp)
    core.step(2, cl.prepare(0, 1, pp.digest, 2))
    core.step(3, cl.commit(0, 1, pp.digest, 3, signer=cl.rs[2]))
    core.step(2, cl.commit(0, 1, pp.digest, 3))         # 3's COMMIT relayed by 2
    assert core.chain.height == 0
    assert drops(core, P.BAD_SIGNATURE) == 1 and drops(core, StepRule.SENDER_MISMATCH) == 1


def test_commit_for_another_digest_does_not_count(cl):
    core = cl.core()
    pp = cl.pp(0, 1, [cl.req()])
    core.step(0, pp)
    core.step(2, cl.prepare(0, 1, pp.digest, 2))
    core.step(0, cl.commit(0, 1, root_of([b"x"]), 0))
    core.step(3, cl.commit(0, 1, root_of([b"x"]), 3))
    assert core.chain.height == 0


# ============================================================================ CHECKPOINT
def test_checkpoint_emitted_every_K(cl):
    core = tracked(cl.core())
    for s in range(1, 5):
        acts = prepare_and_commit(cl, core, 0, s, [cl.req()])
        cps = sent(acts, Checkpoint)
        assert [c.seq for c in cps] == ([s] if s % K == 0 else [])
    assert core.my_checkpoint.head == core.chain.head


def test_checkpoint_stable_at_2f_plus_1_matching(cl):
    core = tracked(cl.core())
    run_to(cl, core, 2)
    cp2 = cl.checkpoint_of(core, 2)
    core.step(2, cp2)
    assert core.h == 0                                  # own + 1 = 2
    core.step(3, cl.checkpoint_of(core, 3))
    assert core.h == 2 and sorted(c.replica for c in core.stable_proof) == [1, 2, 3]


def test_checkpoint_mismatched_state_not_stable(cl):
    core = tracked(cl.core())
    run_to(cl, core, 2)
    good = cl.checkpoint_of(core, 2)
    bad3 = Checkpoint(2, bytes(32), core.chain.tree.size, core.chain.tree.root(), 3).signed(cl.rs[3])
    bad0 = Checkpoint(2, core.chain.head, core.chain.tree.size + 1, core.chain.tree.root(), 0).signed(cl.rs[0])
    for r, cp in ((2, good), (3, bad3), (0, bad0)):
        core.step(r, cp)
    assert core.h == 0


def test_checkpoint_duplicate_sender_counts_once(cl):
    core = tracked(cl.core())
    run_to(cl, core, 2)
    cp = cl.checkpoint_of(core, 2)
    for _ in range(5):
        core.step(2, cp)
    assert core.h == 0


def test_checkpoint_bad_signature_sender_or_alignment_rejected(cl):
    core = tracked(cl.core())
    run_to(cl, core, 2)
    forged = cl.checkpoint_of(core, 2, signer=cl.rs[3])
    relayed = cl.checkpoint_of(core, 2)                              # 2's checkpoint, relayed by 3
    run_to(cl, core, 3)
    ch = core.chain
    misaligned = Checkpoint(3, ch.head, ch.tree.size, ch.tree.root(), 2).signed(cl.rs[2])   # 3 % K != 0
    core.step(2, forged)
    core.step(3, relayed)
    core.step(2, misaligned)
    assert drops(core, P.BAD_SIGNATURE) == 1
    assert drops(core, StepRule.SENDER_MISMATCH) == 1
    assert drops(core, P.STALE_CHECKPOINT) == 1
    assert core.h == 0


def test_garbage_collection_at_stable_checkpoint(cl):
    core = tracked(cl.core())
    run_to(cl, core, 3)
    core.step(0, cl.pp(0, 4, [cl.req()]))              # seq 4 pre-prepared, not committed
    out(core)
    assert set(core.log) == {1, 2, 3, 4} and set(core.prepared_certs) == {1, 2, 3}
    ch = Chain()
    for b in blocks_of(core, 2):
        ch.replay(b)
    for r in (0, 2):
        core.step(r, Checkpoint(2, ch.head, ch.tree.size, ch.tree.root(), r).signed(cl.rs[r]))
    acts = out(core)
    assert core.h == 2
    assert set(core.log) == {3, 4} and set(core.prepared_certs) == {3}
    assert all(s > 2 for (_v, s) in core.votes)
    assert 2 not in core.checkpoint_votes
    compact = [a for a in acts if isinstance(a, CompactVotes)]
    assert len(compact) == 1
    # the compacted vote log still holds the vote for 4 and the stable proof
    again = cl.core(votes=compact[0].records, chain=_replayed(core))
    assert again.h == 2 and again.votes.get((0, 4)) == core.votes[(0, 4)]


def _replayed(core: PbftCore) -> Chain:
    ch = Chain()
    for b in core.disk:
        ch.replay(b)
    return ch


# ============================================================================ execution and requests
def test_execution_strictly_in_sequence_order(cl):
    core = tracked(cl.core())
    r1, r2, r3 = cl.req(), cl.req(), cl.req()
    prepare_and_commit(cl, core, 0, 3, [r3])
    prepare_and_commit(cl, core, 0, 2, [r2])
    assert core.chain.height == 0                       # 2 and 3 committed, 1 missing
    acts = prepare_and_commit(cl, core, 0, 1, [r1])
    assert [(b.height, b.sequence) for b in blocks(acts)] == [(1, 1), (2, 2), (3, 3)]
    assert [b.txs for b in blocks(acts)] == [[r1.encode()], [r2.encode()], [r3.encode()]]


def test_reply_sent_to_client_after_execution(cl):
    core = cl.core()
    r = cl.req(2)
    acts = prepare_and_commit(cl, core, 0, 1, [r])
    replies = [a for a in acts if isinstance(a, ToClient)]
    assert [(a.client, a.msg.timestamp, a.msg.height, a.msg.index, a.msg.replica) for a in replies] == \
        [(2, r.timestamp, 1, 0, ME)]
    kinds = [type(a) for a in acts]
    assert kinds.index(AppendBlock) < kinds.index(ToClient)       # durable before the reply leaves


def test_duplicate_request_gets_cached_reply(cl):
    core = cl.core()
    r = cl.req(0)
    acts = prepare_and_commit(cl, core, 0, 1, [r])
    first = [a.msg for a in acts if isinstance(a, ToClient)][0]
    core.step(0, r, True)                               # the client retransmits
    acts = out(core)
    again = [a.msg for a in acts if isinstance(a, ToClient)]
    assert len(again) == 1 and (again[0].height, again[0].index, again[0].result) == \
        (first.height, first.index, first.result)
    assert not core.pending and not sent(acts)


def test_stale_request_is_refused_with_an_answer(cl, monkeypatch):
    """A timestamp below the client's window can never execute: the client is told so
    (height 0, an INVALID result) instead of waiting for a timeout. (A window of 2 executed
    requests, so that 5 requests move it past timestamp 5.)"""
    from ledger import chain as chainmod
    from ledger.state import INVALID

    monkeypatch.setattr(chainmod, "WINDOW", 2)
    core = cl.core()
    prepare_and_commit(cl, core, 0, 1, [cl.req(0, ts=t) for t in (10, 11, 12, 13, 14)])
    core.step(0, cl.req(0, ts=5), True)
    acts = out(core)
    replies = [a.msg for a in acts if isinstance(a, ToClient)]
    assert len(replies) == 1 and replies[0].height == 0 and replies[0].timestamp == 5
    assert decode_result(replies[0].result)[0] == INVALID
    assert not core.pending and not sent(acts)


def test_request_executed_twice_in_two_batches_is_a_duplicate(cl):
    """A faulty primary proposes one request at two sequence numbers: it runs once."""
    core = tracked(cl.core())
    r = cl.req(0, key="x", value=b"1")
    prepare_and_commit(cl, core, 0, 1, [r])
    acts = prepare_and_commit(cl, core, 0, 2, [r])
    b2 = blocks(acts)[0]
    assert decode_result(b2.results[0])[0] == DUPLICATE
    reply = [a.msg for a in acts if isinstance(a, ToClient)][0]
    assert (reply.height, reply.index) == (1, 0)        # the reply names the first execution


@pytest.mark.parametrize("scheme", ["hash", "ed25519"])
def test_request_with_bad_client_signature_dropped(scheme):
    cl = Cluster(scheme)
    core = cl.core(0)
    r = cl.req(0)
    r.sig = cl.cs[1].sign(r.DOMAIN, r.signable())
    core.step(0, r, True)
    assert not sent(out(core)) and not core.pending
    assert drops(core, RequestRule.BAD_CLIENT_SIGNATURE) == 1


def test_request_for_another_client_dropped(cl):
    core = cl.core(0)
    core.step(1, cl.req(0), True)                       # client 1's channel carries client 0's request
    assert not sent(out(core)) and not core.pending
    assert drops(core, RequestRule.UNKNOWN_CLIENT) == 1


def test_message_from_a_client_other_than_request_dropped(cl):
    core = cl.core()
    core.step(0, cl.prepare(0, 1, bytes(32), 2), True)
    assert drops(core, StepRule.CLIENT_SENT_PROTOCOL) == 1


def test_message_from_non_member_or_self_dropped(cl):
    core = cl.core()
    core.step(7, cl.prepare(0, 1, bytes(32), 2))
    core.step(ME, cl.prepare(0, 1, bytes(32), ME))
    assert drops(core, StepRule.NOT_A_MEMBER) == 2


# ============================================================================ view change rules
def core_vc(cl: Cluster, core: PbftCore, r: int, new_view: int, prepared=(), stable=0, proof=()) -> ViewChange:
    return ViewChange(new_view, stable, list(proof), list(prepared), r).signed(cl.rs[r])


def prepared_cert(cl: Cluster, view: int, seq: int, reqs: list[Request]) -> PreparedCert:
    """As a VIEW-CHANGE carries it: the PRE-PREPARE without its batch (digest only)."""
    pp = strip(cl.pp(view, seq, reqs))
    backups = [b for b in range(N) if b != primary(view, N)][:2]
    return PreparedCert(pp, [cl.prepare(view, seq, pp.digest, b) for b in backups])


def test_view_change_timer_starts_only_at_2f_plus_1(cl):
    core = cl.core()
    time_out(cl, core)
    out(core)
    assert core.in_view_change and core.vc_deadline is None        # alone: no timer, no climbing
    core.tick(100.0)
    assert core.view == 1
    core.step(3, core_vc(cl, core, 3, 1))
    assert core.vc_deadline is None
    core.step(0, core_vc(cl, core, 0, 2))                          # a higher view counts as asking too
    assert core.vc_deadline is not None


def test_view_change_joined_at_f_plus_1_higher(cl):
    core = cl.core()
    core.step(2, core_vc(cl, core, 2, 3))
    assert core.view == 0 and not core.in_view_change
    core.step(3, core_vc(cl, core, 3, 2))
    assert core.view == 2 and core.in_view_change                  # joins the smallest of them


def test_view_change_with_forged_prepared_certificate_rejected(cl):
    core = cl.core(2)
    cert = prepared_cert(cl, 0, 1, [cl.req()])
    forged = PreparedCert(cert.pre_prepare, [cl.prepare(0, 1, cert.pre_prepare.digest, b, signer=cl.rs[3])
                                             for b in (1, 2)])     # replica 3 signs in 1's and 2's names
    dup = PreparedCert(cert.pre_prepare, [cert.prepares[0], cert.prepares[0]])
    not_primary = PreparedCert(strip(cl.pp(0, 1, [cl.req()], by=3, signer=cl.rs[3])), cert.prepares)
    for bad in (forged, dup, not_primary):
        core.step(3, core_vc(cl, core, 3, 1, prepared=[bad]))
        assert 3 not in core.view_changes.get(1, {})
    assert drops(core, P.PREPARED_CERT_SIGNATURE) == drops(core, P.PREPARED_CERT_REPEATS) == 1
    assert drops(core, P.PREPARED_CERT_NOT_PRIMARY) == 1
    core.step(3, core_vc(cl, core, 3, 1, prepared=[cert]))
    assert 3 in core.view_changes[1]


def test_view_change_with_bogus_checkpoint_proof_rejected(cl):
    core = cl.core(2)
    head = root_of([b"nobody got here"])
    forged = [Checkpoint(2, head, 2, head, r).signed(cl.rs[3]) for r in (0, 1, 3)]
    repeated = [Checkpoint(2, head, 2, head, 3).signed(cl.rs[3])] * 3
    for proof in (forged, repeated, []):
        core.step(3, core_vc(cl, core, 3, 1, stable=2, proof=proof))
    assert drops(core, P.CHECKPOINT_PROOF_SIGNATURE) == drops(core, P.CHECKPOINT_PROOF_REPEATS) == drops(core, P.CHECKPOINT_PROOF_SIZE) == 1
    assert 3 not in core.view_changes.get(1, {})


def test_new_view_fills_gaps_with_null_requests(cl):
    r5, r3 = cl.req(), cl.req()
    vcs = [core_vc(cl, None, 0, 1, prepared=[prepared_cert(cl, 0, 3, [r3]), prepared_cert(cl, 0, 5, [r5])]),
           core_vc(cl, None, 2, 1), core_vc(cl, None, 3, 1)]
    plan = plan_new_view(vcs)
    assert (plan.min_s, plan.max_s) == (0, 5)
    assert [(s, d) for s, d in plan.entries] == [(1, root_of([])), (2, root_of([])), (3, root_of([r3.encode()])),
                                                  (4, root_of([])), (5, root_of([r5.encode()]))]


def test_new_view_picks_the_highest_view_prepared_certificate(cl):
    old, new = cl.req(), cl.req()
    vcs = [core_vc(cl, None, 0, 3, prepared=[prepared_cert(cl, 0, 1, [old])]),
           core_vc(cl, None, 2, 3, prepared=[prepared_cert(cl, 2, 1, [new])]),
           core_vc(cl, None, 3, 3)]
    for order in (vcs, vcs[::-1]):
        assert plan_new_view(order).entries == [(1, root_of([new.encode()]))]


def test_new_view_with_wrong_O_or_too_few_view_changes_rejected(cl):
    keys = cl.keys()
    cert = prepared_cert(cl, 0, 1, [cl.req()])
    vcs = [core_vc(cl, None, 0, 1, prepared=[cert]), core_vc(cl, None, 2, 1), core_vc(cl, None, 3, 1)]
    right = [None]
    right[0] = PrePrepare(1, 1, cert.pre_prepare.digest, [], 1).signed(cl.rs[1])
    null = PrePrepare(1, 1, root_of([]), [], 1).signed(cl.rs[1])
    assert new_view_error(keys, F, NewView(1, vcs, right, 1).signed(cl.rs[1]), L)[0] is None
    assert new_view_error(keys, F, NewView(1, vcs, [null], 1).signed(cl.rs[1]), L)[0].rule is P.NEW_VIEW_WRONG_O
    assert new_view_error(keys, F, NewView(1, vcs, [], 1).signed(cl.rs[1]), L)[0].rule is P.NEW_VIEW_WRONG_O
    dup = [vcs[0], vcs[0], vcs[0]]
    assert new_view_error(keys, F, NewView(1, dup, right, 1).signed(cl.rs[1]), L)[0].rule is P.NEW_VIEW_REPEATS
    padded = vcs + [vcs[0]]                           # a valid V padded with a copy: surplus, refused
    assert new_view_error(keys, F, NewView(1, padded, right, 1).signed(cl.rs[1]), L)[0].rule is P.NEW_VIEW_SIZE
    assert new_view_error(keys, F, NewView(1, vcs[:2], right, 1).signed(cl.rs[1]), L)[0].rule is P.NEW_VIEW_SIZE
    assert new_view_error(keys, F, NewView(1, vcs, right, 2).signed(cl.rs[2]), L)[0].rule is P.NEW_VIEW_NOT_PRIMARY
