"""ledger.statetree and KVStore.prove: the authenticated state's root and its proofs.

The tree is checked against a naive recomputation written here from the definition in
the module doc (the key with the highest priority is the root, recursively), and every
proof is checked offline against the root alone. Random runs are seeded and print their
seed when they fail.
"""
from __future__ import annotations

import dataclasses
import hashlib
import random

import msgpack
import pytest

from ledger.state import KVStore, op_cas, op_delete, op_put, op_txn
from ledger.statetree import (EMPTY_STATE_ROOT, MAX_PROOF_BYTES, MAX_PROOF_STEPS, StateProof, StateProofError,
                              StateTree)


# ----------------------------------------------------------------------------- the definition
def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def naive_root(state: dict[str, bytes]) -> bytes:
    """The root of a map, straight from the definition (no shared code with the tree)."""
    if not state:
        return _h(b"\x10")
    top = max(state, key=lambda k: _h(b"\x12" + k.encode()))
    kb = top.encode()
    left = naive_root({k: v for k, v in state.items() if k < top})
    right = naive_root({k: v for k, v in state.items() if k > top})
    return _h(b"\x11" + len(kb).to_bytes(2, "big") + kb + _h(state[top]) + left + right)


def _store(state: dict[str, bytes]) -> KVStore:
    kv = KVStore()
    for k, v in state.items():
        kv.apply(op_put(k, v))
    return kv


STATE = {f"k{i:03d}": f"value {i}".encode() for i in range(0, 200, 3)} | {"": b"empty key", "é": b"", "z" * 1024: b"x"}


# ----------------------------------------------------------------------------- the root
def test_the_empty_state() -> None:
    kv = KVStore()
    assert kv.root() == EMPTY_STATE_ROOT == naive_root({})
    p = kv.prove("anything")
    assert p.path == () and p.children is None and p.verify(kv.root()) is None


def test_root_matches_the_definition_and_not_the_history() -> None:
    kv = _store(STATE)
    assert kv.root() == naive_root(STATE)
    rng = random.Random(3)
    items = list(STATE.items())
    rng.shuffle(items)
    other = KVStore()
    for k, v in items:                        # another order, with detours through other values and keys
        other.apply(op_put(k, b"first " + v))
        other.apply(op_put("tmp-" + k, v))
        other.root()
        other.apply(op_put(k, v))
        other.apply(op_delete("tmp-" + k))
    assert other.root() == kv.root()


@pytest.mark.parametrize("seed", range(8))
def test_random_puts_and_deletes_match_a_naive_recomputation(seed: int) -> None:
    """Puts, deletes, cas and transactions over a small key space (so keys come and go),
    with the root asked for after random runs of writes (a block), compared with the
    definition; proofs of present and absent keys verify against each root."""
    rng = random.Random(seed)
    try:
        kv, model = KVStore(), {}
        keys = [f"key{i}" for i in range(rng.choice((5, 40, 300)))]
        for step in range(600):
            k = rng.choice(keys)
            r = rng.random()
            if r < 0.45:
                v = rng.randbytes(rng.randrange(0, 9))
                kv.apply(op_put(k, v))
                model[k] = v
            elif r < 0.75:
                kv.apply(op_delete(k))
                model.pop(k, None)
            elif r < 0.85:
                v = rng.randbytes(2)
                kv.apply(op_cas(k, model.get(k), v))
                model[k] = v
            else:
                puts = {x: rng.randbytes(1) for x in rng.sample(keys, min(3, len(keys)))}
                dels = [x for x in rng.sample(keys, min(2, len(keys))) if x not in puts]
                kv.apply(op_txn(puts, dels, {}))
                model.update(puts)
                for x in dels:
                    model.pop(x, None)
            if rng.random() < 0.15:
                root = kv.root()
                assert root == naive_root(model), f"step {step}"
                for q in rng.sample(keys, min(4, len(keys))) + ["absent-" + k]:
                    assert kv.prove(q).verify(root, q) == model.get(q), f"step {step}, key {q!r}"
        assert kv.root() == naive_root(model)
        assert len(kv._tree) == len(model) == len(kv)
    except AssertionError:
        print(f"seed {seed} failed")
        raise


def test_a_large_state_stays_shallow() -> None:
    kv = _store({f"user:{i:07d}": b"v" for i in range(20000)})
    kv.root()
    # a random treap of n keys is about 2 ln n deep on average and rarely above 4.3 ln n (43 here)
    assert kv._tree.depth() < 60
    for i in range(0, 20000, 997):
        p = kv.prove(f"user:{i:07d}")
        assert p.verify(kv.root()) == b"v" and len(p.path) < 60


def test_deleting_every_key_in_any_order_returns_to_empty() -> None:
    rng = random.Random(5)
    kv = _store(STATE)
    keys = list(STATE)
    rng.shuffle(keys)
    for i, k in enumerate(keys):
        kv.apply(op_delete(k))
        if i % 7 == 0:
            rest = {x: STATE[x] for x in keys[i + 1:]}
            assert kv.root() == naive_root(rest)
    assert kv.root() == EMPTY_STATE_ROOT and len(kv._tree) == 0


def test_the_tree_alone() -> None:
    t = StateTree()
    t.delete("nothing")                         # deleting an absent key is harmless
    t.put("b", b"1")
    t.put("a", b"2")
    t.put("b", b"3")
    t.delete("c")
    assert len(t) == 2 and t.root() == naive_root({"a": b"2", "b": b"3"})


# ----------------------------------------------------------------------------- proofs
def test_presence_and_absence() -> None:
    kv = _store(STATE)
    root = kv.root()
    for k, v in STATE.items():
        p = kv.prove(k)
        assert p.value == v and p.children is not None
        assert p.verify(root) == v and p.verify(root, key=k) == v
    for k in ("k001", "k000 ", "a", "zz", "\x00", "k" * 1024, "k20"):
        p = kv.prove(k)
        assert p.value is None and p.children is None
        assert p.verify(root, key=k) is None


def test_a_changed_value_is_rejected() -> None:
    kv = _store(STATE)
    root = kv.root()
    p = kv.prove("k003")
    for forged in (b"value 4", b"", p.value + b"\x00"):
        with pytest.raises(StateProofError, match="does not lead to the state root"):
            dataclasses.replace(p, value=forged).verify(root)
    # absence claimed for a present key, with or without the key's own node
    with pytest.raises(StateProofError):
        dataclasses.replace(p, value=None).verify(root)
    with pytest.raises(StateProofError, match="does not lead"):
        dataclasses.replace(p, value=None, children=None).verify(root)
    # presence claimed for an absent key: no node of its own to show
    q = kv.prove("k004")
    with pytest.raises(StateProofError, match="needs the children"):
        dataclasses.replace(q, value=b"x").verify(root)
    with pytest.raises(StateProofError, match="does not lead"):
        dataclasses.replace(q, value=b"x", children=(EMPTY_STATE_ROOT, EMPTY_STATE_ROOT)).verify(root)
    # a changed hash anywhere on the path
    for i in range(len(p.path)):
        nk, vh, sib = p.path[i]
        for step in ((nk, vh, bytes(32)), (nk, bytes(32), sib), (nk + "x", vh, sib)):
            path = p.path[:i] + (step,) + p.path[i + 1:]
            with pytest.raises(StateProofError):
                dataclasses.replace(p, path=path).verify(root)
    with pytest.raises(StateProofError):
        dataclasses.replace(p, path=p.path[1:]).verify(root)


def test_a_proof_for_another_key_is_rejected() -> None:
    kv = _store(STATE)
    root = kv.root()
    p = kv.prove("k003")
    with pytest.raises(StateProofError, match="is about key 'k003', not 'k006'"):
        p.verify(root, key="k006")
    # relabelled: the same path and value, claimed for another present or absent key
    for other in ("k006", "k004", "k0030"):
        with pytest.raises(StateProofError):
            dataclasses.replace(p, key=other).verify(root)
    # an absence proof relabelled for a present key neighbouring it
    a = kv.prove("k004")
    with pytest.raises(StateProofError):
        dataclasses.replace(a, key="k003").verify(root)


def test_a_proof_against_another_root_is_rejected() -> None:
    kv = _store(STATE)
    old_root = kv.root()
    p, a = kv.prove("k003"), kv.prove("k004")
    kv.apply(op_put("k003", b"new"))
    kv.apply(op_put("k004", b"now here"))
    new_root = kv.root()
    for proof in (p, a):
        assert proof.verify(old_root) == proof.value
        with pytest.raises(StateProofError, match="does not lead"):
            proof.verify(new_root)
    assert kv.prove("k003").verify(new_root) == b"new" and kv.prove("k004").verify(new_root) == b"now here"
    for bad in (b"", bytes(31), "00" * 32):
        with pytest.raises(StateProofError, match="32 bytes"):
            p.verify(bad)


def test_a_path_out_of_search_order_is_refused() -> None:
    kv = _store(STATE)
    p = kv.prove("k099")
    assert len(p.path) >= 2
    swapped = (p.path[1], p.path[0]) + p.path[2:]
    with pytest.raises(StateProofError):
        dataclasses.replace(p, path=swapped).verify(kv.root())
    on_path = ((p.key, p.path[0][1], p.path[0][2]),) + p.path[1:]
    with pytest.raises(StateProofError, match="on its own search path"):
        dataclasses.replace(p, path=on_path).verify(kv.root())


# ----------------------------------------------------------------------------- encoding
def test_encode_decode_round_trip() -> None:
    kv = _store(STATE)
    root = kv.root()
    for k in list(STATE)[:10] + ["absent", "z" * 1024]:
        p = kv.prove(k)
        data = p.encode()
        q = StateProof.decode(data)
        assert q == p and q.verify(root, k) == STATE.get(k)
    e = KVStore().prove("x")
    assert StateProof.decode(e.encode()) == e


def _pack(v: object) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


def test_decoding_malformed_proofs_is_an_error_never_a_crash() -> None:
    kv = _store(STATE)
    good = kv.prove("k006")
    g = msgpack.unpackb(good.encode(), raw=False)
    bad = [b"", b"\xc1", b"\x93", _pack({}), _pack([]), _pack(g[:5]), _pack([0x54] + g[1:]),
           _pack(g[:1] + [2] + g[2:]), _pack(g[:2] + [b"bytes key"] + g[3:]), _pack(g[:2] + ["x" * 1025] + g[3:]),
           _pack(g[:3] + ["not bytes"] + g[4:]), _pack(g[:4] + [[["k", b"short", bytes(32)]]] + g[5:]),
           _pack(g[:4] + [[["k", bytes(32)]]] + g[5:]), _pack(g[:4] + [[[5, bytes(32), bytes(32)]]] + g[5:]),
           _pack(g[:4] + ["path"] + g[5:]), _pack(g[:5] + [[bytes(32)]]), _pack(g[:5] + [[bytes(32), 7]]),
           _pack(g[:4] + [[["k", bytes(32), bytes(32)]] * (MAX_PROOF_STEPS + 1)] + g[5:]),
           _pack(g[:3] + [bytes(64 * 1024 + 1)] + g[4:]),
           b"\x00" * (MAX_PROOF_BYTES + 1)]
    for data in bad:
        with pytest.raises(StateProofError):
            StateProof.decode(data)
    with pytest.raises(StateProofError):
        StateProof.decode("text")                                  # type: ignore[arg-type]
    rng = random.Random(17)
    raw = good.encode()
    for _ in range(3000):                                           # mutated proofs: refused or harmless
        data = bytearray(raw)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            p = StateProof.decode(bytes(data))
        except StateProofError:
            continue
        try:
            v = p.verify(kv.root())
        except StateProofError:
            continue
        assert p.key in STATE and v == STATE[p.key] or (p.key not in STATE and v is None)


def test_surrogate_keys_are_not_keys() -> None:
    with pytest.raises(StateProofError):
        StateProof("\udc80", None, (), None).verify(EMPTY_STATE_ROOT)


def test_the_cost_benchmark_runs() -> None:
    """``python -m bench.state_cost`` (the README's figures) on a small state."""
    from bench.state_cost import measure

    r = measure(keys=300, batch=16, writes=600, repeat=1)
    assert r["keys"] == 300 and r["tree_us"] > 0 and r["tree_us"] == pytest.approx(r["sync_us"] + r["rehash_us"], abs=0.02)
    assert 5 <= r["depth"] < 40 and 0 < r["proof_steps"] < r["depth"] and r["proof_bytes"] > 32 * r["proof_steps"]
