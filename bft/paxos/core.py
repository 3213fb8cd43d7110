"""Multi-Paxos (crash faults) as a sans-I/O state machine with the same driver interface as PbftCore.

``step`` takes one decoded message from an authenticated sender, ``tick`` tells it the time,
``ready`` hands back the actions to carry out in order (see ``bft.outputs``). No sockets,
clocks, files or global randomness: timeouts are drawn from the injected ``random.Random``.

The parts carry the names of the classic texts (Lamport, "Paxos Made Simple"; van Renesse
and Altinbuken, "Paxos Made Moderately Complex"), one class per role, each owning its
state and handling the messages named after it:

* **Acceptor** (``bft.paxos.acceptor``) - the only durable part. ``on_prepare`` promises a
  ballot (phase 1b, PROMISE), ``on_accept`` accepts a value (phase 2b, ACCEPTED). Both are
  written to the vote log (a ``Persist`` action placed before the matching send) so that a
  restarted replica never promises or accepts against what it said before.
* **Proposer** (``bft.paxos.proposer``) - the election and the leader: phase 1a (PREPARE,
  ``on_promise``) once for all slots above its executed height, re-proposing for every slot
  the value accepted under the highest ballot and no-ops in the gaps, then phase 2a
  (ACCEPT, ``on_accepted``) per batch, heartbeats, ``on_nack`` and the pre-vote.
* **Learner** (``bft.paxos.learner``) - executes chosen slots in slot order, learning the
  commit index from the leader (``on_heartbeat``), and fetches what it cannot execute with
  state transfer, checking every block's certificate.

Reads that a client does not ask to order are answered by the leader from its state after a
read-index round (``bft.paxos.reads``, Ongaro's thesis §6.4); followers redirect them.

``PaxosCore`` is the facade the drivers see: it authenticates and dispatches (the shared
``bft.skeleton``), admits clients' requests, and collects the roles' actions in order.

Ballots are single integers; the leader of ballot ``b`` is ``b % n``. Every leadership
starts with phase 1, also the first one: replica 0 campaigns at its first tick when it
starts with no vote records and an empty ledger. (It used to lead ballot 0 without a
phase 1 on the grounds that no lower ballot exists; but a replica 0 whose disk was
replaced looks exactly like that, and would have proposed new values for slots the
cluster had already chosen; issue 11.) A replica never reuses a ballot after a restart:
its next candidacy is above the ballot it persisted.

Followers start an election after a randomized timeout, and an election starts with a
**pre-vote** (Raft's, Ongaro's thesis section 9.6): the would-be candidate asks every replica
whether it would promise its next ballot (PxPreVote) and raises its ballot, durably, only
once a majority would (PxPreVoteGrant). A replica grants unless it hears a live leader.
Without it, a replica cut off by a partition campaigned with ever higher ballots, and on
healing refused the working leader's ballot with a PxNack that deposed it, forcing a round
of elections (issue 17; with the pre-vote, an isolated follower's ten healings caused none). The pre-vote touches
liveness only: granting one changes no state, and the promise itself still comes from phase 1.

A proposer pre-empted by a higher
ballot, refused by a PxNack, or whose candidacy timed out backs off: its next timeout is
drawn from the same range times ``backoff_multiplier ** attempts`` (capped), so duelling
proposers settle. ``PaxosConfig(backoff=False)`` is the naive proposer of the textbook
livelock example: it retries at once with a higher ballot whenever it is pre-empted.

Crash faults only: peers do not lie. Still, anything malformed, wrongly signed, from a
non-member or from the wrong ballot is counted in ``dropped`` by rule
(``bft.paxos.rules.PaxosRule``) and dropped; a core never raises on peer input (an
illegal local transition raises ``PaxosStateError``). Followers check the leader's
signature on every ACCEPT (it is the block's certificate) but not the client signatures
inside: the leader checked those.
"""
from __future__ import annotations

import logging
import random
from collections import Counter

from ledger import quorum
from bft.outputs import Action, Broadcast, Persist, Send, ToClient
from bft.paxos.acceptor import Acceptor, AcceptorState
from bft.paxos.ballots import NOOP_DIGEST, PaxosStateError, Role, leader_of, next_ballot
from bft.paxos.config import PaxosConfig
from bft.paxos.learner import Learner
from bft.paxos.proposer import Proposer
from bft.paxos.reads import ReadIndex
from bft.pbft.certs import Keys
from bft.reads import ReadDesk
from bft.requests import NEW, RequestPool
from bft.rules import RequestRule
from bft.skeleton import CoreSkeleton
from bft.wire import (Message, PxAccept, PxAccepted, PxHeartbeat, PxNack, PxPrepare, PxPreVote, PxPreVoteGrant,
                      PxPromise, PxReadIndex, PxReadIndexAck, Read, Redirect, Request, StateRequest, StateResponse)
from crypto.signing import Signer
from ledger import tx as txmod
from ledger.block import Block
from ledger.chain import Chain

__all__ = ["NOOP_DIGEST", "Acceptor", "AcceptorState", "PaxosCore", "PaxosStateError", "Role", "leader_of",
           "next_ballot"]

log = logging.getLogger("bft.paxos")


MAX_EQUIVOCATIONS_KEPT = 64     # the evidence kept per replica; the count goes on


class PaxosCore(CoreSkeleton):
    mode = "paxos"
    proposer_cls = Proposer             # a class attribute so that the lab's rule switches can swap it

    def __init__(self, cfg: PaxosConfig, replica_id: int, signer: Signer, keys: Keys, chain: Chain,
                 vote_records: list[bytes] = (), now: float = 0.0, rng: random.Random | None = None) -> None:
        self._init_skeleton(cfg, replica_id, signer, keys, chain, now, log)
        self.rng = rng if rng is not None else random.Random(f"paxos-{replica_id}")
        self.majority = quorum.majority(cfg.n)
        self.stats: Counter[str] = Counter()        # elections, pre-votes, pre-emptions (not drops)
        self.equivocations: dict[tuple[int, int], str] = {}   # (ballot, slot) -> what showed it (bounded below)

        # clients (leader side)
        self.requests = RequestPool(keys, chain, cfg.max_pending, max_bytes=cfg.max_pending_bytes,
                                    client_requests=cfg.client_requests, client_bytes=cfg.client_bytes)
        self.pending = self.requests.pending
        self.queue = self.requests.queue
        self.in_batch = self.requests.in_batch

        records = list(vote_records)
        votes = AcceptorState.recover(records, chain.height)
        self.acceptor = Acceptor(self, votes)
        self.proposer = self.proposer_cls(self, votes.promised, now)
        self.learner = Learner(self)
        self.read_desk = ReadDesk(self)
        self.read_index = ReadIndex(self)
        if not records and chain.height == 0 and leader_of(0, self.n) == self.id:
            # first start, or a disk that was replaced: campaign at once, with a phase 1, which
            # reports whatever the cluster already chose
            self.proposer.campaign_at_once()

    # ------------------------------------------------------------------ driver interface
    def tick(self, now: float) -> None:
        self.now = now
        self.proposer.tick(now)
        self.learner.tick(now)
        self.read_index.tick(now)
        self.read_desk.expire(now)

    def ready(self) -> list[Action]:
        if self.proposer.role is Role.LEADER and self.queue:
            self.proposer.propose()
        self.read_index.ready()
        self.read_desk.serve_if_executed()               # confirmed reads whose read index has executed
        out, self._out = self._out, []
        return out

    def campaign(self) -> None:
        """Start an election now (tests and operators; the timers call it otherwise)."""
        self.proposer.campaign()

    @property
    def role(self) -> Role:
        return self.proposer.role

    @property
    def ballot(self) -> int:
        return self.proposer.ballot

    @property
    def commit_index(self) -> int:
        return self.learner.commit_index

    @property
    def is_primary(self) -> bool:
        return self.proposer.role is Role.LEADER

    @property
    def leader(self) -> int:
        return leader_of(self.proposer.ballot, self.n)

    @property
    def view(self) -> int:
        return self.proposer.ballot

    @property
    def in_view_change(self) -> bool:
        """Electing: a candidacy in progress, or the current ballot's leader not heard from."""
        role = self.proposer.role
        return role is Role.CANDIDATE or (not role.proposing and not self.proposer.leader_active)

    def note_equivocation(self, key: tuple[int, int], leader: int, evidence: str) -> None:
        """Proof that the leader of a ballot proposed two values for one slot (both carry its
        signature). Paxos assumes no liar and cannot outvote one; it can say so, in the log and
        in ``status``, so that an operator learns the ledgers may have diverged."""
        if key in self.equivocations:
            return
        self.stats["equivocations_seen"] += 1
        if len(self.equivocations) >= MAX_EQUIVOCATIONS_KEPT:
            return                      # counted; the log keeps its first MAX_EQUIVOCATIONS_KEPT
        self.equivocations[key] = f"replica {leader}: {evidence}"
        log.warning("replica %d: the leader of ballot %d (replica %d) EQUIVOCATED: %s; Paxos tolerates crashes, "
                    "not lies: the replicas' ledgers may differ (run 'bftledger compare')", self.id, key[0],
                    leader, evidence)

    def status(self) -> dict:
        return {"mode": "paxos", "view": self.ballot, "leader": self.leader, "in_view_change": self.in_view_change,
                "executed": self.chain.height, "stable_checkpoint": self.learner.stable, "height": self.chain.height,
                "head": self.chain.head.hex(), "pending": len(self.pending), "dropped": self.drops.as_json(),
                "role": self.role.value, "promised": self.acceptor.promised, "commit_index": self.commit_index,
                "reads_answered": self.read_desk.answered, "reads_held": self.read_desk.held,
                "equivocations_seen": self.stats["equivocations_seen"]}

    # ------------------------------------------------------------------ for the roles
    def emit(self, action: Action) -> None:
        self._out.append(action)

    def send(self, to: int, msg: Message) -> None:
        self._out.append(Send(to, msg))

    def broadcast(self, msg: Message) -> None:
        self._out.append(Broadcast(msg))

    def persist(self, record: bytes) -> None:
        self._out.append(Persist(record))

    def forget_requests(self) -> None:
        """No longer proposing: drop what clients sent (requests and reads); they retry with
        the next leader."""
        self.requests.forget()
        self.read_index.abandon()

    def forget_pending(self) -> None:
        """Following a leader: requests held for a leadership of my own will not be proposed."""
        if self.pending:
            self.requests.release_held()

    def requests_in_batch(self, batch: list[bytes]) -> None:
        """A new leader re-proposes ``batch``: its requests are not to be proposed twice."""
        self.requests.mark_in_batch(t for t in map(txmod.parse, batch) if t is not None)

    def reply(self, block: Block, index: int, client: int, ts: int) -> None:
        reply = self.requests.reply(self.ballot, self.id, block, index, client, ts)
        if reply is not None:
            self._out.append(ToClient(client, reply))

    # ------------------------------------------------------------------ clients
    def _on_request(self, client: int, req: Request) -> None:
        if req.client != client or not 0 <= client < len(self.keys.clients):
            self._drop(RequestRule.UNKNOWN_CLIENT, client=client)
            return
        if self.leader != self.id:
            self._out.append(ToClient(client, Redirect(client, req.timestamp, self.id, self.leader)))
            return
        # a candidate (or a restarted replica whose own ballot is current) holds it until it leads
        leading = self.proposer.role is Role.LEADER
        what, detail = self.requests.admit(client, req, self.now)
        if what == NEW:
            if leading:
                self.queue.append((client, req.timestamp))
        else:
            self._answer_admission(client, req, what, detail, self.ballot, answer=leading)

    def _on_read(self, client: int, m: Read) -> None:
        key = self.read_desk.admit(client, m)
        if key is not None:
            self.read_index.on_read(client, m, key)

    # one handler per message, named after it, in the role that handles it
    _handlers = {
        PxPrepare: lambda core, s, m: core.acceptor.on_prepare(s, m),
        PxPromise: lambda core, s, m: core.proposer.on_promise(s, m),
        PxNack: lambda core, s, m: core.proposer.on_nack(s, m),
        PxAccept: lambda core, s, m: core.acceptor.on_accept(s, m),
        PxAccepted: lambda core, s, m: core.proposer.on_accepted(s, m),
        PxHeartbeat: lambda core, s, m: core.learner.on_heartbeat(s, m),
        PxPreVote: lambda core, s, m: core.acceptor.on_prevote(s, m),
        PxPreVoteGrant: lambda core, s, m: core.proposer.on_prevote_grant(s, m),
        StateRequest: lambda core, s, m: core.learner.on_state_request(s, m),
        StateResponse: lambda core, s, m: core.learner.on_state_response(s, m),
        PxReadIndex: lambda core, s, m: core.read_index.on_probe(s, m),
        PxReadIndexAck: lambda core, s, m: core.read_index.on_ack(s, m),
    }
