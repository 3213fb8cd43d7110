"""ledger.rangeproof: probe proofs show a page of a scan is exactly the keys in range, and every
way of lying about one is caught."""
from __future__ import annotations

import random

import pytest

from ledger import state
from ledger.rangeproof import RangeProofError, in_range, prove_page, verify_page
from ledger.state import KVStore


def _kv(keys: list[str]) -> KVStore:
    kv = KVStore()
    for k in keys:
        kv.apply(state.op_put(k, k.encode() + b"!"))
    kv.root()
    return kv


KEYS = [f"acct-{i:03d}" for i in range(0, 300, 3)] + ["a", "acct", "acct-", "b", "\u00e9t\u00e9"]


def _page(kv: KVStore, lo: str, prefix: str, end: str | None, limit: int):
    keys, proofs, more = prove_page(kv.prove, kv.read, lo, in_range(prefix, end), limit, 1 << 30)
    return [(k, kv.read(k)) for k in keys], proofs, more


@pytest.mark.parametrize("prefix,start,end", [("acct-", "", None), ("", "acct-010", "acct-100"), ("zzz", "", None),
                                               ("", "", None), ("acct-1", "acct-150", None), ("", "\u00e9", None)])
def test_honest_pages_verify_and_chain_to_the_whole_range(prefix: str, start: str, end: str | None) -> None:
    kv = _kv(KEYS)
    root = kv.root()
    want = [k for k in sorted(KEYS) if k >= start and k.startswith(prefix) and (end is None or k < end)]
    got, lo = [], max(start, prefix)
    while True:
        pairs, proofs, more = _page(kv, lo, prefix, end, 7)
        verify_page(root, lo, in_range(prefix, end), pairs, proofs, more)
        got += [k for k, _ in pairs]
        if not more:
            break
        lo = pairs[-1][0] + "\x00"
    assert got == want


def test_an_empty_state_proves_an_empty_scan() -> None:
    kv = KVStore()
    pairs, proofs, more = _page(kv, "", "", None, 10)
    assert pairs == [] and not more
    verify_page(kv.root(), "", in_range("", None), pairs, proofs, more)


def test_every_lie_about_a_page_is_caught() -> None:
    kv = _kv(KEYS)
    root = kv.root()
    inside = in_range("acct-", None)
    pairs, proofs, more = _page(kv, "acct-", "acct-", None, 1000)
    assert len(pairs) == 101 and not more          # "acct-" and 100 accounts
    rng = random.Random(16)
    lies = {
        "drop a pair": (pairs[:40] + pairs[41:], proofs, more),
        "drop a pair and its proof": (pairs[:40] + pairs[41:], proofs[:41] + proofs[42:], more),
        "add a pair": (pairs[:40] + [("acct-040x", b"x")] + pairs[40:], proofs, more),
        "alter a value": (pairs[:40] + [(pairs[40][0], b"forged")] + pairs[41:], proofs, more),
        "swap two pairs": (pairs[:40] + [pairs[41], pairs[40]] + pairs[42:], proofs, more),
        "cut short, claimed complete": (pairs[:50], proofs[:51], False),
        "cut short without the last proof": (pairs, proofs[:-1], more),
        "claim more at the end": (pairs, proofs, True),
        "a proof from another state": (pairs, [_kv(KEYS + ["zz"]).prove(p.key) for p in proofs], more),
        "shuffled proofs": (pairs, rng.sample(proofs, len(proofs)), more),
    }
    for what, (p, pr, m) in lies.items():
        with pytest.raises(RangeProofError):
            verify_page(root, "acct-", inside, p, pr, m)
            pytest.fail(what)
    verify_page(root, "acct-", inside, pairs, proofs, more)


def test_a_cut_page_proves_its_keys_and_the_next_one_goes_on_from_there() -> None:
    kv = _kv(KEYS)
    pairs, proofs, more = _page(kv, "", "", None, 5)
    assert more and len(proofs) == len(pairs) == 5
    verify_page(kv.root(), "", in_range("", None), pairs, proofs, more)
    with pytest.raises(RangeProofError):
        verify_page(kv.root(), "", in_range("", None), pairs[:4], proofs[:4], False)
