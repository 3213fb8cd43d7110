"""The wire codec and the client-facing messages of a ledger service.

A message encodes as a msgpack array ``[tag, version, field...]``; nested messages (a
CHECKPOINT inside a VIEW-CHANGE) encode the same way. Decoding validates the tag,
version, arity and every field's type, range and size, and maps every failure to
``DecodeError`` so that callers handle exactly one exception for anything a peer can send.

A signed message's signature covers a domain tag naming its type plus the encoding of
its fields except the signature and the fields listed in ``UNSIGNED`` (a PRE-PREPARE
signs the batch digest, not the batch, so that certificates stay small).

Why this lives in ``ledger`` and not in ``bft``: what a client and a replica say to each
other (REQUEST, REPLY, REDIRECT, READ, READ-REPLY, receipts, attestations, state proofs, status) and how a link is
authenticated (HELLO, AUTH) do not depend on the consensus protocol that orders the
requests, and ``ledger.client`` must speak them without importing ``bft`` (the layers
are crypto <- ledger <- bft). So this module holds the codec (the ``Message`` base, the
one tag registry, ``decode``, framing, the size caps) and those messages;
``bft.wire`` registers the consensus messages (PBFT's and Multi-Paxos') in the same
registry and re-exports everything here, so ``from bft.wire import Request`` still works
and one ``decode`` reads every message once ``bft.wire`` is imported. A process that
imports only this module (a client) decodes only client-facing messages: anything else
a replica might send it is an unknown tag, a ``DecodeError``.

The encoding is pinned by ``tests/unit/test_wire.py``'s golden vectors.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, fields as dc_fields
from typing import Any, Callable, ClassVar

import msgpack

from crypto.signing import SIGNATURE_SIZE, Signer, Verifier

VERSION = 1
MAX_FRAME = 8 * 1024 * 1024          # hard cap on one frame's body, checked before reading it
MAX_OP = 64 * 1024                   # a client operation
MAX_READ_OP = 4096                   # a read-only operation (a get: a key of at most 1 KiB)
MAX_LIST = 4096                      # any other list
MAX_BLOCK = 4 * 1024 * 1024          # one encoded block in a state-transfer response
MAX_U64 = (1 << 64) - 1
MAX_U32 = (1 << 32) - 1
DOMAIN_PREFIX = b"bftledger/v1/"
MAX_KEY_BYTES = 1024                 # a key, prefix or bound's UTF-8 bytes (ledger.state.MAX_KEY)
MAX_HEADER = 512                     # an encoded block header (about 250 bytes)
MAX_CERT = 1024                      # signatures in a block's certificate
MAX_PROOF_BYTES = 349_440            # an encoded state proof (ledger.statetree.MAX_PROOF_BYTES, 341 KiB)
MAX_REFUSAL = 1024
REBUILDING = b"rebuilding: "         # a PROOF-RESPONSE refusal that means "ask again" (bft.runtime.proofs)


class DecodeError(ValueError):
    """Anything malformed that came from outside: the one error a decoder raises."""


# ----------------------------------------------------------------------------- field kinds
Kind = Callable[[Any], Any]


def uint(limit: int) -> Kind:
    def check(v: Any) -> int:
        if type(v) is not int or v < 0 or v > limit:
            raise DecodeError(f"expected an integer in 0..{limit}, got {type(v).__name__}")
        return v
    return check


def blob(max_len: int, exact: int | None = None) -> Kind:
    def check(v: Any) -> bytes:
        if type(v) is not bytes:
            raise DecodeError(f"expected bytes, got {type(v).__name__}")
        if exact is not None and len(v) != exact:
            raise DecodeError(f"expected {exact} bytes, got {len(v)}")
        if len(v) > max_len:
            raise DecodeError(f"field of {len(v)} bytes exceeds {max_len}")
        return v
    return check


def list_of(item: Kind, max_len: int = MAX_LIST) -> Kind:
    def check(v: Any) -> list:
        if type(v) is not list:
            raise DecodeError(f"expected a list, got {type(v).__name__}")
        if len(v) > max_len:
            raise DecodeError(f"list of {len(v)} exceeds {max_len}")
        return [item(x) for x in v]
    return check


def tuple_of(*items: Kind) -> Kind:
    def check(v: Any) -> tuple:
        if type(v) is not list or len(v) != len(items):
            raise DecodeError(f"expected a {len(items)}-tuple")
        return tuple(k(x) for k, x in zip(items, v))
    return check


def nested(name: str) -> Kind:
    def check(v: Any) -> "Message":
        cls = _BY_NAME[name]
        return cls.from_list(v)
    return check


u64 = uint(MAX_U64)
u32 = uint(MAX_U32)
u8 = uint(255)
digest = blob(32, exact=32)
sig_kind = blob(SIGNATURE_SIZE, exact=SIGNATURE_SIZE)
op_bytes = blob(MAX_OP)
small_bytes = blob(MAX_OP)
block_bytes = blob(MAX_BLOCK)


# ----------------------------------------------------------------------------- the base
class Message:
    """Base of every wire message. Subclasses are slotted dataclasses with a SCHEMA."""

    TAG: ClassVar[int]
    NAME: ClassVar[str]
    SCHEMA: ClassVar[tuple[Kind, ...]]
    SIGNED: ClassVar[bool] = False
    UNSIGNED: ClassVar[frozenset[str]] = frozenset()
    _FIELD_NAMES: ClassVar[tuple[str, ...]]
    _SIGN_INDEX: ClassVar[tuple[int, ...]]
    DOMAIN: ClassVar[bytes]

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)

    # -- encoding
    def to_list(self) -> list:
        out: list[Any] = [self.TAG, VERSION]
        for name in self._FIELD_NAMES:
            out.append(_to_wire(getattr(self, name)))
        return out

    def encode(self) -> bytes:
        return msgpack.packb(self.to_list(), use_bin_type=True)

    @classmethod
    def from_list(cls, v: Any) -> "Message":
        if type(v) is not list or len(v) < 2:
            raise DecodeError("a message is an array [tag, version, ...]")
        if v[0] != cls.TAG or type(v[0]) is not int:
            raise DecodeError(f"expected a {cls.NAME} message")
        if v[1] != VERSION or type(v[1]) is not int:
            raise DecodeError(f"unsupported version {v[1]!r} of {cls.NAME}")
        if len(v) != 2 + len(cls.SCHEMA):
            raise DecodeError(f"{cls.NAME} has {len(cls.SCHEMA)} fields, got {len(v) - 2}")
        return cls(*[k(x) for k, x in zip(cls.SCHEMA, v[2:])])

    # -- signatures
    def signable(self) -> bytes:
        """The bytes a signature covers: the fields minus the signature and UNSIGNED ones."""
        vals = [self.TAG, VERSION]
        names = self._FIELD_NAMES
        for i in self._SIGN_INDEX:
            vals.append(_to_wire(getattr(self, names[i])))
        return msgpack.packb(vals, use_bin_type=True)

    def signed(self, signer: Signer) -> "Message":
        self.sig = signer.sign(self.DOMAIN, self.signable())  # type: ignore[attr-defined]
        return self

    def verify(self, verifier: Verifier, public_key: bytes) -> bool:
        return verifier.verify(public_key, self.DOMAIN, self.signable(), self.sig)  # type: ignore[attr-defined]


def _to_wire(v: Any) -> Any:
    if isinstance(v, Message):
        return v.to_list()
    if type(v) is list or type(v) is tuple:
        return [_to_wire(x) for x in v]
    return v


_BY_TAG: dict[int, type[Message]] = {}
_BY_NAME: dict[str, type[Message]] = {}


def message(tag: int, name: str, *, unsigned: tuple[str, ...] = ()) -> Callable[[type], type]:
    """Register a slotted dataclass as a wire message; its annotations' order is the wire order."""

    def wrap(cls: type) -> type:
        dc = dataclass(slots=True)(cls)
        names = tuple(f.name for f in dc_fields(dc))
        schema = tuple(getattr(dc, "_kinds")[n] for n in names)
        signed = bool(names) and names[-1] == "sig"
        dc.TAG, dc.NAME, dc.SCHEMA, dc.SIGNED = tag, name, schema, signed
        dc.UNSIGNED = frozenset(unsigned)
        dc._FIELD_NAMES = names
        dc._SIGN_INDEX = tuple(i for i, n in enumerate(names) if n != "sig" and n not in unsigned)
        dc.DOMAIN = DOMAIN_PREFIX + name.encode()
        if tag in _BY_TAG or name in _BY_NAME:
            raise RuntimeError(f"duplicate message tag {tag} or name {name}")
        _BY_TAG[tag] = dc
        _BY_NAME[name] = dc
        return dc

    return wrap


# ----------------------------------------------------------------------------- client <-> replica
@message(1, "request")
class Request(Message):
    """REQUEST <op, timestamp, client>, signed by the client; its encoding is a ledger leaf."""
    client: int
    timestamp: int
    op: bytes
    sig: bytes = b""
    _kinds = dict(client=u32, timestamp=u64, op=op_bytes, sig=sig_kind)


@message(2, "reply")
class Reply(Message):
    """REPLY; unsigned because it travels on a channel authenticated to the replica."""
    view: int
    client: int
    timestamp: int
    replica: int
    height: int
    index: int
    result: bytes
    _kinds = dict(view=u64, client=u32, timestamp=u64, replica=u32, height=u64, index=u32, result=small_bytes)


@message(3, "redirect")
class Redirect(Message):
    """Paxos follower's answer to a client: not the leader; try ``leader``."""
    client: int
    timestamp: int
    replica: int
    leader: int
    _kinds = dict(client=u32, timestamp=u64, replica=u32, leader=u32)


@message(4, "receipt-request")
class ReceiptRequest(Message):
    height: int
    index: int
    _kinds = dict(height=u64, index=u32)


@message(5, "receipt-response")
class ReceiptResponse(Message):
    """The material of a receipt; self-certifying, so any replica may serve it."""
    height: int
    index: int
    block: bytes          # the encoded block (header, transactions, results, certificate)
    _kinds = dict(height=u64, index=u32, block=block_bytes)


@message(6, "attest-request")
class AttestRequest(Message):
    """A client asks a replica to sign the hash of the block it executed at ``height``."""
    height: int
    _kinds = dict(height=u64)


@message(7, "attestation")
class Attestation(Message):
    """A replica's signature on an executed block's hash and its number of transactions
    (see ledger.certificate)."""
    height: int
    block_hash: bytes
    batch_size: int
    replica: int
    sig: bytes = b""
    _kinds = dict(height=u64, block_hash=digest, batch_size=u32, replica=u32, sig=sig_kind)


@message(8, "proof-request")
class ProofRequest(Message):
    """A client asks a replica for a verified read (issue 16): the state proof of ``key``
    (UTF-8) at ``height`` (0: the replica's current height), with the header and the
    certificate of that block. Unsigned, like READ: it changes nothing."""
    nonce: int
    height: int
    key: bytes
    _kinds = dict(nonce=u64, height=u64, key=blob(MAX_KEY_BYTES))


@message(9, "proof-response")
class ProofResponse(Message):
    """A replica's answer to a PROOF-REQUEST: the header of the block at ``height`` (its
    msgpack encoding), the view and certificate that block carries, its number of
    transactions (which the execution attestations sign) and the encoded state proof
    (``ledger.statetree.StateProof``). Unsigned and untrusted: the client checks it
    against f+1 attestations of the header's hash (``ledger.readproof``). A refused
    query has height 0 and says why in ``refusal``."""
    nonce: int
    replica: int
    height: int
    view: int
    batch_size: int
    header: bytes
    cert: list
    proof: bytes
    refusal: bytes
    _kinds = dict(nonce=u64, replica=u32, height=u64, view=u64, batch_size=u32, header=blob(MAX_HEADER),
                  cert=list_of(tuple_of(u32, sig_kind), MAX_CERT), proof=blob(MAX_PROOF_BYTES),
                  refusal=blob(MAX_REFUSAL))


@message(60, "read")
class Read(Message):
    """A read-only operation answered without ordering (Castro & Liskov, TOCS 2002, §5.1.3):
    sent to every replica (pbft) or to the leader (paxos), never put in a block.

    Unsigned: it changes nothing and is never relayed, so the channel, which authenticates
    the client, is its authentication (a replica drops one whose ``client`` is not the
    channel's). ``nonce`` tells the client's reads apart (its own counter, not a request
    timestamp). A replica answers from a state at height ``min_height`` or above: the
    client's floor, the height of its latest write or read, so that it reads its own writes
    and never goes back in time."""
    client: int
    nonce: int
    min_height: int
    op: bytes
    _kinds = dict(client=u32, nonce=u64, min_height=u64, op=blob(MAX_READ_OP))


@message(61, "read-reply")
class ReadReply(Message):
    """A replica's answer to a READ: ``result`` (as an ordered ``get`` would return it) in its
    state at ``height``, where it has held since the block at ``since`` wrote the key.
    Unsigned, like REPLY: it travels on a channel authenticated to the replica, and the
    client counts it under the replica id the channel proved. A refused read is answered
    with a BUSY result (height 0)."""
    client: int
    nonce: int
    replica: int
    height: int
    since: int
    result: bytes
    _kinds = dict(client=u32, nonce=u64, replica=u32, height=u64, since=u64, result=small_bytes)


@message(62, "read-redirect")
class ReadRedirect(Message):
    """A Paxos follower's answer to a READ: only the leader answers reads; try ``leader``."""
    client: int
    nonce: int
    replica: int
    leader: int
    _kinds = dict(client=u32, nonce=u64, replica=u32, leader=u32)


# ----------------------------------------------------------------------------- history and scans (issue 16)
MAX_QUERY_ITEMS = 1000               # positions or pairs in one answer; the client pages for more


@message(70, "history-request")
class HistoryRequest(Message):
    """Where ``key`` (UTF-8) was written: the (height, index) of up to ``limit`` transactions
    above height ``after``, oldest first. Answered from the replica's history index
    (``ledger.history``); the client checks each position against a certified block."""
    nonce: int
    key: bytes
    after: int
    limit: int
    _kinds = dict(nonce=u64, key=blob(MAX_KEY_BYTES), after=u64, limit=u32)


@message(71, "history-response")
class HistoryResponse(Message):
    """``positions`` of the key's writes; ``height`` the last block the replica indexed;
    ``more`` 1 when the page was cut at the limit."""
    nonce: int
    replica: int
    height: int
    positions: list
    more: int
    _kinds = dict(nonce=u64, replica=u32, height=u64, positions=list_of(tuple_of(u64, u32), MAX_QUERY_ITEMS),
                  more=u8)


@message(72, "scan-request")
class ScanRequest(Message):
    """Keys from ``start`` (inclusive) below ``end`` (exclusive; empty: no bound) that begin
    with ``prefix``, in key order, at most ``limit``, in the state after block ``at_height``
    (0: the replica's current state); ``verified`` 1 asks for the probe proofs of
    ``ledger.rangeproof`` with it."""
    nonce: int
    prefix: bytes
    start: bytes
    end: bytes
    at_height: int
    limit: int
    verified: int
    _kinds = dict(nonce=u64, prefix=blob(MAX_KEY_BYTES), start=blob(MAX_KEY_BYTES), end=blob(MAX_KEY_BYTES),
                  at_height=u64, limit=u32, verified=u8)


@message(73, "scan-response")
class ScanResponse(Message):
    """(key as UTF-8, value) pairs in key order at ``height``; ``more`` 1 when keys in range
    follow (cut at the limit or at ``MAX_SCAN_BYTES`` of values); ``error`` non-empty when
    the replica refused the scan (e.g. ``at_height`` above its height), with the reason.
    ``proofs``: the encoded ``StateProof`` of each probe when the scan asked for them."""
    nonce: int
    replica: int
    height: int
    pairs: list
    more: int
    error: bytes
    proofs: list
    _kinds = dict(nonce=u64, replica=u32, height=u64,
                  pairs=list_of(tuple_of(blob(MAX_KEY_BYTES), blob(MAX_OP)), MAX_QUERY_ITEMS), more=u8,
                  error=blob(MAX_REFUSAL), proofs=list_of(blob(MAX_PROOF_BYTES), MAX_QUERY_ITEMS + 1))


# ----------------------------------------------------------------------------- link authentication, status
@message(50, "hello")
class Hello(Message):
    """First frame each side sends on a plaintext link: a fresh nonce for the transcript."""
    nonce: bytes
    _kinds = dict(nonce=digest)


@message(51, "auth")
class Auth(Message):
    """Proof of identity on a plaintext link (role 0 replica, 1 client).

    It names the signer, the peer it is meant for, the direction (0: from the side that
    dialled, 1: from the side that accepted) and both sides' nonces, so that it can be
    neither reflected back, nor relayed to a third node, nor replayed on another
    connection. It cannot bind the TCP channel itself: see ``ledger.net.channel``."""
    role: int
    ident: int
    peer_role: int
    peer_ident: int
    direction: int
    dialler_nonce: bytes
    listener_nonce: bytes
    sig: bytes = b""
    _kinds = dict(role=u8, ident=u32, peer_role=u8, peer_ident=u32, direction=u8, dialler_nonce=digest,
                  listener_nonce=digest, sig=sig_kind)


@message(52, "status-request")
class StatusRequest(Message):
    nonce: int
    _kinds = dict(nonce=u64)


@message(53, "status-response")
class StatusResponse(Message):
    """A replica's self-report for ``bftledger status`` (msgpack-encoded map in ``info``)."""
    nonce: int
    info: bytes
    _kinds = dict(nonce=u64, info=small_bytes)


STREAM_BLOCKS = 64                   # blocks in one BlocksResponse (ledger.stream)


@message(80, "blocks-request")
class BlocksRequest(Message):
    """A subscriber asks for committed blocks ``from_height`` on, at most ``max_blocks`` of them
    (issue 16, ``ledger.stream``); ``max_blocks`` 0 asks only for the replica's height."""
    nonce: int
    from_height: int
    max_blocks: int
    _kinds = dict(nonce=u64, from_height=u64, max_blocks=uint(STREAM_BLOCKS))


@message(81, "blocks-response")
class BlocksResponse(Message):
    """Consecutive blocks from ``from_height`` (possibly none) and the replica's height when it
    answered: what the subscriber has not got yet it asks for again, from its next height.
    Self-certifying, so any replica may serve them; the subscriber checks each."""
    nonce: int
    from_height: int
    head: int
    blocks: list[bytes]
    _kinds = dict(nonce=u64, from_height=u64, head=u64, blocks=list_of(block_bytes, STREAM_BLOCKS))


# ----------------------------------------------------------------------------- entry points
def decode(data: bytes) -> Message:
    """Decode one frame body. Raises DecodeError, and only DecodeError, on bad input."""
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) > MAX_FRAME:
        raise DecodeError(f"message of {len(data)} bytes exceeds {MAX_FRAME}")
    try:
        v = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as e:  # msgpack raises several types (ExtraData, FormatError, ValueError, ...)
        raise DecodeError(f"not a msgpack value: {type(e).__name__}") from None
    if type(v) is not list or len(v) < 2:
        raise DecodeError("a message is an array [tag, version, ...]")
    tag = v[0]
    if type(tag) is not int:
        raise DecodeError("message tag is not an integer")
    cls = _BY_TAG.get(tag)
    if cls is None:
        raise DecodeError(f"unknown message tag {tag}")
    try:
        return cls.from_list(v)
    except DecodeError:
        raise
    except RecursionError:
        raise DecodeError("message nested too deeply") from None


def message_types() -> list[type[Message]]:
    return [_BY_TAG[t] for t in sorted(_BY_TAG)]


_LEN = struct.Struct(">I")


def frame(body: bytes) -> bytes:
    """Length-prefix a body; refuses to build a frame the receiver would reject."""
    if len(body) > MAX_FRAME:
        raise ValueError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Splits a byte stream into frame bodies; the length cap is checked before buffering a body."""

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            (length,) = _LEN.unpack_from(buf, pos)
            if length > self.max_frame:
                raise DecodeError(f"frame length {length} exceeds the cap of {self.max_frame}")
            if n - pos - 4 < length:
                break
            out.append(bytes(buf[pos + 4: pos + 4 + length]))
            pos += 4 + length
        if pos:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)
