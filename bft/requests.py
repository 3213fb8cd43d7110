"""Client requests a replica holds until they execute: shared by both protocol cores.

Admission (known client, exactly-once, capacity, client signature), the primary's or
leader's FIFO queue of requests not yet in a batch, and the reply a client gets for an
executed request, including a retransmission answered from the cache.
"""
from __future__ import annotations

from collections import deque

import msgpack

from bft.rules import RequestRule
from bft.wire import MAX_OP, Reply, Request
from crypto.tls import CertificateError, ed25519_key_of
from ledger.block import Block
from ledger.chain import Chain, ClientRecord
from ledger.state import BUSY, DUPLICATE, INVALID, STALE_TEXT, encode_result, is_registration, registration_cert

Key = tuple[int, int]                    # (client, timestamp)

NEW = "new"                              # admitted: held until it executes
CACHED = "cached"                        # already executed: answer from the cache
KNOWN = "known"                          # already held: nothing to do
STALE = "stale"                          # below the client's window: it can never execute
REFUSED = "busy"                         # over a budget: the client is told BUSY and backs off
DROP = "drop"                            # rejected by a rule (bft.rules.RequestRule)
ENTRY_OVERHEAD = 256                     # what holding a request costs besides its bytes (twice: raw, decoded)
CLIENT_SHARE = 16                        # one client fills at most 1/CLIENT_SHARE of a batch's weight
# A client that sends requests with bad signatures over its own authenticated connection is
# faulty: after a burst of BAD_SIGNATURE_BURST (refilled at BAD_SIGNATURES_PER_S) it is
# blacklisted for BLACKLIST_SECONDS, during which its requests are dropped unverified and the
# runtime stops reading its connections (issue 12; Aardvark does the same).
BAD_SIGNATURE_BURST = 8.0
BAD_SIGNATURES_PER_S = 2.0
BLACKLIST_SECONDS = 10.0

# The answer to a stale request: height 0 names no block, so a client that gets f+1 of
# these knows the request was refused rather than lost.
STALE_RESULT = msgpack.packb([INVALID, STALE_TEXT])

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


class FairQueue:
    """Requests not yet in a batch, one FIFO per client, served in rounds (issue 12).

    The primary takes one request of each client in turn, so a client that floods (up to
    its quota) delays its own requests, not a quiet client's: each client's head request is
    ordered within one round. Backups keep the same queue and watch those heads: a head
    that waits a whole request timeout while batches keep coming is censorship (see
    ``bft.pbft.monitor``). Keys that were batched or executed meanwhile stay until they
    reach the front and are skipped there (``live`` says which keys still count).
    """

    __slots__ = ("per_client", "ring", "since", "count")

    def __init__(self) -> None:
        self.per_client: dict[int, deque[Key]] = {}
        self.ring: deque[int] = deque()            # clients with queued keys, in serving order
        self.since: dict[int, float] = {}          # client -> when its current head became its head
        self.count = 0                             # keys queued (stale ones included)

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def append(self, key: Key, now: float = 0.0) -> None:
        q = self.per_client.get(key[0])
        if q is None:
            q = self.per_client[key[0]] = deque()
            self.ring.append(key[0])
            self.since[key[0]] = now
        q.append(key)
        self.count += 1

    def extend(self, keys, now: float = 0.0) -> None:
        for k in keys:
            self.append(k, now)

    def clear(self) -> None:
        self.per_client.clear()
        self.ring.clear()
        self.since.clear()
        self.count = 0

    def _drop_client(self, client: int) -> None:
        del self.per_client[client]
        del self.since[client]

    def take(self, live, now: float, full=()) -> Key | None:
        """The next live key in round order, passing over the clients in ``full`` (None when
        none is left); dead keys are discarded."""
        ring, per_client = self.ring, self.per_client
        passed = 0
        while ring and passed < len(ring):
            client = ring.popleft()
            if client in full:
                ring.append(client)
                passed += 1
                continue
            q = per_client[client]
            while q:
                key = q.popleft()
                self.count -= 1
                if live(key):
                    if q:
                        ring.append(client)
                        self.since[client] = now
                    else:
                        self._drop_client(client)
                    return key
            self._drop_client(client)
        return None

    def put_back(self, key: Key, now: float) -> None:
        """Undo the last ``take`` (the request did not fit the batch): it stays its client's head."""
        q = self.per_client.get(key[0])
        if q is None:
            q = self.per_client[key[0]] = deque()
            self.since[key[0]] = now
            self.ring.appendleft(key[0])
        else:
            self.ring.remove(key[0])
            self.ring.appendleft(key[0])
        q.appendleft(key)
        self.count += 1

    def oldest_head(self, live, now: float, exempt=None) -> tuple[float, int] | None:
        """(since when, client) of the client whose head request has waited longest to be
        batched, leaving out the clients ``exempt(client)``; dead heads are discarded first.
        O(clients queued)."""
        best: tuple[float, int] | None = None
        for client in list(self.ring):
            q = self.per_client[client]
            popped = False
            while q and not live(q[0]):
                q.popleft()
                self.count -= 1
                popped = True
            if not q:
                self.ring.remove(client)
                self._drop_client(client)
                continue
            if popped:
                self.since[client] = now
            if exempt is not None and exempt(client):
                continue
            t = self.since[client]
            if best is None or t < best[0]:
                best = (t, client)
        return best


class RequestPool:
    """Budgets (issue 11: one client filled a backup's pool with 2,000 requests of 64 KiB, 480 MB
    of RSS, and at the cap others' requests were dropped without a word): at most
    ``max_pending`` requests and ``max_bytes`` in all, and per client ``client_requests`` and
    ``client_bytes``. A request over a budget is refused with an explicit BUSY, counted; the
    budgets of one client never spend another's."""

    __slots__ = ("keys", "chain", "max_pending", "max_bytes", "client_requests", "client_bytes", "pending",
                 "queue", "in_batch", "nbytes", "per_client", "refused_at", "bad_signatures", "blacklist",
                 "blacklisted")

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
        self.queue = FairQueue()                           # pending keys not yet in a batch
        self.in_batch: set[Key] = set()                    # keys inside a proposed batch
        self.refused_at: dict[int, float] = {}             # client -> when it was last over its quota
        self.bad_signatures: dict[int, list[float]] = {}   # client -> [tokens, when] (BAD_SIGNATURE_BURST)
        self.blacklist: dict[int, float] = {}              # client -> blacklisted until
        self.blacklisted = 0                               # how many times a client was blacklisted

    def admit(self, client: int, req: Request, now: float,
              direct: bool = True) -> tuple[str, ClientRecord | RequestRule | None]:
        """(NEW, None), (CACHED, record), (KNOWN, None), (STALE, None), (REFUSED, rule) or
        (DROP, rule). Nothing is held before the client's signature is checked; what is
        cheaper than the check (a lookup that answers from the reply cache, or a refusal over
        a quota) comes first, so that a flood of retransmissions or of over-quota requests
        costs no signature checks (measured: checking first raised a flooded backup's peak
        RSS from 152 to 255 MB). ``direct``: the client itself sent it (not a relay), so a
        bad signature is its fault and counts towards its blacklisting."""
        if req.client != client or not 0 <= client < len(self.keys.clients):
            return DROP, RequestRule.UNKNOWN_CLIENT
        until = self.blacklist.get(client)
        if until is not None:
            if now < until:
                return DROP, RequestRule.BLACKLISTED
            del self.blacklist[client]
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
            self.refused_at[client] = now
            return REFUSED, RequestRule.CLIENT_QUOTA_FULL
        if len(self.pending) >= self.max_pending or self.nbytes + cost > self.max_bytes:
            return REFUSED, RequestRule.POOL_FULL
        if not req.verify(self.keys.verifier, self.keys.clients[client]):
            if direct:
                self._bad_signature(client, now)
            return DROP, RequestRule.BAD_CLIENT_SIGNATURE
        if is_registration(req.op):
            why = registration_error(self.keys, req)
            if why is not None:
                return DROP, why
        self.pending[key] = (raw, now, req)
        self.nbytes += cost
        if mine is None:
            self.per_client[client] = [1, cost]
        else:
            mine[0] += 1
            mine[1] += cost
        return NEW, None

    def live(self, key: Key) -> bool:
        """Held and in no batch yet: a queued key that still counts."""
        return key in self.pending and key not in self.in_batch

    def take_batch(self, size: int, max_weight: int, now: float = 0.0) -> tuple[list[bytes], list[Request]]:
        """Up to ``size`` queued requests of at most ``max_weight`` in all (``request_weight``;
        at least one), one client at a time in rounds (``FairQueue``), each marked as in a
        batch: their encodings (the batch) and the decoded requests (so no one decodes them
        again). One client fills at most 1/CLIENT_SHARE of a batch's weight (at least one
        request): a client sending the largest operations at full speed adds one of them per
        batch instead of filling every batch with them (issue 12: pbft fell to 3% of its
        fault-free throughput, every batch a megabyte to check, store and send)."""
        batch: list[bytes] = []
        reqs: list[Request] = []
        weight = 0
        queue, pending, in_batch, live = self.queue, self.pending, self.in_batch, self.live
        cap = max_weight // CLIENT_SHARE
        used: dict[int, int] = {}
        full: set[int] = set()
        while len(batch) < size:
            key = queue.take(live, now, full)
            if key is None:
                break
            entry = pending[key]
            w = request_weight(entry[0], entry[2])
            if batch and weight + w > max_weight:
                queue.put_back(key, now)
                break
            mine = used[key[0]] = used.get(key[0], 0) + w
            if mine >= cap:
                full.add(key[0])
            weight += w
            batch.append(entry[0])
            reqs.append(entry[2])
            in_batch.add(key)
        return batch, reqs

    @property
    def queued(self) -> int:
        """How many keys wait in the queue (some may have been batched or executed meanwhile)."""
        return len(self.queue)

    def enqueue(self, key: Key, now: float = 0.0) -> None:
        """Queue an admitted request for a batch (the primary's, or a backup's watched copy)."""
        self.queue.append(key, now)

    def oldest_queued(self, now: float, exempt=None) -> tuple[float, int] | None:
        """(since when, client) of the live request that has waited longest to be batched,
        leaving out the clients ``exempt(client)`` (``FairQueue.oldest_head``)."""
        return self.queue.oldest_head(self.live, now, exempt)

    def mark_in_batch(self, reqs) -> bool:
        """The requests of an accepted batch (each with ``client`` and ``timestamp``): none is
        proposed again. True when one of those newly marked has not executed yet (the batch
        is useful, as the primary monitor counts it)."""
        in_batch, executed, useful = self.in_batch, self.chain.executed, False
        for r in reqs:
            key = (r.client, r.timestamp)
            if key not in in_batch:
                in_batch.add(key)
                if not useful and executed(r.client, r.timestamp) is None:
                    useful = True
        return useful

    def new_view(self) -> None:
        """A view change: no batch is in flight any more and the queue is rebuilt by
        ``requeue`` once a view is entered; the requests themselves stay held."""
        self.queue.clear()
        self.in_batch.clear()

    def forget(self) -> None:
        """No longer proposing (a Paxos leader steps down): the queue, the batches in flight
        and the held requests all go; clients retry with the next leader."""
        self.new_view()
        self.release_held()

    def release_held(self) -> None:
        """Stop holding every request, returning their budgets (a follower holds none: it
        redirects its clients to the leader). Clearing ``pending`` alone used to keep their
        bytes and counts charged, so each step-down shrank a Paxos replica's pool for good."""
        self.pending.clear()
        self.nbytes = 0
        self.per_client.clear()

    def requeue(self, now: float = 0.0) -> None:
        """Queue every held request that no batch carries (a new view or leader)."""
        self.queue.clear()
        self.queue.extend((k for k in self.pending if k not in self.in_batch), now)

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

    def _bad_signature(self, client: int, now: float) -> None:
        b = self.bad_signatures.get(client)
        if b is None:
            b = self.bad_signatures[client] = [BAD_SIGNATURE_BURST, now]
        b[0] = min(BAD_SIGNATURE_BURST, b[0] + (now - b[1]) * BAD_SIGNATURES_PER_S) - 1
        b[1] = now
        if b[0] < 0:
            self.blacklist[client] = now + BLACKLIST_SECONDS
            self.blacklisted += 1
            del self.bad_signatures[client]

    def throttled(self, client: int, now: float) -> None:
        """The runtime stopped reading the client for a while (it sends more than its intake
        allows): it floods, as if it had gone over its quota here."""
        self.refused_at[client] = now

    def blacklisted_until(self, client: int, now: float) -> float | None:
        until = self.blacklist.get(client)
        return until if until is not None and now < until else None

    def flooding(self, client: int, now: float, within: float) -> bool:
        """The client holds half its quota here, or went over it within ``within`` seconds.

        Such a client is served one request per round like any other, but its oldest request
        here may wait without anyone's fault: each replica admitted a different part of its
        flood, and the primary may hold (and refuse) others than this replica does. So the
        rules that blame a primary for a waiting request (``bft.pbft.monitor``, the request
        timer) leave a flooding client out."""
        mine = self.per_client.get(client)
        if mine is not None and (2 * mine[0] >= self.client_requests or 2 * mine[1] >= self.client_bytes):
            return True
        return now - self.refused_at.get(client, -1e18) < within

    def oldest_arrival(self, exempt=None) -> float | None:
        """When the oldest held request arrived, leaving out the clients ``exempt(client)``."""
        for _raw, arrival, req in self.pending.values():
            if exempt is None or not exempt(req.client):
                return arrival
        return None

    def reply(self, view: int, replica: int, block: Block, index: int, client: int, ts: int) -> Reply | None:
        """The REPLY for transaction ``index`` of ``block``; a duplicate is answered from the cache."""
        result = block.results[index]
        if result[:2] == _DUPLICATE_PREFIX:
            rec = self.chain.executed(client, ts)
            return None if rec is None else cached_reply(view, replica, client, rec)
        return Reply(view, client, ts, replica, block.height, index, result)


def is_duplicate(result: bytes) -> bool:
    """A transaction's result says it had executed before (a replayed request)."""
    return result[:2] == _DUPLICATE_PREFIX


def busy_reply(view: int, replica: int, client: int, timestamp: int, why: str) -> Reply:
    """Height 0 names no block: the request was not held. A hint to back off, never an outcome."""
    return Reply(view, client, timestamp, replica, 0, 0, encode_result(BUSY, why.encode()))


def registration_error(keys, req: Request) -> RequestRule | None:
    """Why ``req`` may not register a client (``ledger.clients``), or None: only the
    administrator registers, and never a key that already names a replica or a client. A
    malformed registration passes: it executes as INVALID, like any malformed operation."""
    if req.client != keys.admin:
        return RequestRule.REGISTRATION_NOT_ADMIN
    cert = registration_cert(req.op)
    if cert is None:
        return None
    try:
        key = ed25519_key_of(cert)
    except CertificateError:
        return None
    if key in keys.replicas or key in keys.clients:
        return RequestRule.REGISTRATION_KEY_TAKEN
    return None


def stale_reply(view: int, replica: int, client: int, timestamp: int) -> Reply:
    return Reply(view, client, timestamp, replica, 0, 0, STALE_RESULT)


def cached_reply(view: int, replica: int, client: int, rec: ClientRecord) -> Reply:
    return Reply(view, client, rec.timestamp, replica, rec.height, rec.index, rec.result)
