"""The replicated application: a key-value map with put, get, delete, compare-and-set and
atomic multi-key transactions.

Operations and results are msgpack arrays so that every replica computes byte-identical
results. ``get`` is an operation, so a read can be ordered through consensus like a write
(linearizable: ``client.get(key, linearizable=True)``); a plain read is answered by the
replicas from their executed state without ordering (``query``; PBFT's read-only
optimisation, see ``ledger.clientcore``), and it never becomes a transaction. For those
answers every key remembers the height of the block that last wrote it (``since``), so that
a client can tell the same value at different heights apart from a value that changed and
changed back.

A transaction (``op_txn``) applies puts and deletes over several keys if and only if every
requirement holds (a key has an expected value, or is absent): all of it, or none of it,
in one step of the state machine, so no crash or concurrent writer can come between its
parts. When a requirement fails, the result lists the unmet requirements with their
current values.

The state is authenticated (issue 16): ``root()`` is the root of a Merkle treap over the
map (``ledger.statetree``), which every block header commits to, and ``prove(key)`` proves
a key's value or its absence against it. A write costs O(1) here (the key is noted as
changed); the tree is brought up to date once per block, when the chain asks for the root,
so a key written many times in a block costs one tree update.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

import msgpack

from ledger.statetree import StateProof, StateTree

MAX_KEY = 1024
MAX_TXN_ENTRIES = 1000          # puts + deletes + requirements of one transaction (the 64 KiB operation bounds it too)

# result status codes
OK = 0
FAILED = 1      # compare-and-set whose expectation did not hold
INVALID = 2     # malformed operation (deterministically rejected)
DUPLICATE = 3   # a retransmitted request already executed: not applied again
BUSY = 4        # not a result of execution: a replica refused to hold the request (never in a block)

# what replicas answer (at height 0) to a request below its client's window (ledger.chain.ClientState)
STALE_TEXT = b"stale timestamp: below the client's window of executable requests"

STATUS_NAMES = {OK: "ok", FAILED: "failed", INVALID: "invalid", DUPLICATE: "duplicate", BUSY: "busy"}


def op_put(key: str, value: bytes) -> bytes:
    return msgpack.packb(["put", key, value], use_bin_type=True)


def op_get(key: str) -> bytes:
    return msgpack.packb(["get", key], use_bin_type=True)


def op_delete(key: str) -> bytes:
    return msgpack.packb(["del", key], use_bin_type=True)


def op_cas(key: str, expected: bytes | None, new: bytes) -> bytes:
    return msgpack.packb(["cas", key, expected, new], use_bin_type=True)


def op_txn(puts: dict[str, bytes], deletes: list[str], require: dict[str, bytes | None]) -> bytes:
    """Keys sorted: one transaction has one encoding, whatever order the caller built it in."""
    return msgpack.packb(["txn", sorted(puts.items()), sorted(deletes), sorted(require.items())],
                         use_bin_type=True)


def op_addclient(cert_pem: bytes) -> bytes:
    """Register a new client (``ledger.clients``); only the administrator's request executes."""
    return msgpack.packb(["addclient", cert_pem], use_bin_type=True)


REGISTRATION_PREFIX = op_addclient(b"")[:11]     # fixarray(2), "addclient": the one encoding's first bytes
MAX_CERT = 4096


def is_registration(op: bytes) -> bool:
    """Whether ``op`` is a registration in its one encoding (another encoding executes as
    INVALID, so this prefix test is exact for whatever can register a client)."""
    return op[:11] == REGISTRATION_PREFIX


def registration_cert(op: bytes) -> bytes | None:
    """The certificate of a well-formed registration, else None."""
    v = _parse(op)
    return v[1] if v is not None and v[0] == "addclient" else None


def txn_error(puts: dict, deletes: list, require: dict) -> str | None:
    """Why a transaction is malformed (the replicas would answer INVALID), or None; clients
    check before they send."""
    n = len(puts) + len(deletes) + len(require)
    if n == 0:
        return "a transaction needs at least one put, delete or requirement"
    if n > MAX_TXN_ENTRIES:
        return f"a transaction has at most {MAX_TXN_ENTRIES} puts, deletes and requirements in all, not {n}"
    both = set(puts) & set(deletes)
    if both:
        return f"key {sorted(both)[0]!r} is both put and deleted"
    if len(set(deletes)) != len(deletes):
        return "a key is deleted twice"
    return None


def decode_failed(value: bytes | None) -> dict[str, bytes | None]:
    """The unmet requirements of a failed transaction: key -> its current value (None: absent)."""
    pairs = msgpack.unpackb(value or b"\x90", raw=False)
    return {k: v for k, v in pairs}


def encode_result(status: int, value: bytes | None = None) -> bytes:
    return msgpack.packb([status, value], use_bin_type=True)


def decode_result(data: bytes) -> tuple[int, bytes | None]:
    v = msgpack.unpackb(data, raw=False)
    if type(v) is not list or len(v) != 2 or type(v[0]) is not int or not (v[1] is None or type(v[1]) is bytes):
        raise ValueError("malformed result")
    return v[0], v[1]


def describe_op(op: bytes) -> str:
    """A one-line human description of an operation (for receipts and traces)."""
    parsed = _parse(op)
    if parsed is None:
        return "invalid operation"
    if parsed[0] == "addclient":
        return "register a client"
    if parsed[0] == "txn":
        _, puts, deletes, require = parsed
        parts = [f"{word} {', '.join(repr(k) for k in keys)}" for word, keys in
                 (("put", [k for k, _ in puts]), ("delete", deletes), ("require", [k for k, _ in require])) if keys]
        return "transact: " + "; ".join(parts)
    name, key, *rest = parsed
    return f"{name} {key!r}"


def operation_of(op: bytes) -> dict | None:
    """What an operation does, as plain data (for receipts): kind and keys and values, or None
    if it is malformed."""
    v = _parse(op)
    if v is None:
        return None
    kind = v[0]
    if kind == "put":
        return {"kind": "put", "key": v[1], "value": v[2]}
    if kind == "get":
        return {"kind": "get", "key": v[1]}
    if kind == "del":
        return {"kind": "delete", "key": v[1]}
    if kind == "cas":
        return {"kind": "cas", "key": v[1], "expected": v[2], "value": v[3]}
    if kind == "addclient":
        return {"kind": "addclient", "certificate": v[1]}
    return {"kind": "transact", "puts": dict(v[1]), "deletes": list(v[2]), "require": dict(v[3])}


def _key_ok(k: object) -> bool:
    return type(k) is str and len(k.encode()) <= MAX_KEY


def _pairs_ok(pairs: object, values_may_be_none: bool) -> bool:
    if type(pairs) is not list:
        return False
    last = None
    for p in pairs:
        if type(p) is not list or len(p) != 2 or not _key_ok(p[0]):
            return False
        if not (type(p[1]) is bytes or (values_may_be_none and p[1] is None)):
            return False
        if last is not None and p[0] <= last:
            return False                        # sorted, no key twice (op_txn's one encoding)
        last = p[0]
    return True


def _txn_ok(v: list) -> bool:
    if len(v) != 4 or not _pairs_ok(v[1], False) or not _pairs_ok(v[3], True) or type(v[2]) is not list:
        return False
    deletes = v[2]
    if not all(_key_ok(k) for k in deletes) or deletes != sorted(set(deletes)):
        return False
    puts = {k for k, _ in v[1]}
    n = len(v[1]) + len(deletes) + len(v[3])
    return 0 < n <= MAX_TXN_ENTRIES and not puts.intersection(deletes)


def _parse(op: bytes) -> list[Any] | None:
    try:
        v = msgpack.unpackb(op, raw=False, use_list=True, strict_map_key=True)
    except Exception:
        return None
    if type(v) is not list or not v or type(v[0]) is not str:
        return None
    if v[0] == "txn":
        return v if _txn_ok(v) else None
    if v[0] == "addclient":
        ok = len(v) == 2 and type(v[1]) is bytes and len(v[1]) <= MAX_CERT and op == op_addclient(v[1])
        return v if ok else None
    if len(v) < 2 or type(v[1]) is not str or len(v[1].encode()) > MAX_KEY:
        return None
    kind = v[0]
    if kind == "put" and len(v) == 3 and type(v[2]) is bytes:
        return v
    if kind in ("get", "del") and len(v) == 2:
        return v
    if kind == "cas" and len(v) == 4 and (v[2] is None or type(v[2]) is bytes) and type(v[3]) is bytes:
        return v
    return None


def read_key(op: bytes) -> str | None:
    """The key of a well-formed read-only operation (a ``get``), else None: a replica answers
    only those without ordering them (Castro & Liskov, TOCS 2002, §5.1.3). Parsed once, at
    admission; the answer then needs only the key (``KVStore.lookup``)."""
    v = _parse(op)
    return v[1] if v is not None and v[0] == "get" else None


def is_read_only(op: bytes) -> bool:
    return read_key(op) is not None


class KVStore:
    """The map, and the authenticated tree over it (``root``, ``prove``).

    ``_data`` answers reads and executes operations; ``_changed`` lists the keys written
    since the tree was last brought up to date, with their new value (None: deleted).
    """

    __slots__ = ("_data", "_tree", "_changed", "_since", "at")

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._tree = StateTree()
        self._changed: dict[str, bytes | None] = {}
        # key -> height of the block that last wrote it (deleted keys too: a tombstone per key
        # ever written, so that "absent since h" is told apart from "absent since h' != h")
        self._since: dict[str, int] = {}
        self.at = 0                  # the height being executed (ledger.chain sets it per block)

    def __len__(self) -> int:
        return len(self._data)

    def read(self, key: str) -> bytes | None:
        return self._data.get(key)

    def since(self, key: str) -> int:
        """The height of the block that last wrote ``key`` (0: never written)."""
        return self._since.get(key, 0)

    def written(self) -> Mapping[str, int]:
        """Every key ever written -> the height that last wrote it (a read-only view, for the
        simulator's invariant checker)."""
        return MappingProxyType(self._since)

    def lookup(self, key: str) -> tuple[bytes, int]:
        """A ``get`` of ``key`` answered from this state without changing it: (the result, byte
        for byte what ``apply`` would return, and the height since which it holds)."""
        return encode_result(OK, self._data.get(key)), self._since.get(key, 0)

    def query(self, op: bytes) -> tuple[bytes, int] | None:
        """``lookup`` for a read-only operation, or None when ``op`` is not one."""
        key = read_key(op)
        return None if key is None else self.lookup(key)

    def _set(self, key: str, value: bytes | None) -> None:
        self._since[key] = self.at
        if value is None:
            if key not in self._data:
                return
            del self._data[key]
        else:
            self._data[key] = value
        self._changed[key] = value

    def write(self, key: str, value: bytes | None) -> None:
        """Set ``key`` to ``value`` (None: delete it) without executing an operation: a write
        replayed from a block (``ledger.history.PastState``)."""
        self._set(key, value)

    def _sync(self) -> None:
        """Apply the writes since the last call to the tree (once per key, the last value)."""
        changed = self._changed
        if changed:
            tree = self._tree
            for key, value in changed.items():
                if value is None:
                    tree.delete(key)
                else:
                    tree.put(key, value)
            changed.clear()

    def root(self) -> bytes:
        """The state root (``ledger.statetree``): 32 bytes that depend on the map alone, not
        on the order of the writes that made it."""
        self._sync()
        return self._tree.root()

    def digest(self) -> bytes:
        """The state root, under the name it had before issue 16 (an unprovable multiset hash then)."""
        return self.root()

    def prove(self, key: str) -> StateProof:
        """A proof of ``key``'s current value, or of its absence, against ``root()``."""
        self._sync()
        path, children = self._tree.prove(key)
        value = self._data.get(key) if children is not None else None
        return StateProof(key, value, tuple(path), children)

    def scan(self, start: str, end: str | None, prefix: str, limit: int) -> tuple[list[tuple[str, bytes]], bool]:
        """Up to ``limit`` (key, value) in key order, ``start <= key < end`` (``end`` None: no
        bound) and key beginning with ``prefix``; and whether more such keys follow. Walks the
        tree (kept in key order), so a page costs O(log n + limit), not a sort of the map."""
        self._sync()
        out: list[tuple[str, bytes]] = []
        for key in self._tree.keys_from(max(start, prefix)):
            if (end is not None and key >= end) or not key.startswith(prefix):
                return out, False
            if len(out) >= limit:
                return out, True
            out.append((key, self._data[key]))
        return out, False

    def apply(self, op: bytes) -> bytes:
        """Execute one operation; returns its encoded result. Never raises on bad input."""
        v = _parse(op)
        if v is None:
            return encode_result(INVALID, b"malformed operation")
        kind, key = v[0], v[1]
        if kind == "addclient":
            return encode_result(INVALID, b"a registration executes in a chain (ledger.chain)")
        if kind == "txn":
            return self._transact(v[1], v[2], v[3])
        if kind == "put":
            self._set(key, v[2])
            return encode_result(OK)
        if kind == "get":
            return encode_result(OK, self._data.get(key))
        if kind == "del":
            existed = key in self._data
            self._set(key, None)
            return encode_result(OK if existed else FAILED)
        # cas
        current = self._data.get(key)
        if current != v[2]:
            return encode_result(FAILED, current)
        self._set(key, v[3])
        return encode_result(OK)

    def _transact(self, puts: list, deletes: list, require: list) -> bytes:
        data = self._data
        unmet = [[k, data.get(k)] for k, expected in require if data.get(k) != expected]
        if unmet:
            return encode_result(FAILED, msgpack.packb(unmet, use_bin_type=True))
        for k, value in puts:
            self._set(k, value)
        for k in deletes:
            self._set(k, None)
        return encode_result(OK)
