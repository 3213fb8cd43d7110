"""bft.wire: round trips, golden vectors, signable bytes, strict decoding, framing, fuzzing.

Golden vectors live in ``golden_wire.json`` next to this file: the exact hex encoding of
the fixed instance of every message type built by ``_samples()``. They pin the wire
format; a change to a message's fields, order, tag or version makes them fail on purpose.
After a deliberate wire change (and a VERSION bump where old peers exist), regenerate with

    cd /work/main && PYTHONPATH=. python tests/unit/test_wire.py --regenerate

and review the diff of golden_wire.json. The tests never regenerate them.
"""
from __future__ import annotations

import dataclasses
import json
import struct
import sys
from pathlib import Path

import msgpack

import ledger.wire as lw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bft import wire as w
from ledger import wire as lw
from bft.wire import (MAX_BATCH, MAX_FRAME, MAX_OP, MAX_U32, MAX_U64, VERSION, DecodeError,
                      FrameDecoder, Message, decode, frame, message_types)
from crypto.signing import Ed25519Signer, Ed25519Verifier, HashSigner, HashVerifier

GOLDEN = Path(__file__).with_name("golden_wire.json")

SIG_A = bytes(range(0, 64))
SIG_B = bytes(range(64, 128))
SIG_C = bytes(range(128, 192))
SIG_D = bytes(range(192, 256))
D1 = bytes(range(0, 32))
D2 = bytes(range(32, 64))
D3 = bytes(range(64, 96))
NONCE = bytes(range(96, 128))

SIGNED_TYPES = {"request", "pre-prepare", "prepare", "commit", "checkpoint", "view-change",
                "new-view", "px-accept", "auth", "attestation", "suspect"}
UNSIGNED_FIELDS = {"pre-prepare": {"batch"}, "px-accept": {"batch", "commit_index"}}


def _samples() -> dict[str, Message]:
    """One fixed, deterministic instance of every message type (every list non-empty)."""
    op = msgpack.packb(["put", "key", b"value"], use_bin_type=True)
    req = w.Request(client=3, timestamp=1_700_000_000_000_000_001, op=op, sig=SIG_A)
    req2 = w.Request(client=MAX_U32, timestamp=MAX_U64, op=b"", sig=SIG_B)
    pp = w.PrePrepare(view=1, seq=17, digest=D1, batch=[req.encode(), req2.encode()], replica=1, sig=SIG_B)
    prep2 = w.Prepare(view=1, seq=17, digest=D1, replica=2, sig=SIG_C)
    prep3 = w.Prepare(view=1, seq=17, digest=D1, replica=3, sig=SIG_D)
    cp = w.Checkpoint(seq=16, head=D2, tree_size=40, tree_root=D3, replica=2, sig=SIG_C)
    pc = w.PreparedCert(pre_prepare=pp, prepares=[prep2, prep3])
    vc = w.ViewChange(new_view=2, stable_seq=16, checkpoints=[cp], prepared=[pc], replica=3, sig=SIG_D)
    pp2 = w.PrePrepare(view=2, seq=17, digest=D1, batch=[req.encode()], replica=2, sig=SIG_C)
    acc = w.PxAccept(ballot=0x0501, slot=9, digest=D2, batch=[req.encode()], commit_index=8, replica=1, sig=SIG_A)
    msgs = [
        req,
        w.Reply(view=1, client=3, timestamp=1_700_000_000_000_000_001, replica=2, height=MAX_U64,
                index=MAX_U32, result=msgpack.packb([0, None])),
        w.Redirect(client=3, timestamp=12, replica=2, leader=1),
        w.ReceiptRequest(height=5, index=2),
        w.ReceiptResponse(height=5, index=2, block=b"\x94encoded block"),
        w.AttestRequest(height=5),
        w.Attestation(height=5, block_hash=D1, batch_size=7, replica=2, sig=SIG_A),
        w.ProofRequest(nonce=9, height=5, key=b"alice"),
        w.ProofResponse(nonce=9, replica=2, height=5, view=1, batch_size=7, header=b"\x9aheader",
                        cert=[(0, SIG_A), (1, SIG_B)], proof=b"\x96proof", refusal=b""),
        pp,
        prep2,
        w.Commit(view=1, seq=17, digest=D1, replica=0, sig=SIG_A),
        cp,
        pc,
        vc,
        w.NewView(view=2, view_changes=[vc], pre_prepares=[pp2], replica=2, sig=SIG_C),
        w.StateRequest(from_height=1, to_height=300, replica=3),
        w.BatchRequest(digest=D1, replica=2),
        w.Suspect(view=3, replica=1, sig=SIG_B),
        w.BatchResponse(digest=D1, batch=[req.encode(), req2.encode()], replica=1),
        w.StateResponse(replica=1, blocks=[b"block-1", b"block-2"], stable=[cp]),
        w.PxPrepare(ballot=0x0501, from_slot=8, replica=1),
        w.PxPromise(ballot=0x0501, replica=2, commit_index=8, accepted=[acc]),
        w.PxNack(ballot=0x0400, promised=0x0501, replica=2),
        acc,
        w.PxAccepted(ballot=0x0501, slot=9, replica=2),
        w.PxHeartbeat(ballot=0x0501, commit_index=9, replica=1),
        w.PxPreVote(ballot=0x0502, replica=2),
        w.PxPreVoteGrant(ballot=0x0502, replica=3),
        w.PxReadIndex(ballot=0x0501, round=4, commit_index=9, replica=1),
        w.PxReadIndexAck(ballot=0x0501, round=4, replica=2),
        w.Read(client=3, nonce=41, min_height=16, op=msgpack.packb(["get", "key"], use_bin_type=True)),
        w.ReadReply(client=3, nonce=41, replica=2, height=17, since=12, result=msgpack.packb([0, b"value"])),
        w.ReadRedirect(client=3, nonce=41, replica=2, leader=1),
        w.Hello(nonce=NONCE),
        w.Auth(role=1, ident=3, peer_role=0, peer_ident=2, direction=0, dialler_nonce=NONCE,
               listener_nonce=NONCE[::-1], sig=SIG_D),
        w.StatusRequest(nonce=77),
        w.StatusResponse(nonce=77, info=msgpack.packb({"view": 2, "executed": 17})),
        lw.HistoryRequest(nonce=5, key="k\u00e9y".encode(), after=3, limit=100),
        lw.HistoryResponse(nonce=5, replica=2, height=17, positions=[(4, 0), (9, 2)], more=1),
        lw.ScanRequest(nonce=6, prefix=b"acct-", start=b"acct-3", end=b"acct-9", at_height=12, limit=1000,
                        verified=1),
        lw.ScanResponse(nonce=6, replica=1, height=12, pairs=[(b"acct-3", b"100"), (b"acct-4", b"")], more=0,
                        error=b"", proofs=[b"\x96proof"]),
        lw.BlocksRequest(nonce=78, from_height=5, max_blocks=64),
        lw.BlocksResponse(nonce=78, from_height=5, head=9, blocks=[b"\x94block 5", b"\x94block 6"]),
    ]
    return {m.NAME: m for m in msgs}


SAMPLES = _samples()
ENCODINGS = [m.encode() for m in SAMPLES.values()]


def _regenerate() -> None:
    """Rewrite golden_wire.json from _samples(). Never called by the tests."""
    vectors = {name: m.encode().hex() for name, m in SAMPLES.items()}
    GOLDEN.write_text(json.dumps(vectors, indent=1) + "\n")
    print(f"wrote {len(vectors)} vectors to {GOLDEN}")


def _pack(v) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


def _decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


# ============================================================================ registry
def test_samples_cover_every_message_type():
    names = [c.NAME for c in message_types()]
    assert sorted(names) == sorted(SAMPLES)
    assert len(set(c.TAG for c in message_types())) == len(names)
    assert [c.TAG for c in message_types()] == sorted(c.TAG for c in message_types())
    for name, m in SAMPLES.items():
        assert type(m).NAME == name


def test_signed_flags_and_unsigned_fields_are_pinned():
    for cls in message_types():
        assert cls.SIGNED == (cls.NAME in SIGNED_TYPES), cls.NAME
        assert set(cls.UNSIGNED) == UNSIGNED_FIELDS.get(cls.NAME, set()), cls.NAME
        assert cls.DOMAIN == b"bftledger/v1/" + cls.NAME.encode()


def test_domains_are_unambiguous():
    """domain || signable never collides across types: domains are distinct and where one
    is a prefix of another (px-accept / px-accepted) the rest cannot begin a signable,
    which always starts with a msgpack array header."""
    array_headers = set(range(0x90, 0xA0)) | {0xDC, 0xDD}
    for m in SAMPLES.values():
        if m.SIGNED:
            assert m.signable()[0] in array_headers
    domains = [c.DOMAIN for c in message_types()]
    assert len(set(domains)) == len(domains)
    for a in domains:
        for b in domains:
            if a != b and b.startswith(a):
                assert b[len(a)] not in array_headers, (a, b)


# ============================================================================ round trips
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip(name: str):
    m = SAMPLES[name]
    enc = m.encode()
    d = decode(enc)
    assert type(d) is type(m)
    assert d == m
    assert d.encode() == enc
    assert type(m).from_list(m.to_list()) == m
    assert decode(bytearray(enc)) == m and decode(memoryview(enc)) == m
    assert decode(frame(enc)[4:]) == m


def test_round_trip_with_empty_lists_and_bounds():
    cases = [
        w.Request(client=0, timestamp=0, op=b"", sig=bytes(64)),
        w.Request(client=MAX_U32, timestamp=MAX_U64, op=b"\xff" * MAX_OP, sig=b"\xff" * 64),
        w.PrePrepare(view=MAX_U64, seq=MAX_U64, digest=bytes(32), batch=[], replica=MAX_U32, sig=bytes(64)),
        w.PrePrepare(view=0, seq=1, digest=bytes(32), batch=[b"r" * (MAX_OP + 256)] * 2, replica=0,
                     sig=bytes(64)),
        w.PrePrepare(view=0, seq=1, digest=bytes(32), batch=[b""] * MAX_BATCH, replica=0, sig=bytes(64)),
        w.ViewChange(new_view=1, stable_seq=0, checkpoints=[], prepared=[], replica=0, sig=bytes(64)),
        w.NewView(view=1, view_changes=[], pre_prepares=[], replica=0, sig=bytes(64)),
        w.StateResponse(replica=0, blocks=[], stable=[]),
        w.PxPromise(ballot=0, replica=0, commit_index=0, accepted=[]),
        w.Auth(role=255, ident=MAX_U32, peer_role=255, peer_ident=MAX_U32, direction=255, dialler_nonce=bytes(32),
               listener_nonce=bytes(32), sig=bytes(64)),
    ]
    for m in cases:
        assert decode(m.encode()) == m


# ============================================================================ golden vectors
def test_golden_vectors():
    golden = json.loads(GOLDEN.read_text())
    assert sorted(golden) == sorted(SAMPLES), "a message type was added or removed: regenerate (see docstring)"
    for name, m in SAMPLES.items():
        assert m.encode().hex() == golden[name], f"the encoding of {name} changed"
        assert decode(bytes.fromhex(golden[name])) == m


def test_golden_vector_spot_check_by_hand():
    """One vector spelled out byte by byte, independent of the JSON file."""
    m = w.Commit(view=1, seq=17, digest=D1, replica=0, sig=SIG_A)
    expected = (bytes([0x97, 0x0C, 0x01, 0x01, 0x11, 0xC4, 0x20]) + D1 + bytes([0x00, 0xC4, 0x40]) + SIG_A)
    assert m.encode() == expected
    assert m.signable() == bytes([0x96, 0x0C, 0x01, 0x01, 0x11, 0xC4, 0x20]) + D1 + b"\x00"
    assert w.StatusRequest(nonce=MAX_U64).encode() == b"\x93\x34\x01\xcf" + b"\xff" * 8


# ============================================================================ signatures
def _other(v):
    """A different value of the same wire shape."""
    if isinstance(v, Message):
        first = v._FIELD_NAMES[0]
        return dataclasses.replace(v, **{first: _other(getattr(v, first))})
    if type(v) is int:
        return v + 1 if v < MAX_U64 else v - 1
    if type(v) is bytes:
        return bytes([v[0] ^ 1]) + v[1:] if v else b"\x00"
    if type(v) is list:
        assert v, "samples have non-empty lists"
        return v[:-1]
    raise AssertionError(type(v))


@pytest.mark.parametrize("name", sorted(SIGNED_TYPES))
def test_signable_excludes_sig_and_unsigned_fields(name: str):
    m = SAMPLES[name]
    names = m._FIELD_NAMES
    assert names[-1] == "sig"
    lst = m.to_list()
    kept = [lst[0], lst[1]] + [lst[2 + i] for i, f in enumerate(names) if f != "sig" and f not in m.UNSIGNED]
    assert m.signable() == _pack(kept)
    assert dataclasses.replace(m, sig=_other(m.sig)).signable() == m.signable()
    for f in names:
        if f == "sig":
            continue
        m2 = dataclasses.replace(m, **{f: _other(getattr(m, f))})
        assert m2.encode() != m.encode()
        if f in m.UNSIGNED:
            assert m2.signable() == m.signable(), f
        else:
            assert m2.signable() != m.signable(), f


def test_pre_prepare_signature_covers_digest_not_batch():
    s = Ed25519Signer(bytes(range(32)))
    v = Ed25519Verifier()
    pp = dataclasses.replace(SAMPLES["pre-prepare"]).signed(s)
    assert pp.verify(v, s.public_key)
    sig = pp.sig
    other_batch = dataclasses.replace(pp, batch=[b"a different batch"])
    assert other_batch.verify(v, s.public_key)
    assert dataclasses.replace(pp, batch=[]).signed(s).sig == sig
    other_digest = dataclasses.replace(pp, digest=D2)
    assert not other_digest.verify(v, s.public_key)
    assert dataclasses.replace(pp, digest=D2).signed(s).sig != sig
    # a signature made for a PREPARE with the same (view, seq, digest) is no PRE-PREPARE signature
    prep = w.Prepare(view=pp.view, seq=pp.seq, digest=pp.digest, replica=pp.replica).signed(s)
    assert not dataclasses.replace(pp, sig=prep.sig).verify(v, s.public_key)


def test_px_accept_signature_ignores_batch_and_commit_index():
    s = HashSigner(b"leader")
    v = HashVerifier([s])
    acc = dataclasses.replace(SAMPLES["px-accept"]).signed(s)
    assert acc.verify(v, s.public_key)
    assert dataclasses.replace(acc, batch=[], commit_index=1234).verify(v, s.public_key)
    assert not dataclasses.replace(acc, slot=acc.slot + 1).verify(v, s.public_key)
    assert not dataclasses.replace(acc, ballot=acc.ballot + 1).verify(v, s.public_key)


@pytest.mark.parametrize("name", sorted(SIGNED_TYPES))
def test_sign_verify_every_signed_type(name: str):
    s, t = Ed25519Signer(bytes(range(32))), Ed25519Signer(bytes(range(1, 33)))
    v = Ed25519Verifier()
    m = dataclasses.replace(SAMPLES[name]).signed(s)
    assert m.verify(v, s.public_key)
    assert not m.verify(v, t.public_key)
    back = decode(m.encode())
    assert back.verify(v, s.public_key)
    for f in m._FIELD_NAMES:
        if f != "sig" and f not in m.UNSIGNED:
            assert not dataclasses.replace(m, **{f: _other(getattr(m, f))}).verify(v, s.public_key), f


# ============================================================================ strict decoding
@pytest.mark.parametrize("tag", [0, 6, 9, 19, 29, 36, 49, 54, 99, 127, 255, 65535, MAX_U64, -1, -(1 << 63)])
def test_unknown_tag(tag: int):
    _decode_error(_pack([tag, VERSION, 1, 2, 3]))


@pytest.mark.parametrize("tag", ["request", b"\x01", 1.0, None, True, [1], {"t": 1}])
def test_tag_of_wrong_type(tag):
    _decode_error(_pack([tag, VERSION, 3, 12, b"op", SIG_A]))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_wrong_version(name: str):
    lst = SAMPLES[name].to_list()
    for version in (0, 2, 255, MAX_U64, -1, True, 1.0, "1", b"\x01", None):
        _decode_error(_pack([lst[0], version] + lst[2:]))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_wrong_arity(name: str):
    lst = SAMPLES[name].to_list()
    _decode_error(_pack(lst[:-1]))
    _decode_error(_pack(lst + [0]))
    _decode_error(_pack(lst + [lst[-1]]))
    _decode_error(_pack(lst[:2]))
    _decode_error(_pack(lst[:1]))
    _decode_error(_pack([]))


def _wrong_values(v):
    """Wire values that are never acceptable where ``v`` (a valid wire value) stands."""
    common = ["text", 1.5, True, False, None, {"k": 1}, {}]
    if type(v) is int:
        return common + [-1, -(1 << 63), b"\x01", b"", [v], [], str(v)]
    if type(v) is bytes:
        return common + [0, len(v), [v], [], v.decode("latin-1")]
    if type(v) is list:
        return common + [0, b"", {"k": v}]
    raise AssertionError(type(v))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_wrong_field_types(name: str):
    lst = SAMPLES[name].to_list()
    for i in range(2, len(lst)):
        for bad in _wrong_values(lst[i]):
            _decode_error(_pack(lst[:i] + [bad] + lst[i + 1:]))


def test_integer_ranges():
    ok = w.Request(client=MAX_U32, timestamp=MAX_U64, op=b"", sig=SIG_A).to_list()
    assert decode(_pack(ok)) is not None
    _decode_error(_pack([1, 1, MAX_U32 + 1, 0, b"", SIG_A]))       # u32 field above 2^32-1
    _decode_error(_pack([1, 1, -1, 0, b"", SIG_A]))
    _decode_error(_pack([1, 1, 0, -1, b"", SIG_A]))
    _decode_error(_pack([51, 1, 256, 0, 0, 0, 0, NONCE, NONCE, SIG_A]))    # u8 role above 255
    assert decode(_pack([51, 1, 255, 0, 0, 0, 0, NONCE, NONCE, SIG_A])).role == 255
    # msgpack has no integer above 2^64-1; the nearest things to one are floats and
    # hand-made bytes, all rejected
    _decode_error(_pack([1, 1, 0, float(1 << 64), b"", SIG_A]))
    _decode_error(_pack([1, 1, 0, float(MAX_U64), b"", SIG_A]))
    # the largest value of each msgpack integer width is accepted where it fits
    for marker, size in ((0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8)):
        value = (1 << (8 * size)) - 1
        raw = b"\x96\x01\x01\x00" + bytes([marker]) + value.to_bytes(size, "big") + b"\xc4\x00\xc4\x40" + SIG_A
        assert decode(raw).timestamp == value


def test_oversized_fields():
    _decode_error(w.Request(client=1, timestamp=1, op=b"x" * (MAX_OP + 1), sig=SIG_A).encode())
    assert decode(w.Request(client=1, timestamp=1, op=b"x" * MAX_OP, sig=SIG_A).encode()).op == b"x" * MAX_OP
    _decode_error(w.StatusResponse(nonce=1, info=b"x" * (MAX_OP + 1)).encode())
    _decode_error(w.PrePrepare(view=0, seq=1, digest=D1, batch=[b"r" * (MAX_OP + 257)], replica=0,
                               sig=SIG_A).encode())
    _decode_error(w.PrePrepare(view=0, seq=1, digest=D1, batch=[b""] * (MAX_BATCH + 1), replica=0,
                               sig=SIG_A).encode())
    _decode_error(w.ReceiptResponse(height=1, index=0, block=b"b" * (w.MAX_BLOCK + 1)).encode())
    _decode_error(w.StateResponse(replica=0, blocks=[b""] * 257, stable=[]).encode())


@pytest.mark.parametrize("length", [0, 1, 31, 33, 64])
def test_wrong_length_digest_and_nonce(length: int):
    bad = bytes(length)
    _decode_error(w.Prepare(view=1, seq=1, digest=bad, replica=0, sig=SIG_A).encode())
    _decode_error(w.Checkpoint(seq=1, head=D1, tree_size=1, tree_root=bad, replica=0, sig=SIG_A).encode())
    _decode_error(w.Hello(nonce=bad).encode())


@pytest.mark.parametrize("length", [0, 1, 32, 63, 65, 128])
def test_wrong_length_signature(length: int):
    _decode_error(w.Commit(view=1, seq=1, digest=D1, replica=0, sig=bytes(length)).encode())
    _decode_error(w.Request(client=1, timestamp=1, op=b"", sig=bytes(length)).encode())


def test_unsigned_message_does_not_decode():
    """An unsigned Request (sig defaults to b"") encodes, but no peer accepts it."""
    _decode_error(w.Request(client=1, timestamp=1, op=b"x").encode())


def test_nested_messages_are_checked():
    vc = SAMPLES["view-change"].to_list()
    prep = SAMPLES["prepare"].to_list()
    # a PREPARE where a CHECKPOINT belongs
    _decode_error(_pack(vc[:4] + [[prep]] + vc[5:]))
    # a CHECKPOINT with a short digest inside a VIEW-CHANGE
    cp = SAMPLES["checkpoint"].to_list()
    cp[3] = b"\x00" * 31
    _decode_error(_pack(vc[:4] + [[cp]] + vc[5:]))
    # a nested message with a wrong version
    cp = SAMPLES["checkpoint"].to_list()
    cp[1] = 2
    _decode_error(_pack(vc[:4] + [[cp]] + vc[5:]))
    # a PRE-PREPARE inside a prepared certificate inside a view change inside a new view, with
    # a negative sequence number four levels down
    nv = SAMPLES["new-view"].to_list()
    nv[3][0][5][0][2][3] = -1
    _decode_error(_pack(nv))


def test_trailing_bytes():
    for enc in ENCODINGS:
        for extra in (b"\x00", b"\xc0", enc, b"\x90"):
            _decode_error(enc + extra)


def test_truncated():
    for enc in ENCODINGS:
        for cut in range(len(enc)):
            _decode_error(enc[:cut])


def test_not_an_array():
    for v in ({"tag": 1}, {1: 2}, {b"k": [1, 1]}, 1, b"\x01\x01", "request", None, True, 1.0, []):
        _decode_error(_pack(v))
    # a map whose values would make a valid request
    _decode_error(_pack(dict(enumerate(SAMPLES["request"].to_list()))))
    _decode_error(b"")
    _decode_error(b"\xc1")                                  # a byte msgpack never uses
    _decode_error(b"\xd4\x01\x00")                          # an extension type
    _decode_error(_pack([1, 1, 3, 12, msgpack.ExtType(5, b"op"), SIG_A]))
    _decode_error(b"\x96\x01\x01\x03\x0c\xa2\xff\xfe\xc4\x40" + SIG_A)  # op as invalid UTF-8 str


@pytest.mark.parametrize("depth", [2, 50, 1000, 1100, 100_000])
def test_deep_nesting(depth: int):
    _decode_error(b"\x91" * depth + b"\xc0")
    _decode_error(b"\x92\x01" * depth + b"\xc0")
    # deep inside an otherwise well-formed VIEW-CHANGE's checkpoint list
    head = _pack(SAMPLES["view-change"].to_list()[:4])        # [tag, version, new_view, stable_seq]
    assert head[0] == 0x94
    rest = _pack(SAMPLES["view-change"].to_list()[5:])
    _decode_error(bytes([0x98]) + head[1:] + b"\x91" * depth + b"\x90" + rest[1:])
    # the same frame with the nesting taken out is a valid VIEW-CHANGE: the depth is the fault
    assert decode(bytes([0x98]) + head[1:] + b"\x90" + rest[1:]).checkpoints == []


def test_oversized_message():
    _decode_error(b"\x00" * (MAX_FRAME + 1))
    _decode_error(w.Request(client=1, timestamp=1, op=b"", sig=SIG_A).encode() + b"\x00" * MAX_FRAME)


# ============================================================================ framing
def test_frame_format():
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert frame(b"") == b"\x00\x00\x00\x00"
    with pytest.raises(ValueError):
        frame(b"\x00" * (MAX_FRAME + 1))
    assert len(frame(b"\x00" * MAX_FRAME)) == MAX_FRAME + 4


def test_frame_decoder_byte_by_byte():
    bodies = ENCODINGS + [b"", b"x"]
    stream = b"".join(frame(b) for b in bodies)
    fd = FrameDecoder()
    out = []
    for i in range(len(stream)):
        out += fd.feed(stream[i:i + 1])
    assert out == bodies
    assert fd.pending == 0
    assert [decode(b) for b in out[:len(ENCODINGS)]] == list(SAMPLES.values())


def test_frame_decoder_many_frames_in_one_feed_and_odd_chunks():
    bodies = ENCODINGS * 3
    stream = b"".join(frame(b) for b in bodies)
    fd = FrameDecoder()
    assert fd.feed(stream) == bodies and fd.pending == 0
    for chunk in (2, 3, 7, 100, 1000):
        fd = FrameDecoder()
        out = []
        for i in range(0, len(stream), chunk):
            out += fd.feed(stream[i:i + chunk])
        assert out == bodies, chunk
        assert fd.pending == 0


def test_frame_decoder_partial_frames_buffer():
    body = SAMPLES["new-view"].encode()
    f = frame(body)
    fd = FrameDecoder()
    assert fd.feed(f[:2]) == [] and fd.pending == 2
    assert fd.feed(f[2:4]) == [] and fd.pending == 4
    assert fd.feed(f[4:10]) == [] and fd.pending == 10
    assert fd.feed(f[10:] + f[:5]) == [body] and fd.pending == 5
    assert fd.feed(f[5:]) == [body] and fd.pending == 0
    assert fd.feed(b"") == []


@pytest.mark.parametrize("length", [0xFFFFFFFF, 1 << 31, MAX_FRAME + 1])
def test_frame_decoder_rejects_oversized_length_before_body(length: int):
    fd = FrameDecoder()
    with pytest.raises(DecodeError):
        fd.feed(struct.pack(">I", length))          # just the 4 bytes of the prefix
    fd = FrameDecoder()
    assert fd.feed(b"\x00\x00\x00\x01z"[:2]) == []
    with pytest.raises(DecodeError):
        fd.feed(b"\x00\x01z" + struct.pack(">I", length))   # after a good frame in the same feed


def test_frame_decoder_accepts_max_frame_length():
    fd = FrameDecoder()
    assert fd.feed(struct.pack(">I", MAX_FRAME)) == []
    assert fd.pending == 4


def test_frame_decoder_custom_cap():
    fd = FrameDecoder(max_frame=10)
    assert fd.feed(frame(b"0123456789")) == [b"0123456789"]
    with pytest.raises(DecodeError):
        fd.feed(frame(b"0123456789a"))


# ============================================================================ fuzzing
def _check_decode(data: bytes) -> None:
    """decode returns a Message or raises DecodeError; a decoded message re-encodes to
    bytes that decode to an equal message (and re-encode identically)."""
    try:
        m = decode(data)
    except DecodeError:
        return
    assert isinstance(m, Message)
    enc = m.encode()
    again = decode(enc)
    assert again == m
    assert type(again) is type(m)
    assert again.encode() == enc


_FUZZ = settings(max_examples=5000, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_TAGS = sorted(c.TAG for c in message_types())


@st.composite
def _random_frames(draw) -> bytes:
    """Fully random bytes, half of them behind a plausible [tag, version] array header."""
    body = draw(st.binary(max_size=600))
    if draw(st.booleans()):
        arity = draw(st.integers(0, 15))
        tag = draw(st.sampled_from(_TAGS))
        return bytes([0x90 | arity]) + _pack(tag) + b"\x01" + body
    return body


@_FUZZ
@given(_random_frames())
def test_fuzz_random_bytes(data: bytes):
    _check_decode(data)


@st.composite
def _mutated(draw) -> bytes:
    b = bytearray(draw(st.sampled_from(ENCODINGS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate"]))
        pos = draw(st.integers(0, max(len(b) - 1, 0)))
        if kind == "flip" and b:
            b[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and b:
            b[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x90, 0x9F, 0xC0, 0xC1, 0xC2, 0xC4, 0xCC,
                                           0xCF, 0xD0, 0xD3, 0xDC, 0xDD, 0xDE, 0xFF, draw(st.integers(0, 255))]))
        elif kind == "insert":
            b[pos:pos] = draw(st.binary(min_size=1, max_size=9))
        elif kind == "delete" and b:
            del b[pos:pos + draw(st.integers(1, 9))]
        elif kind == "truncate":
            del b[pos:]
        elif kind == "duplicate" and b:
            b[pos:pos] = b[pos:pos + draw(st.integers(1, 40))]
    return bytes(b)


@_FUZZ
@given(_mutated())
def test_fuzz_mutated_encodings(data: bytes):
    _check_decode(data)


_wire_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), MAX_U64) | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.binary(max_size=70)
    | st.sampled_from([b"\x00" * 32, SIG_A, 0, 1, MAX_U32, MAX_U32 + 1, MAX_U64]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=12,
)


@st.composite
def _structured(draw) -> bytes:
    """A real message's array with some fields (or nested fields) replaced by random values."""
    lst = draw(st.sampled_from([m.to_list() for m in SAMPLES.values()]))

    def perturb(v, depth):
        if type(v) is list and v and depth < 4 and draw(st.booleans()):
            i = draw(st.integers(0, len(v) - 1))
            return v[:i] + [perturb(v[i], depth + 1)] + v[i + 1:]
        return draw(_wire_values)

    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lst) - 1))
        lst = lst[:i] + [perturb(lst[i], 0)] + lst[i + 1:]
    return _pack(lst)


@settings(max_examples=2000, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_structured())
def test_fuzz_structured_field_values(data: bytes):
    _check_decode(data)


if __name__ == "__main__":
    if sys.argv[1:] == ["--regenerate"]:
        _regenerate()
    else:
        print(__doc__)


def test_the_proof_cap_of_a_scan_answer_is_the_state_proofs():
    from ledger.statetree import MAX_PROOF_BYTES
    assert lw.MAX_PROOF_BYTES == MAX_PROOF_BYTES


def test_the_key_cap_of_queries_and_proofs_is_the_states():
    from ledger.state import MAX_KEY
    assert lw.MAX_KEY_BYTES == MAX_KEY
