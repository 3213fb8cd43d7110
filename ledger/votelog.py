"""A replica's vote log: what a protocol core promised or voted, durable before it is sent.

PBFT's PREPARE/COMMIT/VIEW-CHANGE and Paxos's PROMISE/ACCEPTED are promises to peers;
a replica that forgets one across a restart can vote twice differently, which breaks
safety. The cores emit "persist these records" ahead of the matching sends and the
driver appends them here (one fsync for the lot) before sending anything.

Records are opaque bytes (the cores msgpack them); the log only frames them with the
same checksummed framing as the block store, so the same recovery rule applies: a torn
final record is cut with a warning, any other damage raises ``VoteLogCorrupt``.
The whole log is small and kept in memory; ``compact`` atomically replaces it with
what the core still needs (for example after a stable checkpoint).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

from ledger.records import (
    FrameCorrupt, FrameScanner, StoreError, acquire_lock, frame, fsync_dir, release_lock, truncate_file,
    write_all,
)

__all__ = ["VoteLog", "VoteLogCorrupt", "VOTE_MAGIC"]

log = logging.getLogger(__name__)

VOTE_MAGIC = b"BFV1"


class VoteLogCorrupt(StoreError):
    """A complete record of the vote log is damaged; ``record`` counts from 1."""

    def __init__(self, path: Path, record: int, reason: str) -> None:
        super().__init__(f"{path}: record {record}: {reason}")
        self.path = path
        self.record = record
        self.reason = reason


class VoteLog:
    """Append-only, fsync'd, checksum-framed records. Open with ``VoteLog.open``."""

    def __init__(self, path: Path, fsync: bool) -> None:
        self.path = path
        self.fsync = fsync
        self.warnings: list[str] = []
        self._records: list[bytes] = []
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._broken: str | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, fsync: bool = True) -> "VoteLog":
        """Open or create the log file at ``path``, recover its records, cut a torn tail."""
        p = Path(path)
        if not p.parent.is_dir():
            raise StoreError(f"directory {p.parent} for the vote log does not exist")
        vl = cls(p, fsync)
        vl._lock_fd = acquire_lock(p.with_name(p.name + ".lock"), f"vote log {p}")
        try:
            vl._recover()
        except BaseException:
            vl.close()
            raise
        return vl

    def _tmp_path(self) -> Path:
        return self.path.with_name(self.path.name + ".tmp")

    def _recover(self) -> None:
        tmp = self._tmp_path()
        if tmp.exists():
            # A compaction that died before its rename: the old file is still the truth.
            tmp.unlink()
            if self.fsync:
                fsync_dir(self.path.parent)
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        if created and self.fsync:
            fsync_dir(self.path.parent)
        size = os.fstat(self._fd).st_size
        with open(self.path, "rb") as f:
            scanner = FrameScanner(f, VOTE_MAGIC, size)
            try:
                for _, body in scanner:
                    self._records.append(body)
            except FrameCorrupt as e:
                raise VoteLogCorrupt(self.path, len(self._records) + 1, str(e)) from None
        if scanner.torn is not None:
            torn = scanner.torn
            truncate_file(self.path, torn.offset, fsync=self.fsync)
            msg = (f"{self.path.name}: torn final record at byte {torn.offset} ({torn.why}); "
                   f"truncated (it was never acted upon)")
            self.warnings.append(msg)
            log.warning("%s", msg)

    def records(self) -> list[bytes]:
        """Every record in order: those recovered at open plus those appended since."""
        return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def append(self, record: bytes) -> None:
        self.append_many([record])

    def append_many(self, records: Iterable[bytes]) -> None:
        """Durably append records with one write and one fsync; only then may the votes be sent."""
        fd = self._writable_fd()
        batch = list(records)
        for r in batch:
            if type(r) is not bytes:
                raise TypeError(f"vote log records are bytes, not {type(r).__name__}")
        if not batch:
            return
        data = b"".join(frame(VOTE_MAGIC, r) for r in batch)
        start = os.fstat(fd).st_size
        try:
            write_all(fd, data)
            if self.fsync:
                os.fsync(fd)
        except OSError as e:
            self._broken = f"writing {self.path.name} failed: {e.strerror}"
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise StoreError(f"{self.path}: {self._broken}; restart the replica to recover") from None
        self._records.extend(batch)

    def compact(self, records: Iterable[bytes]) -> None:
        """Atomically replace the whole log with ``records``: after a crash at any point, the
        file holds either the old or the new list, never a mix."""
        self._writable_fd()
        keep = list(records)
        for r in keep:
            if type(r) is not bytes:
                raise TypeError(f"vote log records are bytes, not {type(r).__name__}")
        tmp = self._tmp_path()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                write_all(fd, b"".join(frame(VOTE_MAGIC, r) for r in keep))
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            # The old file is untouched and still authoritative; only the temporary goes.
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{self.path}: compaction failed ({e.strerror}); the old log is kept") from None
        try:
            os.replace(tmp, self.path)
            if self.fsync:
                fsync_dir(self.path.parent)
            new_fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        except OSError as e:
            self._broken = f"replacing {self.path.name} failed: {e.strerror}"
            raise StoreError(f"{self.path}: {self._broken}; restart the replica to recover") from None
        if self._fd is not None:
            os.close(self._fd)
        self._fd = new_fd
        self._records = keep

    def _writable_fd(self) -> int:
        if self._fd is None:
            raise StoreError(f"vote log {self.path} is closed")
        if self._broken is not None:
            raise StoreError(f"{self.path}: {self._broken}; restart the replica to recover")
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            release_lock(self._lock_fd)
            self._lock_fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> "VoteLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
