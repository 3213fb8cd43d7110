"""A replica's side of the reads it answers without ordering them (both modes).

PBFT's read-only optimisation (Castro & Liskov, TOCS 2002, §5.1.3): a client sends a
READ to every replica; each answers it from its state at once, and the client accepts a
result once 2f+1 replicas sent matching ones (``ledger.clientcore``), falling back to an
ordered ``get`` otherwise. In the paper a replica executes requests *tentatively*, before
they commit, and must hold a read's answer until everything it executed tentatively has
committed, or a client could observe a state that a view change later undoes. The cores
here execute only committed batches (``PbftCore._check_committed`` executes once
committed-local holds), so the executed state is always committed and a read is answered
from it at once. The Paxos leader answers reads the same way once its read-index round
confirmed its ballot (``bft.paxos.reads``).

The one thing a replica waits for is the client's *floor* (``Read.min_height``): the
height of the client's latest write or read. A replica below it holds the read until it
has executed that far, so a client reads its own writes and never goes back in time.

Nothing here is ordered or persisted, so nothing but admission stands between a client
and a replica's work. Every read is checked (its client is its channel's; its operation
is read-only), charged against the client's read rate (a lookup and a reply each), and
held reads are bounded per client and in all, and in time. What is refused is counted by
rule (``bft.rules.ReadRule``) under the client; over the rate or the bounds the client
hears an explicit BUSY, as for requests.
"""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from bft.outputs import ToClient
from bft.rules import ReadRule, Rule, client_name
from bft.wire import Read, ReadReply
from ledger.state import BUSY, encode_result, read_key

if TYPE_CHECKING:
    from bft.skeleton import CoreSkeleton


class HeldRead:
    """A read admitted and not yet answered: it waits for the executed height to reach
    ``target`` and, in paxos, for its read-index round (``confirmed``)."""

    __slots__ = ("client", "nonce", "key", "target", "deadline", "confirmed", "done")

    def __init__(self, client: int, nonce: int, key: str, target: int, deadline: float, confirmed: bool) -> None:
        self.client = client
        self.nonce = nonce
        self.key = key
        self.target = target
        self.deadline = deadline
        self.confirmed = confirmed
        self.done = False             # answered, expired or abandoned


class ReadDesk:
    """Admission, the held reads and the answers of one core; its settings are the core's
    config's ``read_*`` fields."""

    def __init__(self, core: "CoreSkeleton") -> None:
        cfg = core.cfg
        self._core = core
        self.rate = cfg.read_rate
        self.burst = cfg.read_burst
        self.per_client = cfg.reads_held_per_client
        self.total = cfg.reads_held
        self.wait = cfg.read_wait
        # client -> [tokens, when]; keys are client ids of the cluster (checked in admit)
        self._buckets: dict[int, list[float]] = {}
        self._held: list[HeldRead] = []           # in arrival order, so in deadline order
        self._by_client: Counter[int] = Counter()
        self.answered = 0                         # reads answered without ordering (status)
        self._served_at = -1                      # the executed height at the last serve()

    @property
    def held(self) -> int:
        return len(self._held)

    # ------------------------------------------------------------------ admission
    def admit(self, client: int, m: Read) -> str | None:
        """The checks every READ passes before it costs more than this: its client, its
        operation, the client's rate. Returns the key it reads (its operation parsed once,
        here), or None: a refusal is counted (and over the rate, BUSY)."""
        core = self._core
        if m.client != client or not 0 <= client < len(core.keys.clients):
            core._drop(ReadRule.WRONG_CLIENT, client=client)
            return None
        key = read_key(m.op)
        if key is None:
            core._drop(ReadRule.NOT_READ_ONLY, client=client)
            return None
        if not self._take(client):
            self.refuse(client, m, ReadRule.RATE)
            return None
        return key

    def _take(self, client: int) -> bool:
        now = self._core.now
        b = self._buckets.get(client)
        if b is None:
            b = self._buckets[client] = [self.burst, now]
        tokens = min(self.burst, b[0] + max(now - b[1], 0.0) * self.rate)
        b[1] = now
        if tokens < 1.0:
            b[0] = tokens
            return False
        b[0] = tokens - 1.0
        return True

    def refuse(self, client: int, m: Read, rule: Rule) -> None:
        """Count a refused read and tell the client BUSY (height 0: no state was read)."""
        core = self._core
        core._drop(rule, client=client)
        core._out.append(ToClient(client, ReadReply(client, m.nonce, core.id, 0, 0,
                                                    encode_result(BUSY, rule.text.encode()))))

    # ------------------------------------------------------------------ answers
    def answer(self, client: int, nonce: int, key: str) -> None:
        """The read's result in the executed state, with the height it was read at and the
        height since which it holds (``KVStore.since``)."""
        core = self._core
        chain = core.chain
        result, since = chain.kv.lookup(key)
        self.answered += 1
        core._out.append(ToClient(client, ReadReply(client, nonce, core.id, chain.height, since, result)))

    def hold(self, client: int, m: Read, key: str, target: int, *, confirmed: bool = True) -> HeldRead | None:
        """Keep a read until the executed height reaches ``target`` (and it is ``confirmed``);
        None (counted, BUSY) when the client, or everybody, has as many held as allowed."""
        if self._by_client[client] >= self.per_client or len(self._held) >= self.total:
            self.refuse(client, m, ReadRule.HELD_FULL)
            return None
        r = HeldRead(client, m.nonce, key, target, self._core.now + self.wait, confirmed)
        self._held.append(r)
        self._by_client[client] += 1
        return r

    def answer_or_hold(self, client: int, m: Read, key: str) -> None:
        """pbft: answer at once from a state at the client's floor or above, else hold it."""
        if m.min_height <= self._core.chain.height:
            self.answer(client, m.nonce, key)
        else:
            self.hold(client, m, key, m.min_height)

    def serve_if_executed(self) -> None:
        """``serve``, if a block executed since the last time: the cores call it on every
        ``ready()``, and a held read only becomes answerable when the height moves (or, in
        paxos, when its round confirms, which calls ``serve`` itself)."""
        if self._held and self._core.chain.height != self._served_at:
            self.serve()

    def serve(self) -> None:
        """Answer every held read whose height has been reached and that is confirmed."""
        height = self._served_at = self._core.chain.height
        if not self._held:
            return
        keep: list[HeldRead] = []
        for r in self._held:
            if r.confirmed and r.target <= height:
                self._release(r)
                self.answer(r.client, r.nonce, r.key)
            else:
                keep.append(r)
        self._held = keep

    def _release(self, r: HeldRead) -> None:
        r.done = True
        left = self._by_client[r.client] - 1
        if left > 0:
            self._by_client[r.client] = left
        else:
            del self._by_client[r.client]

    def expire(self, now: float) -> None:
        """Drop (counted) the held reads whose wait is over: the client has fallen back."""
        held = self._held
        k = 0
        while k < len(held) and held[k].deadline <= now:
            self._release(held[k])
            self._count(ReadRule.EXPIRED, held[k].client)
            k += 1
        if k:
            del held[:k]

    def abandon(self, rule: Rule) -> None:
        """Drop (counted under ``rule``) every held read: paxos, on losing the leadership."""
        for r in self._held:
            self._release(r)
            self._count(rule, r.client)
        self._held = []

    def _count(self, rule: Rule, client: int) -> None:
        # counted, but not charged as the current sender's useless input (``core.useless``):
        # expiry runs on a tick, and a leader steps down on an honest peer's message
        self._core.drops.count(rule, client_name(client))
