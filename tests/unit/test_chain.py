"""ledger.chain and ledger.tx: executing blocks of real signed requests, exactly-once,
cached replies, deterministic replay, and the ledger's reading of the wire's REQUEST."""
from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bft import wire
from crypto.merkle import MerkleTree, root_of
from crypto.signing import Ed25519Signer, Ed25519Verifier
from ledger import chain as chainmod
from ledger import tx as txmod
from ledger.block import GENESIS_HASH, Block, link_error
from ledger.chain import Chain, ReplayError
from ledger.state import (DUPLICATE, FAILED, INVALID, OK, decode_result, encode_result, op_cas,
                          op_delete, op_get, op_put)

SIGNERS = [Ed25519Signer(bytes([i + 1]) * 32) for i in range(4)]


def req(client: int, ts: int, op: bytes) -> bytes:
    return wire.Request(client, ts, op).signed(SIGNERS[client]).encode()


def results(block: Block) -> list[tuple[int, bytes | None]]:
    return [decode_result(r) for r in block.results]


def _state(c: Chain) -> tuple:
    return c.height, c.head, c.tree.size, c.tree.root(), c.kv.root(), c.last_view


def _batches() -> list[list[bytes]]:
    """Several batches with puts, gets, cas, deletes, duplicates, garbage and bad ops."""
    return [
        [req(0, 1, op_put("a", b"1")), req(1, 1, op_put("b", b"2")), req(2, 5, op_get("a"))],
        [req(0, 2, op_cas("a", b"1", b"10")), req(0, 1, op_put("a", b"stale")),    # duplicate of ts 1
         b"not a request", req(1, 2, op_delete("b"))],
        [req(2, 6, op_cas("b", None, b"new")), req(1, 2, op_delete("b")),          # duplicate of ts 2
         req(3, 1, b"\x93\xa3bad"), req(0, 3, op_get("a"))],
        [],                                                                       # an empty batch
        [req(1, 3, op_delete("zz")), req(2, 6, op_put("b", b"again"))],            # a failed delete; a dup
    ]


def _executed_chain() -> tuple[Chain, list[Block]]:
    c = Chain()
    blocks = [c.execute(h, 7, txs, [(0, b"s" * 64)]) for h, txs in enumerate(_batches(), start=1)]
    return c, blocks


# ============================================================================ execution
def test_execute_builds_linked_blocks():
    c, blocks = _executed_chain()
    tree = MerkleTree()
    prev = None
    all_txs: list[bytes] = []
    for h, (b, txs) in enumerate(zip(blocks, _batches()), start=1):
        assert b.height == h and b.sequence == h
        assert b.prev_hash == (GENESIS_HASH if prev is None else prev.hash())
        assert b.txs == txs
        assert len(b.results) == len(txs)
        assert b.batch_root == root_of(txs)
        assert b.results_root == root_of(b.results)
        all_txs += txs
        assert b.tree_size == len(all_txs)
        assert b.tree_root == root_of(all_txs)
        assert b.check_roots() is None
        assert link_error(b, prev, tree) is None
        assert Block.decode(b.encode()) == b
        prev = b
    assert c.height == len(blocks)
    assert c.head == blocks[-1].hash()
    assert c.tree.size == len(all_txs) and c.tree.root() == root_of(all_txs)
    assert c.last_view == 7


def test_results_of_the_sample_batches():
    _, blocks = _executed_chain()
    r = [results(b) for b in blocks]
    assert r[0] == [(OK, None), (OK, None), (OK, b"1")]
    assert r[1] == [(OK, None), (DUPLICATE, None), (INVALID, b"malformed transaction"), (OK, None)]
    assert r[2] == [(OK, None), (DUPLICATE, None), (INVALID, b"malformed operation"), (OK, b"10")]
    assert r[3] == []
    assert r[4] == [(FAILED, None), (DUPLICATE, None)]


def test_final_state():
    c, _ = _executed_chain()
    assert c.kv.read("a") == b"10"           # the stale put was not applied
    assert c.kv.read("b") == b"new"          # the duplicate delete and the duplicate put were not applied
    assert len(c.kv) == 2


def test_execution_is_deterministic():
    _, b1 = _executed_chain()
    _, b2 = _executed_chain()
    assert [b.encode() for b in b1] == [b.encode() for b in b2]


# ============================================================================ exactly-once
def test_duplicate_same_timestamp_is_not_applied():
    c = Chain()
    c.execute(1, 0, [req(0, 10, op_put("k", b"v1"))])
    d = c.kv.root()
    b = c.execute(2, 0, [req(0, 10, op_put("k", b"v1"))])            # a retransmission
    assert results(b) == [(DUPLICATE, None)]
    assert c.kv.root() == d
    # a different operation under an executed (client, timestamp) is no better
    b = c.execute(3, 0, [wire.Request(0, 10, op_put("k", b"other")).signed(SIGNERS[0]).encode()])
    assert results(b) == [(DUPLICATE, None)]
    assert c.kv.read("k") == b"v1" and c.kv.root() == d
    # ... and neither is one inside the same batch
    b = c.execute(4, 0, [req(1, 1, op_put("j", b"1")), req(1, 1, op_put("j", b"2"))])
    assert results(b) == [(OK, None), (DUPLICATE, None)]
    assert c.kv.read("j") == b"1"


def test_duplicate_older_executed_timestamp_is_not_applied():
    c = Chain()
    c.execute(1, 0, [req(0, 1, op_put("k", b"1")), req(0, 2, op_put("k", b"2"))])
    b = c.execute(2, 0, [req(0, 1, op_put("k", b"1"))])
    assert results(b) == [(DUPLICATE, None)]
    assert c.kv.read("k") == b"2"


def test_stale_timestamp_below_the_window_is_not_applied():
    """The window counts executed requests: once more than 2 x WINDOW of a client's requests
    executed, all but its WINDOW newest are forgotten, and every timestamp below them is
    stale (it may have executed; it can no longer)."""
    window = chainmod.WINDOW
    c = Chain()
    stamps = [1000 + 2 * i for i in range(2 * window + 1)]            # even: the odd ones never execute
    c.execute(1, 0, [req(0, ts, op_put("k", b"%d" % ts)) for ts in stamps])
    floor = stamps[-window]
    for ts in (5, 1000, 1001, floor - 1):                            # executed and forgotten, or never executed
        assert c.is_stale(0, ts)
        b = c.execute(c.height + 1, 0, [req(0, ts, op_put("k", b"old"))])
        assert results(b) == [(DUPLICATE, None)]
        assert c.executed(0, ts) is None
    assert c.kv.read("k") == b"%d" % stamps[-1]
    assert c.executed(0, floor) is not None                          # remembered: its cached reply
    b = c.execute(c.height + 1, 0, [req(0, floor, op_put("k", b"again")), req(0, floor + 1, op_put("j", b"1"))])
    assert results(b) == [(DUPLICATE, None), (OK, None)]             # inside the window, never executed: runs
    assert not c.is_stale(1, 0)


def test_a_request_sent_again_after_the_clock_jumped_executes_once():
    """Client.outcome sends a timed-out request again, however many later requests (fewer than
    the window) its client's new processes sent with clock-based timestamps meanwhile."""
    c = Chain()
    c.execute(1, 0, [req(0, 10, op_put("a", b"1"))])
    c.execute(2, 0, [req(0, 10 ** 12, op_put("b", b"2"))])           # a later process: the clock moved on
    assert not c.is_stale(0, 11)
    b = c.execute(3, 0, [req(0, 11, op_put("c", b"3")), req(0, 10, op_put("a", b"x"))])
    assert results(b) == [(OK, None), (DUPLICATE, None)]
    assert c.executed(0, 11).height == 3 and c.kv.read("a") == b"1"


def test_older_unexecuted_timestamp_inside_the_window_executes():
    """One client carries many concurrent requests which the primary may order either way:
    an older timestamp that was never executed (and is inside the window) still executes."""
    c = Chain()
    b = c.execute(1, 0, [req(0, 5, op_put("x", b"5")), req(0, 3, op_put("y", b"3"))])
    assert results(b) == [(OK, None), (OK, None)]
    assert c.kv.read("y") == b"3"
    b = c.execute(2, 0, [req(0, 3, op_put("y", b"3")), req(0, 4, op_get("x"))])
    assert results(b) == [(DUPLICATE, None), (OK, b"5")]


def test_exactly_once_is_per_client():
    c = Chain()
    b = c.execute(1, 0, [req(0, 1, op_put("k", b"0")), req(1, 1, op_put("k", b"1")), req(2, 1, op_get("k"))])
    assert results(b) == [(OK, None), (OK, None), (OK, b"1")]


def test_cached_reply():
    c = Chain()
    c.execute(1, 0, [req(0, 1, op_put("k", b"v"))])
    c.execute(2, 0, [b"garbage", req(1, 4, op_get("k")), req(0, 2, op_cas("k", b"nope", b"w"))])
    rec = c.executed(1, 4)
    assert (rec.timestamp, rec.height, rec.index) == (4, 2, 1)
    assert decode_result(rec.result) == (OK, b"v")
    rec0 = c.executed(0, 2)
    assert (rec0.height, rec0.index) == (2, 2) and decode_result(rec0.result) == (FAILED, b"v")
    assert c.executed(0, 1).result == encode_result(OK)
    # a duplicate neither replaces nor disturbs the cached reply
    c.kv.apply(op_put("k", b"changed behind the chain's back"))        # a later read would differ
    c.execute(3, 0, [req(1, 4, op_get("k"))])
    assert c.executed(1, 4) == rec and decode_result(c.executed(1, 4).result) == (OK, b"v")
    assert c.executed(1, 3) is None and c.executed(3, 1) is None


def test_malformed_transaction_and_malformed_op():
    c = Chain()
    junk = [b"", b"\x00", msgpack.packb({"client": 0}), wire.Prepare(1, 1, bytes(32), 0, bytes(64)).encode(),
            b"\x91" * 3000 + b"\xc0"]
    b = c.execute(1, 0, junk + [req(0, 1, b"not an op")])
    assert results(b)[:-1] == [(INVALID, b"malformed transaction")] * len(junk)
    assert results(b)[-1] == (INVALID, b"malformed operation")
    assert c.tree.size == len(junk) + 1                  # every transaction is a leaf, good or not
    assert c.executed(0, 1) is not None                  # a signed request with a bad op was executed
    assert results(c.execute(2, 0, [req(0, 1, b"not an op")])) == [(DUPLICATE, None)]
    assert len(c.kv) == 0


# ============================================================================ replay
def test_replay_reproduces_the_chain():
    c, blocks = _executed_chain()
    fresh = Chain()
    for b in blocks:
        fresh.replay(b)
    assert _state(fresh) == _state(c)
    for client in range(4):
        for ts in range(12):
            assert fresh.executed(client, ts) == c.executed(client, ts)
            assert fresh.is_stale(client, ts) == c.is_stale(client, ts)
    # and the replayed chain goes on exactly like the original
    nxt = [req(0, 9, op_get("a")), req(1, 2, op_get("a"))]
    assert c.execute(6, 8, nxt).encode() == fresh.execute(6, 8, nxt).encode()


def test_replay_from_decoded_bytes():
    c, blocks = _executed_chain()
    fresh = Chain()
    for b in blocks:
        fresh.replay(Block.decode(b.encode()))
    assert _state(fresh) == _state(c)


def _replay_prefix(blocks: list[Block], upto: int) -> Chain:
    c = Chain()
    for b in blocks[:upto]:
        c.replay(b)
    return c


@pytest.mark.parametrize("k", range(5))
def test_replay_rejects_altered_results(k: int):
    _, blocks = _executed_chain()
    b = blocks[k]
    variants = []
    if b.results:
        for i, r in enumerate(b.results):
            for alt in (encode_result(OK, b"forged"), encode_result(DUPLICATE), encode_result(INVALID, b"x")):
                if alt != r:
                    rs = b.results[:i] + [alt] + b.results[i + 1:]
                    variants.append(rs)
        variants.append(b.results[:-1])                          # one missing
        variants.append(b.results[::-1] if len(set(b.results)) > 1 else b.results + [b.results[0]])
    variants.append(b.results + [encode_result(OK)])             # one extra
    for rs in variants:
        # with the results root kept and with it recomputed: re-execution decides either way
        for root in (b.results_root, root_of(rs)):
            altered = dataclasses.replace(b, results=rs, results_root=root)
            c = _replay_prefix(blocks, k)
            with pytest.raises(ReplayError, match="results differ"):
                c.replay(altered)


def test_replay_rejects_other_tampering():
    _, blocks = _executed_chain()
    b = blocks[1]
    cases = {
        "swapped transactions": dataclasses.replace(b, txs=[b.txs[1], b.txs[0]] + b.txs[2:]),
        "tree root": dataclasses.replace(b, tree_root=bytes(32)),
        "tree size": dataclasses.replace(b, tree_size=b.tree_size + 1),
        "wrong previous hash": dataclasses.replace(b, prev_hash=bytes(32)),
        "wrong height": dataclasses.replace(b, height=3),
        "a transaction replaced": dataclasses.replace(b, txs=[req(0, 2, op_cas("a", b"1", b"99"))] + b.txs[1:]),
    }
    for what, altered in cases.items():
        c = _replay_prefix(blocks, 1)
        with pytest.raises(ReplayError):
            c.replay(altered)
    # out of order / repeated
    c = Chain()
    with pytest.raises(ReplayError, match="does not extend"):
        c.replay(blocks[1])
    c.replay(blocks[0])
    with pytest.raises(ReplayError, match="does not extend"):
        c.replay(blocks[0])


# ============================================================================ ledger.tx vs bft.wire
def test_tx_constants_match_the_wire():
    assert txmod.REQUEST_TAG == wire.Request.TAG
    assert txmod.VERSION == wire.VERSION
    assert txmod.REQUEST_DOMAIN == wire.Request.DOMAIN


def _agree(raw: bytes) -> None:
    m = wire.decode(raw)
    t = txmod.parse(raw)
    assert type(m) is wire.Request
    assert t is not None
    assert (t.client, t.timestamp, t.op, t.sig) == (m.client, m.timestamp, m.op, m.sig)
    assert t.signable() == m.signable()


def test_parse_agrees_with_decode_on_requests():
    v = Ed25519Verifier()
    for b in _executed_chain()[1]:
        for raw in b.txs:
            if type(_try_decode(raw)) is wire.Request:
                _agree(raw)
                t = txmod.parse(raw)
                assert v.verify(SIGNERS[t.client].public_key, txmod.REQUEST_DOMAIN, t.signable(), t.sig)
    for m in (wire.Request(0, 0, b"", bytes(64)), wire.Request(wire.MAX_U32, wire.MAX_U64, b"\xff" * wire.MAX_OP,
                                                                b"\xff" * 64)):
        _agree(m.encode())


def _try_decode(raw: bytes):
    try:
        return wire.decode(raw)
    except wire.DecodeError:
        return None


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, wire.MAX_U32), st.integers(0, wire.MAX_U64), st.binary(max_size=200),
       st.binary(min_size=64, max_size=64))
def test_parse_agrees_with_decode_property(client, ts, op, sig):
    _agree(wire.Request(client, ts, op, sig).encode())


@settings(max_examples=1500, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_whatever_decode_accepts_as_a_request_parse_reads_identically(data):
    """On mutated request encodings: parse never raises, and where the wire decodes a
    Request, parse returns the same fields."""
    raw = bytearray(req(data.draw(st.integers(0, 3)), data.draw(st.integers(0, 1 << 40)), op_put("k", b"v")))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(raw) - 1)) if raw else 0
        kind = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if kind == "flip" and raw:
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del raw[pos:pos + data.draw(st.integers(1, 4))]
        else:
            del raw[pos:]
    raw = bytes(raw)
    t = txmod.parse(raw)
    assert t is None or type(t) is txmod.Tx
    if type(_try_decode(raw)) is wire.Request:
        _agree(raw)


GARBAGE = [
    b"", b"\x00", b"\xc1", b"\x91" * 100_000 + b"\xc0", b"\xdd\xff\xff\xff\xff",
    msgpack.packb({"client": 1}), msgpack.packb({1: 2}), msgpack.packb([1, 1, 0, 0, b"op"]),
    msgpack.packb([1, 1, 0, 0, b"op", b"s" * 64, 0]), msgpack.packb([2, 1, 0, 0, b"op", b"s" * 64]),
    msgpack.packb([1, 2, 0, 0, b"op", b"s" * 64]), msgpack.packb([1, 1, -1, 0, b"op", b"s" * 64]),
    msgpack.packb([1, 1, 0, -1, b"op", b"s" * 64]), msgpack.packb([1, 1, "0", 0, b"op", b"s" * 64]),
    msgpack.packb([1, 1, 0, 0, "op", b"s" * 64]), msgpack.packb([1, 1, 0, 0, b"op", "s" * 64]),
    msgpack.packb([1, 1, 0, 0, b"op", None]), msgpack.packb([1, 1, 0, 1.0, b"op", b"s" * 64]),
    msgpack.packb(["1", 1, 0, 0, b"op", b"s" * 64]),
    req(0, 1, op_put("k", b"v")) + b"\x00", req(0, 1, op_put("k", b"v"))[:-1],
    wire.Commit(1, 1, bytes(32), 0, bytes(64)).encode(), wire.Redirect(1, 2, 3, 4).encode(),
]


@pytest.mark.parametrize("raw", GARBAGE, ids=range(len(GARBAGE)))
def test_parse_rejects_garbage(raw: bytes):
    assert txmod.parse(raw) is None
    assert _try_decode(raw) is None or type(_try_decode(raw)) is not wire.Request


# Encodings the wire rejects: ledger.tx.parse must reject them too (the two readers agree).
LENIENT = {
    "unsigned (empty sig)": wire.Request(1, 1, b"op").encode(),
    "short sig": msgpack.packb([1, 1, 0, 0, b"op", b"s" * 63]),
    "client above u32": msgpack.packb([1, 1, 1 << 32, 0, b"op", b"s" * 64]),
    "op above MAX_OP": msgpack.packb([1, 1, 0, 0, b"o" * (wire.MAX_OP + 1), b"s" * 64]),
    "boolean tag": msgpack.packb([True, 1, 0, 0, b"op", b"s" * 64]),
    "boolean version": msgpack.packb([1, True, 0, 0, b"op", b"s" * 64]),
}


@pytest.mark.parametrize("what", sorted(LENIENT))
def test_parse_rejects_what_the_wire_rejects(what: str):
    raw = LENIENT[what]
    assert _try_decode(raw) is None
    assert txmod.parse(raw) is None
