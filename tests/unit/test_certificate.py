"""ledger.certificate: what a block certificate signs (pinned to bft.wire) and its check."""
from __future__ import annotations

import itertools

import pytest

from bft import wire
from crypto.signing import Ed25519Signer, Ed25519Verifier, HashSigner, HashVerifier
from ledger import certificate as certmod
from ledger.rules import LedgerRule
from ledger.certificate import (ACCEPT_DOMAIN, COMMIT_DOMAIN, accept_statement, certificate_error,
                                commit_statement)

D = bytes(range(32))
D_OTHER = bytes(range(1, 33))
VIEW, SEQ = 3, 42


# ============================================================================ statements
VALUES = [(0, 0, bytes(32), 0), (1, 17, D, 3), (VIEW, SEQ, D, 2), (wire.MAX_U64, wire.MAX_U64, b"\xff" * 32,
                                                                 wire.MAX_U32), (1 << 33, 300, D_OTHER, 127)]


def test_domains_equal_the_wire():
    assert wire.Commit.DOMAIN == COMMIT_DOMAIN
    assert wire.PxAccept.DOMAIN == ACCEPT_DOMAIN
    assert certmod.COMMIT_TAG == wire.Commit.TAG and certmod.ACCEPT_TAG == wire.PxAccept.TAG
    assert certmod.VERSION == wire.VERSION


@pytest.mark.parametrize("view, seq, digest, replica", VALUES)
def test_commit_statement_is_commit_signable(view, seq, digest, replica):
    m = wire.Commit(view=view, seq=seq, digest=digest, replica=replica, sig=b"\x07" * 64)
    assert commit_statement(view, seq, digest, replica) == m.signable()


@pytest.mark.parametrize("ballot, slot, digest, replica", VALUES)
def test_accept_statement_is_px_accept_signable(ballot, slot, digest, replica):
    for batch, commit_index in (([], 0), ([b"tx1", b"tx2"], 5), ([b"x" * 1000], wire.MAX_U64)):
        m = wire.PxAccept(ballot=ballot, slot=slot, digest=digest, batch=batch, commit_index=commit_index,
                          replica=replica, sig=b"\x07" * 64)
        assert accept_statement(ballot, slot, digest, replica) == m.signable()


def test_statements_differ():
    assert commit_statement(VIEW, SEQ, D, 0) != accept_statement(VIEW, SEQ, D, 0)
    base = commit_statement(VIEW, SEQ, D, 0)
    assert len({base, commit_statement(VIEW + 1, SEQ, D, 0), commit_statement(VIEW, SEQ + 1, D, 0),
                commit_statement(VIEW, SEQ, D_OTHER, 0), commit_statement(VIEW, SEQ, D, 1)}) == 5


# ============================================================================ pbft certificates
def _cluster(f: int, kind: str = "ed25519", n: int | None = None):
    n = 3 * f + 1 if n is None else n
    if kind == "ed25519":
        signers = [Ed25519Signer(bytes([i + 1]) * 32) for i in range(n)]
        verifier = Ed25519Verifier()
    else:
        signers = [HashSigner(b"replica-%d" % i) for i in range(n)]
        verifier = HashVerifier(signers)
    return signers, [s.public_key for s in signers], verifier


def _commit_sig(signer, replica: int, view: int = VIEW, seq: int = SEQ, digest: bytes = D) -> bytes:
    """A real COMMIT's signature, made through bft.wire."""
    return wire.Commit(view=view, seq=seq, digest=digest, replica=replica).signed(signer).sig


def _check(f, keys, verifier, cert, view=VIEW, seq=SEQ, digest=D, mode="pbft"):
    return certificate_error(mode, f, keys, view, seq, digest, cert, verifier)


@pytest.mark.parametrize("f, kind", [(0, "ed25519"), (1, "ed25519"), (2, "hash"), (3, "hash")])
def test_pbft_quorum_of_distinct_valid_signatures(f, kind):
    signers, keys, v = _cluster(f, kind)
    n = len(signers)
    sigs = {i: _commit_sig(signers[i], i) for i in range(n)}
    # every subset of size 2f+1 certifies, every subset of size 2f does not
    for ids in itertools.combinations(range(n), 2 * f + 1):
        assert _check(f, keys, v, [(i, sigs[i]) for i in ids]) is None, ids
    for ids in itertools.combinations(range(n), 2 * f):
        why = _check(f, keys, v, [(i, sigs[i]) for i in ids])
        assert why.rule is LedgerRule.CERT_TOO_FEW_COMMITS and f"needs {2 * f + 1}" in why.detail, ids
    assert _check(f, keys, v, [(i, sigs[i]) for i in range(n)]) is None
    assert _check(f, keys, v, []) is not None


def test_pbft_duplicate_signer_counts_once():
    f = 1
    signers, keys, v = _cluster(f)
    sigs = [_commit_sig(signers[i], i) for i in range(4)]
    assert _check(f, keys, v, [(0, sigs[0]), (1, sigs[1]), (0, sigs[0])]) is not None
    assert _check(f, keys, v, [(0, sigs[0]), (1, sigs[1]), (1, sigs[1]), (1, sigs[1])]) is not None
    # the same id with a garbage signature and then a real one: still one signer
    assert _check(f, keys, v, [(2, b"\x00" * 64), (2, sigs[2]), (1, sigs[1])]) is not None
    # a third distinct signer completes it
    assert _check(f, keys, v, [(0, sigs[0]), (1, sigs[1]), (0, sigs[0]), (3, sigs[3])]) is None


def test_pbft_ids_out_of_range_do_not_count_and_do_not_raise():
    f = 1
    signers, keys, v = _cluster(f)
    sigs = [_commit_sig(signers[i], i) for i in range(4)]
    extra = Ed25519Signer(b"\x55" * 32)
    for bad_id in (4, 5, 1 << 32, -1, -4):
        # a signature by a key outside the cluster under an id outside the cluster, and
        # a member's real signature under an out-of-range id (-4 would wrap to replica 0)
        cert = [(0, sigs[0]), (1, sigs[1]), (bad_id, _commit_sig(extra, bad_id)), (bad_id, sigs[0])]
        assert _check(f, keys, v, cert) is not None, bad_id
    # a member signing under a negative alias of its own id (keys[-1] is replica 3's key in
    # Python) must not count twice: a duplicate signer in disguise
    alias = wire.Commit(view=VIEW, seq=SEQ, digest=D, replica=-1)
    alias_sig = signers[3].sign(alias.DOMAIN, commit_statement(VIEW, SEQ, D, -1))
    assert _check(f, keys, v, [(0, sigs[0]), (3, sigs[3]), (-1, alias_sig)]) is not None
    assert _check(f, keys, v, [(3, sigs[3]), (-1, alias_sig), (-2, signers[2].sign(
        COMMIT_DOMAIN, commit_statement(VIEW, SEQ, D, -2)))]) is not None
    assert alias.signable() == commit_statement(VIEW, SEQ, D, -1)
    for bad_id in (True, "2", None, 2.0):
        assert _check(f, keys, v, [(0, sigs[0]), (1, sigs[1]), (bad_id, sigs[2])]) is not None, bad_id


def test_pbft_signature_for_another_statement_is_rejected():
    f = 1
    signers, keys, v = _cluster(f)
    good = [(i, _commit_sig(signers[i], i)) for i in range(3)]
    assert _check(f, keys, v, good) is None
    for view, seq, digest in ((VIEW + 1, SEQ, D), (VIEW, SEQ + 1, D), (VIEW, SEQ, D_OTHER), (VIEW - 1, SEQ - 1, D)):
        # the same signatures checked against another (view, seq, digest)
        assert _check(f, keys, v, good, view=view, seq=seq, digest=digest) is not None
        # and one signature made for the other statement among two good ones
        cert = good[:2] + [(2, _commit_sig(signers[2], 2, view, seq, digest))]
        assert _check(f, keys, v, cert) is not None, (view, seq, digest)


def test_pbft_signature_under_the_wrong_id_or_domain_is_rejected():
    f = 1
    signers, keys, v = _cluster(f)
    sigs = [_commit_sig(signers[i], i) for i in range(4)]
    # replica 3's signature presented as replica 2's
    assert _check(f, keys, v, [(0, sigs[0]), (1, sigs[1]), (2, sigs[3])]) is not None
    # replica 2 signing the statement that names replica 3
    assert _check(f, keys, v, [(0, sigs[0]), (1, sigs[1]), (2, _commit_sig(signers[2], 3))]) is not None
    # a PREPARE over the same (view, seq, digest) is not a COMMIT
    prep = wire.Prepare(view=VIEW, seq=SEQ, digest=D, replica=2).signed(signers[2]).sig
    assert _check(f, keys, v, [(0, sigs[0]), (1, sigs[1]), (2, prep)]) is not None
    # an ACCEPT statement signed under the commit domain's key is no help either
    acc = wire.PxAccept(ballot=VIEW, slot=SEQ, digest=D, batch=[], commit_index=0, replica=2).signed(signers[2]).sig
    assert _check(f, keys, v, [(0, sigs[0]), (1, sigs[1]), (2, acc)]) is not None
    # corrupted / wrong-length signatures
    for bad in (sigs[2][:-1], sigs[2] + b"\x00", bytes([sigs[2][0] ^ 1]) + sigs[2][1:], b""):
        assert _check(f, keys, v, [(0, sigs[0]), (1, sigs[1]), (2, bad)]) is not None


def test_pbft_fake_keys_do_not_help():
    """A certificate is checked against the cluster's keys, not keys that came with it."""
    f = 1
    signers, keys, v = _cluster(f)
    forger = [Ed25519Signer(bytes([0xA0 + i]) * 32) for i in range(4)]
    assert _check(f, keys, v, [(i, _commit_sig(forger[i], i)) for i in range(4)]) is not None


def test_pbft_check_uses_the_verifier_cache():
    f = 1
    signers, keys, v = _cluster(f)
    cert = [(i, _commit_sig(signers[i], i)) for i in range(3)]
    assert _check(f, keys, v, cert) is None
    checks = v.checks
    assert _check(f, keys, v, cert) is None
    assert v.checks == checks and v.hits == 3


# ============================================================================ paxos certificates
def _accept_sig(signer, replica: int, ballot: int = VIEW, slot: int = SEQ, digest: bytes = D) -> bytes:
    return wire.PxAccept(ballot=ballot, slot=slot, digest=digest, batch=[b"tx"], commit_index=slot - 1,
                         replica=replica).signed(signer).sig


@pytest.mark.parametrize("f, kind", [(1, "ed25519"), (2, "hash")])
def test_paxos_leader_signature_accepted_non_leader_rejected(f, kind):
    signers, keys, v = _cluster(f, kind, n=2 * f + 1)
    n = len(signers)
    for ballot in range(2 * n):
        leader = ballot % n
        lsig = _accept_sig(signers[leader], leader, ballot=ballot)
        assert _check(f, keys, v, [(leader, lsig)], view=ballot, mode="paxos") is None
        # among other entries, in any position
        others = [(i, _accept_sig(signers[i], i, ballot=ballot)) for i in range(n) if i != leader]
        assert _check(f, keys, v, others + [(leader, lsig)], view=ballot, mode="paxos") is None
        # every non-leader's own valid signature is rejected, alone or all together
        for i, s in others:
            why = _check(f, keys, v, [(i, s)], view=ballot, mode="paxos")
            assert why.rule is LedgerRule.CERT_NO_LEADER_ACCEPT and f"replica {leader}" in why.detail
        assert _check(f, keys, v, others, view=ballot, mode="paxos") is not None
        # a non-leader's signature presented under the leader's id
        for i, s in others:
            assert _check(f, keys, v, [(leader, s)], view=ballot, mode="paxos") is not None
        # the certificate entry must name the leader
        for i, _ in others:
            assert _check(f, keys, v, [(i, lsig)], view=ballot, mode="paxos") is not None


def test_paxos_signature_for_another_statement_is_rejected():
    f = 1
    signers, keys, v = _cluster(f, n=3)
    leader = VIEW % 3
    for ballot, slot, digest in ((VIEW + 3, SEQ, D), (VIEW, SEQ + 1, D), (VIEW, SEQ, D_OTHER)):
        s = _accept_sig(signers[leader], leader, ballot, slot, digest)
        assert _check(f, keys, v, [(leader, s)], mode="paxos") is not None
    # a COMMIT signature of the leader is not an ACCEPT signature
    assert _check(f, keys, v, [(leader, _commit_sig(signers[leader], leader))], mode="paxos") is not None
    assert _check(f, keys, v, [], mode="paxos") is not None
    assert _check(f, keys, v, [(leader, b"")], mode="paxos") is not None


def test_modes_do_not_cross():
    f = 1
    signers, keys, v = _cluster(f)
    leader = VIEW % 4
    # a paxos leader signature is not a pbft certificate, and 2f+1 commits are not a paxos one
    assert _check(f, keys, v, [(leader, _accept_sig(signers[leader], leader))], mode="pbft") is not None
    commits = [(i, _commit_sig(signers[i], i)) for i in range(4)]
    assert _check(f, keys, v, commits, mode="paxos") is not None
    assert _check(f, keys, v, commits, mode="raft").rule is LedgerRule.CERT_UNKNOWN_MODE


def test_attestation_statement_is_the_wire_encoding():
    from bft.wire import Attestation
    from ledger.certificate import ATTEST_DOMAIN, attestation_statement

    a = Attestation(7, b"h" * 32, 12, 2)
    assert a.signable() == attestation_statement(7, b"h" * 32, 12, 2)
    assert Attestation.DOMAIN == ATTEST_DOMAIN


def test_attestations_need_f_plus_1_distinct_valid_signers():
    from crypto.keys import generate
    from crypto.signing import Ed25519Verifier
    from ledger.certificate import ATTEST_DOMAIN, attestation_error, attestation_statement

    signers = [generate() for _ in range(4)]
    keys = [s.public_key for s in signers]
    h = b"b" * 32

    def att(i: int, height: int = 5, size: int = 9) -> tuple[int, bytes]:
        return i, signers[i].sign(ATTEST_DOMAIN, attestation_statement(height, h, size, i))

    v = Ed25519Verifier()
    assert attestation_error("pbft", 1, keys, 5, h, 9, [att(0), att(3)], v) is None
    assert attestation_error("pbft", 1, keys, 5, h, 9, [att(0)], v) is not None
    assert attestation_error("pbft", 1, keys, 5, h, 9, [att(0), att(0)], v) is not None        # one id twice
    assert attestation_error("pbft", 1, keys, 5, h, 9, [att(0), att(1, height=6)], v) is not None
    assert attestation_error("pbft", 1, keys, 5, h, 8, [att(0), att(3)], v) is not None        # another size
    assert attestation_error("paxos", 1, keys[:3], 5, h, 9, [att(2)], v) is None
    assert attestation_error("paxos", 1, keys[:3], 5, h, 9, [(2, b"x" * 64)], v) is not None
