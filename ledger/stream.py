"""Block streams: ``async for block in client.blocks(from_height=1)`` (issue 16).

The stream pulls: it asks one replica at a time for the blocks from its next height on
(``BlocksRequest``; the replica answers with at most ``STREAM_BLOCKS`` blocks and
``STREAM_RESPONSE_BYTES``, and its own height), checks each block, yields them in order and
asks again from the height after the last one it yielded. Pulling is what makes the
guarantees simple to state and to keep:

- **Exactly once, in order, never a gap.** The stream yields height ``h`` only right after
  ``h - 1``; what a replica sends beyond a failed check, or twice, is dropped and asked for
  again. A replica that dies, restarts, falls behind or lies is simply not asked next
  time: any other replica serves the same blocks, so a restart or a view change costs the
  subscriber a moment, never a block.
- **A slow subscriber loses nothing.** Nothing is pushed at it, so no buffer of the
  replica's overflows: a subscriber that reads slowly is just further behind, and when it
  asks the replica serves the next bounded batch from its store. How far behind it is it
  is told in every answer (``lag``), and with ``max_lag`` the stream ends with ``Lagging``
  once the lag exceeds it, naming the height to resume from
  (``client.blocks(from_height=e.resume_from)``), for a subscriber that would rather
  decide what to do than catch up silently.
- **Verified on arrival.** Each block decodes, has the expected height and sequence, its
  batch and results roots match its contents, its tree size continues the previous
  block's, its previous-hash is the previous block's hash (for a stream that starts
  above 1, the block below the start is fetched and checked as an anchor), and its
  certificate verifies (pbft: 2f+1 COMMITs; paxos: the ballot leader's ACCEPT) against
  cluster.toml's keys. The certificate covers the order of the transactions, so a lying
  replica cannot insert, drop or reorder a transaction. The results and the state root are
  under the block hash, which the certificate does not sign: so before a batch of blocks is
  yielded, the hash of its last block must be attested by f+1 replicas (one in paxos, the
  crash-fault trust of its receipts), as a receipt's block is. The blocks are hash-linked,
  so that one attestation vouches for every block of the batch, and a replica that served
  forged results or a forged state root is caught and not asked again.

At the head the stream polls, round-robin over the replicas (``POLL_INTERVAL`` after a
round where none had a new block), so the next block arrives within about that long of
its commit at any replica.
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import trio

from ledger.block import GENESIS_HASH, Block, BlockFormatError
from ledger.certificate import certificate_error
from ledger.client import LedgerError, Unavailable    # (ledger.client imports this module lazily)
from ledger.receipt import ReceiptError
from ledger.cluster import Cluster
from ledger.wire import STREAM_BLOCKS, BlocksResponse

if TYPE_CHECKING:
    from ledger.net.session import ClientSession

__all__ = ["BlockStream", "Lagging", "POLL_INTERVAL"]

POLL_INTERVAL = 0.2        # seconds between rounds of asking at the head
FETCH_TIMEOUT = 1.0        # one request's answer
BENCH_SECONDS = 3.0        # a replica that failed is not asked again for this long (unless none is left)


class Lagging(LedgerError):
    """The subscriber is more than ``max_lag`` blocks behind the head a replica reported; the
    stream ended after height ``resume_from - 1``. Nothing was skipped: resume with
    ``client.blocks(from_height=resume_from)``."""

    def __init__(self, resume_from: int, head: int, max_lag: int) -> None:
        self.resume_from, self.head, self.max_lag = resume_from, head, max_lag
        super().__init__(f"the subscriber is {head - resume_from + 1} blocks behind the head ({head}), over its limit "
                         f"of {max_lag}; nothing was skipped: resume from height {resume_from}")


class BlockStream:
    """An async iterator over committed, verified blocks from ``from_height`` on (see the module doc)."""

    def __init__(self, cluster: Cluster, session: "ClientSession", from_height: int = 1, *,
                 max_lag: int | None = None, timeout: float | None = None, batch: int = STREAM_BLOCKS,
                 attest=None) -> None:
        if type(from_height) is not int or from_height < 1:
            raise ValueError(f"from_height must be an integer of at least 1, not {from_height!r}")
        if max_lag is not None and (type(max_lag) is not int or max_lag < 0):
            raise ValueError(f"max_lag must be None or a non-negative integer, not {max_lag!r}")
        if type(batch) is not int or not 1 <= batch <= STREAM_BLOCKS:
            raise ValueError(f"batch must be 1..{STREAM_BLOCKS}")
        self.cluster = cluster
        self._session = session
        self._attest = attest                 # async (height, block hash, batch size): f+1 attestations, or raises
        self._verifier = cluster.verifier()
        self._keys = cluster.replica_keys()
        self.next_height = from_height        # the next height to yield
        self.head = 0                         # the highest height the replica last asked reported
        self.max_lag = max_lag
        self.timeout = timeout
        self.batch = batch
        self._prev: Block | None = None       # the last block yielded (or the anchor below from_height)
        self._buf: deque[Block] = deque()
        self._replica = 0
        self._bench: dict[int, float] = {}    # replica -> not asked before this time
        self.rejected: list[str] = []         # why blocks were refused (the last 100)
        self.switches = 0                     # times the stream moved to another replica
        self._faults = 0                      # answers refused (a bad block, or a batch not attested)

    @property
    def lag(self) -> int:
        """Blocks between the last one yielded and the head last reported."""
        return max(0, self.head - (self.next_height - 1))

    def __aiter__(self) -> "BlockStream":
        return self

    async def __anext__(self) -> Block:
        if self.max_lag is not None and self.lag > self.max_lag:
            raise Lagging(self.next_height, self.head, self.max_lag)
        if not self._buf:
            await self._fill()
        block = self._buf.popleft()
        self._prev = block
        self.next_height = block.height + 1
        return block

    # ------------------------------------------------------------------ fetching
    def _choose(self, now: float) -> int:
        """The next replica to ask after the current one: connected and not benched if any."""
        n = self.cluster.n
        order = [(self._replica + k) % n for k in range(1, n + 1)]
        links = self._session.links
        for ok in (lambda r: links[r].connected and self._bench.get(r, 0) <= now,
                   lambda r: links[r].connected, lambda r: True):
            for r in order:
                if ok(r):
                    return r
        return order[0]  # pragma: no cover - the last predicate takes anything

    def _note(self, replica: int, why: str) -> None:
        self.rejected.append(f"replica {replica}: {why}")
        del self.rejected[:-100]

    def _refuse(self, replica: int, why: str, now: float) -> None:
        """``replica``'s answer failed a check: noted, counted, and the replica benched."""
        self._note(replica, why)
        self._faults += 1
        self._bench[replica] = now + BENCH_SECONDS

    async def _fill(self) -> None:
        """Wait until at least one verified block is buffered."""
        last_answer = trio.current_time()
        empty_round = 0
        while not self._buf:
            r = self._replica
            want = self.next_height
            anchor = self._prev is None and want > 1
            resp = await self._session.fetch_blocks(r, want - 1 if anchor else want, self.batch, FETCH_TIMEOUT)
            now = trio.current_time()
            if resp is None:
                self._note(r, "no answer")
                self._bench[r] = now + BENCH_SECONDS
            else:
                self.head = resp.head
                before = self._prev
                faults = self._faults
                if self._accept(r, resp, anchor):
                    why = await self._vouch()
                    if why is None:
                        return
                    self._buf.clear()                 # none of it is yielded; asked again elsewhere
                    self._prev = before
                    self._refuse(r, why, now)
                else:
                    # an anchor without a block above it is vouched for by no attestation (that of
                    # a later block covers it through the hash link): fetch it again with one
                    self._prev = before
                if self._faults == faults:
                    last_answer = now                 # a sound answer (at the head: nothing new), not a refused one
            if self.max_lag is not None and self.lag > self.max_lag:
                raise Lagging(self.next_height, self.head, self.max_lag)
            if self.timeout is not None and now - last_answer > self.timeout:
                raise Unavailable(f"no replica answered a block-stream request soundly for {self.timeout:g} s "
                                  f"(waiting for height {self.next_height}); last problems: "
                                  f"{'; '.join(self.rejected[-3:])}")
            self._replica = self._choose(now)
            self.switches += 1
            empty_round += 1
            if empty_round >= self.cluster.n:
                empty_round = 0
                await trio.sleep(POLL_INTERVAL)

    async def _vouch(self) -> str | None:
        """None when the hash of the last buffered block is attested by f+1 replicas (one in
        paxos): that vouches for the results and state roots of every buffered block (they
        are hash-linked to it); else why not."""
        if self._attest is None:
            return None
        last = self._buf[-1]
        try:
            await self._attest(last.height, last.hash(), len(last.txs))
        except (ReceiptError, LedgerError) as e:
            return f"block {last.height}: its hash (results, state root) is not attested: {e}"
        return None

    def _accept(self, r: int, resp: BlocksResponse, anchor: bool) -> int:
        """Check the answer's blocks in order and buffer the good prefix; returns how many."""
        prev = self._prev
        expected = self.next_height - 1 if anchor else self.next_height
        good = 0
        for raw in resp.blocks:
            why = None
            try:
                block = Block.decode(raw)
            except BlockFormatError as e:
                why = f"block {expected} does not decode: {e}"
            else:
                why = self._check(block, expected, prev)
            if why is not None:
                self._refuse(r, why, trio.current_time())
                break
            if anchor and expected == self.next_height - 1:
                self._prev = prev = block            # the anchor: checked, not yielded
            else:
                self._buf.append(block)
                prev = block
                good += 1
            expected += 1
        return good

    def _check(self, block: Block, height: int, prev: Block | None) -> str | None:
        if block.height != height or block.sequence != height:
            return f"sent height {block.height} (sequence {block.sequence}) where {height} was asked"
        why = block.check_roots()
        if why:
            return f"block {height}: {why}"
        if prev is not None or height == 1:
            prev_hash = GENESIS_HASH if prev is None else prev.hash()
            if block.prev_hash != prev_hash:
                return f"block {height}: its previous-block hash is not block {height - 1}'s hash"
            if block.tree_size != (0 if prev is None else prev.tree_size) + len(block.txs):
                return f"block {height}: tree size {block.tree_size} does not continue the log"
        c = self.cluster
        bad = certificate_error(c.mode, c.f, self._keys, block.view, block.sequence, block.batch_root, block.cert,
                                self._verifier)
        if bad is not None:
            return f"block {height}: certificate: {bad}"
        return None
