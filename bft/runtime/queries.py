"""What a replica answers about the past and about ranges: history of a key, and scans.

Kept apart from ``serving.py`` (receipts, attestations, state transfer) because these
queries need more than one block read: a history answer comes from the history index
beside the block store (``ledger.history``), a scan walks the executed state in key
order (``KVStore.scan``), and a scan in the past (``at_height``) walks the state after
block h rebuilt from the writes of blocks 1..h (``ledger.history.PastState``, as verified
reads of the past do, ``bft.runtime.proofs``, with bounds of their own). That replay can take a while, so queries are served by one task
of their own (``run``) from a bounded queue, yielding to the replica's other work every
``REPLAY_STEP`` blocks; consensus never waits behind a query.

Bounds, every one counted when hit: the queue holds ``MAX_QUEUED`` queries, at most
``MAX_QUEUED_PER_CALLER`` of them from one caller, so that one client's burst cannot keep
the others' queries out (``wire.QUERY_QUEUE_FULL``); the caller's rate limit charges ``cost`` tokens
(``wire.SERVE_RATE``), and charges a scan in the past again, for the difference, when the
state kept has moved between queueing and serving it so that the replay costs more than
was paid (alternating two heights must not buy a replay from block 1 for a token); an answer
holds at most ``MAX_QUERY_ITEMS`` positions or pairs and ``MAX_SCAN_BYTES`` of keys and
values (the client pages on); a replay goes back over at most ``MAX_REPLAY_TXS``
transactions (``wire.QUERY_TOO_DEEP``). One replayed state is kept, so the pages of one
scan in the past cost one replay, and a later height continues from it.

How far back: every height, from the blocks, within ``MAX_REPLAY_TXS`` transactions;
there is no pruning yet. When pruning comes, a replica will keep the blocks (and so the
history and past scans) above its last stable checkpoint that it kept a snapshot of.
"""
from __future__ import annotations

import logging
from typing import Callable

import trio

from ledger.wire import MAX_QUERY_ITEMS, HistoryRequest, HistoryResponse, ScanRequest, ScanResponse, frame
from ledger.chain import Chain
from ledger.chain import ReplayError
from ledger.history import HistoryIndex, PastState, writes_of
from ledger.net.transport import Connection, LocalFault, Problems
from ledger.rangeproof import RangeProofError, in_range, prove_page
from ledger.rules import WireRule
from ledger.statetree import StateProofError
from ledger.store import BlockStore, StoreError

log = logging.getLogger(__name__)

MAX_QUEUED = 64
MAX_QUEUED_PER_CALLER = 16        # a caller's share of the queue
MAX_SCAN_BYTES = 2 * 1024 * 1024
MAX_VERIFIED_ITEMS = 250          # pairs in a verified page (each with a proof of 1-2 KiB)
MAX_REPLAY_TXS = 1_000_000
REPLAY_STEP = 64                  # blocks replayed between two yields to the replica's other tasks
REPLAY_BLOCKS_PER_TOKEN = 256


class QueryServer:
    def __init__(self, replica_id: int, store: BlockStore, chain: Chain, index: HistoryIndex,
                 problems: Problems, lies: Callable[[str], bool] = lambda strategy: False,
                 charge: Callable[[Connection, int], bool] = lambda conn, tokens: True) -> None:
        self.id = replica_id
        self.store = store
        self.chain = chain
        self.index = index
        self.problems = problems
        self._lies = lies                         # the 'lying-history' strategy (bft.adversary)
        self._told = 0
        self._charge = charge                     # take tokens from the caller's query budget (False: over it)
        # (the connection, the query, the tokens it paid): trio's bounded channel is the queue
        self._waiting: dict[tuple[int, int], int] = {}     # caller (role, id) -> its queries in the queue
        self._queued, self._queue = trio.open_memory_channel[tuple[Connection, HistoryRequest | ScanRequest, int]](
            MAX_QUEUED)
        self._past = PastState(store)             # the replayed state kept (its own: proofs keep theirs)
        self.served = 0

    def cost(self, m: HistoryRequest | ScanRequest) -> int:
        """Tokens against the caller's query budget: 1, plus 1 per 100 items asked, plus the
        blocks a scan in the past would replay (1 per ``REPLAY_BLOCKS_PER_TOKEN``)."""
        c = 1 + min(m.limit, MAX_QUERY_ITEMS) // 100
        if type(m) is ScanRequest and m.at_height and m.at_height < self.chain.height:
            c += self._past.blocks_to(m.at_height) // REPLAY_BLOCKS_PER_TOKEN
        return c

    def submit(self, conn: Connection, m: HistoryRequest | ScanRequest) -> None:
        """Charge a query and queue it for ``run`` (dropped, counted, when over the caller's
        budget or when the queue is full)."""
        cost = self.cost(m)
        if not self._charge(conn, cost):
            self.problems.note(WireRule.SERVE_RATE, conn.name)
            return
        caller = (conn.role, conn.ident)
        waiting = self._waiting.get(caller, 0)
        if waiting >= MAX_QUEUED_PER_CALLER:
            self.problems.note(WireRule.QUERY_QUEUE_FULL, conn.name)
            return
        try:
            self._queued.send_nowait((conn, m, cost))
        except trio.WouldBlock:
            self.problems.note(WireRule.QUERY_QUEUE_FULL, conn.name)
            return
        self._waiting[caller] = waiting + 1

    async def run(self) -> None:
        async for conn, m, paid in self._queue:
            caller = (conn.role, conn.ident)
            if self._waiting[caller] > 1:
                self._waiting[caller] -= 1
            else:
                del self._waiting[caller]
            try:
                if type(m) is HistoryRequest:
                    answer = self._history(m, conn.name)
                else:
                    owed = self.cost(m) - paid        # the state kept moved since it was charged
                    if owed > 0 and not self._charge(conn, owed):
                        self.problems.note(WireRule.SERVE_RATE, conn.name)
                        continue
                    answer = await self.scan(m, conn.name)
                if answer is not None:
                    conn.send(frame(answer.encode()))
                    self.served += 1
            except (ValueError, StoreError, ReplayError) as e:     # StoreCorrupt under us, or an oversized frame
                self.problems.note(LocalFault.CANNOT_SERVE_QUERY, str(e))
            except Exception as e:                  # a bug of ours: this task must not take the replica down
                log.exception("replica %d: a query from %s failed", self.id, conn.name)
                self.problems.note(LocalFault.CANNOT_SERVE_QUERY, f"{type(e).__name__}: {e}")
            finally:
                await trio.lowlevel.checkpoint()

    # ------------------------------------------------------------------ history
    def _history(self, m: HistoryRequest, who: str) -> HistoryResponse | None:
        key = _text(m.key)
        if key is None:
            self.problems.note(WireRule.QUERY_INVALID, who)
            return None
        limit = max(1, min(m.limit, MAX_QUERY_ITEMS))
        positions, more = self.index.positions(key, m.after, limit)
        if self._lies("lying-history"):
            positions = self._lie(key, positions)
        return HistoryResponse(m.nonce, self.id, self.index.height, [list(p) for p in positions], int(more))

    def _lie(self, key: str, positions: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Turn about: every other version left out (an omission no client can see in one
        answer), or a position added that holds a transaction not writing ``key``."""
        self._told += 1
        if self._told % 2:
            return positions[::2]
        for h in range(self.store.height, 0, -1):
            block = self.store.read(h)
            for i, (tx, res) in enumerate(zip(block.txs, block.results)):
                if key not in dict(writes_of(tx, res)) and (h, i) not in positions:
                    return sorted(positions + [(h, i)])
        return positions

    # ------------------------------------------------------------------ scans
    async def scan(self, m: ScanRequest, who: str) -> ScanResponse | None:
        """The answer to a scan from ``who`` (None: dropped, counted under its rule)."""
        prefix, start, end = _text(m.prefix), _text(m.start), _text(m.end)
        if prefix is None or start is None or end is None:
            self.problems.note(WireRule.QUERY_INVALID, who)
            return None
        verified = bool(m.verified)
        limit = max(1, min(m.limit, MAX_VERIFIED_ITEMS if verified else MAX_QUERY_ITEMS))
        bound = end if m.end else None
        height = self.chain.height
        if m.at_height == 0 or m.at_height == height:
            kv = self.chain.kv
        elif m.at_height > height:
            return self._refuse(m, height, f"height {m.at_height} is above this replica's height {height}")
        else:
            height = m.at_height
            why = await self._replay_to(height)
            if why is not None:
                self.problems.note(WireRule.QUERY_TOO_DEEP, who)
                return self._refuse(m, height, why)
            kv = self._past.kv
        proofs: list[bytes] = []
        if verified:
            try:
                keys, chain, more = prove_page(kv.prove, kv.read, max(start, prefix), in_range(prefix, bound),
                                               limit, MAX_SCAN_BYTES)
            except (RangeProofError, StateProofError) as e:
                return self._refuse(m, height, str(e))
            pairs = [(k, kv.read(k)) for k in keys]
            proofs = [p.encode() for p in chain]
            await self._stored(height)            # the client checks them against block `height`
        else:
            pairs, more = kv.scan(start, bound, prefix, limit)
        out, size = [], 0
        for k, v in pairs:
            kb = k.encode()
            size += len(kb) + len(v) + 8
            if out and size > MAX_SCAN_BYTES and not verified:
                more = True
                break
            out.append([kb, v])
        return ScanResponse(m.nonce, self.id, height, out, int(more), b"", proofs)

    def _refuse(self, m: ScanRequest, height: int, why: str) -> ScanResponse:
        return ScanResponse(m.nonce, self.id, height, [], 0, why.encode()[:1024], [])

    async def _stored(self, height: int) -> None:
        """Until the block at ``height`` is in the store (it is executed before it is written),
        at most a second."""
        with trio.move_on_after(1.0):
            while self.store.height < height:
                await trio.sleep(0.005)

    async def _replay_to(self, height: int) -> str | None:
        """Bring the kept past state to the state after block ``height`` (from block 1, or on
        from the state kept when it is not above ``height``); why not, or None."""
        store = self.store
        if height > store.height:
            return f"height {height} is not in this replica's store yet (it holds {store.height})"
        txs = store.read(height).tree_size
        if txs > MAX_REPLAY_TXS:
            return (f"a scan at height {height} would replay {txs:,} transactions, over this replica's bound of "
                    f"{MAX_REPLAY_TXS:,}")
        while self._past.advance(height, REPLAY_STEP, MAX_REPLAY_TXS) < height:      # a step, then a yield
            await trio.lowlevel.checkpoint()
        return None


def _text(b: bytes) -> str | None:
    try:
        return b.decode()
    except UnicodeDecodeError:
        return None
