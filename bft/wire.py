"""The consensus messages of both modes (PBFT's and Multi-Paxos'), on ``ledger.wire``'s codec.

The codec (the ``Message`` base class, the tag registry, ``decode``/``DecodeError``,
framing, signing and the size caps) and the messages a client exchanges with a replica
(REQUEST, REPLY, REDIRECT, receipts, attestations, status, HELLO/AUTH) are in
``ledger.wire``, because they do not depend on the consensus protocol and the client
(``ledger.client``) must not import ``bft``. This module registers the messages replicas
exchange among themselves in the same registry, so once it is imported ``decode`` reads
every message, and re-exports ``ledger.wire`` so that ``bft.wire`` remains the one import
the protocol cores, the runtime and the tests need.

See ``ledger.wire`` for the encoding: ``[tag, version, field...]`` as a msgpack array; a
signature covers a domain tag naming the type plus the fields except the signature and
those in ``UNSIGNED``.
"""
from __future__ import annotations

from ledger.wire import (DOMAIN_PREFIX, MAX_BLOCK, MAX_FRAME, MAX_LIST, MAX_OP, MAX_U32, MAX_U64, VERSION,
                         AttestRequest, Attestation, Auth, DecodeError, FrameDecoder, Hello, Kind, Message, Read,
                         ProofRequest, ProofResponse, ReadRedirect, ReadReply,
                         ReceiptRequest, ReceiptResponse, Redirect, Reply, Request, StatusRequest, StatusResponse,
                         blob, block_bytes, decode, digest, frame, message, message_types, op_bytes, sig_kind,
                         small_bytes, u8, u32, u64)
from ledger.wire import list_of as _list
from ledger.wire import nested as _nested
from ledger.wire import tuple_of as _tuple

MAX_BATCH = 4096                     # requests in one PRE-PREPARE / ACCEPT
MAX_BATCH_BYTES = 3 * 1024 * 1024    # a batch's weight (requests plus results); a block stays under MAX_BLOCK

request_bytes = blob(MAX_OP + 256)                   # an encoded REQUEST inside a batch
signer_pair = _tuple(u32, sig_kind)                  # (replica id, signature) in a certificate


# ----------------------------------------------------------------------------- pbft
@message(10, "pre-prepare", unsigned=("batch",))
class PrePrepare(Message):
    """PRE-PREPARE <v, n, d>; d is the RFC 9162 root over the batch's encoded requests."""
    view: int
    seq: int
    digest: bytes
    batch: list[bytes]
    replica: int
    sig: bytes = b""
    _kinds = dict(view=u64, seq=u64, digest=digest, batch=_list(request_bytes, MAX_BATCH), replica=u32, sig=sig_kind)


@message(11, "prepare")
class Prepare(Message):
    view: int
    seq: int
    digest: bytes
    replica: int
    sig: bytes = b""
    _kinds = dict(view=u64, seq=u64, digest=digest, replica=u32, sig=sig_kind)


@message(12, "commit")
class Commit(Message):
    view: int
    seq: int
    digest: bytes
    replica: int
    sig: bytes = b""
    _kinds = dict(view=u64, seq=u64, digest=digest, replica=u32, sig=sig_kind)


@message(13, "checkpoint")
class Checkpoint(Message):
    """CHECKPOINT <n, ledger head, tree head, i>: signs the state after sequence n."""
    seq: int
    head: bytes
    tree_size: int
    tree_root: bytes
    replica: int
    sig: bytes = b""
    _kinds = dict(seq=u64, head=digest, tree_size=u64, tree_root=digest, replica=u32, sig=sig_kind)


@message(14, "prepared-cert")
class PreparedCert(Message):
    """P's element: a PRE-PREPARE (with its batch) and 2f matching PREPAREs."""
    pre_prepare: PrePrepare
    prepares: list[Prepare]
    _kinds = dict(pre_prepare=_nested("pre-prepare"), prepares=_list(_nested("prepare"), 1024))


@message(15, "view-change")
class ViewChange(Message):
    """VIEW-CHANGE <v+1, n, C, P, i>."""
    new_view: int
    stable_seq: int
    checkpoints: list[Checkpoint]
    prepared: list[PreparedCert]
    replica: int
    sig: bytes = b""
    _kinds = dict(new_view=u64, stable_seq=u64, checkpoints=_list(_nested("checkpoint"), 1024),
                  prepared=_list(_nested("prepared-cert"), 1024), replica=u32, sig=sig_kind)


@message(16, "new-view")
class NewView(Message):
    """NEW-VIEW <v+1, V, O>."""
    view: int
    view_changes: list[ViewChange]
    pre_prepares: list[PrePrepare]
    replica: int
    sig: bytes = b""
    _kinds = dict(view=u64, view_changes=_list(_nested("view-change"), 1024),
                  pre_prepares=_list(_nested("pre-prepare"), 1024), replica=u32, sig=sig_kind)


@message(17, "state-request")
class StateRequest(Message):
    """Ask a peer for blocks [from_height, to_height]; both modes use it to catch up."""
    from_height: int
    to_height: int
    replica: int
    _kinds = dict(from_height=u64, to_height=u64, replica=u32)


@message(19, "batch-request")
class BatchRequest(Message):
    """Ask a peer for the batch whose digest a NEW-VIEW (or a prepared certificate) named.
    VIEW-CHANGE and NEW-VIEW carry digests only, as in the PBFT papers, so that their size
    does not grow with the batches; a replica that lacks one of those batches fetches it."""
    digest: bytes
    replica: int
    _kinds = dict(digest=digest, replica=u32)


@message(20, "batch-response")
class BatchResponse(Message):
    """A batch; self-certifying (the receiver checks it against the digest it asked for)."""
    digest: bytes
    batch: list[bytes]
    replica: int
    _kinds = dict(digest=digest, batch=_list(request_bytes, MAX_BATCH), replica=u32)


@message(21, "suspect")
class Suspect(Message):
    """SUSPECT <v, i>: i's request timer fired in view v; f+1 of them start a view change
    (see bft.pbft.suspicion)."""
    view: int
    replica: int
    sig: bytes = b""
    _kinds = dict(view=u64, replica=u32, sig=sig_kind)


@message(18, "state-response")
class StateResponse(Message):
    """Blocks with their certificates; each is checked by the receiver, so none is trusted."""
    replica: int
    blocks: list[bytes]
    stable: list[Checkpoint]
    _kinds = dict(replica=u32, blocks=_list(block_bytes, 256), stable=_list(_nested("checkpoint"), 1024))


# ----------------------------------------------------------------------------- paxos
@message(30, "px-prepare")
class PxPrepare(Message):
    """Phase 1a: PREPARE(ballot) for every slot above ``from_slot``."""
    ballot: int
    from_slot: int
    replica: int
    _kinds = dict(ballot=u64, from_slot=u64, replica=u32)


@message(33, "px-accept", unsigned=("batch", "commit_index"))
class PxAccept(Message):
    """Phase 2a: ACCEPT(ballot, slot, value); the leader's signature is the block's certificate."""
    ballot: int
    slot: int
    digest: bytes
    batch: list[bytes]
    commit_index: int
    replica: int
    sig: bytes = b""
    _kinds = dict(ballot=u64, slot=u64, digest=digest, batch=_list(request_bytes, MAX_BATCH),
                  commit_index=u64, replica=u32, sig=sig_kind)


@message(31, "px-promise")
class PxPromise(Message):
    """Phase 1b: PROMISE(ballot) with every value this acceptor accepted above from_slot."""
    ballot: int
    replica: int
    commit_index: int
    accepted: list[PxAccept]
    _kinds = dict(ballot=u64, replica=u32, commit_index=u64, accepted=_list(_nested("px-accept"), MAX_LIST))


@message(32, "px-nack")
class PxNack(Message):
    """An acceptor refuses a ballot below one it promised; tells the proposer to back off."""
    ballot: int
    promised: int
    replica: int
    _kinds = dict(ballot=u64, promised=u64, replica=u32)


@message(34, "px-accepted")
class PxAccepted(Message):
    """Phase 2b."""
    ballot: int
    slot: int
    replica: int
    _kinds = dict(ballot=u64, slot=u64, replica=u32)


@message(35, "px-heartbeat")
class PxHeartbeat(Message):
    """The leader's heartbeat; carries the commit index to learners."""
    ballot: int
    commit_index: int
    replica: int
    _kinds = dict(ballot=u64, commit_index=u64, replica=u32)


@message(36, "px-prevote")
class PxPreVote(Message):
    """Before a candidacy: would you promise ``ballot``? Nothing is persisted on either side.

    Raft's pre-vote (Ongaro's thesis, section 9.6): a replica cut off from the cluster asks
    and gets no majority, so it never raises its ballot, and when the partition heals it
    finds the leader's ballot still acceptable instead of refusing (and deposing) it."""
    ballot: int
    replica: int
    _kinds = dict(ballot=u64, replica=u32)


@message(37, "px-prevote-grant")
class PxPreVoteGrant(Message):
    """The answer to a PxPreVote from a replica that hears no live leader."""
    ballot: int
    replica: int
    _kinds = dict(ballot=u64, replica=u32)


@message(38, "px-read-index")
class PxReadIndex(Message):
    """The leader's read-index round (Ongaro's thesis, §6.4): "am I still your leader?", asked
    after reads arrived. A follower that still follows ``ballot`` acknowledges ``round``
    (and learns the commit index, as from a heartbeat); one that promised a higher ballot
    NACKs, which deposes the leader. A majority of acknowledgements of a round proves the
    ballot was still the highest at some moment after those reads arrived."""
    ballot: int
    round: int
    commit_index: int
    replica: int
    _kinds = dict(ballot=u64, round=u64, commit_index=u64, replica=u32)


@message(39, "px-read-index-ack")
class PxReadIndexAck(Message):
    """A follower still follows ``ballot`` after the leader asked in ``round``."""
    ballot: int
    round: int
    replica: int
    _kinds = dict(ballot=u64, round=u64, replica=u32)


__all__ = [
    # re-exported from ledger.wire
    "DOMAIN_PREFIX", "MAX_BLOCK", "MAX_FRAME", "MAX_LIST", "MAX_OP", "MAX_U32", "MAX_U64", "VERSION", "Kind",
    "AttestRequest", "Attestation", "Auth", "DecodeError", "FrameDecoder", "Hello", "Message", "ProofRequest",
    "ProofResponse", "Read",
    "ReadRedirect", "ReadReply", "ReceiptRequest",
    "ReceiptResponse", "Redirect", "Reply", "Request", "StatusRequest", "StatusResponse", "decode", "frame",
    "message", "message_types", "blob", "block_bytes", "digest", "op_bytes", "sig_kind", "small_bytes", "u8",
    "u32", "u64",
    # the consensus messages
    "MAX_BATCH", "MAX_BATCH_BYTES", "request_bytes", "signer_pair",
    "PrePrepare", "Prepare", "Commit", "Checkpoint", "PreparedCert", "ViewChange", "NewView", "StateRequest",
    "StateResponse", "BatchRequest", "BatchResponse", "Suspect", "PxPrepare", "PxPromise", "PxNack", "PxAccept",
    "PxAccepted", "PxHeartbeat", "PxPreVote", "PxPreVoteGrant", "PxReadIndex", "PxReadIndexAck",
]


def describe(msg) -> str:
    """Kind, view or ballot, sequence or slot, digest prefix: what a reader needs on a trace's
    arrow or a debug log line (``pre-prepare v=0 n=7 3fa2c1``)."""
    parts = [msg.NAME]
    for name, short in (("view", "v"), ("new_view", "v"), ("ballot", "b"), ("seq", "n"), ("slot", "s"),
                        ("timestamp", "ts"), ("nonce", "nonce"), ("round", "round")):
        v = getattr(msg, name, None)
        if isinstance(v, int):
            parts.append(f"{short}={v}")
    d = getattr(msg, "digest", None)
    if isinstance(d, bytes) and d:
        parts.append(d.hex()[:6])
    return " ".join(parts)
