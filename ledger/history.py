"""Which transactions wrote which key: the history index kept beside a replica's block store.

``DIR/data/replica-I/history.idx`` maps every key to the (height, index) of each
transaction that wrote it, so that a replica answers ``Client.history`` without reading
the whole chain. It is an accelerator, never a source of truth:

- it is derived from the blocks alone (``writes_of``), so it can always be rebuilt, and
  it is rebuilt whenever it is missing or anything about it looks wrong;
- every record (one per block) is checksum-framed (``ledger.records``) and names its
  height and its block's hash; opening checks the framing, that the heights run
  1, 2, 3... with none missing, that it is not ahead of the store, and that the last
  record's block hash is the stored block's. A failed check means rebuild, with a
  warning: a damaged index is detected, never trusted;
- a record is written after its block is in the store, without an fsync (a lost tail is
  re-derived from the blocks at the next open, so durability would buy nothing); a failed
  write is logged and indexing goes on in memory: a replica never stops for its index;
- the whole index is also held in memory (about 100 bytes per write of a key), like the
  store's own per-height index;
- what a replica answers from it is checked by the client against certified blocks
  (``ledger.historyclient``), so a wrong index can hide versions but never invent one.

What counts as a write of a key (``writes_of``): a put, a compare-and-set that swapped,
a delete that removed the key, and a transaction (``op_txn``) that applied, for each key
it puts or deletes. A transaction's delete of a key that was absent counts too (the
block cannot tell, and the ledger notes the key as written, ``KVStore.since``).
Transactions that changed nothing (a failed cas or transaction, a delete of an absent
key, a duplicate, a malformed one) are not versions.
"""
from __future__ import annotations

import logging
import os
from bisect import bisect_right
from pathlib import Path
from typing import Iterable

import msgpack

from ledger import tx as txmod
from ledger.block import Block
from ledger.chain import ReplayError
from ledger.records import FrameCorrupt, FrameScanner, frame, write_all
from ledger.state import OK, KVStore, _parse, decode_result
from ledger.wire import MAX_QUERY_ITEMS          # positions in one answer (a client asks again with ``after``)

log = logging.getLogger(__name__)

INDEX_NAME = "history.idx"
INDEX_MAGIC = b"BFH1"


def writes_of(tx: bytes, result: bytes) -> list[tuple[str, bytes | None]]:
    """The keys transaction ``tx`` wrote, with the value each got (None: deleted), given the
    result the block holds for it; [] when it changed nothing. A pure function of the block,
    run by replicas to index and by clients to check what a replica claims."""
    t = txmod.parse(tx)
    if t is None:
        return []
    try:
        status, _ = decode_result(result)
    except Exception:
        return []
    if status != OK:
        return []
    v = _parse(t.op)
    if v is None:
        return []
    kind = v[0]
    if kind == "put":
        return [(v[1], v[2])]
    if kind == "cas":
        return [(v[1], v[3])]
    if kind == "del":
        return [(v[1], None)]
    if kind == "txn":
        return [(k, val) for k, val in v[1]] + [(k, None) for k in v[2]]
    return []                                        # get, addclient


def block_writes(block: Block) -> list[tuple[str, int]]:
    """(key, index) for every key a block's transactions wrote, in block order."""
    out = []
    for i, (tx, res) in enumerate(zip(block.txs, block.results)):
        for key, _ in writes_of(tx, res):
            out.append((key, i))
    return out


class PastState:
    """The key-value state after an earlier block, rebuilt from the stored blocks' writes
    (``writes_of``): one kept state, moved forward when a later height is asked, so reading
    heights in increasing order applies each block once; from block 1 again when a lower
    height is asked. What a replica proves (``bft.runtime.proofs``) and scans
    (``bft.runtime.queries``) in the past; each caller sets its own bounds per ``advance``.

    Applying recorded writes, not re-executing, is about four times faster than
    ``Chain.replay``; the state root the last block applied carries is checked instead, so
    a state that is not the committed one is never served (``ReplayError``)."""

    def __init__(self, store) -> None:
        self.store = store
        self.height = 0                           # the kept state is the one after this block
        self.kv = KVStore()

    def blocks_to(self, height: int) -> int:
        """Blocks ``advance`` would apply to reach ``height`` from the kept state."""
        return height - self.height if self.height <= height else height

    def advance(self, height: int, max_blocks: int, max_txs: int) -> int:
        """Move the kept state towards the one after block ``height`` (at most the store's
        height), applying at most ``max_blocks`` blocks and ``max_txs`` transactions (the
        first bound reached ends it, after at least one block); returns the height reached.
        Raises ``ReplayError`` (or the store's ``StoreCorrupt``) and starts over from block 1
        when the blocks do not give the state root they carry."""
        if self.height > height:
            self.height, self.kv = 0, KVStore()
        kv, last, blocks, txs = self.kv, None, 0, 0
        try:
            for b in self.store.blocks(self.height + 1, height):
                kv.at = b.height
                for tx, res in zip(b.txs, b.results):
                    for key, value in writes_of(tx, res):
                        kv.write(key, value)
                self.height, last = b.height, b
                blocks += 1
                txs += len(b.txs)
                if blocks >= max_blocks or txs >= max_txs:
                    break
            if last is not None and kv.root() != last.state_root:
                raise ReplayError(f"block {last.height}: state root {last.state_root.hex()[:16]} in the header, "
                                  f"{kv.root().hex()[:16]} from the blocks' writes")
        except BaseException:
            self.height, self.kv = 0, KVStore()   # never keep a state that is not whole blocks
            raise
        return self.height


class IndexDamaged(Exception):
    """Why the index on disk cannot be used (it is then rebuilt from the blocks)."""


class HistoryIndex:
    """key -> [(height, index), ...] in ledger order, in memory and in ``history.idx``.

    ``open(directory, store)`` loads it, or rebuilds it from ``store`` (a ``BlockStore``)
    when it is missing or damaged, and catches up with blocks the store has beyond it.
    ``add(blocks)`` indexes blocks just appended to the store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.height = 0                           # the last block indexed
        self.rebuilt: str | None = None           # why it was rebuilt at open (None: it was not)
        self._positions: dict[str, list[tuple[int, int]]] = {}
        self._fd: int | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, directory: str | os.PathLike[str], store) -> "HistoryIndex":
        idx = cls(Path(directory) / INDEX_NAME)
        try:
            idx._load(store)
        except IndexDamaged as e:
            idx.rebuilt = str(e)
            if store.height:                      # (a new replica's index is merely created)
                log.warning("%s: %s; rebuilding it from the blocks", idx.path, e)
            idx._rebuild(store)
        try:
            idx._fd = os.open(idx.path, os.O_WRONLY | os.O_APPEND)
        except OSError as e:
            log.warning("%s: cannot append (%s); indexing in memory only until the next start", idx.path, e.strerror)
        if idx.height < store.height:
            idx.add(store.blocks(idx.height + 1, store.height))
        return idx

    def _load(self, store) -> None:
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            raise IndexDamaged("it is missing") from None
        except OSError as e:                      # not a file, unreadable: as good as damaged
            raise IndexDamaged(f"it cannot be read ({e.strerror})") from None
        last_hash = b""
        with f:
            try:
                scanner = FrameScanner(f, INDEX_MAGIC, os.fstat(f.fileno()).st_size)
                for offset, body in scanner:
                    height, block_hash, writes = _decode_record(body, offset)
                    if height != self.height + 1:
                        raise IndexDamaged(f"the record at byte {offset} is for height {height}, "
                                           f"expected {self.height + 1}")
                    self._note(height, writes)
                    self.height, last_hash = height, block_hash
            except FrameCorrupt as e:
                raise IndexDamaged(f"{e.reason} at byte {e.offset}") from None
            except OSError as e:
                raise IndexDamaged(f"it cannot be read ({e.strerror})") from None
        if scanner.torn is not None:
            raise IndexDamaged(f"it ends inside a record at byte {scanner.torn.offset} ({scanner.torn.why})")
        if self.height > store.height:
            raise IndexDamaged(f"it indexes {self.height} blocks but the store holds {store.height}")
        if self.height and store.read(self.height).hash() != last_hash:
            raise IndexDamaged(f"its block hash at height {self.height} is not the stored block's")

    def _rebuild(self, store) -> None:
        """Index every stored block into a fresh file, then put it in place atomically (when
        the file cannot be written, the index is kept in memory: it is rebuilt at next open)."""
        self._positions.clear()
        self.height = 0
        tmp = self.path.with_suffix(".tmp")
        try:
            self._fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as e:
            log.warning("%s: cannot write (%s); indexing in memory only until the next start", tmp, e.strerror)
        try:
            self.add(store.blocks(1, store.height))
        finally:
            written = self._fd is not None        # (add closes it when a write fails)
            self.close()
        if written:
            try:
                os.replace(tmp, self.path)
            except OSError as e:
                log.warning("%s: cannot replace it (%s); indexing in memory only until the next start",
                            self.path, e.strerror)

    # ------------------------------------------------------------------ writing
    def add(self, blocks: Iterable[Block]) -> None:
        """Index blocks the store holds, consecutive from ``height + 1`` (others are skipped:
        already indexed)."""
        out = []
        for b in blocks:
            if b.height != self.height + 1:
                continue
            writes = block_writes(b)
            self._note(b.height, writes)
            self.height = b.height
            body = msgpack.packb([b.height, b.hash(), [[k, i] for k, i in writes]], use_bin_type=True)
            out.append(frame(INDEX_MAGIC, body))
        if out and self._fd is not None:
            try:
                write_all(self._fd, b"".join(out))
            except OSError as e:
                # the index is derived data: a replica must not stop for it. The memory copy stays
                # right; the file, now behind or torn, is caught up or rebuilt at the next open.
                log.warning("%s: cannot append (%s); indexing in memory only until the next start",
                            self.path, e.strerror)
                os.close(self._fd)
                self._fd = None

    def _note(self, height: int, writes: list[tuple[str, int]]) -> None:
        positions = self._positions
        for key, index in writes:
            p = positions.get(key)
            if p is None:
                positions[key] = [(height, index)]
            elif p[-1] != (height, index):       # a transaction writes a key once
                p.append((height, index))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # ------------------------------------------------------------------ reading
    def positions(self, key: str, after: int = 0, limit: int = MAX_QUERY_ITEMS) -> tuple[list[tuple[int, int]], bool]:
        """Up to ``limit`` (height, index) of ``key``'s writes above height ``after``, oldest
        first, and whether more follow."""
        p = self._positions.get(key)
        if not p:
            return [], False
        start = bisect_right(p, (after, 1 << 32))
        page = p[start:start + limit]
        return page, start + limit < len(p)

    def keys(self) -> int:
        return len(self._positions)


def _decode_record(body: bytes, offset: int) -> tuple[int, bytes, list[tuple[str, int]]]:
    try:
        v = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True)
    except Exception:
        raise IndexDamaged(f"the record at byte {offset} is not msgpack") from None
    if (type(v) is not list or len(v) != 3 or type(v[0]) is not int or type(v[1]) is not bytes or len(v[1]) != 32
            or type(v[2]) is not list):
        raise IndexDamaged(f"the record at byte {offset} is malformed")
    writes = []
    for w in v[2]:
        if type(w) is not list or len(w) != 2 or type(w[0]) is not str or type(w[1]) is not int or w[1] < 0:
            raise IndexDamaged(f"the record at byte {offset} holds a malformed entry")
        writes.append((w[0], w[1]))
    return v[0], v[1], writes
