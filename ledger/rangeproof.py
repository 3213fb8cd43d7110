"""Verified scans: a chain of state proofs that shows a page of keys is exactly the keys in range.

The form chosen (README, "History and scans"): **probe proofs**. The state tree is a
search tree in key order (``ledger.statetree``), and a proof of any key, present or
absent, is that key's search path in the committed tree, with each node's key and value
hash. For a probe key q:

- if q is present, its proof shows q and its value: the least key >= q is q itself;
- if q is absent, the search for q ends at an empty child, and the least key above q
  is the deepest node on the path where the search went left (no such node: no key is
  above q). Its value hash is on the path.

A page of a scan from ``lo`` is proven by probes q0 = lo, then q(i+1) = k(i) + "\\0"
(the least string above k(i), so nothing lies between k(i) and q(i+1)): each probe
names the next key in the tree and its value hash, so consecutive keys are adjacent,
and the first key is the least one >= lo. The last probe either names a key out of
range (at or above ``end``, or past the prefix) or no key: the page is complete; or
the page stops at its limit (``more``), and the next page starts its own chain where
this one ended. One proof per key (plus one at the end), each about a search path:
1-2 KiB at 1,000 to 100,000 keys.

Every proof is checked against one state root, which the client takes from a block it
has verified (certificate and roots) and that f+1 replicas attested (pbft), so no
replica can add, drop, reorder or alter a pair.

Limit: a probe is a key of at most 1,024 bytes, so a chain cannot step past a key of
exactly 1,024 bytes (``RangeProofError`` names it); such keys are not scannable with
proofs yet.
"""
from __future__ import annotations

from typing import Callable

from ledger.state import MAX_KEY
from ledger.statetree import StateProof, StateProofError, value_hash


class RangeProofError(ValueError):
    """A page of a verified scan that does not prove what it claims; the message says why."""


def next_of(proof: StateProof, q: str) -> tuple[str, bytes] | None:
    """The least key >= ``q`` that a (verified) proof of ``q`` shows, with its value hash;
    None when the tree holds no key >= q."""
    if proof.value is not None:
        return q, value_hash(proof.value)
    best = None
    for nk, vh, _ in proof.path:
        if q < nk:
            best = (nk, vh)                  # deeper ones overwrite: the deepest left turn
    return best


def probe_after(key: str) -> str:
    """The least key above ``key``; RangeProofError when it would be over the key limit."""
    q = key + "\x00"
    if len(q.encode()) > MAX_KEY:
        raise RangeProofError(f"a verified scan cannot step past the key {key[:40]!r}... of {MAX_KEY:,} bytes "
                              "(the probe above it would be over the key limit)")
    return q


def in_range(prefix: str, end: str | None) -> Callable[[str], bool]:
    return lambda k: k.startswith(prefix) and (end is None or k < end)


def prove_page(prove: Callable[[str], StateProof], read: Callable[[str], bytes | None], lo: str,
               inside: Callable[[str], bool], limit: int, max_bytes: int) -> tuple[list[str], list[StateProof], bool]:
    """Server side: the keys of a page from ``lo`` (at most ``limit``), the probe proofs
    that prove it, and whether the page was cut (at ``limit``, or at ``max_bytes`` of
    proofs and values)."""
    keys: list[str] = []
    proofs: list[StateProof] = []
    size = 0
    q = lo
    while True:
        p = prove(q)
        proofs.append(p)
        size += 64 + sum(len(nk) + 64 for nk, _, _ in p.path) + len(p.value or b"")
        nxt = next_of(p, q)
        if nxt is None or not inside(nxt[0]):
            return keys, proofs, False
        keys.append(nxt[0])
        size += len(read(nxt[0]) or b"")
        if len(keys) >= limit or size > max_bytes:
            return keys, proofs, True
        q = probe_after(nxt[0])


def verify_page(root: bytes, lo: str, inside: Callable[[str], bool], pairs: list[tuple[str, bytes]],
                proofs: list[StateProof], more: bool) -> None:
    """Client side: that ``pairs`` are exactly the keys of the state under ``root`` from
    ``lo`` on, in order, with their values, and, unless ``more``, all of the keys in range."""
    q = lo
    i = 0
    for n, p in enumerate(proofs):
        if p.key != q:
            raise RangeProofError(f"proof {n} is about {p.key!r}, the probe there is {q!r}")
        try:
            p.verify(root, q)
        except StateProofError as e:
            raise RangeProofError(f"proof {n}: {e}") from None
        nxt = next_of(p, q)
        if nxt is None or not inside(nxt[0]):
            if n != len(proofs) - 1 or i != len(pairs):
                raise RangeProofError(f"the keys in range end at proof {n}, but the page goes on")
            if more:
                raise RangeProofError("the page says more keys follow, but its last proof shows none in range")
            return
        if i >= len(pairs):
            raise RangeProofError(f"the state holds {nxt[0]!r} in range, which the page leaves out")
        k, v = pairs[i]
        if k != nxt[0]:
            raise RangeProofError(f"the page has {k!r} where the state's next key is {nxt[0]!r}")
        if value_hash(v) != nxt[1]:
            raise RangeProofError(f"the value of {k!r} is not the one the state holds")
        i += 1
        if i < len(pairs) or not more:
            q = probe_after(k)
        elif n != len(proofs) - 1:
            raise RangeProofError("proofs follow the last key of a page that was cut")
    if not more or i != len(pairs):
        raise RangeProofError("the proofs end before they show where the keys in range end")
