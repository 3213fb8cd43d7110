"""What a replica answers to a verified read (PROOF-REQUEST, issue 16): the state proof of
a key at a height, with the header, view, certificate and size of that block.

The answer is not signed and need not be trusted: the client checks it against f+1
execution attestations of the header's hash (``ledger.verifiedread``). So this module's
job is only to serve it with bounded work.

**Past states.** The state tree is updated in place (``ledger.state.KVStore``), so the
state after an earlier block is rebuilt from the stored blocks' writes, checked against
the state root the last block applied carries (``ledger.history.PastState``, which the
scans in the past of ``bft.runtime.queries`` use too). One rebuilt state is kept, and moved
forward when a later height is asked: reading heights in increasing order costs each block
once. A query applies at most ``MAX_REPLAY_BLOCKS`` blocks and ``MAX_REPLAY_TXS``
transactions (8,192 transactions in well under 0.1 s, the longest a query holds the
replica's loop), from block 1, or from the kept state when it is at or below the height
asked. When that is not enough the replica keeps the state
where it got to and answers "rebuilding: ..." (``REBUILDING``), and the client asks again
(``ledger.verifiedread``): every height is served, the older the more queries it takes.
Each block to replay costs the asker half a token of its query budget
(``bft.runtime.replica``: 2,000 a second, a burst of 4,000), so one client makes a
replica replay at most about 4,000 blocks and, by the cap per query, about 16,000
transactions a second. Pruning (not done yet) will keep snapshots of the state at
stable checkpoints and rebuild from the newest one at or below the height asked, so a
past read replays at most one checkpoint interval.

**lying-proofs** (a runtime Byzantine strategy, ``bft.adversary``): at the current height
the replica forges the state (the key holds b"lies", or is absent, in turn), puts the
forged root in a copy of the real header, under the real certificate, and signs the
forged header's hash as its attestation for that height. Only f+1 attestations make a
client accept a header, so it moves on to the next replica. At a past height it says
"rebuilding" for ever, to stall the client, which asks the others in the same round.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import msgpack

from bft.wire import ProofRequest, ProofResponse, frame
from ledger.wire import REBUILDING
from ledger.block import header_hash
from ledger.chain import ReplayError
from ledger.history import PastState
from ledger.net.transport import Connection, LocalFault, Problems
from ledger.rules import WireRule
from ledger.state import MAX_KEY
from ledger.statetree import StateProof, StateTree
from ledger.store import BlockStore, StoreError

MAX_REPLAY_BLOCKS = 2048    # blocks one query may make the replica replay ...
MAX_REPLAY_TXS = 8192       # ... and transactions (the first bound reached ends it)
HEADERS_KEPT = 32           # recently served headers (a block read each otherwise)
LIE = b"lies"


class ProofServer:
    def __init__(self, replica_id: int, store: BlockStore, problems: Problems, lies: Callable[[str], bool],
                 attest_forged: Callable[[int, bytes, int], None], *, replay_blocks: int | None = None,
                 replay_txs: int | None = None) -> None:
        self.id = replica_id
        self.replay_blocks = MAX_REPLAY_BLOCKS if replay_blocks is None else max(1, int(replay_blocks))
        self.replay_txs = MAX_REPLAY_TXS if replay_txs is None else max(1, int(replay_txs))
        self.store = store
        self.problems = problems
        self._lies = lies
        self._attest_forged = attest_forged      # sign (height, forged hash, batch size) as this replica's
        self._past = PastState(store)             # the last past state rebuilt
        self._headers: OrderedDict[int, tuple[list, int, int, list]] = OrderedDict()
        self._lie_count = 0

    def _height_of(self, m: ProofRequest) -> int:
        return m.height or self.store.chain.height

    def replay_needed(self, height: int) -> int:
        """Blocks to replay to serve ``height`` (0 for the current state)."""
        if height >= self.store.chain.height:
            return 0
        return self._past.blocks_to(height)

    def cost(self, m: ProofRequest) -> int:
        """Tokens the query costs: 1, one per started 64 KiB of the block read for its header,
        and half a token per block it will replay (a query that will be refused costs 1)."""
        h = self._height_of(m)
        store = self.store
        if not 1 <= h <= store.height:
            return 1                                   # refused
        replay = min(self.replay_needed(h), self.replay_blocks)
        size = 0 if h in self._headers else store.size_of(h) // 65536
        return 1 + size + replay // 2

    def serve(self, conn: Connection, m: ProofRequest) -> None:
        refusal = self._refusal(m)
        if refusal is not None:
            self.problems.note(WireRule.PROOF_REFUSED, f"{conn.name}: {refusal}")
            conn.send(frame(ProofResponse(m.nonce, self.id, 0, 0, 0, b"", [], b"", refusal.encode()[:1024]).encode()))
            return
        h = self._height_of(m)
        key = m.key.decode()
        if h < self.store.chain.height and self._lies("lying-proofs"):     # "rebuilding", for ever
            why = REBUILDING + b"the state of this height is rebuilt up to height 1; ask again"
            conn.send(frame(ProofResponse(m.nonce, self.id, 0, 0, 0, b"", [], b"", why).encode()))
            return
        try:
            header, view, batch_size, cert = self._header(h)
            if h == self.store.chain.height:
                kv = self.store.chain.kv
            else:
                reached = self._past.advance(h, self.replay_blocks, self.replay_txs)
                if reached < h:
                    why = (REBUILDING + f"the state of height {h} is rebuilt up to height {reached} (a query "
                           f"replays at most {self.replay_blocks} blocks and {self.replay_txs} transactions); "
                           "ask again".encode())
                    conn.send(frame(ProofResponse(m.nonce, self.id, 0, 0, 0, b"", [], b"", why).encode()))
                    return
                kv = self._past.kv
            proof = kv.prove(key)
        except (ValueError, StoreError, ReplayError) as e:    # StoreCorrupt under us (the past state starts over)
            self.problems.note(LocalFault.CANNOT_SERVE_PROOF, str(e))
            return
        if self._lies("lying-proofs"):
            header, proof = self._forge(h, header, batch_size, key)
        body = msgpack.packb(header, use_bin_type=True)
        conn.send(frame(ProofResponse(m.nonce, self.id, h, view, batch_size, body, cert, proof.encode(),
                                      b"").encode()))

    def _refusal(self, m: ProofRequest) -> str | None:
        try:
            key = m.key.decode()
        except UnicodeDecodeError:
            return "the key is not UTF-8"
        if not key or len(m.key) > MAX_KEY:
            return f"a key is 1 to {MAX_KEY} bytes of UTF-8"
        chain, store = self.store.chain, self.store
        if chain.height != store.height:
            return f"executing block {chain.height}; ask again"
        h = self._height_of(m)
        if h == 0:
            return "this replica has executed no block yet"
        if h > chain.height:
            return f"height {h} is above this replica's height {chain.height}"
        return None

    def _header(self, h: int) -> tuple[list, int, int, list]:
        hit = self._headers.get(h)
        if hit is None:
            b = self.store.read(h)
            hit = self._headers[h] = (b.header(), b.view, len(b.txs), list(b.cert))
            while len(self._headers) > HEADERS_KEPT:
                self._headers.popitem(last=False)
        return hit

    def _forge(self, h: int, header: list, batch_size: int, key: str) -> tuple[list, StateProof]:
        """lying-proofs: a one-key state where ``key`` holds LIE or is absent (in turn), its root
        in a copy of the real header, and this replica's attestation of that header."""
        tree = StateTree()
        present = self._lie_count % 2 == 0
        self._lie_count += 1
        if present:
            tree.put(key, LIE)
        path, children = tree.prove(key)
        proof = StateProof(key, LIE if present else None, tuple(path), children)
        forged = list(header)
        forged[-1] = tree.root()
        self._attest_forged(h, header_hash(forged), batch_size)
        return forged, proof
