"""crypto.merkle against a naive implementation written straight from RFC 9162 §2.1.

The reference below follows the RFC's recursive definitions (MTH, PATH, PROOF/SUBPROOF)
literally, over the sub-list D[lo:hi] of one fixed list of leaves; the only liberty is a
cache on MTH(D[lo:hi]) so that every size 1..200 and every (index, size) and (old, new)
pair can be checked in a couple of seconds.
"""
from __future__ import annotations

import hashlib
import random
from functools import cache

import pytest

from crypto import merkle
from crypto.merkle import (EMPTY_ROOT, MerkleTree, leaf_hash, node_hash, root_of,
                           verify_consistency, verify_inclusion)

MAX_N = 200          # every size 1..MAX_N, every leaf index, every old size: genuine proofs
EXHAUSTIVE_N = 96    # every size up to here: every tampering of every proof
SAMPLED = 1500       # above EXHAUSTIVE_N: this many random (index/old size, size) pairs tampered

# Distinct leaves of varying length (including the empty leaf).
LEAVES: list[bytes] = [b""] + [i.to_bytes(2, "big") * (i % 5) + bytes([i % 256]) for i in range(1, MAX_N)]
assert len(set(LEAVES)) == len(LEAVES)


def _sha256(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def _k(n: int) -> int:
    """The largest power of two smaller than n (RFC 9162 §2.1.1), found by counting up."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


# --------------------------------------------------------------------------- the RFC reference
@cache
def mth(lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi])."""
    n = hi - lo
    if n == 0:
        return _sha256(b"")
    if n == 1:
        return _sha256(b"\x00" + LEAVES[lo])
    k = _k(n)
    return _sha256(b"\x01" + mth(lo, lo + k) + mth(lo + k, hi))


def path(m: int, lo: int, hi: int) -> list[bytes]:
    """PATH(m, D[lo:hi]) (RFC 9162 §2.1.3.1)."""
    n = hi - lo
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return path(m, lo, lo + k) + [mth(lo + k, hi)]
    return path(m - k, lo + k, hi) + [mth(lo, lo + k)]


def subproof(m: int, lo: int, hi: int, b: bool) -> list[bytes]:
    """SUBPROOF(m, D[lo:hi], b) (RFC 9162 §2.1.4.1)."""
    n = hi - lo
    if m == n:
        return [] if b else [mth(lo, hi)]
    k = _k(n)
    if m <= k:
        return subproof(m, lo, lo + k, b) + [mth(lo + k, hi)]
    return subproof(m - k, lo + k, hi, False) + [mth(lo, lo + k)]


def proof(m: int, n: int) -> list[bytes]:
    """PROOF(m, D[n]) for 0 < m < n."""
    return subproof(m, 0, n, True)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tree() -> MerkleTree:
    return MerkleTree(LEAVES)


def _flip(b: bytes, pos: int = 0) -> bytes:
    return b[:pos] + bytes([b[pos] ^ 0x01]) + b[pos + 1:]


# --------------------------------------------------------------------------- the reference itself
def test_reference_known_answer_certificate_transparency():
    """The root of CT's eight test leaves (certificate-transparency merkle_tree_test.cc)."""
    ct = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
          b"\x50\x51\x52\x53\x54\x55\x56\x57", bytes(range(0x60, 0x70))]
    expected = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")

    @cache
    def ref(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return _sha256(b"\x00" + ct[lo])
        k = _k(hi - lo)
        return _sha256(b"\x01" + ref(lo, lo + k) + ref(lo + k, hi))

    assert ref(0, 8) == expected            # the reference agrees with the published vector
    assert root_of(ct) == expected          # and so does the code under test
    assert MerkleTree(ct).root() == expected
    # CT's intermediate roots for sizes 1..7 (same test file)
    prefix_roots = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    ]
    tree = MerkleTree(ct)
    for size, want in enumerate(prefix_roots, start=1):
        assert ref(0, size).hex() == want
        assert tree.root(size).hex() == want


def test_empty_tree():
    assert EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert MerkleTree().root() == hashlib.sha256(b"").digest()
    assert root_of([]) == hashlib.sha256(b"").digest()
    assert MerkleTree(LEAVES).root(0) == EMPTY_ROOT
    assert len(MerkleTree()) == 0


def test_hash_domain_separation():
    assert leaf_hash(b"abc") == _sha256(b"\x00abc")
    assert node_hash(b"a" * 32, b"b" * 32) == _sha256(b"\x01" + b"a" * 32 + b"b" * 32)
    # a one-leaf tree whose leaf is the concatenation of two hashes is not a two-leaf tree
    l, r = leaf_hash(b"x"), leaf_hash(b"y")
    assert root_of([l + r]) != root_of([b"x", b"y"])


# --------------------------------------------------------------------------- roots
def test_roots_every_size(tree: MerkleTree):
    incremental = MerkleTree()
    for n in range(1, MAX_N + 1):
        incremental.append(LEAVES[n - 1])
        want = mth(0, n)
        assert tree.root(n) == want, n
        assert incremental.root() == want, n
        assert incremental.size == len(incremental) == n
    assert tree.root() == mth(0, MAX_N)


def test_root_of_and_from_leaf_hashes_agree():
    for n in (1, 2, 3, 5, 8, 13, 64, 65, 127, 200):
        want = mth(0, n)
        assert root_of(LEAVES[:n]) == want
        assert MerkleTree.from_leaf_hashes(leaf_hash(d) for d in LEAVES[:n]).root() == want


def test_append_returns_index_and_leaf_hash():
    t = MerkleTree()
    for i, d in enumerate(LEAVES[:20]):
        assert t.append(d) == i
        assert t.leaf(i) == leaf_hash(d)


def test_root_size_out_of_range(tree: MerkleTree):
    with pytest.raises(ValueError):
        tree.root(MAX_N + 1)
    with pytest.raises(ValueError):
        tree.root(-1)


# --------------------------------------------------------------------------- inclusion
def test_inclusion_every_index_every_size(tree: MerkleTree):
    for n in range(1, MAX_N + 1):
        root = mth(0, n)
        for i in range(n):
            p = tree.inclusion_proof(i, n)
            assert p == path(i, 0, n), (i, n)
            assert verify_inclusion(leaf_hash(LEAVES[i]), i, n, p, root), (i, n)


def test_inclusion_proof_default_size_is_whole_tree():
    t = MerkleTree(LEAVES[:13])
    assert t.inclusion_proof(5) == path(5, 0, 13)


def test_inclusion_proof_bad_arguments(tree: MerkleTree):
    for index, size in ((0, 0), (5, 5), (6, 5), (-1, 5), (0, MAX_N + 1)):
        with pytest.raises(ValueError):
            tree.inclusion_proof(index, size)


def _path_len(m: int, n: int) -> int:
    """len(PATH(m, D[n])) without hashing anything."""
    if n == 1:
        return 0
    k = _k(n)
    return 1 + (_path_len(m, k) if m < k else _path_len(m - k, n - k))


def _inclusion_cases():
    rng = random.Random(9162)
    for n in range(1, EXHAUSTIVE_N + 1):
        for i in range(n):
            yield i, n
    for _ in range(SAMPLED):
        n = rng.randint(EXHAUSTIVE_N + 1, MAX_N)
        yield rng.randrange(n), n


def _inclusion_tamperings(i: int, n: int, p: list[bytes], root: bytes):
    """(description, leaf, index, size, proof, root) that must all be rejected."""
    leaf = leaf_hash(LEAVES[i])
    for j in range(len(p)):
        for pos in (0, 31):
            yield f"altered element {j} byte {pos}", leaf, i, n, p[:j] + [_flip(p[j], pos)] + p[j + 1:], root
        yield f"removed element {j}", leaf, i, n, p[:j] + p[j + 1:], root
    for j in range(len(p) + 1):
        yield f"added element at {j}", leaf, i, n, p[:j] + [_sha256(b"extra")] + p[j:], root
    if p:
        yield "duplicated last element", leaf, i, n, p + [p[-1]], root
    if len(p) > 1 and p != p[::-1]:
        yield "reversed", leaf, i, n, p[::-1], root
    yield "truncated element", leaf, i, n, [x[:31] for x in p] or [b"\x00" * 31], root
    for j in {i - 1, i + 1, i ^ 1, (i + n // 2) % n, n, n + 1}:
        if j != i and j >= 0:
            yield f"wrong index {j}", leaf, j, n, p, root
    yield "negative index", leaf, -1, n, p, root
    for m in {n - 1, n + 1, 2 * n, n + 7}:
        if m > i:
            # the genuine root of the claimed size
            yield f"wrong size {m} with its root", leaf, i, m, p, mth(0, m) if m <= MAX_N else _flip(root)
            if _path_len(i, m) != len(p):
                # same root, other size: rejected because the path has another length
                # (for equal lengths see the counterexample test below)
                yield f"wrong size {m}", leaf, i, m, p, root
    yield "zero size", leaf, i, 0, p, root
    for j in {(i + 1) % n, (i + n - 1) % n, 0, n - 1}:
        if j != i:
            yield f"leaf {j} offered as leaf {i}", leaf_hash(LEAVES[j]), i, n, p, root
    yield "raw leaf data instead of leaf hash", LEAVES[i], i, n, p, root
    yield "wrong root", leaf, i, n, p, _flip(root, 17)
    # an extra element with a root made to match it: only the path length (sn) catches this
    x = _sha256(b"extra")
    yield "extra element, matching root", leaf, i, n, p + [x], node_hash(x, root)
    yield "extra element, matching root (right)", leaf, i, n, p + [x], node_hash(root, x)
    yield "root of another size", leaf, i, n, p, mth(0, n - 1) if n > 1 else _sha256(b"")
    yield "leaf of another tree", leaf_hash(LEAVES[i] + b"!"), i, n, p, root


def test_inclusion_rejects_tampering(tree: MerkleTree):
    checked = 0
    for i, n in _inclusion_cases():
        p = tree.inclusion_proof(i, n)
        root = tree.root(n)
        assert verify_inclusion(leaf_hash(LEAVES[i]), i, n, p, root)
        for what, leaf, idx, size, pr, rt in _inclusion_tamperings(i, n, p, root):
            assert not verify_inclusion(leaf, idx, size, pr, rt), (what, i, n)
            checked += 1
    assert checked > 50_000


def test_inclusion_wrong_size_counterexample_is_rfc_behaviour():
    """A proof also 'verifies' for another size when the paths have the same shape and the
    caller pairs that size with the old root: the RFC algorithm binds the root, not the
    size, so callers must take (size, root) together from one signed tree head.
    Pinned here so that a change of this behaviour is noticed."""
    t = MerkleTree(LEAVES[:4])
    p = t.inclusion_proof(0, 3)
    assert verify_inclusion(leaf_hash(LEAVES[0]), 0, 4, p, t.root(3))
    assert not verify_inclusion(leaf_hash(LEAVES[0]), 0, 4, p, t.root(4))


def test_inclusion_rejects_non_bytes_elements(tree: MerkleTree):
    p = tree.inclusion_proof(3, 10)
    root = tree.root(10)
    leaf = leaf_hash(LEAVES[3])
    assert not verify_inclusion(leaf, 3, 10, [bytearray(x) for x in p], root)
    assert not verify_inclusion(leaf, 3, 10, [x.hex() for x in p], root)
    assert not verify_inclusion(leaf, 3, 10, p[:-1] + [None], root)


# --------------------------------------------------------------------------- consistency
def test_consistency_every_pair(tree: MerkleTree):
    for n in range(1, MAX_N + 1):
        new_root = mth(0, n)
        for m in range(1, n):
            p = tree.consistency_proof(m, n)
            assert p == proof(m, n), (m, n)
            assert verify_consistency(m, n, mth(0, m), new_root, p), (m, n)
        # the trivial cases: m == n and the empty tree
        assert tree.consistency_proof(n, n) == []
        assert verify_consistency(n, n, new_root, new_root, [])
        assert tree.consistency_proof(0, n) == []
        assert verify_consistency(0, n, EMPTY_ROOT, new_root, [])


def test_consistency_proof_default_size_and_bad_arguments(tree: MerkleTree):
    t = MerkleTree(LEAVES[:21])
    assert t.consistency_proof(6) == proof(6, 21)
    for old, new in ((5, 4), (-1, 4), (3, MAX_N + 1)):
        with pytest.raises(ValueError):
            tree.consistency_proof(old, new)


def _consistency_cases():
    rng = random.Random(6962)
    for n in range(2, EXHAUSTIVE_N + 1):
        for m in range(1, n):
            yield m, n
    for _ in range(SAMPLED):
        n = rng.randint(EXHAUSTIVE_N + 1, MAX_N)
        yield rng.randint(1, n - 1), n


def _consistency_tamperings(m: int, n: int, p: list[bytes], old: bytes, new: bytes):
    """(description, old_size, new_size, old_root, new_root, proof) that must all be rejected."""
    for j in range(len(p)):
        for pos in (0, 31):
            yield f"altered element {j}", m, n, old, new, p[:j] + [_flip(p[j], pos)] + p[j + 1:]
        yield f"removed element {j}", m, n, old, new, p[:j] + p[j + 1:]
    for j in range(len(p) + 1):
        yield f"added element at {j}", m, n, old, new, p[:j] + [_sha256(b"extra")] + p[j:]
    yield "duplicated last element", m, n, old, new, p + [p[-1]]
    if len(p) > 1 and p != p[::-1]:
        yield "reversed", m, n, old, new, p[::-1]
    yield "old root prepended", m, n, old, new, [old] + p
    yield "empty proof", m, n, old, new, []
    yield "truncated element", m, n, old, new, [x[:31] for x in p]
    yield "wrong old root", m, n, _flip(old, 5), new, p
    yield "wrong new root", m, n, old, _flip(new, 5), p
    yield "roots swapped", m, n, new, old, p
    # an extra element with both roots made to match it: only the path length catches this
    x = _sha256(b"extra")
    yield "extra element, matching roots", m, n, node_hash(x, old), node_hash(x, new), p + [x]
    yield "extra element, matching new root", m, n, old, node_hash(new, x), p + [x]
    yield "new root as old root", m, n, new, new, p
    for mm in {m - 1, m + 1, 2 * m, n}:
        if 0 < mm <= n and mm != m:
            yield f"wrong old size {mm}", mm, n, old, new, p
            yield f"wrong old size {mm} with its root", mm, n, mth(0, mm), new, p
    for nn in {n - 1, n + 1, 2 * n}:
        if nn >= m and nn != n:
            yield f"wrong new size {nn} with its root", m, nn, old, mth(0, nn) if nn <= MAX_N else _flip(new), p
    yield "old size above new size", n, m, new, old, p
    yield "old size zero", 0, n, old, new, p
    yield "negative old size", -1, n, old, new, p
    yield "equal sizes", n, n, new, new, p


def test_consistency_rejects_tampering(tree: MerkleTree):
    checked = 0
    for m, n in _consistency_cases():
        p = tree.consistency_proof(m, n)
        old, new = tree.root(m), tree.root(n)
        assert verify_consistency(m, n, old, new, p)
        for what, a, b, ra, rb, pr in _consistency_tamperings(m, n, p, old, new):
            assert not verify_consistency(a, b, ra, rb, pr), (what, m, n)
            checked += 1
    assert checked > 50_000


def test_consistency_trivial_cases_are_strict():
    t = MerkleTree(LEAVES[:9])
    r9 = t.root()
    assert not verify_consistency(9, 9, r9, _flip(r9), [])
    assert not verify_consistency(9, 9, r9, r9, [r9])
    assert not verify_consistency(0, 9, _flip(EMPTY_ROOT), r9, [])
    assert not verify_consistency(0, 9, EMPTY_ROOT, r9, [r9])
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert not verify_consistency(1, 9, t.root(1), r9, [b"\x00" * 32, None])


def test_split_helper():
    for n in range(2, 300):
        assert merkle._split(n) == _k(n)
