"""PBFT batches by digest: kept while they may be needed, fetched when a NEW-VIEW names one
this replica lacks.

A component of ``PbftCore`` that owns the batches it keeps, the digests it is fetching
and how often it answered each peer; what it changes elsewhere (a slot whose batch
arrived, the committed batches, the request pool) is the core's. VIEW-CHANGE and NEW-VIEW
carry PRE-PREPAREs with digests only (``bft.pbft.certs``), so after a view change a
replica may hold a committed digest whose batch it never received. It asks one peer at a
time for it (rotating every retransmission interval) and checks the answer against the
digest and every client signature before using it: the answer is self-certifying, so a
lying peer costs a retry and nothing else. Execution waits at the first committed
sequence number whose batch is missing.

Bounds: at most ``4 * log_size`` batches kept (the lowest sequence numbers go first;
everything at or below the stable checkpoint is dropped), at most ``log_size`` digests
being fetched, and a peer gets at most ``BATCHES_PER_INTERVAL`` answers per
retransmission interval (a batch is up to ``batch_bytes``; the requests are 40 bytes).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from bft.outputs import Send
from bft.pbft.rules import PbftRule
from bft.wire import BatchRequest, BatchResponse, PrePrepare, Request

if TYPE_CHECKING:
    from bft.pbft.core import PbftCore

BATCHES_PER_INTERVAL = 16


class BatchFetcher:
    """Batches by digest: the ones kept, the ones being fetched, and the answers given."""

    __slots__ = ("_core", "_batches", "_missing", "_served")

    def __init__(self, core: PbftCore) -> None:
        self._core = core
        self._batches: dict[bytes, tuple[int, list[bytes], list[Request]]] = {}   # digest -> (seq, batch, reqs)
        self._missing: dict[bytes, int] = {}          # digests of batches being fetched -> attempts
        self._served: dict[int, tuple[float, int]] = {}   # peer -> (interval start, responses)

    @property
    def batches(self) -> dict[bytes, tuple[int, list[bytes], list[Request]]]:
        return self._batches

    @property
    def missing(self) -> dict[bytes, int]:
        return self._missing

    @property
    def served(self) -> dict[int, tuple[float, int]]:
        return self._served

    def held(self, digest: bytes) -> tuple[int, list[bytes], list[Request]] | None:
        """(highest seq, batch, requests) for ``digest``, if this replica keeps it."""
        return self._batches.get(digest)

    def keep(self, seq: int, digest: bytes, batch: list[bytes], reqs: list[Request]) -> None:
        kept = self._batches
        old = kept.get(digest)
        kept[digest] = (max(seq, old[0]) if old else seq, batch, reqs)
        cap = 4 * self._core.cfg.log_size
        if len(kept) > cap:
            for d, _ in sorted(kept.items(), key=lambda kv: kv[1][0])[: len(kept) - cap]:
                del kept[d]

    def forget_below(self, stable: int) -> None:
        """Stable checkpoint ``stable``: batches at or below it will never be needed again."""
        core = self._core
        self._batches = {d: e for d, e in self._batches.items() if e[0] > stable}
        wanted = {s.pre_prepare.digest for s in core.log.values()
                  if s.pre_prepare is not None and s.requests is None}
        wanted.update(e.digest for e in core.committed.values() if e.requests is None)
        self._missing = {d: t for d, t in self._missing.items() if d in wanted}

    def want(self, digest: bytes) -> None:
        if digest in self._missing or len(self._missing) >= self._core.cfg.log_size:
            return
        self._missing[digest] = 0
        self._ask(digest)

    def missing_at_restart(self, digest: bytes) -> None:
        """A restart read back a PRE-PREPARE without its batch: fetched with the next retries."""
        self._missing.setdefault(digest, 0)

    def _ask(self, digest: bytes) -> None:
        core = self._core
        tries = self._missing[digest]
        peers = [r for r in range(core.n) if r != core.id]
        core._out.append(Send(peers[(core.id + tries) % len(peers)], BatchRequest(digest, core.id)))
        self._missing[digest] = tries + 1

    def retry(self) -> None:
        for digest in list(self._missing)[:8]:
            self._ask(digest)

    def on_batch_request(self, sender: int, m: BatchRequest) -> None:
        core = self._core
        have = self._batches.get(m.digest)
        if have is None:
            core._drop(PbftRule.UNHELD_BATCH, sender)
            return
        if not core._answer_allowed(self._served, sender, BATCHES_PER_INTERVAL):
            core._drop(PbftRule.BATCH_FETCH_RATE, sender)
            return
        core._out.append(Send(sender, BatchResponse(m.digest, have[1], core.id)))

    def on_batch_response(self, sender: int, m: BatchResponse) -> None:
        core = self._core
        if m.digest not in self._missing:
            core._drop(PbftRule.UNSOLICITED_BATCH, sender)
            return
        why, reqs = core.check_batch(core.keys, m.digest, m.batch, core.cfg.batch_bytes)
        if why:
            core._drop(why, sender)
            return
        del self._missing[m.digest]
        top = 0
        for seq, slot in core.log.items():
            pp = slot.pre_prepare
            if pp is not None and pp.digest == m.digest and slot.requests is None:
                full = PrePrepare(pp.view, pp.seq, pp.digest, m.batch, pp.replica, pp.sig)
                slot.pre_prepare = full
                slot.requests = reqs
                core.requests.mark_in_batch(reqs)
                core._persist("pp", full.encode())
                top = max(top, seq)
        for seq, entry in list(core.committed.items()):
            if entry.digest == m.digest and entry.requests is None:
                core.committed[seq] = entry._replace(batch=m.batch, requests=reqs)
                top = max(top, seq)
        self.keep(top, m.digest, m.batch, reqs)
        core._execute()
