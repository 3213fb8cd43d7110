"""Client requests a replica holds until they execute: shared by both protocol cores.

Admission (known client, exactly-once, capacity, client signature), the primary's or
leader's FIFO queue of requests not yet in a batch, and the reply a client gets for an
executed request, including a retransmission answered from the cache.
"""
from __future__ import annotations

from collections import deque

import msgpack

from bft.wire import Reply, Request
from ledger.block import Block
from ledger.chain import Chain, ClientRecord
from ledger.state import DUPLICATE, INVALID

Key = tuple[int, int]                    # (client, timestamp)

NEW = "new"                              # admitted: held until it executes
CACHED = "cached"                        # already executed: answer from the cache
KNOWN = "known"                          # already held: nothing to do
STALE = "stale"                          # below the client's window: it can never execute

# The answer to a stale request: height 0 names no block, so a client that gets f+1 of
# these knows the request was refused rather than lost.
STALE_RESULT = msgpack.packb([INVALID, b"stale timestamp: below the client's window of executable requests"])

_DUPLICATE_PREFIX = msgpack.packb([DUPLICATE, None])[:2]


class RequestPool:
    __slots__ = ("keys", "chain", "max_pending", "pending", "queue", "in_batch")

    def __init__(self, keys, chain: Chain, max_pending: int) -> None:
        self.keys = keys
        self.chain = chain
        self.max_pending = max_pending
        # not executed, in arrival order: (encoded request, arrival time, the decoded request)
        self.pending: dict[Key, tuple[bytes, float, Request]] = {}
        self.queue: deque[Key] = deque()                   # pending keys not yet proposed
        self.in_batch: set[Key] = set()                    # keys inside a proposed batch

    def admit(self, client: int, req: Request, now: float) -> tuple[str, ClientRecord | str | None]:
        """(NEW, None), (CACHED, record), (KNOWN, None), (STALE, None), or ("drop", reason)."""
        if req.client != client or not 0 <= client < len(self.keys.clients):
            return "drop", "request for another or an unknown client"
        rec = self.chain.executed(client, req.timestamp)
        if rec is not None:
            return CACHED, rec
        key = (client, req.timestamp)
        if key in self.pending:
            return KNOWN, None
        if self.chain.is_stale(client, req.timestamp):
            return STALE, None
        if len(self.pending) >= self.max_pending:
            return "drop", "pending requests full"
        if not req.verify(self.keys.verifier, self.keys.clients[client]):
            return "drop", "request with a bad client signature"
        self.pending[key] = (req.encode(), now, req)
        return NEW, None

    def take_batch(self, size: int) -> tuple[list[bytes], list[Request]]:
        """Up to ``size`` queued requests, oldest first, each marked as in a batch: their
        encodings (the batch) and the decoded requests (so no one decodes them again)."""
        batch: list[bytes] = []
        reqs: list[Request] = []
        queue, pending, in_batch = self.queue, self.pending, self.in_batch
        while queue and len(batch) < size:
            key = queue.popleft()
            entry = pending.get(key)
            if entry is None or key in in_batch:
                continue
            batch.append(entry[0])
            reqs.append(entry[2])
            in_batch.add(key)
        return batch, reqs

    def requeue(self) -> None:
        """Queue every held request that no batch carries (a new primary or leader takes over)."""
        self.queue.clear()
        self.queue.extend(k for k in self.pending if k not in self.in_batch)

    def forget_batches(self) -> None:
        self.queue.clear()
        self.in_batch.clear()

    def executed(self, key: Key) -> tuple[bytes, float, Request] | None:
        """The request executed: stop holding it; returns what was held, if anything."""
        self.in_batch.discard(key)
        return self.pending.pop(key, None)

    def oldest_arrival(self) -> float | None:
        for _raw, arrival, _req in self.pending.values():
            return arrival
        return None

    def reply(self, view: int, replica: int, block: Block, index: int, client: int, ts: int) -> Reply | None:
        """The REPLY for transaction ``index`` of ``block``; a duplicate is answered from the cache."""
        result = block.results[index]
        if result[:2] == _DUPLICATE_PREFIX:
            rec = self.chain.executed(client, ts)
            return None if rec is None else cached_reply(view, replica, client, rec)
        return Reply(view, client, ts, replica, block.height, index, result)


def stale_reply(view: int, replica: int, client: int, timestamp: int) -> Reply:
    return Reply(view, client, timestamp, replica, 0, 0, STALE_RESULT)


def cached_reply(view: int, replica: int, client: int, rec: ClientRecord) -> Reply:
    return Reply(view, client, rec.timestamp, replica, rec.height, rec.index, rec.result)
