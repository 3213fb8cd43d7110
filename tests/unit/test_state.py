"""ledger.state: the key-value state machine, its results and its state root (proofs: test_statetree)."""
from __future__ import annotations

import itertools
import random

import msgpack
import pytest

from ledger import state
from ledger.state import (DUPLICATE, FAILED, INVALID, MAX_KEY, OK, KVStore, decode_result,
                          describe_op, encode_result, op_cas, op_delete, op_get, op_put)

from ledger.statetree import EMPTY_STATE_ROOT

EMPTY_DIGEST = EMPTY_STATE_ROOT


def run(kv: KVStore, op: bytes) -> tuple[int, bytes | None]:
    return decode_result(kv.apply(op))


def _pack(v) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


# ============================================================================ semantics
def test_put_get():
    kv = KVStore()
    assert run(kv, op_get("k")) == (OK, None)
    assert run(kv, op_put("k", b"v1")) == (OK, None)
    assert run(kv, op_get("k")) == (OK, b"v1")
    assert run(kv, op_put("k", b"v2")) == (OK, None)          # overwrite
    assert run(kv, op_get("k")) == (OK, b"v2")
    assert kv.read("k") == b"v2"
    assert len(kv) == 1
    assert run(kv, op_put("k2", b"")) == (OK, None)           # empty value is a value, not absence
    assert run(kv, op_get("k2")) == (OK, b"")
    assert len(kv) == 2


def test_get_does_not_change_state():
    kv = KVStore()
    kv.apply(op_put("a", b"1"))
    d = kv.root()
    for _ in range(3):
        kv.apply(op_get("a"))
        kv.apply(op_get("missing"))
    assert kv.root() == d and len(kv) == 1


def test_delete():
    kv = KVStore()
    kv.apply(op_put("k", b"v"))
    assert run(kv, op_delete("k")) == (OK, None)
    assert run(kv, op_get("k")) == (OK, None)
    assert kv.read("k") is None and len(kv) == 0
    assert run(kv, op_delete("k")) == (FAILED, None)          # deleting an absent key
    assert run(kv, op_delete("never")) == (FAILED, None)


def test_cas():
    kv = KVStore()
    kv.apply(op_put("k", b"v1"))
    assert run(kv, op_cas("k", b"v1", b"v2")) == (OK, None)
    assert kv.read("k") == b"v2"
    # expectation fails: returns the current value, changes nothing
    assert run(kv, op_cas("k", b"v1", b"v3")) == (FAILED, b"v2")
    assert kv.read("k") == b"v2"
    assert run(kv, op_cas("k", b"", b"v3")) == (FAILED, b"v2")


def test_cas_expected_none_means_absent():
    kv = KVStore()
    assert run(kv, op_cas("k", None, b"first")) == (OK, None)     # absent: succeeds
    assert kv.read("k") == b"first"
    assert run(kv, op_cas("k", None, b"second")) == (FAILED, b"first")  # present: fails
    assert kv.read("k") == b"first"
    kv.apply(op_put("e", b""))
    assert run(kv, op_cas("e", None, b"x")) == (FAILED, b"")       # empty value is not absent
    assert run(kv, op_cas("absent", b"", b"x")) == (FAILED, None)  # and absent is not empty
    assert kv.read("absent") is None
    kv.apply(op_delete("k"))
    assert run(kv, op_cas("k", None, b"again")) == (OK, None)      # absent again after delete


def test_key_limits():
    kv = KVStore()
    key = "k" * MAX_KEY
    assert run(kv, op_put(key, b"v")) == (OK, None)
    assert run(kv, op_put(key + "k", b"v"))[0] == INVALID
    # the limit is in encoded bytes, not characters
    wide = "\u00e9" * (MAX_KEY // 2)
    assert run(kv, op_put(wide, b"v")) == (OK, None)
    assert run(kv, op_put(wide + "\u00e9", b"v"))[0] == INVALID
    assert run(kv, op_put("", b"empty key"))[0] == OK


# ============================================================================ malformed ops
MALFORMED = [
    b"", b"\xc1", b"\x93", b"\xff" * 10, b"put k v",
    _pack(None), _pack(1), _pack("put"), _pack(b"put"), _pack({}), _pack({"put": "k"}), _pack({1: 2}),
    _pack([]), _pack(["put"]), _pack(["put", "k"]), _pack(["put", "k", b"v", b"extra"]),
    _pack(["put", "k", "text value"]), _pack(["put", b"k", b"v"]), _pack(["put", 1, b"v"]),
    _pack(["put", None, b"v"]), _pack(["put", "k", None]), _pack(["put", "k", 5]),
    _pack(["PUT", "k", b"v"]), _pack(["set", "k", b"v"]), _pack([b"put", "k", b"v"]), _pack([1, "k", b"v"]),
    _pack(["get"]), _pack(["get", "k", b"x"]), _pack(["get", b"k"]),
    _pack(["del", "k", None]), _pack(["delete", "k"]), _pack(["del"]),
    _pack(["cas", "k", b"a"]), _pack(["cas", "k", b"a", None]), _pack(["cas", "k", "a", b"b"]),
    _pack(["cas", "k", b"a", b"b", b"c"]), _pack(["cas", "k", 0, b"b"]),
    _pack(["put", "k" * (MAX_KEY + 1), b"v"]),
    _pack(["put", "k", b"v"]) + b"\x00",                        # trailing bytes
    _pack(["put", "k", b"v"])[:-1],                             # truncated
    b"\x93\xa3put\xa2\xff\xfe\xc4\x01v",                        # key is invalid UTF-8
    b"\x91" * 5000 + b"\xc0",                                   # deep nesting
    b"\xdd\xff\xff\xff\xff",                                    # array claiming 4G elements
    b"\xdb\xff\xff\xff\xff",                                    # str claiming 4 GiB
    _pack([msgpack.ExtType(1, b"x"), "k"]),
]


@pytest.mark.parametrize("op", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_op_is_invalid_and_changes_nothing(op: bytes):
    kv = KVStore()
    kv.apply(op_put("k", b"v"))
    d = kv.root()
    status, value = decode_result(kv.apply(op))
    assert status == INVALID
    assert value == b"malformed operation"
    assert kv.root() == d and kv.read("k") == b"v" and len(kv) == 1
    assert describe_op(op) == "invalid operation"


def test_random_ops_never_raise():
    rng = random.Random(7)
    kv = KVStore()
    good = [op_put("a", b"1"), op_cas("a", b"1", b"2"), op_delete("a"), op_get("a")]
    for i in range(3000):
        base = bytearray(rng.choice(good + MALFORMED[:20]))
        for _ in range(rng.randint(0, 3)):
            if base:
                base[rng.randrange(len(base))] = rng.randrange(256)
        status, _ = decode_result(kv.apply(bytes(base)))
        assert status in (OK, FAILED, INVALID)


def test_results_encoding():
    for status in (OK, FAILED, INVALID, DUPLICATE):
        for value in (None, b"", b"v"):
            assert decode_result(encode_result(status, value)) == (status, value)
    # byte-identical results across replicas: pinned encodings
    assert encode_result(OK) == b"\x92\x00\xc0"
    assert encode_result(FAILED, b"v") == b"\x92\x01\xc4\x01v"
    for bad in (_pack([0]), _pack([0, "text"]), _pack(["0", None]), _pack({}), _pack([0, None, 1])):
        with pytest.raises(ValueError):
            decode_result(bad)
    assert set(state.STATUS_NAMES) == {OK, FAILED, INVALID, DUPLICATE, state.BUSY}   # BUSY: never in a block


def test_describe_op():
    assert describe_op(op_put("k", b"v")) == "put 'k'"
    assert describe_op(op_cas("k", None, b"v")) == "cas 'k'"
    assert describe_op(op_delete("x")) == "del 'x'"
    assert describe_op(op_get("x")) == "get 'x'"


# ============================================================================ state root
def test_empty_root():
    assert KVStore().root() == EMPTY_DIGEST
    assert len(KVStore().root()) == 32


def test_same_state_different_order_same_root():
    ops = [op_put("a", b"1"), op_put("b", b"2"), op_put("c", b"3"), op_put("d", b"")]
    digests = set()
    for perm in itertools.permutations(ops):
        kv = KVStore()
        for op in perm:
            kv.apply(op)
        digests.add(kv.root())
    assert len(digests) == 1
    # and via a different history: overwrites, deletes, cas, failed ops
    kv = KVStore()
    for op in (op_put("c", b"x"), op_put("z", b"gone"), op_put("d", b""), op_cas("c", b"x", b"3"),
               op_put("b", b"0"), op_delete("z"), op_cas("b", b"0", b"2"), op_cas("a", None, b"1"),
               op_cas("a", None, b"nope"), op_delete("missing"), b"garbage", op_get("a")):
        kv.apply(op)
    assert kv.root() in digests


def test_different_state_different_root():
    base = [("a", b"1"), ("b", b"2")]
    variants = {
        "base": base,
        "value changed": [("a", b"1"), ("b", b"3")],
        "key changed": [("a", b"1"), ("c", b"2")],
        "key missing": [("a", b"1")],
        "key added": base + [("c", b"")],
        "empty value": [("a", b"1"), ("b", b"")],
        "swapped values": [("a", b"2"), ("b", b"1")],
        # the key/value boundary is part of the hash: ("ab", "c") is not ("a", "bc")
        "boundary 1": [("ab", b"c")],
        "boundary 2": [("a", b"bc")],
        "boundary 3": [("", b"abc")],
    }
    seen = {}
    for name, items in variants.items():
        kv = KVStore()
        for k, v in items:
            kv.apply(op_put(k, v))
        d = kv.root()
        assert d not in seen, (name, seen.get(d))
        seen[d] = name
    assert EMPTY_DIGEST not in seen


def test_delete_back_to_empty():
    kv = KVStore()
    for k in ("a", "b", "c"):
        kv.apply(op_put(k, k.encode() * 3))
    kv.apply(op_put("a", b"overwritten"))
    kv.apply(op_cas("b", b"bbb", b"changed"))
    assert kv.root() != EMPTY_DIGEST
    for k in ("c", "a", "b"):
        kv.apply(op_delete(k))
    assert len(kv) == 0
    assert kv.root() == EMPTY_DIGEST


def test_random_history_matches_a_model_and_fresh_root():
    """Random puts/deletes/cas against a plain dict: same results, and the root maintained
    block by block equals the root of the final map built from scratch in another order."""
    rng = random.Random(11)
    kv = KVStore()
    model: dict[str, bytes] = {}
    for _ in range(2000):
        k = f"k{rng.randrange(20)}"
        r = rng.random()
        if r < 0.5:
            v = bytes([rng.randrange(4)])
            assert run(kv, op_put(k, v)) == (OK, None)
            model[k] = v
        elif r < 0.7:
            assert run(kv, op_delete(k)) == ((OK if k in model else FAILED), None)
            model.pop(k, None)
        elif r < 0.9:
            exp, new = rng.choice([None, b"\x00", b"\x01"]), bytes([rng.randrange(4)])
            if model.get(k) == exp:
                assert run(kv, op_cas(k, exp, new)) == (OK, None)
                model[k] = new
            else:
                assert run(kv, op_cas(k, exp, new)) == (FAILED, model.get(k))
        else:
            assert run(kv, op_get(k)) == (OK, model.get(k))
        assert len(kv) == len(model)
        if rng.random() < 0.05:
            kv.root()                               # as the chain does, once per block
    fresh = KVStore()
    for k in sorted(model, reverse=True):
        fresh.apply(op_put(k, model[k]))
    assert fresh.root() == kv.root()
    assert all(kv.read(k) == v for k, v in model.items())


# ----------------------------------------------------------------------------- transactions (issue 15)
def test_a_transaction_applies_all_or_nothing() -> None:
    from ledger.state import decode_failed, op_txn

    kv = KVStore()
    kv.apply(op_put("a", b"1"))
    before = kv.root()
    status, value = decode_result(kv.apply(op_txn({"a": b"2", "b": b"2"}, ["c"], {"a": b"1", "c": b"x"})))
    assert status == FAILED and decode_failed(value) == {"c": None}
    assert kv.read("a") == b"1" and kv.read("b") is None and kv.root() == before
    kv.apply(op_put("c", b"x"))
    assert decode_result(kv.apply(op_txn({"a": b"2", "b": b"2"}, ["c"], {"a": b"1", "c": b"x"}))) == (OK, None)
    assert (kv.read("a"), kv.read("b"), kv.read("c")) == (b"2", b"2", None)


def test_a_transaction_has_one_encoding_and_malformed_ones_are_invalid() -> None:
    import msgpack

    from ledger.state import MAX_TXN_ENTRIES, describe_op, op_txn, operation_of, txn_error

    assert op_txn({"b": b"1", "a": b"2"}, ["d", "c"], {}) == op_txn({"a": b"2", "b": b"1"}, ["c", "d"], {})
    op = op_txn({"a": b"1"}, ["b"], {"a": None})
    assert operation_of(op) == {"kind": "transact", "puts": {"a": b"1"}, "deletes": ["b"], "require": {"a": None}}
    assert describe_op(op) == "transact: put 'a'; delete 'b'; require 'a'"
    bad = [["txn", [["b", b"1"], ["a", b"1"]], [], []],          # unsorted: a second encoding
           ["txn", [["a", b"1"], ["a", b"2"]], [], []],          # a key twice
           ["txn", [["a", b"1"]], ["a"], []],                    # put and deleted
           ["txn", [], [], []],                                  # empty
           ["txn", [["a", None]], [], []],                       # a put of nothing
           ["txn", [], ["x" * 1025], []],                        # key too long
           ["txn", [], [f"k{i:05d}" for i in range(MAX_TXN_ENTRIES + 1)], []],
           ["txn", [], [], [["a", 5]]],
           ["txn", {}, [], []]]
    for v in bad:
        status, _ = decode_result(KVStore().apply(msgpack.packb(v, use_bin_type=True)))
        assert status == INVALID, v
    assert txn_error({}, [], {}) and txn_error({"a": b""}, ["a"], {}) and txn_error({}, ["a", "a"], {})
    assert txn_error({"a": b""}, [], {"a": None}) is None
