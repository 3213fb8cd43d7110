"""Connection budgets of a replica: nobody may crowd out a replica or an honest client.

Before authentication nothing is known of a connection but its source address, so:

- At most ``PREAUTH_PER_SOURCE`` handshakes per source address and ``PREAUTH_MAX`` in
  all are pending at once, each for at most ``ledger.net.transport.HANDSHAKE_TIMEOUT``.
- A newcomer over either budget is admitted and an older pending handshake is evicted
  instead: first one that has not sent a byte yet, then the oldest. Refusing the
  newcomer would let whoever holds idle sockets lock everybody out; evicting the idlest
  means an attacker must open connections faster than an honest TLS handshake takes
  (a few ms) to starve anyone, and then only at its own source. A source under its own
  budget is never evicted by the global one unless others exceed theirs, since
  PREAUTH_PER_SOURCE < PREAUTH_MAX.

After authentication the peer's proven identity decides:

- A replica has exactly one slot per replica id. Clients can never take it (the role
  comes from the pinned key), and a newcomer for a replica id replaces the connection
  in its slot only once it has authenticated, which only that replica's key can do:
  the only one who can evict replica j's link is replica j (after a restart, when the
  old connection is half-open). Replacements are counted.
- Clients: at most ``PER_CLIENT`` connections per client id (the oldest is closed),
  ``CLIENTS_PER_SOURCE`` per source address and ``CLIENTS_MAX`` in all (a newcomer
  over those is refused). Every refusal and eviction is counted in ``status --json``.
"""
from __future__ import annotations

from collections import Counter

import trio

from ledger.rules import WireRule

PREAUTH_MAX = 128
PREAUTH_PER_SOURCE = 64
PER_CLIENT = 8
CLIENTS_PER_SOURCE = 1024
CLIENTS_MAX = 4096


class Pending:
    """One handshake in progress; cancelling ``scope`` evicts it."""

    __slots__ = ("source", "serial", "scope", "heard")

    def __init__(self, source: str, serial: int, scope: trio.CancelScope) -> None:
        self.source = source
        self.serial = serial
        self.scope = scope
        self.heard = False          # the peer has sent at least one byte


class Admission:
    def __init__(self, *, preauth_max: int = PREAUTH_MAX, preauth_per_source: int = PREAUTH_PER_SOURCE,
                 clients_max: int = CLIENTS_MAX, clients_per_source: int = CLIENTS_PER_SOURCE) -> None:
        self.preauth_max = preauth_max
        self.preauth_per_source = preauth_per_source
        self.clients_max = clients_max
        self.clients_per_source = clients_per_source
        self.pending: dict[int, Pending] = {}
        self._by_source: dict[str, dict[int, Pending]] = {}
        self._serial = 0
        self.clients_by_source: Counter[str] = Counter()
        self.clients_total = 0
        self.counts: Counter[WireRule] = Counter()

    # ------------------------------------------------------------------ before authentication
    def begin(self, source: str, deadline: float) -> Pending:
        """Admit a new handshake, evicting an idle or old one where a budget is full."""
        self._serial += 1
        p = Pending(source, self._serial, trio.CancelScope(deadline=deadline))
        mine = self._by_source.setdefault(source, {})
        if len(mine) >= self.preauth_per_source:
            self._evict(mine, WireRule.EVICTED_PER_SOURCE)
        elif len(self.pending) >= self.preauth_max:
            self._evict(self.pending, WireRule.EVICTED_TOTAL)
        mine[p.serial] = p
        self.pending[p.serial] = p
        return p

    def _evict(self, among: dict[int, Pending], kind: WireRule) -> None:
        # dicts keep insertion order, so the first match is the oldest of its kind
        victim = next((p for p in among.values() if not p.heard), None) or next(iter(among.values()))
        self._drop(victim)
        victim.scope.cancel()
        self.counts[kind] += 1

    def end(self, p: Pending) -> None:
        self._drop(p)

    def _drop(self, p: Pending) -> None:
        self.pending.pop(p.serial, None)
        mine = self._by_source.get(p.source)
        if mine is not None:
            mine.pop(p.serial, None)
            if not mine:
                del self._by_source[p.source]

    # ------------------------------------------------------------------ authenticated clients
    def admit_client(self, source: str) -> bool:
        if self.clients_total >= self.clients_max:
            self.counts[WireRule.CLIENTS_TOTAL] += 1
            return False
        if self.clients_by_source[source] >= self.clients_per_source:
            self.counts[WireRule.CLIENTS_PER_SOURCE] += 1
            return False
        self.clients_total += 1
        self.clients_by_source[source] += 1
        return True

    def release_client(self, source: str) -> None:
        self.clients_total -= 1
        self.clients_by_source[source] -= 1
        if self.clients_by_source[source] <= 0:
            del self.clients_by_source[source]

    def status(self) -> dict:
        return {"pending_handshakes": len(self.pending), "client_connections": self.clients_total,
                **{k.label: v for k, v in sorted(self.counts.items(), key=lambda kv: kv[0].label)}}


class RateLimit:
    """A token bucket per key (a client or replica id): ``rate`` per second, bursts of ``burst``.

    For the queries a replica answers outside the protocol, which cost it a disk read and an
    encoding (a receipt's block) or a signature (an attestation) while costing the asker a
    few bytes (issue 11). Keys are proven identities, so the table is bounded by the
    cluster's membership."""

    __slots__ = ("rate", "burst", "buckets")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.buckets: dict[tuple[int, int], list[float]] = {}

    def allow(self, key: tuple[int, int], now: float, cost: float = 1.0) -> bool:
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = [self.burst, now]
        tokens = min(self.burst, b[0] + (now - b[1]) * self.rate)
        b[1] = now
        if tokens < cost:
            b[0] = tokens
            return False
        b[0] = tokens - cost
        return True


class Intake:
    """What one authenticated peer (a replica or a client) may make this replica process,
    post-paid (issue 12): each message costs 1 token; each one the core dropped or found
    repeated (a duplicate vote, a stale checkpoint, a refused request) costs ``USELESS_COST``
    more, plus a token per KiB of it. A peer in debt is held back until it refills: a replica
    peer's connection is not read (TCP flow control pushes back on the sender, and the other
    connections are read meanwhile, one burst each in turn); a client's connection is not
    read for up to a quarter second at a time, and in between its requests are dropped
    unread while its queries (receipts, status) are still answered. Honest peers stay far
    inside the budget: their messages are useful, and a busy replica sends its peers a few
    thousand a second."""

    USELESS_COST = 15.0

    __slots__ = ("rate", "burst", "buckets", "paused", "paused_seconds")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.buckets: dict[tuple[int, int], list[float]] = {}
        self.paused: dict[tuple[int, int], int] = {}            # peer -> how many times throttled
        self.paused_seconds = 0.0

    def charge(self, key: tuple[int, int], now: float, messages: int, nbytes: int, useless: int) -> float:
        """Charge a burst just processed; how long not to read this peer (0: go on)."""
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = [self.burst, now]
        cost = messages + useless * (self.USELESS_COST + nbytes / 1024 / max(messages, 1))
        tokens = min(self.burst, b[0] + (now - b[1]) * self.rate) - cost
        b[0] = max(tokens, -self.burst)
        b[1] = now
        if b[0] >= 0:
            return 0.0
        wait = -b[0] / self.rate
        self.paused[key] = self.paused.get(key, 0) + 1
        self.paused_seconds += wait
        return wait

    def in_debt(self, key: tuple[int, int], now: float) -> bool:
        b = self.buckets.get(key)
        return b is not None and b[0] + (now - b[1]) * self.rate < 0

    def status(self) -> dict:
        return {f"{'replica' if k[0] == 0 else 'client'} {k[1]}": n for k, n in self.paused.items()}


def unwrap_heard(stream: trio.abc.Stream) -> trio.abc.Stream:
    """The stream an authenticated connection keeps, without the handshake-time ``Heard``
    wrapper in its path (one await less per read for the connection's whole life)."""
    if isinstance(stream, Heard):
        return stream.inner
    raw = getattr(stream, "raw", None)                  # a TLS stream over the wrapper
    if isinstance(raw, Heard):
        stream.raw = raw.inner
    return stream


class Heard(trio.abc.Stream):
    """The raw stream during a handshake, marking its Pending as heard at the first byte."""

    __slots__ = ("inner", "pending")

    def __init__(self, inner: trio.abc.Stream, pending: Pending) -> None:
        self.inner = inner
        self.pending = pending

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.inner.receive_some(max_bytes)
        if data:
            self.pending.heard = True
        return data

    async def send_all(self, data) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()
