"""Byzantine behaviours, as wrappers around an unmodified core.

The core keeps running honestly inside; the wrapper rewrites what it sends. The
simulator and the real replica process (``bftledger replica --byzantine NAME``) use the
same wrappers, so an attack seen in a seeded run is the attack a course runs on TCP.
"""
from __future__ import annotations

import random
from dataclasses import replace

from bft.collusion import other_batch
from bft.outputs import Action, AppendBlock, Broadcast, Send, ServeBlocks, ToClient
from bft.pbft.certs import EMPTY_ROOT, NewViewPlan, plan_new_view
from bft.wire import (Checkpoint, Commit, Message, PrePrepare, Prepare, PreparedCert, PxAccept, ReadReply, Reply,
                      Request, StateRequest, StateResponse, ViewChange, decode)
from crypto.merkle import root_of
from crypto.signing import Signer
from ledger import quorum
from ledger.block import Block
from ledger.state import BUSY, OK, decode_result, encode_result, op_put

STRATEGIES = {
    "silent": "receives everything, sends nothing (a crashed or mute replica)",
    "wrong-digest": "votes (PREPARE/COMMIT/CHECKPOINT) for a digest nobody proposed, correctly signed",
    "corrupt": "sends its messages with corrupted signatures and corrupted replies to clients",
    "forge": "claims to be another replica: puts another id in its messages (signed with its own key)",
    "replay": "re-sends messages it sent long ago, from old views and sequence numbers",
    "flood": "sends every message many times over, hoping duplicates count twice",
    "equivocate": "as primary (leader), sends different PRE-PREPAREs (paxos: ACCEPTs) for one sequence number "
                  "(slot) to different backups",
    "equivocate-all": "as primary, sends every backup two different PRE-PREPAREs for each sequence number",
    "slow": "delays everything it sends by most of the view-change timeout (the driver applies the delay)",
    "censor": "ignores every request of client 0 (as primary: never proposes them)",
    "forge-request": "as primary, slips a request with a forged client signature into every batch",
    "forge-vc": "sends VIEW-CHANGEs with a forged prepared certificate or a bogus checkpoint proof",
    "padded-vc": "pads its VIEW-CHANGEs with repeated PREPAREs and CHECKPOINTs (to blow up the NEW-VIEW)",
    "descending-vc": "keeps sending valid VIEW-CHANGEs for ever lower views, starting far ahead",
    "far-checkpoints": "keeps sending CHECKPOINTs for far-future sequence numbers and states nobody reached",
    "state-flood": "asks every peer for its whole ledger, over and over (StateRequest)",
    "empty-batches": "as primary, proposes empty batches in place of the requests it should order",
    "replay-executed": "as primary, proposes batches of requests that already executed (no progress)",
    "flood-votes": "re-sends its recent PREPAREs and COMMITs (valid duplicates) to every peer, all the time",
    "flood-vc": "sends a valid VIEW-CHANGE for the next view to every peer, thousands of times a second",
    "forge-new-view": "as primary of a new view, sends a NEW-VIEW whose O puts null requests where its "
                      "VIEW-CHANGEs show prepared batches (it drops what committed in the old view)",
    "false-checkpoint": "claims in its VIEW-CHANGEs a stable checkpoint beyond every ledger, for a state nobody "
                        "reached, proved by its own CHECKPOINT alone",
    "forge-transfer": "answers state-transfer requests with forged blocks: each batch reordered or emptied, "
                      "under the real block's commit certificate",
    "lying-reads": "answers every read that is not ordered with a value nobody wrote, held since a height no "
                   "ledger reached (every liar tells the same lie, so that colluding liars agree)",
    # the next four act in the replica process (bft.runtime.replica), outside the core
    "lying-receipts": "serves receipts with an altered result and attests to a block hash nobody computed",
    "lying-proofs": "answers verified reads with a forged state (the key holds b'lies', or is absent) under a "
                    "header whose state root it changed, and attests to that header's hash; at past heights "
                    "it says 'rebuilding' for ever",
    "empty-transfer": "answers every state-transfer request with no blocks",
    "drip-transfer": "answers every state-transfer request with a single block",
    "lying-history": "answers history queries with every other version of the key left out, or with a "
                     "position that does not write the key added (turn about)",
}
TEAM_STRATEGY = "collude"      # several replicas run one plan (bft.collusion), given with --group
TEAM_HELP = "with --group I,J,...: the team splits the honest backups and shows each half its own batch"
RUNTIME_STRATEGIES = ("lying-receipts", "lying-proofs", "empty-transfer", "drip-transfer", "lying-history")
# What acts on a Multi-Paxos replica's messages: strategies on any message (silence, corruption,
# forgery, replay, floods, delay, censorship), on a leader's ACCEPT (equivocation), and the
# runtime's (receipts and state transfer exist in both modes). The others act on PRE-PREPARE,
# PREPARE, COMMIT, CHECKPOINT or VIEW-CHANGE, which Paxos does not have: a Paxos replica given
# one is refused, never silently labelled Byzantine.
PAXOS_STRATEGIES = ("silent", "corrupt", "forge", "replay", "flood", "equivocate", "slow", "censor", "lying-reads")


def applies(strategy: str, mode: str) -> bool:
    """Whether ``strategy`` does anything to a ``mode`` replica."""
    if strategy not in STRATEGIES:
        return False
    return mode == "pbft" or strategy in PAXOS_STRATEGIES or strategy in RUNTIME_STRATEGIES
USELESS_PRIMARY = ("empty-batches", "replay-executed")
NOISE_INTERVAL = 0.05          # how often the noisy strategies send their junk (seconds of core time)
FLOOD_VOTES = 200              # duplicate votes 'flood-votes' sends every NOISE_INTERVAL (4,000/s to each peer)

CENSORED_CLIENT = 0
LIE = encode_result(OK, b"a value nobody wrote")     # what 'lying-reads' answers (every liar alike) ...
LIE_SINCE = 1_000_000                                 # ... held since a height no ledger reached


def slow_delay(cfg) -> float:
    """How late 'slow' sends everything: just under every timer that would expose it (the
    request timer and the monitor's heartbeat in pbft, the election timeout in paxos), so
    that only the throughput rule of ``bft.pbft.monitor`` can catch it. A request can wait
    two delays to be batched (its batch waits for the pipeline, which waits for an earlier
    batch), hence 0.4 of the heartbeat's bound."""
    timeout = getattr(cfg, "request_timeout", None)
    if timeout is None:
        return 0.8 * cfg.election_timeout[0]
    return min(0.7 * timeout, 0.4 * (timeout / 2 + cfg.monitor.heartbeat))


class Byzantine:
    """Wraps a core: ``step``/``tick`` pass through, ``ready`` is rewritten by the strategy."""

    def __init__(self, core, strategy: str, signer: Signer, rng: random.Random) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; one of: {', '.join(STRATEGIES)}")
        self.core = core
        self.strategy = strategy
        self.signer = signer
        self.rng = rng
        self.history: list[Action] = []
        self.n = core.n
        self.forged = 0
        self._next_noise = 0.0
        self._descending = 10 ** 6
        self._executed_batches: list[list[bytes]] = []
        self._votes: list = []
        self.active = True                 # False: honest for now (``bftledger replica --dormant``)
        self._blocks: dict[int, Block] = {}    # forge-transfer: the blocks it appended, by height
        if strategy == "forge-new-view" and core.mode == "pbft":
            core.plan_new_view = self._forged_plan     # its own core builds (and enters) the forged NEW-VIEW

    def __getattr__(self, name: str):
        return getattr(self.core, name)

    def step(self, sender: int, msg: Message, from_client: bool = False) -> None:
        if not self.active:
            self.core.step(sender, msg, from_client)
            return
        if self.strategy == "censor" and type(msg) is Request and msg.client == CENSORED_CLIENT:
            return                     # from the client, or relayed by a backup: ignored either way
        if (self.strategy in USELESS_PRIMARY and type(msg) is Request and self._leads()
                and (self.strategy == "empty-batches" or self._executed_batches)):
            return                     # it orders nothing new (replay: once it has something to replay)
        self.core.step(sender, msg, from_client)

    def tick(self, now: float) -> None:
        self.core.tick(now)

    def ready(self) -> list[Action]:
        out = self.core.ready()
        if not self.active:
            if self.strategy == "replay-executed":
                self._replay_executed(out, collect_only=True)
            return out
        fn = getattr(self, "_" + self.strategy.replace("-", "_"), None)
        return fn(out) if fn is not None else out

    # -- strategies
    def _silent(self, out: list[Action]) -> list[Action]:
        return [a for a in out if not isinstance(a, (Send, Broadcast, ToClient))]

    def _lying_reads(self, out: list[Action]) -> list[Action]:
        """Every READ-REPLY it sends (BUSY ones aside) names a value nobody wrote, held since a
        height beyond its ledger. Its replies to ordered requests stay honest: the lie is
        aimed at the reads that no consensus checks."""
        res = []
        for a in out:
            if isinstance(a, ToClient) and type(a.msg) is ReadReply and decode_result(a.msg.result)[0] != BUSY:
                a = replace(a, msg=replace(a.msg, result=LIE, since=LIE_SINCE))
            res.append(a)
        return res

    def _resign(self, msg: Message, **changes) -> Message:
        m = replace(msg, **changes)
        return m.signed(self.signer) if m.SIGNED else m

    def _wrong_digest(self, out: list[Action]) -> list[Action]:
        res = []
        for a in out:
            if isinstance(a, (Send, Broadcast)) and type(a.msg) in (Prepare, Commit):
                a = replace(a, msg=self._resign(a.msg, digest=self.rng.randbytes(32)))
            elif isinstance(a, (Send, Broadcast)) and type(a.msg) is Checkpoint:
                a = replace(a, msg=self._resign(a.msg, head=self.rng.randbytes(32)))
            res.append(a)
        return res

    def _corrupt(self, out: list[Action]) -> list[Action]:
        res = []
        for a in out:
            if isinstance(a, (Send, Broadcast)) and a.msg.SIGNED:
                bad = bytearray(a.msg.sig)
                bad[self.rng.randrange(len(bad))] ^= 0xFF
                a = replace(a, msg=replace(a.msg, sig=bytes(bad)))
            elif isinstance(a, ToClient) and type(a.msg) is Reply:
                a = replace(a, msg=replace(a.msg, result=b"\xc0forged"))
            res.append(a)
        return res

    def _forge(self, out: list[Action]) -> list[Action]:
        res = []
        me = self.core.id
        for a in out:
            if isinstance(a, (Send, Broadcast)) and hasattr(a.msg, "replica"):
                other = (me + 1 + self.rng.randrange(self.n - 1)) % self.n
                a = replace(a, msg=self._resign(a.msg, replica=other))
            elif isinstance(a, ToClient) and type(a.msg) is Reply:
                other = (me + 1 + self.rng.randrange(self.n - 1)) % self.n
                a = replace(a, msg=replace(a.msg, replica=other, result=b"\xc0forged"))
            res.append(a)
        return res

    def _replay(self, out: list[Action]) -> list[Action]:
        sends = [a for a in out if isinstance(a, (Send, Broadcast))]
        res = list(out)
        if not sends:
            # Replays ride on the core's own sends only. Replaying on every ready() call
            # turned two colluding replayers into an amplifier (each delivery triggered 4
            # broadcasts, a quarter of which reached the other replayer): the simulated
            # run grew without bound and never reached its deadline (n=7 seed 15).
            return res
        self.history.extend(sends)
        if len(self.history) > 2000:
            del self.history[:1000]
        for _ in range(min(4, len(self.history))):
            res.append(self.history[self.rng.randrange(len(self.history))])
        return res

    def _flood(self, out: list[Action]) -> list[Action]:
        res = []
        for a in out:
            res.append(a)
            if isinstance(a, (Send, Broadcast)):
                res.extend([a] * 4)
        return res

    def _equivocate(self, out: list[Action]) -> list[Action]:
        """Backups with an even id see the real batch, odd ids a reordered or trimmed one."""
        res = []
        for a in out:
            if isinstance(a, Broadcast) and type(a.msg) in (PrePrepare, PxAccept) and a.msg.batch:
                pp = a.msg
                alt = list(reversed(pp.batch)) if len(pp.batch) > 1 else []
                alt_pp = self._resign(pp, batch=alt, digest=root_of(alt))
                for r in range(self.n):
                    if r != self.core.id:
                        res.append(Send(r, pp if r % 2 == 0 else alt_pp))
            else:
                res.append(a)
        return res

    def _equivocate_all(self, out: list[Action]) -> list[Action]:
        """Every backup gets the real PRE-PREPARE and then another one for the same (view, sequence)."""
        res = []
        for a in out:
            res.append(a)
            if isinstance(a, Broadcast) and type(a.msg) is PrePrepare and a.msg.batch:
                pp = a.msg
                alt = list(reversed(pp.batch)) if len(pp.batch) > 1 else []
                res.append(Broadcast(self._resign(pp, batch=alt, digest=root_of(alt))))
        return res

    def _forged_request(self) -> bytes:
        """A request that claims to come from client 0 but carries a made-up signature."""
        self.forged += 1
        req = Request(CENSORED_CLIENT, (1 << 40) + self.forged, op_put("forged", b"%d" % self.forged),
                      self.rng.randbytes(64))
        return req.encode()

    def _forge_request(self, out: list[Action]) -> list[Action]:
        res = []
        for a in out:
            if isinstance(a, Broadcast) and type(a.msg) is PrePrepare and a.msg.replica == self.core.id:
                batch = list(a.msg.batch) + [self._forged_request()]
                a = Broadcast(self._resign(a.msg, batch=batch, digest=root_of(batch)))
            res.append(a)
        return res

    def _leads(self) -> bool:
        core = self.core
        return core.mode == "pbft" and core.is_primary and not core.in_view_change

    def _useless_batches(self, out: list[Action], batch: list[bytes]) -> list[Action]:
        """As primary, keep the pipeline full of ``batch``: PRE-PREPAREs the core itself
        records and votes on, so they commit and the view looks busy, while the requests
        the clients sent (dropped in ``step``) are never ordered."""
        core = self.core
        if not self._leads() or not self._noise_due():
            return out
        cfg = core.cfg
        while core.next_seq - 1 - core.chain.height < cfg.pipeline and core.next_seq <= core.h + cfg.log_size:
            seq = core.next_seq
            core.next_seq += 1
            pp = PrePrepare(core.view, seq, root_of(batch), list(batch), core.id).signed(self.signer)
            reqs = [decode(raw) for raw in batch]
            core._accept_pre_prepare(pp, reqs)
            out = out + core.ready() + [Broadcast(pp)]
        return out

    def _empty_batches(self, out: list[Action]) -> list[Action]:
        return self._useless_batches(out, [])

    def _replay_executed(self, out: list[Action], collect_only: bool = False) -> list[Action]:
        """Batches of requests that already executed, taken from the blocks it appended."""
        for a in out:
            if type(a) is AppendBlock and a.block.txs and len(self._executed_batches) < 64:
                self._executed_batches.append(list(a.block.txs))
        if collect_only or not self._executed_batches:
            return out
        return self._useless_batches(out, self._executed_batches[self.rng.randrange(len(self._executed_batches))])

    def _flood_votes(self, out: list[Action]) -> list[Action]:
        for a in out:
            if isinstance(a, (Send, Broadcast)) and type(a.msg) in (Prepare, Commit):
                self._votes.append(a.msg)
        if len(self._votes) > 256:
            del self._votes[:128]
        if self._votes and self._noise_due():
            out = out + [Broadcast(v) for v in self._votes[-FLOOD_VOTES:]]
        return out

    def _flood_vc(self, out: list[Action]) -> list[Action]:
        core = self.core
        if core.mode != "pbft" or not self._noise_due():
            return out
        vc = ViewChange(core.view + 1, core.h, list(core.stable_proof), [], core.id).signed(self.signer)
        return out + [Broadcast(vc)] * FLOOD_VOTES

    def _noise_due(self) -> bool:
        now = self.core.now
        if now < self._next_noise:
            return False
        self._next_noise = now + NOISE_INTERVAL
        return True

    def _padded_vc(self, out: list[Action]) -> list[Action]:
        res = []
        for a in out:
            if isinstance(a, (Send, Broadcast)) and type(a.msg) is ViewChange:
                vc = a.msg
                padded = [PreparedCert(c.pre_prepare, c.prepares * 8) for c in vc.prepared]
                a = replace(a, msg=self._resign(vc, prepared=padded, checkpoints=vc.checkpoints * 8))
            res.append(a)
        return res

    def _descending_vc(self, out: list[Action]) -> list[Action]:
        if self._noise_due() and self._descending > self.core.view:
            core = self.core
            vc = ViewChange(self._descending, core.h, list(core.stable_proof), [], core.id).signed(self.signer)
            self._descending -= 1
            out = out + [Broadcast(vc)]
        return out

    def _far_checkpoints(self, out: list[Action]) -> list[Action]:
        if self._noise_due():
            k = self.core.cfg.checkpoint_interval
            seq = (self.core.h // k + self.rng.randrange(10, 10 ** 6)) * k
            junk = self.rng.randbytes(32)
            out = out + [Broadcast(Checkpoint(seq, junk, seq, junk, self.core.id).signed(self.signer))]
        return out

    def _state_flood(self, out: list[Action]) -> list[Action]:
        if self._noise_due():
            out = out + [Broadcast(StateRequest(1, 10 ** 9, self.core.id))] * 4
        return out

    def _forge_vc(self, out: list[Action]) -> list[Action]:
        """Replicas with an odd id get a VIEW-CHANGE whose prepared certificate has PREPAREs
        (and, unless this replica was that view's primary, a PRE-PREPARE) signed with this
        replica's key under other replicas' ids; even ids get a checkpoint proof of 2f+1
        such CHECKPOINTs for a state nobody reached."""
        res = []
        for a in out:
            if isinstance(a, (Send, Broadcast)) and type(a.msg) is ViewChange:
                forged = (self._vc_forged_cert(a.msg), self._vc_bogus_checkpoint(a.msg))
                targets = [a.to] if isinstance(a, Send) else [r for r in range(self.n) if r != self.core.id]
                res.extend(Send(r, forged[r % 2]) for r in targets)
            else:
                res.append(a)
        return res

    def _vc_forged_cert(self, vc: ViewChange) -> ViewChange:
        others = [r for r in range(self.n) if r != self.core.id]
        old_view = max(vc.new_view - 1, 0)
        seq = vc.stable_seq + 1
        primary = old_view % self.n
        pp = PrePrepare(old_view, seq, root_of([]), [], primary).signed(self.signer)
        preps = [Prepare(old_view, seq, pp.digest, r).signed(self.signer)
                 for r in others if r != primary][: 2 * self.core.f]
        prepared = [PreparedCert(pp, preps)] + [c for c in vc.prepared if c.pre_prepare.seq != seq]
        return self._resign(vc, prepared=sorted(prepared, key=lambda c: c.pre_prepare.seq))

    def _vc_bogus_checkpoint(self, vc: ViewChange) -> ViewChange:
        others = [r for r in range(self.n) if r != self.core.id]
        seq = vc.stable_seq + self.core.cfg.checkpoint_interval
        head, root = self.rng.randbytes(32), self.rng.randbytes(32)
        need = quorum.checkpoint_quorum(self.core.f)
        proof = [Checkpoint(seq, head, seq, root, r).signed(self.signer) for r in others][:need]
        return self._resign(vc, stable_seq=seq, checkpoints=proof,
                            prepared=[c for c in vc.prepared if c.pre_prepare.seq > seq])

    # -- forgeries that only a rule switch (bft.unsafe) lets through
    def _forged_plan(self, vcs: list[ViewChange]) -> NewViewPlan:
        """O with a null request at every sequence number of (min-s, max-s], whatever V shows
        prepared there (the backups recompute O from V and find it wrong: NEW_VIEW_WRONG_O)."""
        return plan_with_nulls(vcs) if self.active else plan_new_view(vcs)

    def _false_checkpoint(self, out: list[Action]) -> list[Action]:
        """Every VIEW-CHANGE it sends claims a stable checkpoint four intervals beyond its own
        ledger, with a made-up state, proved by one CHECKPOINT: its own (CHECKPOINT_PROOF_SIZE)."""
        res = []
        k = self.core.cfg.checkpoint_interval if self.core.mode == "pbft" else 0
        for a in out:
            if k and isinstance(a, (Send, Broadcast)) and type(a.msg) is ViewChange:
                seq = (max(a.msg.stable_seq, self.core.chain.height) // k + 4) * k
                head, root = self.rng.randbytes(32), self.rng.randbytes(32)
                proof = [Checkpoint(seq, head, seq, root, self.core.id).signed(self.signer)]
                a = replace(a, msg=self._resign(a.msg, stable_seq=seq, checkpoints=proof, prepared=[]))
            res.append(a)
        return res

    def _forge_transfer(self, out: list[Action]) -> list[Action]:
        """Serves forged blocks in place of the ones it holds (CERT_TOO_FEW_COMMITS: the certificate
        signs the real batch root)."""
        res = []
        for a in out:
            if type(a) is AppendBlock:
                self._blocks[a.block.height] = a.block
                self._blocks.pop(a.block.height - 1024, None)      # bounded: the last 1024
            if type(a) is ServeBlocks:
                held = [self._blocks[h] for h in range(a.from_height, a.to_height + 1) if h in self._blocks]
                if held:
                    a = Send(a.to, StateResponse(self.core.id, [self._forged_block(b).encode() for b in held], []))
            res.append(a)
        return res

    @staticmethod
    def _forged_block(b: Block) -> Block:
        txs = other_batch(b.txs)
        return replace(b, txs=txs, results=other_batch(b.results), batch_root=root_of(txs))


def plan_with_nulls(vcs: list[ViewChange]) -> NewViewPlan:
    """O from V without P: every sequence number in (min-s, max-s] gets a null request, even
    one that committed somewhere in the old view (the forge-new-view strategy, and the lab
    core that ignores P: bft.unsafe)."""
    plan = plan_new_view(vcs)
    return NewViewPlan(plan.min_s, plan.max_s, plan.stable_proof, [(s, EMPTY_ROOT) for s, _d in plan.entries])
