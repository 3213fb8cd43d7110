"""Client requests a replica holds until they execute: shared by both protocol cores.

Admission (known client, exactly-once, capacity, client signature), the primary's or
leader's FIFO queue of requests not yet in a batch, and the reply a client gets for an
executed request, including a retransmission answered from the cache.
"""
from __future__ import annotations

from collections import deque

import msgpack

from bft.wire import MAX_OP, Reply, Request
from ledger.block import Block
from ledger.chain import Chain, ClientRecord
from ledger.state import BUSY, DUPLICATE, INVALID, encode_result

Key = tuple[int, int]                    # (client, timestamp)

NEW = "new"                              # admitted: held until it executes
CACHED = "cached"                        # already executed: answer from the cache
KNOWN = "known"                          # already held: nothing to do
STALE = "stale"                          # below the client's window: it can never execute
REFUSED = "busy"                         # over a budget: the client is told BUSY and backs off
ENTRY_OVERHEAD = 256                     # what holding a request costs besides its bytes (twice: raw, decoded)

# The answer to a stale request: height 0 names no block, so a client that gets f+1 of
# these knows the request was refused rather than lost.
STALE_RESULT = msgpack.packb([INVALID, b"stale timestamp: below the client's window of executable requests"])

_DUPLICATE_PREFIX = msgpack.packb([DUPLICATE, None])[:2]
_RESULT_OVERHEAD = 16


def request_weight(raw: bytes, req: Request) -> int:
    """What a request adds to its block: its encoding plus the largest result it may return.

    A batch is capped by this weight, not by its encoding alone, so that the block it
    becomes (transactions and results) always fits a state-transfer response and a receipt:
    a 'get' or a failed 'cas' may return a whole value (up to MAX_OP bytes)."""
    kind = req.op[2:5]                         # [fixarray, fixstr(3), 'get'|'cas'|...]
    return len(raw) + _RESULT_OVERHEAD + (MAX_OP if kind == b"get" or kind == b"cas" else 0)


def batch_weight(batch: list[bytes], reqs: list[Request]) -> int:
    return sum(request_weight(raw, r) for raw, r in zip(batch, reqs))


class RequestPool:
    """Budgets (issue 11: one client filled a backup's pool with 2,000 requests of 64 KiB, 480 MB
    of RSS, and at the cap others' requests were dropped without a word): at most
    ``max_pending`` requests and ``max_bytes`` in all, and per client ``client_requests`` and
    ``client_bytes``. A request over a budget is refused with an explicit BUSY, counted; the
    budgets of one client never spend another's."""

    __slots__ = ("keys", "chain", "max_pending", "max_bytes", "client_requests", "client_bytes", "pending",
                 "queue", "in_batch", "nbytes", "per_client")

    def __init__(self, keys, chain: Chain, max_pending: int, *, max_bytes: int = 256 * 1024 * 1024,
                 client_requests: int = 2048, client_bytes: int = 16 * 1024 * 1024) -> None:
        self.keys = keys
        self.chain = chain
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self.client_requests = client_requests
        self.client_bytes = client_bytes
        self.nbytes = 0
        self.per_client: dict[int, list[int]] = {}          # client -> [requests, bytes] held
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
        raw = req.encode()
        cost = 2 * len(raw) + ENTRY_OVERHEAD
        mine = self.per_client.get(client)
        if mine is not None and (mine[0] >= self.client_requests or mine[1] + cost > self.client_bytes):
            return REFUSED, "refused: the client's quota of held requests is full"
        if len(self.pending) >= self.max_pending or self.nbytes + cost > self.max_bytes:
            return REFUSED, "refused: the pool of held requests is full"
        if not req.verify(self.keys.verifier, self.keys.clients[client]):
            return "drop", "request with a bad client signature"
        self.pending[key] = (raw, now, req)
        self.nbytes += cost
        if mine is None:
            self.per_client[client] = [1, cost]
        else:
            mine[0] += 1
            mine[1] += cost
        return NEW, None

    def take_batch(self, size: int, max_weight: int) -> tuple[list[bytes], list[Request]]:
        """Up to ``size`` queued requests of at most ``max_weight`` in all (``request_weight``;
        at least one), oldest first, each marked as in a batch: their encodings (the batch)
        and the decoded requests (so no one decodes them again)."""
        batch: list[bytes] = []
        reqs: list[Request] = []
        weight = 0
        queue, pending, in_batch = self.queue, self.pending, self.in_batch
        while queue and len(batch) < size:
            key = queue[0]
            entry = pending.get(key)
            if entry is None or key in in_batch:
                queue.popleft()
                continue
            w = request_weight(entry[0], entry[2])
            if batch and weight + w > max_weight:
                break
            queue.popleft()
            weight += w
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
        entry = self.pending.pop(key, None)
        if entry is not None:
            cost = 2 * len(entry[0]) + ENTRY_OVERHEAD
            self.nbytes -= cost
            mine = self.per_client[key[0]]
            mine[0] -= 1
            mine[1] -= cost
            if mine[0] <= 0:
                del self.per_client[key[0]]
        return entry

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


def busy_reply(view: int, replica: int, client: int, timestamp: int, why: str) -> Reply:
    """Height 0 names no block: the request was not held. A hint to back off, never an outcome."""
    return Reply(view, client, timestamp, replica, 0, 0, encode_result(BUSY, why.encode()))


def stale_reply(view: int, replica: int, client: int, timestamp: int) -> Reply:
    return Reply(view, client, timestamp, replica, 0, 0, STALE_RESULT)


def cached_reply(view: int, replica: int, client: int, rec: ClientRecord) -> Reply:
    return Reply(view, client, rec.timestamp, replica, rec.height, rec.index, rec.result)
