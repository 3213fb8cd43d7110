"""PBFT batches by digest: kept while they may be needed, fetched when a NEW-VIEW names one
this replica lacks.

A mixin of ``PbftCore`` (same state, same sans-I/O rules). VIEW-CHANGE and NEW-VIEW
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

from bft.outputs import Send
from bft.pbft.certs import batch_error
from bft.pbft.rules import PbftRule
from bft.wire import BatchRequest, BatchResponse, PrePrepare, Request

BATCHES_PER_INTERVAL = 16


class BatchFetchMixin:
    def _keep_batch(self, seq: int, digest: bytes, batch: list[bytes], reqs: list[Request]) -> None:
        kept = self.batches
        old = kept.get(digest)
        kept[digest] = (max(seq, old[0]) if old else seq, batch, reqs)
        cap = 4 * self.cfg.log_size
        if len(kept) > cap:
            for d, _ in sorted(kept.items(), key=lambda kv: kv[1][0])[: len(kept) - cap]:
                del kept[d]

    def _forget_batches(self, stable: int) -> None:
        """Stable checkpoint ``stable``: batches at or below it will never be needed again."""
        self.batches = {d: e for d, e in self.batches.items() if e[0] > stable}
        wanted = {s.pre_prepare.digest for s in self.log.values()
                  if s.pre_prepare is not None and s.requests is None}
        wanted.update(e.digest for e in self.committed.values() if e.requests is None)
        self.missing = {d: t for d, t in self.missing.items() if d in wanted}

    def _want_batch(self, digest: bytes) -> None:
        if digest in self.missing or len(self.missing) >= self.cfg.log_size:
            return
        self.missing[digest] = 0
        self._ask_batch(digest)

    def _ask_batch(self, digest: bytes) -> None:
        tries = self.missing[digest]
        peers = [r for r in range(self.n) if r != self.id]
        self._out.append(Send(peers[(self.id + tries) % len(peers)], BatchRequest(digest, self.id)))
        self.missing[digest] = tries + 1

    def _retry_batches(self) -> None:
        for digest in list(self.missing)[:8]:
            self._ask_batch(digest)

    def _on_batch_request(self, sender: int, m: BatchRequest) -> None:
        have = self.batches.get(m.digest)
        if have is None:
            self._drop(PbftRule.UNHELD_BATCH, sender)
            return
        if not self._answer_allowed(self.batch_served, sender, BATCHES_PER_INTERVAL):
            self._drop(PbftRule.BATCH_FETCH_RATE, sender)
            return
        self._out.append(Send(sender, BatchResponse(m.digest, have[1], self.id)))

    def _on_batch_response(self, sender: int, m: BatchResponse) -> None:
        if m.digest not in self.missing:
            self._drop(PbftRule.UNSOLICITED_BATCH, sender)
            return
        why, reqs = batch_error(self.keys, m.digest, m.batch, self.cfg.batch_bytes)
        if why:
            self._drop(why, sender)
            return
        del self.missing[m.digest]
        top = 0
        for seq, slot in self.log.items():
            pp = slot.pre_prepare
            if pp is not None and pp.digest == m.digest and slot.requests is None:
                full = PrePrepare(pp.view, pp.seq, pp.digest, m.batch, pp.replica, pp.sig)
                slot.pre_prepare = full
                slot.requests = reqs
                for r in reqs:
                    self.in_batch.add((r.client, r.timestamp))
                self._persist("pp", full.encode())
                top = max(top, seq)
        for seq, entry in list(self.committed.items()):
            if entry.digest == m.digest and entry.requests is None:
                self.committed[seq] = entry._replace(batch=m.batch, requests=reqs)
                top = max(top, seq)
        self._keep_batch(top, m.digest, m.batch, reqs)
        self._execute()
