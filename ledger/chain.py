"""The executed ledger: key-value state, client table, Merkle log and head.

Both protocol cores hand committed batches here in sequence order; replay after a
restart and state transfer run the same code, so a replica's state is always a pure
function of its blocks. Each block's header carries the root of the key-value state
after it (``KVStore.root``, computed once per block), and replay checks it.
"""
from __future__ import annotations

from dataclasses import dataclass

from crypto.merkle import MerkleTree, leaf_hash, root_of
from ledger import tx as txmod
from ledger.block import GENESIS_HASH, Block
from ledger.clients import ClientRegistry
from ledger.state import DUPLICATE, FAILED, INVALID, OK, KVStore, encode_result, is_registration, registration_cert


# Per client, the ledger remembers at least its WINDOW most recent executed requests (by
# timestamp) exactly; a timestamp below all of those is refused as stale.
WINDOW = 4096


@dataclass(slots=True)
class ClientRecord:
    """One executed request: exactly-once and the cached reply."""
    timestamp: int
    result: bytes
    height: int
    index: int


class ClientState:
    """Per client: its recent executed requests, and the floor below which it may not go.

    PBFT's single "last timestamp" forbids a client from having two requests in flight,
    but one client object here carries many concurrent requests that the primary may
    order either way; the window keeps exactly-once without that restriction.

    The window counts executed requests, not timestamps: a request at or above ``floor``
    executed if and only if it is in ``recent``. So a request that timed out can be sent
    again, the very same signed bytes, and it either gets its cached reply or executes
    now, however far the client's clock moved meanwhile (``ledger.client.Client.outcome``);
    only after WINDOW later requests of the client executed is it stale, and then it can
    never execute.
    """

    __slots__ = ("floor", "recent")

    def __init__(self) -> None:
        self.floor = -1
        self.recent: dict[int, ClientRecord] = {}

    def is_stale(self, timestamp: int) -> bool:
        return timestamp < self.floor

    def record(self, rec: ClientRecord) -> None:
        self.recent[rec.timestamp] = rec
        if len(self.recent) > 2 * WINDOW:
            kept = sorted(self.recent)[-WINDOW:]
            self.floor = kept[0]
            self.recent = {t: self.recent[t] for t in kept}


class ReplayError(Exception):
    """A stored or transferred block whose results differ from re-execution."""


class Chain:
    __slots__ = ("kv", "tree", "height", "head", "clients", "last_view", "registry")

    def __init__(self) -> None:
        self.kv = KVStore()
        self.tree = MerkleTree()
        self.height = 0
        self.head = GENESIS_HASH
        self.clients: dict[int, ClientState] = {}
        self.last_view = 0
        self.registry = ClientRegistry()        # clients registered by the administrator (ledger.clients)

    def _run(self, txs: list[bytes], height: int) -> list[bytes]:
        results = []
        clients = self.clients
        self.kv.at = height                  # what the block writes is written "since" this height
        for index, raw in enumerate(txs):
            t = txmod.parse(raw)
            if t is None:
                results.append(encode_result(INVALID, b"malformed transaction"))
                continue
            st = clients.get(t.client)
            if st is None:
                st = clients[t.client] = ClientState()
            elif t.timestamp in st.recent or st.is_stale(t.timestamp):
                results.append(encode_result(DUPLICATE))
                continue
            res = self._register(t.op) if is_registration(t.op) else self.kv.apply(t.op)
            st.record(ClientRecord(t.timestamp, res, height, index))
            results.append(res)
        return results

    def _register(self, op: bytes) -> bytes:
        cert = registration_cert(op)
        if cert is None:
            return encode_result(INVALID, b"malformed registration")
        got = self.registry.register(cert)
        if isinstance(got, str):
            return encode_result(FAILED, got.encode())
        return encode_result(OK, b"%d" % got)

    def execute(self, sequence: int, view: int, txs: list[bytes],
                cert: list[tuple[int, bytes]] | None = None) -> Block:
        """Apply a committed batch and return its block (the caller persists it)."""
        height = self.height + 1
        results = self._run(txs, height)
        leaves = [leaf_hash(t) for t in txs]          # hashed once for the batch root and the log
        for h in leaves:
            self.tree.append_hash(h)
        batch_root = MerkleTree.from_leaf_hashes(leaves).root()
        block = Block(height, sequence, view, self.head, batch_root, root_of(results),
                      self.tree.size, self.tree.root(), self.kv.root(), list(txs), results, list(cert or []))
        self.height = height
        self.head = block.hash()
        self.last_view = view
        return block

    def replay(self, block: Block) -> None:
        """Apply a block that was already checked for links and roots; results must agree."""
        if block.height != self.height + 1 or block.prev_hash != self.head:
            raise ReplayError(f"block {block.height} does not extend height {self.height}")
        results = self._run(block.txs, block.height)
        if results != block.results:
            raise ReplayError(f"block {block.height}: results differ from re-execution")
        for t in block.txs:
            self.tree.append(t)
        if self.tree.size != block.tree_size or self.tree.root() != block.tree_root:
            raise ReplayError(f"block {block.height}: tree head differs from the log")
        state_root = self.kv.root()
        if state_root != block.state_root:
            raise ReplayError(f"block {block.height}: state root {block.state_root.hex()[:16]} in the header, "
                              f"{state_root.hex()[:16]} after re-execution")
        self.height = block.height
        self.head = block.hash()
        self.last_view = block.view

    def executed(self, client: int, timestamp: int) -> ClientRecord | None:
        """The cached reply of an executed request, or None."""
        st = self.clients.get(client)
        return None if st is None else st.recent.get(timestamp)

    def is_stale(self, client: int, timestamp: int) -> bool:
        """True for a request too old to execute (below the client's window)."""
        st = self.clients.get(client)
        return st is not None and st.is_stale(timestamp)
