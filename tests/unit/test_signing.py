"""crypto.signing: Ed25519 and the simulator's keyed-hash signer behind one interface."""
from __future__ import annotations

import pytest

from crypto.signing import (SIGNATURE_SIZE, Ed25519Signer, Ed25519Verifier, HashSigner,
                            HashVerifier)

D1 = b"bftledger/v1/prepare"
D2 = b"bftledger/v1/commit"
DATA = b"\x95\x0b\x01\x07\x2a\xc4\x20" + bytes(32)


def _flip(b: bytes, pos: int) -> bytes:
    return b[:pos] + bytes([b[pos] ^ 0x80]) + b[pos + 1:]


# ============================================================================ Ed25519
@pytest.fixture
def ed() -> tuple[Ed25519Signer, Ed25519Signer]:
    return Ed25519Signer(bytes(range(32))), Ed25519Signer(bytes(range(1, 33)))


def test_rfc8032_test_vector_1_and_the_signed_framing():
    """RFC 8032 §7.1 TEST 1 pins the Ed25519 underneath; a signature covers exactly
    domain || 0x00 || context || data, as plain Ed25519 over those bytes."""
    import nacl.signing

    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    raw = nacl.signing.SigningKey(seed)
    assert raw.sign(b"").signature.hex() == ("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555f"
                                             "b8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
    s = Ed25519Signer(seed, context=b"C" * 32)
    assert s.public_key.hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    sig = s.sign(D1, DATA)
    assert sig == raw.sign(D1 + b"\x00" + b"C" * 32 + DATA).signature
    assert Ed25519Verifier(context=b"C" * 32).verify(s.public_key, D1, DATA, sig)


@pytest.mark.parametrize("kind", ["ed25519", "hash"])
def test_a_signature_of_one_cluster_never_verifies_in_another(kind):
    """The cluster id is the signing context: same key, same domain, same data, other cluster."""
    ctx_a, ctx_b = b"A" * 32, b"B" * 32
    if kind == "ed25519":
        s = Ed25519Signer(bytes(range(32)), context=ctx_a)
        va, vb = Ed25519Verifier(context=ctx_a), Ed25519Verifier(context=ctx_b)
    else:
        s = HashSigner(b"secret", context=ctx_a)
        va, vb = HashVerifier([s], context=ctx_a), HashVerifier([s], context=ctx_b)
    sig = s.sign(D1, DATA)
    assert va.verify(s.public_key, D1, DATA, sig)
    assert not vb.verify(s.public_key, D1, DATA, sig)
    assert s.bound(ctx_b).sign(D1, DATA) != sig


def test_ed25519_sign_verify(ed):
    a, _ = ed
    sig = a.sign(D1, DATA)
    assert type(sig) is bytes and len(sig) == SIGNATURE_SIZE
    assert a.sign(D1, DATA) == sig                      # deterministic
    assert Ed25519Verifier().verify(a.public_key, D1, DATA, sig)


def test_ed25519_domain_separation(ed):
    a, _ = ed
    v = Ed25519Verifier()
    sig = a.sign(D1, DATA)
    assert not v.verify(a.public_key, D2, DATA, sig)
    assert not v.verify(a.public_key, b"", DATA, sig)
    assert a.sign(D2, DATA) != sig
    assert v.verify(a.public_key, D1, DATA, sig)


def test_ed25519_altered_data_sig_or_key_fail(ed):
    a, b = ed
    v = Ed25519Verifier()
    sig = a.sign(D1, DATA)
    for pos in range(len(DATA)):
        assert not v.verify(a.public_key, D1, _flip(DATA, pos), sig), pos
    assert not v.verify(a.public_key, D1, DATA + b"\x00", sig)
    assert not v.verify(a.public_key, D1, DATA[:-1], sig)
    for pos in (0, 1, 31, 32, 33, 63):
        assert not v.verify(a.public_key, D1, DATA, _flip(sig, pos)), pos
    assert not v.verify(b.public_key, D1, DATA, sig)          # wrong key
    assert not v.verify(a.public_key, D1, DATA, b.sign(D1, DATA))  # someone else's signature
    assert v.verify(a.public_key, D1, DATA, sig)


def test_ed25519_cache_hit_does_not_recheck(ed):
    a, _ = ed
    v = Ed25519Verifier()
    sig = a.sign(D1, DATA)
    assert (v.checks, v.hits) == (0, 0)
    assert v.verify(a.public_key, D1, DATA, sig)
    assert (v.checks, v.hits) == (1, 0)
    assert v.verify(a.public_key, D1, DATA, sig)
    assert (v.checks, v.hits) == (1, 1)
    assert v.verify(a.public_key, D1, DATA, sig)
    assert (v.checks, v.hits) == (1, 2)
    # another triple is a miss
    sig2 = a.sign(D1, DATA + b"!")
    assert v.verify(a.public_key, D1, DATA + b"!", sig2)
    assert (v.checks, v.hits) == (2, 2)


def test_ed25519_cache_keys_on_the_whole_triple(ed):
    """A cached success must not make a different (key, domain, data, sig) pass."""
    a, b = ed
    v = Ed25519Verifier()
    sig = a.sign(D1, DATA)
    assert v.verify(a.public_key, D1, DATA, sig)
    assert not v.verify(b.public_key, D1, DATA, sig)
    assert not v.verify(a.public_key, D2, DATA, sig)
    assert not v.verify(a.public_key, D1, DATA[:-1], sig)
    assert not v.verify(a.public_key, D1, DATA, _flip(sig, 5))
    assert v.hits == 0


def test_ed25519_failure_is_not_cached(ed):
    a, _ = ed
    v = Ed25519Verifier()
    bad = _flip(a.sign(D1, DATA), 10)
    for _ in range(3):
        assert not v.verify(a.public_key, D1, DATA, bad)
    assert v.hits == 0
    assert v.checks == 3             # each failure is checked again, never answered from cache
    assert not v.verify(a.public_key, D1, DATA, bad)


def test_ed25519_cache_capacity_evicts_oldest(ed):
    a, _ = ed
    v = Ed25519Verifier(capacity=2)
    sigs = [a.sign(D1, bytes([i])) for i in range(3)]
    for i, s in enumerate(sigs):
        assert v.verify(a.public_key, D1, bytes([i]), s)
    assert v.checks == 3
    assert v.verify(a.public_key, D1, bytes([2]), sigs[2]) and v.hits == 1   # still cached
    assert v.verify(a.public_key, D1, bytes([0]), sigs[0]) and v.checks == 4  # evicted: rechecked


@pytest.mark.parametrize("length", [0, 1, 32, 63, 65, 128])
def test_ed25519_wrong_length_signature_is_false(ed, length):
    a, _ = ed
    sig = a.sign(D1, DATA)
    v = Ed25519Verifier()
    assert v.verify(a.public_key, D1, DATA, (sig * 3)[:length]) is False
    assert v.checks == 0


@pytest.mark.parametrize("pk", [
    b"", b"\x01", b"\x00" * 31, b"\x00" * 33, b"\xff" * 64,     # wrong length
    b"\xff" * 32,                                              # not a curve point encoding
    b"\x01" + b"\x00" * 31,                                    # the identity (small order)
    b"\x00" * 32,                                              # small order
])
def test_ed25519_garbage_public_key_is_false(ed, pk):
    a, _ = ed
    v = Ed25519Verifier()
    sig = a.sign(D1, DATA)
    assert v.verify(pk, D1, DATA, sig) is False
    assert v.verify(pk, D1, DATA, sig) is False      # and again (the key cache must not help it)
    assert v.verify(a.public_key, D1, DATA, sig) is True


def test_ed25519_verifier_returns_bool(ed):
    a, _ = ed
    v = Ed25519Verifier()
    sig = a.sign(D1, DATA)
    assert v.verify(a.public_key, D1, DATA, sig) is True
    assert v.verify(a.public_key, D1, DATA, sig) is True          # cached path
    assert v.verify(a.public_key, D2, DATA, sig) is False


# ============================================================================ keyed hash
@pytest.fixture
def hs() -> tuple[HashSigner, HashSigner]:
    return HashSigner(b"secret-a"), HashSigner(b"secret-b")


def test_hash_sign_verify(hs):
    a, b = hs
    v = HashVerifier([a, b])
    sig = a.sign(D1, DATA)
    assert type(sig) is bytes and len(sig) == SIGNATURE_SIZE
    assert len(a.public_key) == 32 and a.public_key != b.public_key
    assert v.verify(a.public_key, D1, DATA, sig) is True
    assert v.checks == 1


def test_hash_domain_separation(hs):
    a, b = hs
    v = HashVerifier([a, b])
    sig = a.sign(D1, DATA)
    assert v.verify(a.public_key, D2, DATA, sig) is False
    assert a.sign(D2, DATA) != sig


def test_hash_altered_data_sig_or_key_fail(hs):
    a, b = hs
    v = HashVerifier([a, b])
    sig = a.sign(D1, DATA)
    for pos in range(len(DATA)):
        assert not v.verify(a.public_key, D1, _flip(DATA, pos), sig)
    for pos in (0, 31, 63):
        assert not v.verify(a.public_key, D1, DATA, _flip(sig, pos))
    assert not v.verify(b.public_key, D1, DATA, sig)


def test_hash_forgery_with_another_secret_fails(hs):
    a, b = hs
    v = HashVerifier([a, b])
    forger = HashSigner(b"secret-x")
    assert not v.verify(a.public_key, D1, DATA, forger.sign(D1, DATA))
    # a forger that claims a's public key but does not hold a's secret
    assert not v.verify(a.public_key, D1, DATA, b.sign(D1, DATA))
    # a key the verifier was never told about is never accepted, even with a "valid" tag
    assert not v.verify(forger.public_key, D1, DATA, forger.sign(D1, DATA))
    assert HashVerifier().verify(a.public_key, D1, DATA, a.sign(D1, DATA)) is False


def test_hash_register_later(hs):
    a, _ = hs
    v = HashVerifier()
    sig = a.sign(D1, DATA)
    assert not v.verify(a.public_key, D1, DATA, sig)
    v.register(a)
    assert v.verify(a.public_key, D1, DATA, sig)


@pytest.mark.parametrize("length", [0, 32, 63, 65])
def test_hash_wrong_length_signature_is_false(hs, length):
    a, _ = hs
    v = HashVerifier([a])
    assert v.verify(a.public_key, D1, DATA, (a.sign(D1, DATA) * 2)[:length]) is False


def test_hash_garbage_public_key_is_false(hs):
    a, _ = hs
    v = HashVerifier([a])
    sig = a.sign(D1, DATA)
    for pk in (b"", b"\x00" * 32, b"\xff" * 33, a.public_key[:-1]):
        assert v.verify(pk, D1, DATA, sig) is False


def test_hash_and_ed25519_signatures_do_not_cross(hs):
    a, _ = hs
    e = Ed25519Signer(bytes(32))
    assert not HashVerifier([a]).verify(a.public_key, D1, DATA, e.sign(D1, DATA))
    assert not Ed25519Verifier().verify(e.public_key, D1, DATA, a.sign(D1, DATA))
