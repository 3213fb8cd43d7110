"""The authenticated key-value state: a Merkle treap over the keys, and its proofs.

Why a treap (README, "The authenticated state"): the root must prove presence and
absence now, and ordered scans later (a range proof needs the keys in order), and no
client may make a replica's per-write cost or a proof's size grow by choosing its keys.

The structure is a binary search tree ordered by key (the UTF-8 bytes, which is
Python's ``str`` order) and heap-ordered by a priority that is a hash of the key: the
key with the highest priority is the root, the keys below it form the left subtree, the
keys above it the right one, recursively. The shape is therefore a function of the set
of keys alone, never of the order of the writes that made it (history independence):
every replica, a replay and an offline verifier who knows the key-value map compute the
same root. The expected depth is about 2 ln n (a random binary search tree), and a
client that wants one key d levels deeper than that must grind about 2^d hashes,
because it controls a key's priority only through the hash.

Every node carries one key-value pair and hashes it with its two children::

    node  = SHA-256(0x11 || u16 len(key) || key || SHA-256(value) || left || right)
    empty = SHA-256(0x10)                    (an absent child; also the empty state's root)
    priority(key) = SHA-256(0x12 || key)     (bytes, compared as big-endian numbers)

A proof of a key is its search path from the root: each node's key, value hash and the
hash of the child not taken, then either the key's own node (presence: its value and
both children) or an empty child where the key would be (absence). The verifier
re-derives every direction from the key it asks about, so the path is the search path
of that key in the committed tree, which ends at the key if and only if it is present.

Writes are cheap because the tree is brought up to date once per block, not per write
(``StateTree.put`` and ``delete`` only touch the structure and mark the search path; the
hashes of marked nodes are recomputed by ``root``, each once, bottom up).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator

import msgpack

__all__ = ["StateTree", "StateProof", "StateProofError", "EMPTY_STATE_ROOT", "MAX_PROOF_STEPS",
           "MAX_PROOF_BYTES", "node_hash", "value_hash", "priority"]

_sha = hashlib.sha256

EMPTY_STATE_ROOT = _sha(b"\x10").digest()
_NODE = b"\x11"
_PRIORITY = b"\x12"

MAX_KEY = 1024                  # ledger.state.MAX_KEY (a key's UTF-8 bytes); restated to avoid a cycle
MAX_VALUE = 64 * 1024           # a value comes from one operation, which is at most 64 KiB (ledger.tx.MAX_OP)
# The expected depth of a node is about 2 ln n (28 for a million keys, 42 for a billion); a
# path longer than 256 would need an attacker to grind about 2^200 hashes. A proof longer
# than this is refused by the decoder and never built (``prove`` raises).
MAX_PROOF_STEPS = 256
PROOF_TAG, PROOF_VERSION = 0x53, 1
# the largest well-formed encoding: every step at the longest key, plus the value (msgpack
# framing included with room to spare); checked before the bytes are unpacked
MAX_PROOF_BYTES = MAX_PROOF_STEPS * (MAX_KEY + 80) + MAX_KEY + MAX_VALUE + 256


def value_hash(value: bytes) -> bytes:
    return _sha(value).digest()


def priority(kb: bytes) -> bytes:
    """A key's heap priority (the UTF-8 bytes of the key)."""
    return _sha(_PRIORITY + kb).digest()


def _prefix(kb: bytes, vh: bytes) -> bytes:
    """The part of a node's hash input that depends on the node alone."""
    return b"".join((_NODE, len(kb).to_bytes(2, "big"), kb, vh))


def node_hash(key: str, vh: bytes, left: bytes, right: bytes) -> bytes:
    return _sha(_prefix(key.encode(), vh) + left + right).digest()


class StateProofError(ValueError):
    """A proof that does not prove what it claims (or is not a proof); the message says why."""


class _Node:
    __slots__ = ("key", "pre", "prio", "left", "right", "h")

    def __init__(self, key: str, pre: bytes, prio: bytes) -> None:
        self.key = key
        self.pre = pre                    # _prefix(key, value hash)
        self.prio = prio
        self.left: _Node | None = None
        self.right: _Node | None = None
        self.h: bytes | None = None       # None: changed since the last root(); so are its ancestors


class StateTree:
    """The Merkle treap of the module doc; holds value hashes only (the caller holds values).

    Invariant between calls: a node whose hash is stale (``h is None``) has only stale
    ancestors, so ``root`` finds every stale node by descending from the root through
    stale nodes only.
    """

    __slots__ = ("_root", "_size")

    def __init__(self) -> None:
        self._root: _Node | None = None
        self._size = 0

    def __len__(self) -> int:
        return self._size

    # ------------------------------------------------------------------ writing
    def put(self, key: str, value: bytes) -> None:
        """Set ``key`` to ``value`` (inserting the key if it is new)."""
        kb = key.encode()
        pre = _prefix(kb, _sha(value).digest())
        path: list[_Node] = []
        n = self._root
        while n is not None:
            n.h = None                              # on the search path: rehashed by root()
            if key == n.key:
                n.pre = pre
                return
            path.append(n)
            n = n.left if key < n.key else n.right
        # a new key: it goes above the first node on its search path with a lower priority,
        # and that node's subtree is split around the key into the new node's children
        prio = _sha(_PRIORITY + kb).digest()
        new = _Node(key, pre, prio)
        i = 0
        while i < len(path) and path[i].prio > prio:
            i += 1
        below = path[i] if i < len(path) else None
        new.left, new.right = _split(below, key)
        self._link(path[i - 1] if i else None, key, new)
        self._size += 1

    def delete(self, key: str) -> None:
        """Remove ``key``; a key that is not there is left alone."""
        parent: _Node | None = None
        n = self._root
        while n is not None and n.key != key:
            n.h = None
            parent = n
            n = n.left if key < n.key else n.right
        if n is None:
            return
        self._link(parent, key, _merge(n.left, n.right))
        self._size -= 1

    def _link(self, parent: _Node | None, key: str, child: _Node | None) -> None:
        """Put ``child`` where ``key``'s search leaves ``parent`` (the root if None)."""
        if parent is None:
            self._root = child
        elif key < parent.key:
            parent.left = child
        else:
            parent.right = child

    # ------------------------------------------------------------------ reading
    def root(self) -> bytes:
        """The root hash; recomputes every node changed since the last call, each once."""
        top = self._root
        if top is None:
            return EMPTY_STATE_ROOT
        if top.h is None:
            _rehash(top)
        return top.h

    def prove(self, key: str) -> tuple[list[tuple[str, bytes, bytes]], tuple[bytes, bytes] | None]:
        """``key``'s search path (node key, value hash, hash of the child not taken), root
        first, and the children hashes of ``key``'s node when it is present (else None)."""
        self.root()
        path: list[tuple[str, bytes, bytes]] = []
        n = self._root
        while n is not None:
            if key == n.key:
                return path, (_hash_of(n.left), _hash_of(n.right))
            if len(path) >= MAX_PROOF_STEPS:
                raise StateProofError(f"the search path of {key!r} is longer than {MAX_PROOF_STEPS} nodes")
            if key < n.key:
                path.append((n.key, n.pre[-32:], _hash_of(n.right)))
                n = n.left
            else:
                path.append((n.key, n.pre[-32:], _hash_of(n.left)))
                n = n.right
        return path, None

    def keys_from(self, start: str) -> Iterator[str]:
        """The keys at or above ``start``, in key order (O(log n) to the first, then O(1) each
        amortised): what a scan walks. The tree must not change while it is iterated."""
        stack: list[_Node] = []
        n = self._root
        while n is not None:
            if n.key >= start:
                stack.append(n)
                n = n.left
            else:
                n = n.right
        while stack:
            n = stack.pop()
            yield n.key
            m = n.right
            while m is not None:
                stack.append(m)
                m = m.left

    def depth(self) -> int:
        """The number of nodes on the longest root-to-leaf path (for measurements and tests)."""
        best, stack = 0, [(self._root, 1)] if self._root is not None else []
        while stack:
            n, d = stack.pop()
            best = max(best, d)
            stack.extend((c, d + 1) for c in (n.left, n.right) if c is not None)
        return best


def _hash_of(n: _Node | None) -> bytes:
    return EMPTY_STATE_ROOT if n is None else n.h


def _split(n: _Node | None, key: str) -> tuple[_Node | None, _Node | None]:
    """Split the subtree ``n`` (which does not hold ``key``) into the keys below and above it.

    Top-down and iterative (a subtree may be deep): every node on ``key``'s search path
    goes to one side, keeping its subtree on the far side, and is marked stale."""
    lo_root = hi_root = lo_tail = hi_tail = None
    while n is not None:
        n.h = None
        if n.key < key:
            if lo_tail is None:
                lo_root = n
            else:
                lo_tail.right = n
            lo_tail, n = n, n.right
        else:
            if hi_tail is None:
                hi_root = n
            else:
                hi_tail.left = n
            hi_tail, n = n, n.left
    if lo_tail is not None:
        lo_tail.right = None
    if hi_tail is not None:
        hi_tail.left = None
    return lo_root, hi_root


def _merge(a: _Node | None, b: _Node | None) -> _Node | None:
    """Join two subtrees, every key of ``a`` below every key of ``b``, by priority.

    Walks down a's right spine and b's left spine together, iteratively; touched nodes
    are marked stale."""
    head: _Node | None = None
    tail: _Node | None = None
    tail_takes_right = False
    while a is not None and b is not None:
        if a.prio > b.prio:
            top, a_side = a, True
        else:
            top, a_side = b, False
        top.h = None
        if tail is None:
            head = top
        elif tail_takes_right:
            tail.right = top
        else:
            tail.left = top
        tail = top
        if a_side:                          # a's root stays on top; merge its right subtree with b
            tail_takes_right, a = True, a.right
        else:                               # b's root stays on top; merge a with its left subtree
            tail_takes_right, b = False, b.left
    rest = a if a is not None else b
    if tail is None:
        return rest
    if tail_takes_right:
        tail.right = rest
    else:
        tail.left = rest
    return head


def _rehash(top: _Node) -> None:
    """Recompute the stale nodes under ``top`` bottom up, with an explicit stack."""
    empty = EMPTY_STATE_ROOT
    stack = [top]
    while stack:
        n = stack[-1]
        left, right = n.left, n.right
        if left is not None and left.h is None:
            stack.append(left)
            continue
        if right is not None and right.h is None:
            stack.append(right)
            continue
        stack.pop()
        n.h = _sha(b"".join((n.pre, empty if left is None else left.h,
                             empty if right is None else right.h))).digest()


@dataclass(frozen=True, slots=True)
class StateProof:
    """That ``key`` has ``value`` (None: that it is absent) in the state under a root.

    ``path`` is the key's search path from the root: (node key, value hash, hash of the
    child not taken) per node; ``children`` are the left and right child hashes of the
    key's own node when it is present, and None for an absence.
    """
    key: str
    value: bytes | None
    path: tuple[tuple[str, bytes, bytes], ...]
    children: tuple[bytes, bytes] | None

    def verify(self, root: bytes, key: str | None = None) -> bytes | None:
        """The proven value (None: proven absent) if the proof leads to ``root``; raises
        StateProofError otherwise. Give ``key`` to be sure the proof is about that key."""
        if key is not None and key != self.key:
            raise StateProofError(f"the proof is about key {self.key!r}, not {key!r}")
        if type(root) is not bytes or len(root) != 32:
            raise StateProofError("a state root is 32 bytes")
        _check_shape(self)
        k = self.key
        if self.value is None:
            if self.children is not None:
                raise StateProofError("an absence proof has no node of its own")
            h = EMPTY_STATE_ROOT
        else:
            if self.children is None:
                raise StateProofError("a presence proof needs the children of the key's node")
            h = node_hash(k, value_hash(self.value), *self.children)
        lo: str | None = None            # the path narrows the interval the key must lie in
        hi: str | None = None
        for nk, _, _ in self.path:
            if nk == k:
                raise StateProofError(f"key {k!r} is on its own search path above its node")
            if (lo is not None and nk <= lo) or (hi is not None and nk >= hi):
                raise StateProofError("the path's keys are not in search-tree order")
            if k < nk:
                hi = nk
            else:
                lo = nk
        for nk, vh, sibling in reversed(self.path):
            h = node_hash(nk, vh, h, sibling) if k < nk else node_hash(nk, vh, sibling, h)
        if h != root:
            what = "value" if self.value is not None else "absence"
            raise StateProofError(f"the proof of the {what} of {k!r} does not lead to the state root "
                                  f"{root.hex()[:16]} (another value, another state or a forged path)")
        return self.value

    # ------------------------------------------------------------------ encoding
    def encode(self) -> bytes:
        return msgpack.packb([PROOF_TAG, PROOF_VERSION, self.key, self.value,
                              [list(s) for s in self.path],
                              None if self.children is None else list(self.children)], use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> "StateProof":
        """Parse an encoded proof, bounded in size before and while unpacking; anything
        malformed raises StateProofError (the proof is not checked against a root here)."""
        if type(data) is not bytes or len(data) > MAX_PROOF_BYTES:
            raise StateProofError(f"a state proof is at most {MAX_PROOF_BYTES} bytes")
        try:
            v = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True,
                                max_bin_len=MAX_VALUE, max_str_len=MAX_KEY,
                                max_array_len=MAX_PROOF_STEPS, max_map_len=0, max_ext_len=0)
        except Exception as e:
            raise StateProofError(f"not a state proof: not msgpack ({type(e).__name__})") from None
        if type(v) is not list or len(v) != 6 or v[0] != PROOF_TAG:
            raise StateProofError("not a state proof")
        if v[1] != PROOF_VERSION:
            raise StateProofError(f"unsupported state proof version {v[1]!r}")
        _, _, key, value, path, children = v
        if type(path) is not list or any(type(s) is not list or len(s) != 3 for s in path):
            raise StateProofError("a proof's path is a list of [key, value hash, sibling hash]")
        if children is not None and (type(children) is not list or len(children) != 2):
            raise StateProofError("a proof's children are [left hash, right hash]")
        proof = cls(key, value, tuple((s[0], s[1], s[2]) for s in path),
                    None if children is None else (children[0], children[1]))
        _check_shape(proof)
        return proof


def _is_key(k: object) -> bool:
    """A string whose UTF-8 encoding (lone surrogates have none) is at most MAX_KEY bytes."""
    if type(k) is not str:
        return False
    try:
        return len(k.encode()) <= MAX_KEY
    except UnicodeEncodeError:
        return False


def _check_shape(p: StateProof) -> None:
    """Types and bounds of every field (a proof built in code or decoded from bytes)."""
    if not _is_key(p.key):
        raise StateProofError(f"a proof's key is a string of at most {MAX_KEY} UTF-8 bytes")
    if p.value is not None and (type(p.value) is not bytes or len(p.value) > MAX_VALUE):
        raise StateProofError(f"a proof's value is bytes, at most {MAX_VALUE}, or None")
    if len(p.path) > MAX_PROOF_STEPS:
        raise StateProofError(f"a proof's path has at most {MAX_PROOF_STEPS} nodes")
    for nk, vh, sib in p.path:
        if not _is_key(nk):
            raise StateProofError("a path node's key is not a key")
        if type(vh) is not bytes or len(vh) != 32 or type(sib) is not bytes or len(sib) != 32:
            raise StateProofError("a path node's hashes are 32 bytes each")
    if p.children is not None and (len(p.children) != 2 or
                                   any(type(c) is not bytes or len(c) != 32 for c in p.children)):
        raise StateProofError("a node's children hashes are 32 bytes each")
