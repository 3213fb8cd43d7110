"""What a replica serves from its block store: receipts, execution attestations, the
blocks a peer fetches in state transfer and those a subscriber streams (``ledger.stream``).

Kept apart from ``replica.py`` (the connections and the driver loop) because it is the
one place where the runtime reads the store on a peer's or a client's behalf, and the
place where the runtime-level Byzantine strategies lie: ``lying-receipts`` alters a
served result and signs a hash nobody computed, ``lying-proofs`` forges verified reads
(``bft.runtime.proofs``), ``empty-transfer`` answers a state
request with nothing, ``drip-transfer`` with one block at a time; ``slow`` (``SlowSender``)
holds every message back just under the others' timeouts. The caller rate-limits
(``query_cost`` is what a query costs against its budget).
"""
from __future__ import annotations

import math
from typing import Callable

import trio

from bft.outputs import ServeBlocks
from bft.runtime.proofs import ProofServer
from bft.wire import (AttestRequest, Attestation, ProofRequest, ReceiptRequest, ReceiptResponse, StateResponse,
                      frame)
from crypto.signing import Signer
from ledger.net.transport import Connection, LocalFault, Problems
from ledger.store import BlockStore, StoreError
from ledger.wire import BlocksRequest, BlocksResponse

ATTESTATION_CACHE = 4096       # signed block hashes kept for receipts
STATE_RESPONSE_BYTES = 4 * 1024 * 1024
STATE_RESPONSE_BLOCKS = 256
STREAM_RESPONSE_BYTES = 4 * 1024 * 1024      # one BlocksResponse (a frame is at most 8 MiB)


class BlockServer:
    def __init__(self, replica_id: int, signer: Signer, store: BlockStore, problems: Problems,
                 lies: Callable[[str], bool], tuning: dict | None = None) -> None:
        self.id = replica_id
        self.signer = signer
        self.store = store
        self.problems = problems
        self._lies = lies                                  # is this replica running that strategy now?
        self._attestations: dict[int, bytes] = {}          # height -> framed Attestation, oldest first
        t = tuning or {}
        self.proofs = ProofServer(replica_id, store, problems, lies, self._attest_forged,
                                  replay_blocks=t.get("proof_replay_blocks"), replay_txs=t.get("proof_replay_txs"))

    def query_cost(self, m: ReceiptRequest | AttestRequest | ProofRequest) -> int:
        """Tokens a query costs: a cached attestation nothing, a block read 1 per 64 KiB, a
        state proof one more per block replayed (``bft.runtime.proofs``)."""
        if type(m) is ProofRequest:
            return self.proofs.cost(m)
        if type(m) is AttestRequest:
            return 0 if m.height in self._attestations else 1
        size = self.store.size_of(m.height) if 1 <= m.height <= self.store.height else 0
        return 1 + size // 65536

    def receipt(self, conn: Connection, m: ReceiptRequest) -> None:
        store = self.store
        if not 1 <= m.height <= store.height:
            return
        try:
            block = store.read(m.height)
            if self._lies("lying-receipts"):              # the result of the first transaction, altered
                block.results = [b"\x92\x00\xc4\x04lies"] + block.results[1:]
            body = block.encode()
            conn.send(frame(ReceiptResponse(m.height, m.index, body).encode()))
        except (ValueError, StoreError) as e:     # a block too big for one frame, or StoreCorrupt under us
            self.problems.note(LocalFault.CANNOT_SERVE_RECEIPT, str(e))

    def attest(self, conn: Connection, m: AttestRequest) -> None:
        """Sign "I executed block ``height`` and its hash is H" (cached: one signature per block)."""
        store = self.store
        if not 1 <= m.height <= store.height:
            return
        fr = self._attestations.get(m.height)
        if fr is None:
            try:
                block = store.read(m.height)
            except (ValueError, StoreError) as e:     # StoreCorrupt under us
                self.problems.note(LocalFault.CANNOT_ATTEST, str(e))
                return
            block_hash = block.hash()
            if self._lies("lying-receipts"):
                block_hash = bytes(32)                          # a hash nobody computed, correctly signed
            fr = frame(Attestation(m.height, block_hash, len(block.txs), self.id).signed(self.signer).encode())
            self._attestations[m.height] = fr
            while len(self._attestations) > ATTESTATION_CACHE:
                self._attestations.pop(next(iter(self._attestations)))
        conn.send(fr)

    def prove(self, conn: Connection, m: ProofRequest) -> None:
        """A verified read's material (``bft.runtime.proofs``)."""
        self.proofs.serve(conn, m)

    def _attest_forged(self, height: int, block_hash: bytes, batch_size: int) -> None:
        """lying-proofs: this replica's attestation for ``height`` becomes one of a forged hash."""
        self._attestations.pop(height, None)
        self._attestations[height] = frame(Attestation(height, block_hash, batch_size, self.id)
                                           .signed(self.signer).encode())

    def stream_cost(self, m: BlocksRequest) -> int:
        """Tokens a block-stream request costs: 1, plus 1 per 64 KiB of the blocks it may return."""
        hi = min(self.store.height, m.from_height + m.max_blocks - 1)
        size = sum(self.store.size_of(h) for h in range(max(1, m.from_height), hi + 1))
        return 1 + size // 65536

    def stream(self, conn: Connection, m: BlocksRequest) -> None:
        """Blocks for a subscriber (``ledger.stream``): at most ``m.max_blocks`` and
        ``STREAM_RESPONSE_BYTES``, always with this replica's height, so that a subscriber at
        the head hears so at once and one that is behind knows by how much."""
        store = self.store
        blocks: list[bytes] = []
        size = 0
        try:
            for b in store.blocks(m.from_height, m.from_height + m.max_blocks - 1) if m.from_height >= 1 else ():
                raw = b.encode()
                if blocks and size + len(raw) > STREAM_RESPONSE_BYTES:
                    break
                blocks.append(raw)
                size += len(raw)
            conn.send(frame(BlocksResponse(m.nonce, m.from_height, store.height, blocks).encode()))
        except (ValueError, StoreError) as e:     # a block too big for one frame, or StoreCorrupt under us
            self.problems.note(LocalFault.CANNOT_SERVE_BLOCKS, str(e))

    def blocks(self, a: ServeBlocks) -> bytes | None:
        """The framed StateResponse for a peer's state request (None: nothing to send)."""
        if self._lies("empty-transfer"):
            return frame(StateResponse(self.id, [], []).encode())
        blocks: list[bytes] = []
        size = 0
        to = a.from_height if self._lies("drip-transfer") else a.to_height
        try:
            for b in self.store.blocks(a.from_height, to):
                raw = b.encode()
                if blocks and (size + len(raw) > STATE_RESPONSE_BYTES or len(blocks) >= STATE_RESPONSE_BLOCKS):
                    break
                blocks.append(raw)
                size += len(raw)
            if not blocks:
                return None
            return frame(StateResponse(self.id, blocks, []).encode())
        except (ValueError, StoreError) as e:     # a response too big for one frame, or StoreCorrupt under us
            self.problems.note(LocalFault.CANNOT_SERVE_BLOCKS, str(e))
            return None


class SlowSender:
    """The 'slow' strategy: every frame leaves ``delay`` seconds late, in order."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._held, self._queue = trio.open_memory_channel[tuple[float, Connection | object, bytes]](math.inf)

    def schedule(self, target, fr: bytes) -> None:
        self._held.send_nowait((trio.current_time() + self.delay, target, fr))

    async def run(self) -> None:
        async for due, target, fr in self._queue:          # in order, each when it is due
            await trio.sleep_until(due)
            target.send(fr)
