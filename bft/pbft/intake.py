"""PBFT client requests: admitted into the request pool, queued, relayed to the primary,
and (by the primary) proposed in batches.

A component of ``PbftCore`` that owns the relay queue: a backup relays to the primary every
request that has waited half a request timeout unordered (a client may reach this backup
only; PBFT §4.2). What requests are held, queued or in a batch is ``bft.requests.RequestPool``'s,
reached through its methods.
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from bft.outputs import Broadcast, Send
from bft.requests import CACHED, KNOWN, NEW, STALE
from bft.wire import PrePrepare, Request
from crypto.merkle import root_of

if TYPE_CHECKING:
    from bft.pbft.core import PbftCore


class RequestIntake:
    __slots__ = ("_core", "_relay_queue")

    def __init__(self, core: PbftCore) -> None:
        self._core = core
        # backups: (arrival, key) of admitted requests, relayed to the primary once they have
        # waited half a request timeout unordered
        self._relay_queue: deque[tuple[float, tuple[int, int]]] = deque()

    @property
    def relay_queue(self) -> deque[tuple[float, tuple[int, int]]]:
        return self._relay_queue

    def on_request(self, client: int, req: Request) -> None:
        """A REQUEST from the client itself."""
        core = self._core
        what, detail = core.requests.admit(client, req, core.now)
        if what == NEW:
            self._enqueue((client, req.timestamp))
            if not core.is_primary and len(self._relay_queue) < core.cfg.max_pending:
                self._relay_queue.append((core.now, (client, req.timestamp)))
        else:
            core._answer_admission(client, req, what, detail, core.view)

    def on_relayed_request(self, sender: int, req: Request) -> None:
        """A backup relays a client's request that it alone may have received (PBFT §4.2):
        admitted like one from the client itself, signature and all; relays are not relayed."""
        core = self._core
        what, detail = core.requests.admit(req.client, req, core.now, direct=False)
        if what == NEW:
            self._enqueue((req.client, req.timestamp))
        elif what not in (KNOWN, CACHED, STALE):
            core._drop(detail, sender)                  # counted against the relaying replica

    def _enqueue(self, key: tuple[int, int]) -> None:
        """The primary serves the queue; backups watch it (fair rounds) only if the monitor runs,
        since only its checks prune a backup's queue."""
        core = self._core
        if not core.in_view_change and (core.is_primary or core.cfg.monitor.enabled):
            core.requests.enqueue(key, core.now)

    def relay_waiting(self) -> None:
        """Send the primary every request that has waited half a request timeout unordered."""
        core = self._core
        if not self._relay_queue:
            return
        requests = core.requests
        due = core.now - core.cfg.request_timeout / 2
        q = self._relay_queue
        while q and q[0][0] <= due:
            _, key = q.popleft()
            if not requests.live(key) or core.is_primary or core.in_view_change:
                continue
            if requests.flooding(key[0], core.now, 2 * core.cfg.request_timeout):
                continue                    # it reaches every replica, and more than its share
            core._out.append(Send(core.leader, core.pending[key][2]))

    def propose(self) -> None:
        """The primary, not changing views: batch the queued requests into PRE-PREPAREs while
        the window has room, a batch at a time once ``pipeline`` batches are in flight."""
        core = self._core
        cfg, requests = core.cfg, core.requests
        while requests.queued and core.next_seq <= core.checkpoints.h + cfg.log_size:
            in_flight = core.next_seq - 1 - core.chain.height
            if requests.queued < cfg.batch_size and in_flight >= cfg.pipeline:
                return
            batch, reqs = requests.take_batch(cfg.batch_size, cfg.batch_bytes, core.now)
            if not batch:
                return
            seq = core.next_seq
            core.propose_after(seq)
            pp = core._sign(PrePrepare(core.view, seq, root_of(batch), batch, core.id))
            core._accept_pre_prepare(pp, reqs)
            core._out.append(Broadcast(pp))
