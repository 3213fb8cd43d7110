"""PBFT recovery: what a replica writes to its vote log, and how a restart reads it back.

Two functions over a ``PbftCore``, not a component: recovery owns no state of its own; it
runs once, when the core is built, and writes each part of what it reads back through the
part's owner (the core's log and votes, ``Checkpoints.restore``, ``ViewChanger.restore``,
``BatchFetcher.keep``). The records are the view, the stable checkpoint proof, every
PRE-PREPARE and prepared certificate above it: enough that a restarted replica never signs
a vote that contradicts one it sent before the crash.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import msgpack

from bft.pbft.certs import EMPTY_ROOT
from bft.pbft.slots import Phase
from bft.wire import DecodeError, PrePrepare, Prepare, Request, decode

if TYPE_CHECKING:
    from bft.pbft.core import PbftCore


def snapshot(core: PbftCore) -> list[bytes]:
    """The vote log, compacted: what ``recover`` needs, and nothing below the stable checkpoint."""
    recs = [msgpack.packb(["view", [core.view, core.in_view_change]], use_bin_type=True)]
    proof = core.checkpoints.stable_proof
    if proof:
        recs.append(msgpack.packb(["stable", [c.encode() for c in proof]], use_bin_type=True))
    for s in sorted(core.log):
        pp = core.log[s].pre_prepare
        if pp is not None:
            recs.append(msgpack.packb(["pp", pp.encode()], use_bin_type=True))
    for s in sorted(core.prepared_certs):
        recs.append(msgpack.packb(["pc", core.prepared_certs[s].encode()], use_bin_type=True))
    return recs


def recover(core: PbftCore, records: list[bytes]) -> None:
    """Rebuild votes from the vote log so a restarted replica never signs a conflicting vote."""
    pps: list[PrePrepare] = []
    view, changing = 0, False
    checkpoints = core.checkpoints
    for raw in records:
        try:
            kind, payload = msgpack.unpackb(raw, raw=False)
            if kind == "view":
                view, changing = payload[0], bool(payload[1])
            elif kind == "stable":
                checkpoints.restore([decode(b) for b in payload])
            elif kind == "pp":
                pps.append(decode(payload))
            elif kind == "pc":
                cert = decode(payload)
                core.prepared_certs[cert.pre_prepare.seq] = cert
                pps.append(cert.pre_prepare)
        except (ValueError, TypeError, IndexError, DecodeError):
            raise ValueError("vote log record is malformed") from None
    for pp in pps:
        core.votes[(pp.view, pp.seq)] = pp.digest
        view = max(view, pp.view)
    core.view_changer.restore(view, changing)
    h = checkpoints.h
    core.prepared_certs = {s: c for s, c in core.prepared_certs.items() if s > h}
    core.propose_after(max([h, core.chain.height] + [s for (v, s) in core.votes if v == core.view]))
    for pp in pps:
        reqs = None
        if pp.batch or pp.digest == EMPTY_ROOT:
            reqs = [r for r in (decode(x) for x in pp.batch) if type(r) is Request]
            if pp.seq > h:
                core.fetcher.keep(pp.seq, pp.digest, pp.batch, reqs)
        if pp.view == core.view and pp.seq > max(h, core.chain.height) and not core.in_view_change:
            slot = core._slot(pp.seq)
            if slot.pre_prepare is None or (slot.requests is None and reqs is not None):
                first = slot.pre_prepare is None
                slot.pre_prepare = pp
                if first:
                    slot.advance(Phase.PRE_PREPARED)
                slot.requests = reqs
                if reqs is None:
                    core.fetcher.missing_at_restart(pp.digest)
                if first and pp.replica != core.id:
                    slot.my_prepare = core._sign(Prepare(pp.view, pp.seq, pp.digest, core.id))
                    slot.prepares[core.id] = slot.my_prepare
    if core.in_view_change:
        core.view_changer.rejoin()
