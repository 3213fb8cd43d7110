"""The replicated application: a key-value map with put, get, delete and compare-and-set.

Operations and results are msgpack arrays so that every replica computes byte-identical
results. ``get`` is an operation, so a read can be ordered through consensus like a write
(linearizable: ``client.get(key, linearizable=True)``); a plain read is answered by the
replicas from their executed state without ordering (``query``; PBFT's read-only
optimisation, see ``ledger.clientcore``), and it never becomes a transaction. For those
answers every key remembers the height of the block that last wrote it (``since``), so that
a client can tell the same value at different heights apart from a value that changed and
changed back.
The state digest is an additive multiset hash (sum of H(key, value) mod 2^256): it is
kept up to date in O(1) per write, so a checkpoint never walks the whole map.
"""
from __future__ import annotations

import hashlib
from types import MappingProxyType
from typing import Any, Mapping

import msgpack

MAX_KEY = 1024

# result status codes
OK = 0
FAILED = 1      # compare-and-set whose expectation did not hold
INVALID = 2     # malformed operation (deterministically rejected)
DUPLICATE = 3   # a retransmitted request already executed: not applied again
BUSY = 4        # not a result of execution: a replica refused to hold the request (never in a block)

STATUS_NAMES = {OK: "ok", FAILED: "failed", INVALID: "invalid", DUPLICATE: "duplicate", BUSY: "busy"}


def op_put(key: str, value: bytes) -> bytes:
    return msgpack.packb(["put", key, value], use_bin_type=True)


def op_get(key: str) -> bytes:
    return msgpack.packb(["get", key], use_bin_type=True)


def op_delete(key: str) -> bytes:
    return msgpack.packb(["del", key], use_bin_type=True)


def op_cas(key: str, expected: bytes | None, new: bytes) -> bytes:
    return msgpack.packb(["cas", key, expected, new], use_bin_type=True)


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
    name, key, *rest = parsed
    return f"{name} {key!r}"


def _parse(op: bytes) -> list[Any] | None:
    try:
        v = msgpack.unpackb(op, raw=False, use_list=True, strict_map_key=True)
    except Exception:
        return None
    if type(v) is not list or not v or type(v[0]) is not str:
        return None
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


def _entry_hash(key: str, value: bytes) -> int:
    k = key.encode()
    return int.from_bytes(hashlib.sha256(len(k).to_bytes(4, "big") + k + value).digest(), "big")


_MOD = 1 << 256


def is_read_only(op: bytes) -> bool:
    """Whether ``op`` is a well-formed operation that changes nothing (a replica answers only
    those without ordering them: Castro & Liskov, TOCS 2002, §5.1.3)."""
    v = _parse(op)
    return v is not None and v[0] == "get"


class KVStore:
    __slots__ = ("_data", "_acc", "_since", "at")

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._acc = 0
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

    def query(self, op: bytes) -> tuple[bytes, int] | None:
        """Answer a read-only operation from this state without changing it: (result, the
        height since which that result holds), or None when ``op`` is not read-only. The
        result is byte for byte what ``apply`` would return for it."""
        v = _parse(op)
        if v is None or v[0] != "get":
            return None
        key = v[1]
        return encode_result(OK, self._data.get(key)), self._since.get(key, 0)

    def _set(self, key: str, value: bytes | None) -> None:
        self._since[key] = self.at
        old = self._data.get(key)
        if old is not None:
            self._acc = (self._acc - _entry_hash(key, old)) % _MOD
        if value is None:
            self._data.pop(key, None)
        else:
            self._data[key] = value
            self._acc = (self._acc + _entry_hash(key, value)) % _MOD

    def apply(self, op: bytes) -> bytes:
        """Execute one operation; returns its encoded result. Never raises on bad input."""
        v = _parse(op)
        if v is None:
            return encode_result(INVALID, b"malformed operation")
        kind, key = v[0], v[1]
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

    def digest(self) -> bytes:
        return self._acc.to_bytes(32, "big")
