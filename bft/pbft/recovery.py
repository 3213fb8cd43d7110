"""PBFT recovery: what a replica writes to its vote log, and how a restart reads it back.

A mixin of ``PbftCore`` (same state, same sans-I/O rules). The records are the view, the
stable checkpoint proof, every PRE-PREPARE and prepared certificate above it: enough that a
restarted replica never signs a vote that contradicts one it sent before the crash.
"""
from __future__ import annotations

import msgpack

from ledger import quorum
from bft.pbft.certs import EMPTY_ROOT
from bft.pbft.slots import Phase
from bft.pbft.viewstate import Changing, Normal
from bft.wire import DecodeError, PrePrepare, Prepare, Request, ViewChange, decode


class RecoveryMixin:
    def _vote_snapshot(self) -> list[bytes]:
        recs = [msgpack.packb(["view", [self.view, self.in_view_change]], use_bin_type=True)]
        if self.stable_proof:
            recs.append(msgpack.packb(["stable", [c.encode() for c in self.stable_proof]], use_bin_type=True))
        for s in sorted(self.log):
            pp = self.log[s].pre_prepare
            if pp is not None:
                recs.append(msgpack.packb(["pp", pp.encode()], use_bin_type=True))
        for s in sorted(self.prepared_certs):
            recs.append(msgpack.packb(["pc", self.prepared_certs[s].encode()], use_bin_type=True))
        return recs

    def _recover(self, records: list[bytes]) -> None:
        """Rebuild votes from the vote log so a restarted replica never signs a conflicting vote."""
        pps: list[PrePrepare] = []
        view, changing = 0, False
        for raw in records:
            try:
                kind, payload = msgpack.unpackb(raw, raw=False)
                if kind == "view":
                    view, changing = payload[0], bool(payload[1])
                elif kind == "stable":
                    proof = [decode(b) for b in payload]
                    self.h, self.stable_proof = proof[0].seq, proof[: quorum.checkpoint_quorum(self.f)]
                elif kind == "pp":
                    pps.append(decode(payload))
                elif kind == "pc":
                    cert = decode(payload)
                    self.prepared_certs[cert.pre_prepare.seq] = cert
                    pps.append(cert.pre_prepare)
            except (ValueError, TypeError, IndexError, DecodeError):
                raise ValueError("vote log record is malformed") from None
        for pp in pps:
            self.votes[(pp.view, pp.seq)] = pp.digest
            view = max(view, pp.view)
        # rebuilt from the log, not a transition: the state this replica was in when it stopped
        self.vstate = Changing(view, self.now) if changing else Normal(view, self.now)
        self.prepared_certs = {s: c for s, c in self.prepared_certs.items() if s > self.h}
        self.next_seq = max([self.h, self.chain.height] + [s for (v, s) in self.votes if v == self.view]) + 1
        for pp in pps:
            reqs = None
            if pp.batch or pp.digest == EMPTY_ROOT:
                reqs = [r for r in (decode(x) for x in pp.batch) if type(r) is Request]
                if pp.seq > self.h:
                    self._keep_batch(pp.seq, pp.digest, pp.batch, reqs)
            if pp.view == self.view and pp.seq > max(self.h, self.chain.height) and not self.in_view_change:
                slot = self._slot(pp.seq)
                if slot.pre_prepare is None or (slot.requests is None and reqs is not None):
                    first = slot.pre_prepare is None
                    slot.pre_prepare = pp
                    if first:
                        slot.advance(Phase.PRE_PREPARED)
                    slot.requests = reqs
                    if reqs is None:
                        self.missing.setdefault(pp.digest, 0)
                    if first and pp.replica != self.id:
                        slot.my_prepare = self._sign(Prepare(pp.view, pp.seq, pp.digest, self.id))
                        slot.prepares[self.id] = slot.my_prepare
        if self.in_view_change:
            self.my_view_change = self._sign(ViewChange(
                self.view, self.h, list(self.stable_proof), self._prepared_digests(), self.id))
            self.view_changes.setdefault(self.view, {})[self.id] = self.my_view_change
            # the timer is re-armed once 2f+1 VIEW-CHANGEs are seen again (Changing starts unarmed)

