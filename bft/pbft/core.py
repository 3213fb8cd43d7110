"""The PBFT replica as a sans-I/O state machine (Castro & Liskov, signature variant).

``step`` takes one decoded message from an authenticated sender, ``tick`` tells it the
time, ``ready`` hands back the actions to carry out (see ``bft.outputs``). Nothing in
here touches a socket, a clock, a file or global randomness, so the simulator and the
trio runtime drive the very same code.

Terms follow the paper: view, sequence number, pre-prepared, prepared,
committed-local, stable checkpoint, low/high watermarks h and H = h + L.

The core owns the normal case (the log of slots, its own votes, the prepared
certificates, what committed and waits to execute) and what every part shares
(configuration, keys, chain, clock, request pool, the output list, signing, persisting,
counting drops). The rest are components that own their state, declared in their own
``__init__``, and reach each other only through methods and read-only properties:
``Checkpoints`` (h, the stable proof, CHECKPOINT votes), ``ViewChanger`` (the view state,
VIEW-CHANGE and NEW-VIEW), ``Suspicion`` (SUSPECT, the request timer, the primary
monitor), ``BatchFetcher`` (batches by digest), ``Catchup`` (state transfer),
``HeldMessages`` (messages just above H or for the next view), ``RequestIntake`` (client
requests, relays, proposing) and ``Retransmitter``; ``recovery`` reads the vote log back.
Handlers are named after the messages; a component's are reached through
``bft.skeleton.via`` in the ``_handlers`` table, and what drivers, tests and adversaries
read of a component is a read-only property here (``core.h``, ``core.view_changes``...).
"""
from __future__ import annotations

import logging
from collections import Counter

import msgpack

from bft.outputs import Action, AppendBlock, Broadcast, Persist, ToClient
from bft.pbft.batches import BatchFetcher
from bft.pbft.checkpoints import Checkpoints
from bft.pbft.held import HeldMessages
from bft.pbft.intake import RequestIntake
from bft.pbft.recovery import recover
from bft.pbft.retransmit import Retransmitter
from bft.pbft.suspicion import CENSOR_GRACE, Suspicion
from bft.pbft.certs import Keys, batch_error, checkpoint_proof_error, new_view_error, plan_new_view, primary
from bft.pbft.config import PbftConfig
from bft.pbft.transfer import Catchup
from bft.pbft.viewchange import ViewChanger
from bft.reads import ReadDesk
from bft.requests import RequestPool, is_duplicate
from bft.pbft.rules import PbftRule
from bft.pbft.slots import CommittedBatch, Phase, Slot
from bft.pbft.viewstate import ViewState
from bft.skeleton import CoreSkeleton, reads, via
from bft.wire import (BatchRequest, BatchResponse, Checkpoint, Commit, Message, NewView, PrePrepare, Prepare,
                      PreparedCert, Read, Request, StateRequest, StateResponse, Suspect, ViewChange)
from crypto.signing import Signer
from ledger.block import Block
from ledger.rules import Rule
from ledger.chain import Chain

log = logging.getLogger("bft.pbft")

__all__ = ["CENSOR_GRACE", "PbftCore"]


class PbftCore(CoreSkeleton):
    mode = "pbft"
    # O from V; a class attribute so that a test build of the core can swap in a faulty rule
    # (the simulator must then catch it) without patching module globals
    plan_new_view = staticmethod(plan_new_view)
    check_batch = staticmethod(batch_error)       # the same for a batch's checks (bft.unsafe),
    check_new_view = staticmethod(new_view_error)                 # a backup's check of a NEW-VIEW,
    check_checkpoint_proof = staticmethod(checkpoint_proof_error)  # a claimed stable checkpoint's proof

    def __init__(self, cfg: PbftConfig, replica_id: int, signer: Signer, keys: Keys, chain: Chain,
                 vote_records: list[bytes] = (), now: float = 0.0) -> None:
        self._init_skeleton(cfg, replica_id, signer, keys, chain, now, log)

        self.next_seq = 1
        self.log: dict[int, Slot] = {}               # seq -> slot, current view only
        self.votes: dict[tuple[int, int], bytes] = {}  # (view, seq) -> digest I pre-prepared/prepared
        self.prepared_certs: dict[int, PreparedCert] = {}
        self.committed: dict[int, CommittedBatch] = {}   # committed-local, not yet executed
        self.requests = RequestPool(keys, chain, cfg.max_pending, max_bytes=cfg.max_pending_bytes,
                                    client_requests=cfg.client_requests, client_bytes=cfg.client_bytes)
        self.pending = self.requests.pending               # not yet executed: (request, arrival)
        self.last_progress = now                     # when this replica last executed a batch
        self.stats: Counter[str] = Counter()         # suspicions by monitor rule (not drops)
        self.checkpoints = Checkpoints(self)
        self.held = HeldMessages(self)
        self.intake = RequestIntake(self)
        self.view_changer = ViewChanger(self, now)
        self.suspicion = Suspicion(self, now)
        self.fetcher = BatchFetcher(self)
        self.catchup = Catchup(self)
        self.retransmitter = Retransmitter(self, now)
        self.read_desk = ReadDesk(self)
        recover(self, list(vote_records))

    # ------------------------------------------------------------------ driver interface
    def _after_step(self) -> None:
        self.held.drain()

    def tick(self, now: float) -> None:
        self.now = now
        self.held.drain()
        self.intake.relay_waiting()
        if self.in_view_change:
            if self.vc_deadline is not None and now >= self.vc_deadline:
                self.view_changer.start(self.view + 1)
        elif self.pending and self.catchup.idle:
            # a replica that is itself behind (state transfer pending) blames nobody: its lag
            # is not the primary's fault
            self.suspicion.tick(now)
        self.catchup.tick(now)
        self.retransmitter.tick(now)
        self.read_desk.expire(now)

    def ready(self) -> list[Action]:
        if self.is_primary and not self.in_view_change:
            self.intake.propose()
        self.read_desk.serve_if_executed()                   # reads held for a height that has now executed
        out, self._out = self._out, []
        return out

    @property
    def vstate(self) -> ViewState:
        """The view, and whether this replica is changing it (owned by ``view_changer``)."""
        return self.view_changer.state

    @property
    def view(self) -> int:
        return self.view_changer.state.view

    @property
    def in_view_change(self) -> bool:
        return self.view_changer.state.in_view_change

    @property
    def vc_deadline(self) -> float | None:
        """While changing views: when to move on to the next one (None until 2f+1 are changing)."""
        return self.view_changer.state.deadline

    # what the components own, read-only
    h = reads("checkpoints", "h")
    stable_proof = reads("checkpoints", "stable_proof")
    checkpoint_votes = reads("checkpoints", "votes")
    my_checkpoint = reads("checkpoints", "mine")
    view_changes = reads("view_changer", "view_changes")
    my_view_change = reads("view_changer", "mine")
    new_view_msg = reads("view_changer", "new_view_msg")
    ahead = reads("held", "ahead")
    early = reads("held", "early")
    relay_queue = reads("intake", "relay_queue")
    suspecting = reads("suspicion", "suspecting")
    suspects = reads("suspicion", "suspects")
    monitor = reads("suspicion", "monitor")
    batches = reads("fetcher", "batches")
    missing = reads("fetcher", "missing")
    transfer = reads("catchup", "current")
    lag = reads("catchup", "lag")

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
              "checkpoint_interval": self.cfg.checkpoint_interval, "suspecting": self.suspicion.suspecting,
              "reads_answered": self.read_desk.answered, "reads_held": self.read_desk.held,
              "suspicions": {k.label: v for k, v in self.stats.items() if isinstance(k, Rule)}}
        m = self.monitor
        st["primary_monitor"] = {"required_tps": round(m.required(self.now), 1), "last_tps": m.last_rate,
                                 "records_tps": [round(x, 1) for x in m.records]}
        if self.in_view_change:
            st["view_change_seconds"] = round(self.now - self.vstate.since, 3)
            st["view_change_joined"] = len(self.view_changer.view_changes.get(self.view, {}))
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
        h = self.checkpoints.h
        return h < seq <= h + self.cfg.log_size

    def _slot(self, seq: int) -> Slot:
        s = self.log.get(seq)
        if s is None:
            s = self.log[seq] = Slot()
        return s

    def _timeout(self) -> float:
        return self.view_changer.timeout()

    def _clear_view(self, *, keep_early: bool) -> None:
        """Leaving a view (a view change starts, or a view is entered): its slots, the messages
        held for it (``keep_early``: not those for the view being entered) and the batches in
        flight go; the requests stay held."""
        self.log.clear()
        self.held.clear(keep_early=keep_early)
        self.requests.new_view()

    def propose_after(self, seq: int) -> None:
        """The primary's next PRE-PREPARE gets ``seq + 1`` (a view entered, a restart)."""
        self.next_seq = seq + 1

    def _collect_below(self, seq: int) -> None:
        """``seq`` is the new stable checkpoint: what the core keeps at or below it goes."""
        self.held.window_moved()
        for s in [s for s in self.log if s <= seq]:
            del self.log[s]
        for s in [s for s in self.prepared_certs if s <= seq]:
            del self.prepared_certs[s]
        for s in [s for s in self.committed if s <= seq]:
            del self.committed[s]
        self.votes = {k: d for k, d in self.votes.items() if k[1] > seq}
        if self.next_seq <= seq:
            self.next_seq = seq + 1

    # ------------------------------------------------------------------ requests
    def _on_request(self, client: int, req: Request) -> None:
        self.intake.on_request(client, req)

    def _on_read(self, client: int, m: Read) -> None:
        """PBFT's read-only optimisation (TOCS 2002, §5.1.3), answered from the executed state:
        this core executes only committed batches, never tentatively, so what it executed is
        committed and needs no wait; a state below the client's floor waits for it."""
        key = self.read_desk.admit(client, m)
        if key is not None:
            self.read_desk.answer_or_hold(client, m, key)

    # ------------------------------------------------------------------ normal case
    def _normal_case_ok(self, sender: int, msg, view: int, seq: int) -> bool:
        if view != self.view or self.in_view_change:
            if view < self.view:
                self.view_changer.help_behind(sender)
            elif (view == self.view and self._in_window(seq)
                  and (type(msg) is not PrePrepare or sender == self.leader)):
                self.held.hold_early(sender, msg, seq)
                self._drop(PbftRule.ENTERING_VIEW, sender)
                return False
            self._drop(PbftRule.OTHER_VIEW, sender)
            return False
        if not self._in_window(seq):
            top = self.checkpoints.h + self.cfg.log_size
            if top < seq and (type(msg) is not PrePrepare or sender == self.leader) and \
                    self.held.hold_ahead(sender, msg, seq, top):
                self._drop(PbftRule.ABOVE_WATERMARK, sender)
            else:
                self._drop(PbftRule.OUTSIDE_WATERMARKS, sender)
            return False
        return True

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
        why, reqs = self.check_batch(self.keys, pp.digest, pp.batch, self.cfg.batch_bytes)
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
            self.fetcher.want(pp.digest)
        else:
            self.fetcher.keep(pp.seq, pp.digest, pp.batch, reqs)
            if self.requests.mark_in_batch(reqs):
                self.suspicion.useful_pre_prepare(self.now)
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
                self.retransmitter.duplicate(sender, p.seq)
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
                self.retransmitter.duplicate(sender, c.seq)
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
        if self.chain.height + 1 in self.committed:
            self.suspicion.executing_again()
        while self.chain.height + 1 in self.committed:
            seq = self.chain.height + 1
            if self.committed[seq].requests is None:   # committed, but its batch is still being fetched
                self.fetcher.want(self.committed[seq].digest)
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
            self.view_changer.progressed()
            self.last_progress = self.now

    def _after_execute(self, block: Block, reqs: list) -> int:
        """Replies and checkpoint after a block; ``reqs[i]`` (a Request or a parsed Tx, None
        when unreadable) is the block's transaction i, so indexes stay aligned. Returns how
        many requests executed for the first time (the monitor's measure of progress)."""
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
            self.checkpoints.take(block)
        self.suspicion.executed(fresh)
        return fresh

    _handlers = {
        PrePrepare: _on_pre_prepare,
        Prepare: _on_prepare,
        Commit: _on_commit,
        Checkpoint: via("checkpoints", "on_checkpoint"),
        ViewChange: via("view_changer", "on_view_change"),
        NewView: via("view_changer", "on_new_view"),
        StateRequest: via("catchup", "on_state_request"),
        StateResponse: via("catchup", "on_state_response"),
        Request: via("intake", "on_relayed_request"),
        Suspect: via("suspicion", "on_suspect"),
        BatchRequest: via("fetcher", "on_batch_request"),
        BatchResponse: via("fetcher", "on_batch_response"),
    }

