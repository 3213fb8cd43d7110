"""Checksum-framed records on disk, shared by the block store and the vote log.

A record is ``magic(4) | length(4) | crc32(magic|length)(4) | body | crc32(body)(4)``.
The header carries its own checksum so that a damaged length can never be mistaken
for a record that merely runs past the end of the file: that distinction is what lets
recovery truncate a torn write (the process died mid-append) and still refuse a file
whose complete records were altered. Any single changed byte breaks one of the two
CRCs (CRC-32 detects every burst of up to 32 bits), and the header CRC is checked
before its length is believed.
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

HEADER = struct.Struct(">4sII")      # magic, body length, crc32 of the first 8 bytes
TRAILER = struct.Struct(">I")        # crc32 of the body
HEADER_SIZE = HEADER.size            # 12
TRAILER_SIZE = TRAILER.size          # 4
OVERHEAD = HEADER_SIZE + TRAILER_SIZE
MAX_BODY = (1 << 32) - 1


class StoreError(Exception):
    """A store cannot be used as asked (missing, locked, closed, failed write): one line for the user."""


class LockHeld(StoreError):
    """Another process holds a store's lock; ``pid`` is the PID it wrote there (None if unknown)."""

    def __init__(self, message: str, path: Path, pid: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.pid = pid


class FrameCorrupt(Exception):
    """A complete record that is not what the writer wrote; ``offset`` is where it starts."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"{reason} (record at byte offset {offset})")
        self.offset = offset
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TornTail:
    """An incomplete last record: the bytes from ``offset`` to the end of the file."""
    offset: int
    length: int
    why: str


def frame(magic: bytes, body: bytes) -> bytes:
    if len(magic) != 4:
        raise ValueError("a record magic is 4 bytes")
    if len(body) > MAX_BODY:
        raise ValueError(f"record of {len(body)} bytes exceeds {MAX_BODY}")
    head = magic + len(body).to_bytes(4, "big")
    return b"".join((head, zlib.crc32(head).to_bytes(4, "big"), body, zlib.crc32(body).to_bytes(4, "big")))


def check_header(magic: bytes, raw: bytes, offset: int) -> int:
    """The body length of a complete 12-byte header, or FrameCorrupt."""
    got_magic, length, crc = HEADER.unpack(raw)
    if zlib.crc32(raw[:8]) != crc:
        raise FrameCorrupt(offset, "record header checksum mismatch")
    if got_magic != magic:
        raise FrameCorrupt(offset, f"record has magic {got_magic!r}, expected {magic!r}")
    return length


def check_body(body_and_trailer: bytes, offset: int) -> bytes:
    body = body_and_trailer[:-TRAILER_SIZE]
    (crc,) = TRAILER.unpack(body_and_trailer[-TRAILER_SIZE:])
    if zlib.crc32(body) != crc:
        raise FrameCorrupt(offset, "record checksum mismatch")
    return body


class FrameScanner:
    """Iterates ``(offset, body)`` over a file of records; never modifies the file.

    Complete-but-wrong records raise ``FrameCorrupt``. When the file ends inside a record
    the iteration stops and ``torn`` describes the leftover bytes; whether that is a torn
    write (last file) or damage (an earlier segment) is the caller's call.
    """

    def __init__(self, f: BinaryIO, magic: bytes, size: int) -> None:
        self._f = f
        self._magic = magic
        self._size = size
        self.torn: TornTail | None = None
        self.end = 0                          # offset just past the last complete record

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        f, size, pos = self._f, self._size, 0
        f.seek(0)
        while pos < size:
            left = size - pos
            if left < HEADER_SIZE:
                self.torn = TornTail(pos, left, f"{left} bytes, less than a record header")
                return
            raw = f.read(HEADER_SIZE)
            if len(raw) != HEADER_SIZE:       # the file shrank under us (read-only scan)
                self.torn = TornTail(pos, left, "the file ended early while being read")
                return
            length = check_header(self._magic, raw, pos)
            need = HEADER_SIZE + length + TRAILER_SIZE
            if need > left:
                self.torn = TornTail(pos, left, f"{left} of the record's {need} bytes")
                return
            rest = f.read(length + TRAILER_SIZE)
            if len(rest) != length + TRAILER_SIZE:
                self.torn = TornTail(pos, left, "the file ended early while being read")
                return
            body = check_body(rest, pos)
            yield pos, body
            pos += need
            self.end = pos


def write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (signals, quotas); loop until all of it is out."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def fsync_dir(path: Path) -> None:
    """Make a created, renamed or removed directory entry durable, not just the file's bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def truncate_file(path: Path, length: int, *, fsync: bool) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, length)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def acquire_lock(path: Path, what: str) -> int:
    """Hold an exclusive advisory lock so that two writers never interleave appends.

    The lock dies with the process (kill -9 included), so a crash never leaves a stale lock.
    The holder writes its PID into the lock file, so that the process turned away can name it
    (``LockHeld.pid``); the PID is only a hint, the lock is the flock.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise
        pid = _lock_holder(fd)
        os.close(fd)
        who = "another process" if pid is None else f"another process (PID {pid})"
        raise LockHeld(f"{what} is in use by {who} (lock {path}); stop that process first", path, pid) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass                                      # a hint only: the flock is what excludes
    return fd


def _lock_holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def release_lock(fd: int) -> None:
    try:
        try:
            os.ftruncate(fd, 0)                   # no stale PID hint once released
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
