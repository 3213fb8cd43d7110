"""The append-only block store of one replica: ``DIR/data/replica-I/segment-NNNNNN.log``.

Blocks are checksum-framed records (see ``ledger.records``) in numbered segment files;
a new segment starts once the current one passes ``SEGMENT_BYTES``. Opening the store
is recovery: every record is checked (framing, decoding, links and roots through
``ledger.block.link_error``) and re-executed through a fresh ``Chain``, so a replica's
state after a restart is a pure function of what is on disk and never of a snapshot
that could disagree with it.

The recovery rule separates the two things that can be wrong with a file:
- an incomplete final record of the last segment is a torn write (the process or
  machine died mid-append); it was never acknowledged, so it is truncated, with a
  warning;
- anything else (a complete record that fails a checksum, does not decode, breaks the
  chain or its roots; a missing or short earlier segment) is damage or tampering, and
  opening fails with ``StoreCorrupt(height, reason)``. A complete record is never
  dropped silently.

Only an index of (segment, offset, length) per height stays in memory; blocks are read
back from disk on demand (state transfer, receipts), and re-verified when read.
"""
from __future__ import annotations

import logging
import os
import re
from array import array
from pathlib import Path
from typing import Callable, Iterable, Iterator

from crypto.merkle import MerkleTree
from ledger.block import GENESIS_HASH, Block, BlockFormatError, link_error
from ledger.chain import Chain, ReplayError
from ledger.records import (
    OVERHEAD, FrameCorrupt, FrameScanner, StoreError, acquire_lock, check_body, check_header,
    frame, fsync_dir, release_lock, truncate_file, write_all,
)

__all__ = ["BlockStore", "StoreCorrupt", "StoreError", "BlockRejected", "SEGMENT_BYTES", "BLOCK_MAGIC"]

log = logging.getLogger(__name__)

SEGMENT_BYTES = 64 * 1024 * 1024
BLOCK_MAGIC = b"BFB1"
LOCK_NAME = "LOCK"
_SEGMENT_RE = re.compile(r"segment-(\d{6,})\.log")

# An extra check run on each block during open/scan (the audit verifies signatures with
# it); it returns why the block is bad, or None.
BlockCheck = Callable[[Block], "str | None"]


class StoreCorrupt(StoreError):
    """The stored chain is damaged or was altered at ``height`` (the first bad one)."""

    def __init__(self, height: int, reason: str) -> None:
        super().__init__(f"height {height}: {reason}")
        self.height = height
        self.reason = reason


class BlockRejected(StoreError):
    """``append`` was handed a block that does not extend the stored head (a caller bug)."""


def segment_name(number: int) -> str:
    return f"segment-{number:06d}.log"


class BlockStore:
    """Use ``BlockStore.open`` (writer, recovers and may truncate) or ``BlockStore.scan`` (read-only)."""

    def __init__(self, path: Path, *, fsync: bool, readonly: bool, segment_bytes: int) -> None:
        self.path = path
        self.fsync = fsync
        self.readonly = readonly
        self.segment_bytes = segment_bytes
        self.chain = Chain()              # recovered state; the store never touches it after open
        self.warnings: list[str] = []
        self._seg = array("I")            # per height - 1: segment number
        self._off = array("Q")            # offset of the record in that segment
        self._len = array("I")            # body length
        self._head = GENESIS_HASH
        self._tree_size = 0
        self._nsegments = 0               # segments on disk: 0 .. _nsegments-1
        self._wfd: int | None = None      # append fd of the last segment (writer only)
        self._wsize = 0
        self._rfds: dict[int, int] = {}
        self._lock_fd: int | None = None
        self._broken: str | None = None
        self._closed = False

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, fsync: bool = True, create: bool = True,
             segment_bytes: int = SEGMENT_BYTES, check: BlockCheck | None = None) -> "BlockStore":
        """Open for appending: lock the directory, verify and replay every block, cut a torn tail.

        ``fsync=False`` is for tests and simulations only: nothing is then durable.
        """
        if segment_bytes < 1:
            raise ValueError("segment_bytes must be positive")
        p = Path(path)
        if not p.is_dir():
            if not create:
                raise StoreError(f"no block store at {p}; has this replica ever run?")
            p.mkdir(parents=True, exist_ok=True)
            if fsync:
                fsync_dir(p.parent)
        store = cls(p, fsync=fsync, readonly=False, segment_bytes=segment_bytes)
        store._lock_fd = acquire_lock(p / LOCK_NAME, f"block store {p}")
        try:
            store._recover(check)
            store._open_for_append()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def scan(cls, path: str | os.PathLike[str], *, check: BlockCheck | None = None) -> "BlockStore":
        """Open read-only for audit: takes no lock, never modifies a file, reports a torn tail in
        ``warnings``. Safe to run next to a live replica (its in-flight append looks torn)."""
        p = Path(path)
        if not p.is_dir():
            raise StoreError(f"no block store at {p}; has this replica ever run?")
        store = cls(p, fsync=False, readonly=True, segment_bytes=SEGMENT_BYTES)
        try:
            store._recover(check)
        except BaseException:
            store.close()
            raise
        return store

    def _segments(self) -> list[tuple[int, Path]]:
        found = []
        for entry in os.scandir(self.path):
            m = _SEGMENT_RE.fullmatch(entry.name)
            if m:
                found.append((int(m.group(1)), Path(entry.path)))
        found.sort()
        return found

    def _recover(self, check: BlockCheck | None) -> None:
        segments = self._segments()
        chain, tree = self.chain, MerkleTree()
        prev: Block | None = None
        for i, (number, seg_path) in enumerate(segments):
            last = i == len(segments) - 1
            if number != i:
                missing = segment_name(i)
                raise StoreCorrupt(self.height + 1, f"{missing} is missing (the next segment found is {seg_path.name})")
            with open(seg_path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0 and not last:
                    raise StoreCorrupt(self.height + 1, f"{seg_path.name} is empty but later segments exist")
                scanner = FrameScanner(f, BLOCK_MAGIC, size)
                try:
                    for offset, body in scanner:
                        prev = self._recover_one(body, prev, tree, chain, check, seg_path.name, offset)
                        self._seg.append(number)
                        self._off.append(offset)
                        self._len.append(len(body))
                except FrameCorrupt as e:
                    raise StoreCorrupt(self.height + 1, f"{e.reason} in {seg_path.name} at byte {e.offset}") from None
            if scanner.torn is not None:
                torn = scanner.torn
                if not last:
                    raise StoreCorrupt(self.height + 1, f"{seg_path.name} ends inside a record at byte {torn.offset} "
                                                        f"({torn.why}) but later segments exist")
                msg = (f"{seg_path.name}: torn final record at byte {torn.offset} ({torn.why}); "
                       f"an interrupted append that was never acknowledged")
                if self.readonly:
                    self.warnings.append(msg + "; left in place (read-only scan)")
                else:
                    truncate_file(seg_path, torn.offset, fsync=self.fsync)
                    self.warnings.append(msg + f"; truncated to {torn.offset} bytes")
                    log.warning("%s: %s", self.path, self.warnings[-1])
        self._nsegments = len(segments)
        if prev is not None:
            self._head = prev.hash()
            self._tree_size = prev.tree_size

    def _recover_one(self, body: bytes, prev: Block | None, tree: MerkleTree, chain: Chain,
                     check: BlockCheck | None, seg_name: str, offset: int) -> Block:
        height = self.height + 1
        try:
            block = Block.decode(body)
        except (BlockFormatError, ValueError, TypeError, RecursionError) as e:
            raise StoreCorrupt(height, f"record in {seg_name} at byte {offset} is not a block: {e}") from None
        if block.encode() != body:
            raise StoreCorrupt(height, f"record in {seg_name} at byte {offset} is not the canonical encoding of a block")
        why = link_error(block, prev, tree)
        if why is not None:
            raise StoreCorrupt(height, why)
        try:
            chain.replay(block)
        except ReplayError as e:
            reason = str(e).removeprefix(f"block {block.height}: ")
            raise StoreCorrupt(height, f"re-execution: {reason}") from None
        if check is not None:
            why = check(block)
            if why is not None:
                raise StoreCorrupt(height, why)
        return block

    def _open_for_append(self) -> None:
        if self._nsegments == 0:
            return                        # the first append creates segment 0
        seg = self._segment_path(self._nsegments - 1)
        self._wfd = os.open(seg, os.O_WRONLY | os.O_APPEND)
        self._wsize = os.fstat(self._wfd).st_size

    # ------------------------------------------------------------------ state
    @property
    def height(self) -> int:
        """Blocks on disk (the last one's height); 0 for an empty store."""
        return len(self._seg)

    @property
    def head(self) -> bytes:
        """Hash of the last stored block (GENESIS_HASH when empty)."""
        return self._head

    @property
    def segment_paths(self) -> list[Path]:
        return [self._segment_path(i) for i in range(self._nsegments)]

    def _segment_path(self, number: int) -> Path:
        return self.path / segment_name(number)

    # ------------------------------------------------------------------ appending
    def append(self, block: Block) -> None:
        """Store one block durably (fsync'd before returning unless the store was opened with fsync=False)."""
        self.append_many([block])

    def append_many(self, blocks: Iterable[Block]) -> None:
        """Store several consecutive blocks with one write and one fsync per segment touched.

        Every block is checked to extend the one before it before anything is written, so a
        refused batch writes nothing. If the disk fails midway, the blocks that reached an
        fsync'd segment stay (``height`` says which) and the store refuses further writes.
        """
        self._check_writable()
        batch = list(blocks)
        if not batch:
            return
        height, head, tree_size = self.height, self._head, self._tree_size
        framed: list[tuple[Block, bytes, int]] = []
        for b in batch:
            why = _extension_error(b, height, head, tree_size)
            if why is not None:
                raise BlockRejected(f"{self.path}: block {b.height} refused: {why}")
            body = b.encode()
            framed.append((b, frame(BLOCK_MAGIC, body), len(body)))
            height, head, tree_size = b.height, b.hash(), b.tree_size
        pending: list[tuple[Block, bytes, int]] = []
        pending_bytes = 0
        for item in framed:
            if self._wfd is None or (self._wsize + pending_bytes >= self.segment_bytes
                                     and self._wsize + pending_bytes > 0):
                self._flush(pending)
                pending, pending_bytes = [], 0
                self._roll()
            pending.append(item)
            pending_bytes += len(item[1])
        self._flush(pending)

    def _flush(self, pending: list[tuple[Block, bytes, int]]) -> None:
        if not pending:
            return
        fd = self._wfd
        if fd is None:  # pragma: no cover - _roll always opens one before anything is pending
            raise StoreError("internal: no open segment")
        start = self._wsize
        data = b"".join(fr for _, fr, _ in pending)
        try:
            write_all(fd, data)
            if self.fsync:
                os.fsync(fd)
        except OSError as e:
            # After a failed fsync the kernel may have dropped the dirty pages: nothing about
            # the file can be trusted any more, so stop writing and let recovery decide.
            self._broken = f"writing {self._segment_path(self._nsegments - 1).name} failed: {e.strerror}"
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise StoreError(f"{self.path}: {self._broken}; the store refuses further writes, "
                             "restart the replica to recover") from None
        seg = self._nsegments - 1
        off = start
        for block, fr, body_len in pending:
            self._seg.append(seg)
            self._off.append(off)
            self._len.append(body_len)
            off += len(fr)
        last = pending[-1][0]
        self._head = last.hash()
        self._tree_size = last.tree_size
        self._wsize = off

    def _roll(self) -> None:
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None
        seg = self._segment_path(self._nsegments)
        self._wfd = os.open(seg, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._nsegments += 1
        self._wsize = 0
        if self.fsync:
            fsync_dir(self.path)

    def _check_writable(self) -> None:
        if self._closed:
            raise StoreError(f"block store {self.path} is closed")
        if self.readonly:
            raise StoreError(f"block store {self.path} was opened read-only")
        if self._broken is not None:
            raise StoreError(f"{self.path}: {self._broken}; restart the replica to recover")

    # ------------------------------------------------------------------ reading
    def size_of(self, height: int) -> int:
        """The encoded size of the block at ``height`` (from the index, no disk read)."""
        return self._len[height - 1]

    def read(self, height: int) -> Block:
        """The block at ``height``, re-checked against its checksums (the disk may have changed)."""
        if self._closed:
            raise StoreError(f"block store {self.path} is closed")
        if type(height) is not int or not 1 <= height <= self.height:
            raise IndexError(f"no block at height {height!r}; {self.path} holds 1..{self.height}")
        i = height - 1
        seg, off, length = self._seg[i], self._off[i], self._len[i]
        fd = self._rfds.get(seg)
        if fd is None:
            fd = os.open(self._segment_path(seg), os.O_RDONLY)
            self._rfds[seg] = fd
        raw = os.pread(fd, OVERHEAD + length, off)
        name = segment_name(seg)
        if len(raw) != OVERHEAD + length:
            raise StoreCorrupt(height, f"{name} was truncated after the store was opened")
        try:
            if check_header(BLOCK_MAGIC, raw[:12], off) != length:
                raise FrameCorrupt(off, "record length changed")
            body = check_body(raw[12:], off)
            block = Block.decode(body)
        except FrameCorrupt as e:
            raise StoreCorrupt(height, f"{e.reason} in {name} at byte {off} (changed after open)") from None
        except (BlockFormatError, ValueError, TypeError, RecursionError) as e:
            raise StoreCorrupt(height, f"record in {name} is not a block: {e}") from None
        if block.height != height:
            raise StoreCorrupt(height, f"record in {name} at byte {off} holds height {block.height}")
        return block

    def blocks(self, from_height: int = 1, to_height: int | None = None) -> Iterator[Block]:
        """Blocks ``from_height..to_height`` inclusive (as a state request asks), clamped to the store."""
        hi = self.height if to_height is None else min(to_height, self.height)
        for h in range(max(1, from_height), hi + 1):
            yield self.read(h)

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None
        for fd in self._rfds.values():
            os.close(fd)
        self._rfds.clear()
        if self._lock_fd is not None:
            release_lock(self._lock_fd)
            self._lock_fd = None

    def __del__(self) -> None:
        # A forgotten store must not hold its lock and descriptors for the life of the process.
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> "BlockStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.readonly else "writer"
        return f"<BlockStore {self.path} height={self.height} {mode}>"


def _extension_error(b: Block, height: int, head: bytes, tree_size: int) -> str | None:
    """The cheap structural checks that keep the file openable; roots were computed by the
    caller's Chain and are re-verified in full at every open and audit."""
    if b.height != height + 1:
        return f"the store's head is at height {height}, so the next block must be {height + 1}"
    if b.prev_hash != head:
        return "its previous-block hash is not the stored head's hash"
    if b.sequence != b.height:
        return f"sequence {b.sequence} differs from height {b.height}"
    if len(b.results) != len(b.txs):
        return f"{len(b.txs)} transactions but {len(b.results)} results"
    if b.tree_size != tree_size + len(b.txs):
        return f"tree size {b.tree_size} but the stored log plus this block hold {tree_size + len(b.txs)}"
    return None
