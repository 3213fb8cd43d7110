"""The PBFT replica as a sans-I/O state machine (Castro & Liskov, signature variant).

``step`` takes one decoded message from an authenticated sender, ``tick`` tells it the
time, ``ready`` hands back the actions to carry out (see ``bft.outputs``). Nothing in
here touches a socket, a clock, a file or global randomness, so the simulator and the
trio runtime drive the very same code.

Terms follow the paper: view, sequence number, pre-prepared, prepared,
committed-local, stable checkpoint, low/high watermarks h and H = h + L.
"""
from __future__ import annotations

import logging
from collections import Counter, deque

import msgpack

from bft.outputs import Action, AppendBlock, Broadcast, Persist, Send, ToClient
from bft.pbft.batches import BatchFetchMixin
from bft.pbft.checkpoints import CheckpointMixin
from bft.pbft.recovery import RecoveryMixin
from bft.pbft.suspicion import SuspicionMixin
from bft.pbft.certs import Keys, batch_error, plan_new_view, primary
from bft.pbft.config import PbftConfig
from bft.pbft.monitor import PrimaryMonitor
from bft.pbft.transfer import StateTransferMixin
from bft.pbft.viewchange import ViewChangeMixin
from bft.requests import (CACHED, KNOWN, NEW, REFUSED, STALE, RequestPool, busy_reply, cached_reply, is_duplicate,
                          stale_reply)
from bft.pbft.rules import PbftRule
from bft.pbft.slots import CommittedBatch, Phase, Slot
from bft.pbft.viewstate import Normal, ViewState
from bft.skeleton import CoreSkeleton
from bft.wire import (BatchRequest, BatchResponse, Checkpoint, Commit, Message, NewView, PrePrepare, Prepare,
                      PreparedCert, Request, StateRequest, StateResponse, Suspect, ViewChange)
from crypto.merkle import root_of
from crypto.signing import Signer
from ledger.block import Block
from ledger.chain import Chain

log = logging.getLogger("bft.pbft")

# While batches keep executing, a pending request may wait this many request timeouts
# before the primary is suspected (bursts queue legitimately; censorship still shows).
CENSOR_GRACE = 4


class PbftCore(CoreSkeleton, ViewChangeMixin, StateTransferMixin, BatchFetchMixin, SuspicionMixin, CheckpointMixin,
               RecoveryMixin):
    mode = "pbft"
    # O from V; a class attribute so that a test build of the core can swap in a faulty rule
    # (the simulator must then catch it) without patching module globals
    plan_new_view = staticmethod(plan_new_view)

    def __init__(self, cfg: PbftConfig, replica_id: int, signer: Signer, keys: Keys, chain: Chain,
                 vote_records: list[bytes] = (), now: float = 0.0) -> None:
        self.cfg = cfg
        self.id = replica_id
        self.signer = signer
        self.keys = keys
        self.chain = chain
        self.now = now
        self.f = cfg.f
        self.n = cfg.n
        self._init_skeleton(log)
        self._out: list[Action] = []

        self.vstate: ViewState = Normal(0, now)     # the view, and whether this replica is changing it
        self.h = 0                                   # low watermark = stable checkpoint
        self.stable_proof: list[Checkpoint] = []
        self.next_seq = 1
        self.log: dict[int, Slot] = {}               # seq -> slot, current view only
        self.votes: dict[tuple[int, int], bytes] = {}  # (view, seq) -> digest I pre-prepared/prepared
        self.prepared_certs: dict[int, PreparedCert] = {}
        self.committed: dict[int, CommittedBatch] = {}   # committed-local, not yet executed
        self.checkpoint_votes: dict[int, dict[int, Checkpoint]] = {}
        self.my_checkpoint: Checkpoint | None = None
        self.batches: dict[bytes, tuple[int, list[bytes], list[Request]]] = {}   # digest -> (seq, batch, reqs)
        self.missing: dict[bytes, int] = {}          # digests of batches being fetched -> attempts
        self.batch_served: dict[int, tuple[float, int]] = {}   # peer -> (interval start, responses)
        self.state_served: dict[int, tuple[float, int]] = {}   # the same for state-transfer answers

        self.requests = RequestPool(keys, chain, cfg.max_pending, max_bytes=cfg.max_pending_bytes,
                                    client_requests=cfg.client_requests, client_bytes=cfg.client_bytes)
        self.pending = self.requests.pending               # not yet executed: (request, arrival)
        self.queue = self.requests.queue                   # primary: pending keys not yet proposed
        self.in_batch = self.requests.in_batch             # keys inside accepted PRE-PREPAREs

        # backups: (arrival, key) of admitted requests, relayed to the primary once they have
        # waited half a request timeout unordered (a client may reach this backup only)
        self.relay_queue: deque[tuple[float, tuple[int, int]]] = deque()
        self.suspecting = False                      # this replica's timer fired in the current view
        self.suspect_sticky = False                  # ... or the monitor's rules: kept until the view ends
        self.monitor = PrimaryMonitor(cfg.monitor, cfg.n, now)
        self._timer_arrival: tuple[float, float] | None = None   # (computed at, oldest non-flooding arrival)
        self.my_suspect: Suspect | None = None
        self.suspects: dict[int, float] = {}         # replica -> when its SUSPECT of this view came
        self.view_changes: dict[int, dict[int, ViewChange]] = {}
        self.my_view_change: ViewChange | None = None
        self.new_view_msg: NewView | None = None
        self.vc_attempts = 0
        self.last_progress = now                     # when this replica last executed a batch
        self.lag: tuple[int, list[int], float] | None = None   # (checkpoint seq above us, its signers, since)
        self.next_retransmit = now + cfg.retransmit_interval
        self.helped: dict[int, float] = {}
        self._init_transfer()                        # self.transfer: the state transfer in progress
        self.stats = Counter()
        # Normal-case messages just above H, held until the window moves: a backup learns
        # that a checkpoint is stable a little after the primary does, and the primary
        # already proposes above the backup's old H. Dropped, those never came back (the
        # others commit without this replica and stop retransmitting). Bounded: per
        # sequence number in (H, H + min(L, 2K)], one PRE-PREPARE of the primary and one
        # PREPARE and one COMMIT per replica; re-checked in full when the window reaches them.
        self.ahead: dict[tuple[int, int, int], Message] = {}   # (seq, kind, sender) -> message
        # Normal-case messages of the view this replica is changing into, which arrive before
        # its NEW-VIEW does (the primary does not retransmit what the others committed, so a
        # dropped one never came back). Replayed on entering the view; same bound as ``ahead``.
        self.early: dict[tuple[int, int, int], Message] = {}
        self._ahead_span = min(cfg.log_size, 2 * cfg.checkpoint_interval)
        self._window_moved = False

        self._recover(list(vote_records))

    # ------------------------------------------------------------------ driver interface
    def _after_step(self) -> None:
        if self._window_moved:
            self._drain_ahead()

    def tick(self, now: float) -> None:
        self.now = now
        if self._window_moved:
            self._drain_ahead()
        if self.relay_queue:
            self._relay_waiting()
        if self.in_view_change:
            if self.vc_deadline is not None and now >= self.vc_deadline:
                self._start_view_change(self.view + 1)
        elif self.pending and self.transfer is None and self.lag is None:
            # The oldest unexecuted request (dicts keep arrival order) decides. While the view
            # executes new requests steadily, a burst queued behind it gets CENSOR_GRACE times
            # longer before the primary is blamed (the monitor's rules catch a primary that
            # serves some clients and not others, or serves slowly). A replica that is itself
            # behind (state transfer pending) blames nobody: its lag is not the primary's fault.
            patience = self._timeout()
            arrival = self.requests.oldest_arrival()
            if now - self.last_progress < patience:
                patience *= CENSOR_GRACE
                if now >= max(arrival, self.vstate.since) + patience:
                    arrival = self._oldest_not_flooding(now, patience)
            if now >= max(arrival, self.vstate.since) + patience:
                self._suspect("request timer")
            elif now >= self.monitor.next_check and self.cfg.monitor.enabled and not self.is_primary:
                self._watch_primary()
            if self.suspects and not self.in_view_change:
                self._check_suspects()
        if self.transfer is None and self.lag is None and self.committed and not self.in_view_change:
            first = min(self.committed)
            if first > self.chain.height + 1:
                # committed here but an earlier sequence number is missing (missed while cut
                # off): fetch the certified blocks in between from the others
                self.lag = (first - 1, [r for r in range(self.n) if r != self.id], now)
        if self.transfer is not None:
            self.state_transfer.tick(now)
        elif self.lag is not None:
            seq, peers, since = self.lag
            if self.chain.height >= seq:
                self.lag = None
            elif now >= since + self.cfg.transfer_timeout:
                self.lag = None
                self._start_transfer(seq, peers)
        if now >= self.next_retransmit:
            self.next_retransmit = now + self.cfg.retransmit_interval
            self._retransmit()

    def ready(self) -> list[Action]:
        if self.is_primary and not self.in_view_change:
            self._propose()
        out, self._out = self._out, []
        return out

    @property
    def view(self) -> int:
        return self.vstate.view

    @property
    def in_view_change(self) -> bool:
        return self.vstate.in_view_change

    @property
    def vc_deadline(self) -> float | None:
        """While changing views: when to move on to the next one (None until 2f+1 are changing)."""
        return self.vstate.deadline

    @property
    def is_primary(self) -> bool:
        return primary(self.view, self.n) == self.id

    @property
    def leader(self) -> int:
        return primary(self.view, self.n)

    def status(self) -> dict:
        st = {"mode": "pbft", "view": self.view, "leader": self.leader, "in_view_change": self.in_view_change,
              "executed": self.chain.height, "stable_checkpoint": self.h, "height": self.chain.height,
              "head": self.chain.head.hex(), "pending": len(self.pending), "dropped": self.drops.as_json(),
              "checkpoint_interval": self.cfg.checkpoint_interval, "suspecting": self.suspecting}
        m = self.monitor
        st["primary_monitor"] = {"required_tps": round(m.required(self.now), 1), "last_tps": m.last_rate,
                                 "records_tps": [round(x, 1) for x in m.records]}
        if self.in_view_change:
            st["view_change_seconds"] = round(self.now - self.vstate.since, 3)
            st["view_change_joined"] = len(self.view_changes.get(self.view, {}))
        return st

    # ------------------------------------------------------------------ helpers
    def _sign(self, msg: Message) -> Message:
        return msg.signed(self.signer)

    def _answer_allowed(self, served: dict[int, tuple[float, int]], peer: int, limit: int) -> bool:
        """At most ``limit`` answers to ``peer`` per retransmission interval (``served`` keeps,
        per peer, when the interval started and how many answers it had; bounded by n)."""
        start, count = served.get(peer, (-1.0, 0))
        if self.now >= start + self.cfg.retransmit_interval:
            start, count = self.now, 0
        if count >= limit:
            return False
        served[peer] = (start, count + 1)
        return True

    def _persist(self, kind: str, payload) -> None:
        self._out.append(Persist(msgpack.packb([kind, payload], use_bin_type=True)))

    def _in_window(self, seq: int) -> bool:
        return self.h < seq <= self.h + self.cfg.log_size

    def _slot(self, seq: int) -> Slot:
        s = self.log.get(seq)
        if s is None:
            s = self.log[seq] = Slot()
        return s

    def _timeout(self) -> float:
        return self.cfg.request_timeout * (2 ** min(self.vc_attempts, 6))

    # ------------------------------------------------------------------ requests
    def _on_request(self, client: int, req: Request) -> None:
        what, detail = self.requests.admit(client, req, self.now)
        if what == NEW:
            self._enqueue((client, req.timestamp))
            if not self.is_primary and len(self.relay_queue) < self.cfg.max_pending:
                self.relay_queue.append((self.now, (client, req.timestamp)))
        elif what == CACHED:
            self._out.append(ToClient(client, cached_reply(self.view, self.id, client, detail)))
        elif what == STALE:
            self._out.append(ToClient(client, stale_reply(self.view, self.id, client, req.timestamp)))
        elif what == REFUSED:
            self._drop(detail, client=client)
            self._out.append(ToClient(client, busy_reply(self.view, self.id, client, req.timestamp, detail.text)))
        elif what != KNOWN:
            self._drop(detail, client=client)

    def _on_relayed_request(self, sender: int, req: Request) -> None:
        """A backup relays a client's request that it alone may have received (PBFT §4.2):
        admitted like one from the client itself, signature and all; relays are not relayed."""
        what, detail = self.requests.admit(req.client, req, self.now, direct=False)
        if what == NEW:
            self._enqueue((req.client, req.timestamp))
        elif what not in (KNOWN, CACHED, STALE):
            self._drop(detail, sender)                  # counted against the relaying replica

    def _enqueue(self, key: tuple[int, int]) -> None:
        """The primary serves the queue; backups watch it (fair rounds) only if the monitor runs,
        since only its checks prune a backup's queue."""
        if not self.in_view_change and (self.is_primary or self.cfg.monitor.enabled):
            self.queue.append(key, self.now)

    def _relay_waiting(self) -> None:
        """Send the primary every request that has waited half a request timeout unordered."""
        due = self.now - self.cfg.request_timeout / 2
        q = self.relay_queue
        while q and q[0][0] <= due:
            _, key = q.popleft()
            entry = self.pending.get(key)
            if entry is None or key in self.in_batch or self.is_primary or self.in_view_change:
                continue
            if self.requests.flooding(key[0], self.now, 2 * self.cfg.request_timeout):
                continue                    # it reaches every replica, and more than its share
            self._out.append(Send(self.leader, entry[2]))

    def _propose(self) -> None:
        cfg = self.cfg
        while self.queue and self.next_seq <= self.h + cfg.log_size:
            in_flight = self.next_seq - 1 - self.chain.height
            if len(self.queue) < cfg.batch_size and in_flight >= cfg.pipeline:
                return
            batch, reqs = self.requests.take_batch(cfg.batch_size, cfg.batch_bytes, self.now)
            if not batch:
                return
            seq = self.next_seq
            self.next_seq += 1
            pp = self._sign(PrePrepare(self.view, seq, root_of(batch), batch, self.id))
            self._accept_pre_prepare(pp, reqs)
            self._out.append(Broadcast(pp))

    # ------------------------------------------------------------------ normal case
    def _normal_case_ok(self, sender: int, msg, view: int, seq: int) -> bool:
        if view != self.view or self.in_view_change:
            if view < self.view:
                self._help_behind(sender)
            elif (view == self.view and self._in_window(seq)
                  and (type(msg) is not PrePrepare or sender == self.leader)):
                self.early[(seq, _KIND_ORDER[type(msg)], sender)] = msg
                self._drop(PbftRule.ENTERING_VIEW, sender)
                return False
            self._drop(PbftRule.OTHER_VIEW, sender)
            return False
        if not self._in_window(seq):
            top = self.h + self.cfg.log_size
            if top < seq <= top + self._ahead_span and (type(msg) is not PrePrepare or sender == self.leader):
                self.ahead[(seq, _KIND_ORDER[type(msg)], sender)] = msg
                self._drop(PbftRule.ABOVE_WATERMARK, sender)
            else:
                self._drop(PbftRule.OUTSIDE_WATERMARKS, sender)
            return False
        return True

    def _drain_ahead(self) -> None:
        """The window moved: process the held messages it now covers, in sequence order,
        each PRE-PREPARE before the votes for it (every check runs again)."""
        while self._window_moved:
            self._window_moved = False
            top = self.h + self.cfg.log_size
            due = sorted(k for k in self.ahead if k[0] <= top)
            for k in due:
                m = self.ahead.pop(k)
                self._handlers[type(m)](self, k[2], m)

    def _on_pre_prepare(self, sender: int, pp: PrePrepare) -> None:
        if not self._normal_case_ok(sender, pp, pp.view, pp.seq):
            return
        if sender != self.leader:
            self._drop(PbftRule.NOT_FROM_PRIMARY, sender)
            return
        slot = self.log.get(pp.seq)
        if slot is not None and slot.pre_prepare is not None:
            if slot.pre_prepare.digest != pp.digest:
                self._drop(PbftRule.CONFLICTING_PRE_PREPARE, sender)
            return
        voted = self.votes.get((pp.view, pp.seq))
        if voted is not None and voted != pp.digest:
            self._drop(PbftRule.CONTRADICTS_OWN_VOTE, sender)
            return
        if not self.keys.replica_signed(pp, sender):
            self._drop(PbftRule.BAD_SIGNATURE, sender)
            return
        why, reqs = batch_error(self.keys, pp.digest, pp.batch, self.cfg.batch_bytes)
        if why:
            self._drop(why, sender)
            return
        self._accept_pre_prepare(pp, reqs)

    def _accept_pre_prepare(self, pp: PrePrepare, reqs: list[Request] | None) -> None:
        """Record an accepted PRE-PREPARE (own or the primary's); a backup also PREPAREs.

        ``reqs`` is None for a PRE-PREPARE of a NEW-VIEW whose batch this replica lacks: it
        votes on the digest at once (2f+1 replicas prepared it, so f+1 honest ones checked
        the batch) and fetches the batch, which it needs only to execute."""
        slot = self._slot(pp.seq)
        slot.pre_prepare = pp
        slot.advance(Phase.PRE_PREPARED)
        slot.requests = reqs
        self.votes[(pp.view, pp.seq)] = pp.digest
        if reqs is None:
            self._want_batch(pp.digest)
        else:
            self._keep_batch(pp.seq, pp.digest, pp.batch, reqs)
            in_batch, executed, useful = self.in_batch, self.chain.executed, False
            for r in reqs:
                key = (r.client, r.timestamp)
                if key not in in_batch:
                    in_batch.add(key)
                    if not useful and executed(r.client, r.timestamp) is None:
                        useful = True
            if useful:
                self.monitor.useful_pre_prepare(self.now)
        self._persist("pp", pp.encode())
        if pp.replica != self.id:
            p = self._sign(Prepare(pp.view, pp.seq, pp.digest, self.id))
            slot.my_prepare = p
            slot.prepares[self.id] = p
            self._out.append(Broadcast(p))
        self._check_prepared(pp.seq, slot)

    def _on_prepare(self, sender: int, p: Prepare) -> None:
        if not self._normal_case_ok(sender, p, p.view, p.seq):
            return
        if sender == self.leader:
            self._drop(PbftRule.PREPARE_FROM_PRIMARY, sender)
            return
        slot = self._slot(p.seq)
        old = slot.prepares.get(sender)
        if old is not None:
            if old.digest != p.digest:
                self._drop(PbftRule.DUPLICATE_VOTE, sender)
            else:
                self._help_duplicate(sender, p.seq)
            return
        if not self.keys.replica_signed(p, sender):
            self._drop(PbftRule.BAD_SIGNATURE, sender)
            return
        slot.prepares[sender] = p
        self._check_prepared(p.seq, slot)

    def _check_prepared(self, seq: int, slot: Slot) -> None:
        """Once prepared(m, v, n, i) holds: keep the certificate, multicast COMMIT (§4.2)."""
        if slot.phase != Phase.PRE_PREPARED:
            return
        prepares = slot.prepared(self.leader, self.f)
        if prepares is None:
            return
        slot.advance(Phase.PREPARED)
        pp = slot.pre_prepare
        cert = PreparedCert(pp, prepares)
        self.prepared_certs[seq] = cert
        self._persist("pc", cert.encode())
        c = self._sign(Commit(pp.view, seq, pp.digest, self.id))
        slot.my_commit = c
        slot.commits[self.id] = c
        self._out.append(Broadcast(c))
        self._check_committed(seq, slot)

    def _on_commit(self, sender: int, c: Commit) -> None:
        if not self._normal_case_ok(sender, c, c.view, c.seq):
            return
        slot = self._slot(c.seq)
        old = slot.commits.get(sender)
        if old is not None:
            if old.digest != c.digest:
                self._drop(PbftRule.DUPLICATE_VOTE, sender)
            else:
                self._help_duplicate(sender, c.seq)
            return
        if not self.keys.replica_signed(c, sender):
            self._drop(PbftRule.BAD_SIGNATURE, sender)
            return
        slot.commits[sender] = c
        self._check_committed(c.seq, slot)

    def _check_committed(self, seq: int, slot: Slot) -> None:
        """Once committed-local(m, v, n, i) holds: execute in sequence order (§4.2)."""
        if slot.phase != Phase.PREPARED:
            return
        cert = slot.committed_local(self.f)
        if cert is None:
            return
        slot.advance(Phase.COMMITTED_LOCAL)
        pp = slot.pre_prepare
        if seq > self.chain.height:
            self.committed[seq] = CommittedBatch(pp.view, pp.digest, pp.batch, cert, slot.requests)
            self._execute()

    # ------------------------------------------------------------------ execution
    def _execute(self) -> None:
        progressed = False
        if self.suspecting and not self.suspect_sticky and self.chain.height + 1 in self.committed:
            self.suspecting = False                  # executing again: stop repeating SUSPECT
            self.my_suspect = None
            self.suspects.pop(self.id, None)
        while self.chain.height + 1 in self.committed:
            seq = self.chain.height + 1
            if self.committed[seq].requests is None:   # committed, but its batch is still being fetched
                self._want_batch(self.committed[seq].digest)
                break
            view, _digest, batch, cert, reqs = self.committed.pop(seq)
            block = self.chain.execute(seq, view, batch, cert)
            slot = self.log.get(seq)
            if slot is not None and slot.phase == Phase.COMMITTED_LOCAL:
                slot.advance(Phase.EXECUTED)
            self._out.append(AppendBlock(block))
            if self._after_execute(block, reqs):
                progressed = True
        if progressed:                               # new requests executed: empty or replayed batches do not count
            self.vc_attempts = 0
            self.last_progress = self.now

    def _after_execute(self, block: Block, reqs: list) -> int:
        """Replies and checkpoint after a block; ``reqs[i]`` (a Request or a parsed Tx, None
        when unreadable) is the block's transaction i, so indexes stay aligned. Returns how
        many requests executed for the first time (the monitor's measure of progress)."""
        chain = self.chain
        fresh = 0
        results = block.results
        for index, r in enumerate(reqs):
            if r is None:
                continue
            if not is_duplicate(results[index]):
                fresh += 1
            self.requests.executed((r.client, r.timestamp))
            reply = self.requests.reply(self.view, self.id, block, index, r.client, r.timestamp)
            if reply is not None:
                self._out.append(ToClient(r.client, reply))
        if block.sequence % self.cfg.checkpoint_interval == 0:
            cp = self._sign(Checkpoint(block.sequence, chain.head, chain.tree.size, chain.tree.root(), self.id))
            self.my_checkpoint = cp
            self._out.append(Broadcast(cp))
            self._record_checkpoint(cp)
        self.monitor.executed(fresh)
        return fresh

    # ------------------------------------------------------------------ retransmission
    def _help_duplicate(self, sender: int, seq: int) -> None:
        """A peer re-sent a vote: it may be missing ours. Answer once per interval."""
        self.useless += 1
        if self.helped.get(sender, -1.0) + self.cfg.retransmit_interval > self.now:
            return
        self.helped[sender] = self.now
        slot = self.log.get(seq)
        if slot is None:
            return
        if slot.pre_prepare is not None and self.is_primary:
            self._out.append(Send(sender, slot.pre_prepare))
        if slot.my_prepare is not None:
            self._out.append(Send(sender, slot.my_prepare))
        if slot.my_commit is not None:
            self._out.append(Send(sender, slot.my_commit))

    def _help_behind(self, sender: int) -> None:
        """A peer still in an older view: the primary re-sends its NEW-VIEW."""
        if self.new_view_msg is None or not self.is_primary or self.in_view_change:
            return
        if self.helped.get(-1 - sender, -1.0) + self.cfg.retransmit_interval > self.now:
            return
        self.helped[-1 - sender] = self.now
        self._out.append(Send(sender, self.new_view_msg))

    def _retransmit(self) -> None:
        if self.in_view_change:
            if self.my_view_change is not None:
                self._out.append(Broadcast(self.my_view_change))
            return
        sent = 0
        for seq in sorted(self.log):
            if sent >= 8:
                break
            slot = self.log[seq]
            # Also slots this replica already executed (in an earlier view, or through
            # state transfer): a peer may still need this view's votes for them, and with
            # exactly 2f+1 honest replicas every honest vote is needed (n=10 seed 164).
            if slot.is_committed_local:
                continue
            if self.is_primary and slot.pre_prepare is not None:
                self._out.append(Broadcast(slot.pre_prepare))
            if slot.my_prepare is not None:
                self._out.append(Broadcast(slot.my_prepare))
            if slot.my_commit is not None:
                self._out.append(Broadcast(slot.my_commit))
            sent += 1
        if self.my_checkpoint is not None and self.my_checkpoint.seq > self.h:
            self._out.append(Broadcast(self.my_checkpoint))
        if self.suspecting and self.my_suspect is not None:
            self.suspects[self.id] = self.now
            self._out.append(Broadcast(self.my_suspect))
        self._retry_batches()

    _handlers = {
        PrePrepare: _on_pre_prepare,
        Prepare: _on_prepare,
        Commit: _on_commit,
        Checkpoint: CheckpointMixin._on_checkpoint,
        ViewChange: ViewChangeMixin._on_view_change,
        NewView: ViewChangeMixin._on_new_view,
        StateRequest: StateTransferMixin._on_state_request,
        StateResponse: StateTransferMixin._on_state_response,
        Request: _on_relayed_request,
        Suspect: SuspicionMixin._on_suspect,
        BatchRequest: BatchFetchMixin._on_batch_request,
        BatchResponse: BatchFetchMixin._on_batch_response,
    }


_KIND_ORDER = {PrePrepare: 0, Prepare: 1, Commit: 2}
