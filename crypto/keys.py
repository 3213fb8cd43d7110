"""Ed25519 identities on disk.

Private keys are 32-byte seeds stored hex-encoded in files of mode 0600. Every way a
key file can be wrong maps to one ``KeyFileError`` whose message says what to do,
because the CLI prints it as its single line of output.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import nacl.exceptions
import nacl.signing

from crypto.hashing import sha256
from crypto.signing import Ed25519Signer

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32


class KeyFileError(Exception):
    """A key file is missing, unreadable, malformed or too widely readable."""


def generate() -> Ed25519Signer:
    return Ed25519Signer(nacl.signing.SigningKey.generate().encode())


def fingerprint(public_key: bytes) -> str:
    """A short, human-comparable name for a public key (first 8 bytes of its sha256)."""
    return sha256(public_key)[:8].hex()


def save(signer: Ed25519Signer, path: str | os.PathLike[str]) -> None:
    """Write the seed with mode 0600 from the first byte on (never briefly world-readable)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, signer.seed.hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: str | os.PathLike[str]) -> Ed25519Signer:
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise KeyFileError(f"key file {p} does not exist; run 'bftledger init' to create the cluster's keys") from None
    except OSError as e:
        raise KeyFileError(f"cannot read key file {p}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"key file {p} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"key file {p} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); run 'chmod 600 {p}'"
        )
    try:
        text = p.read_bytes().strip()
    except OSError as e:
        raise KeyFileError(f"cannot read key file {p}: {e.strerror}") from None
    try:
        seed = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise KeyFileError(f"key file {p} is not a hex-encoded Ed25519 seed") from None
    if len(seed) != SEED_SIZE:
        raise KeyFileError(f"key file {p} holds {len(seed)} bytes, an Ed25519 seed has {SEED_SIZE}")
    try:
        return Ed25519Signer(seed)
    except nacl.exceptions.CryptoError as e:  # pragma: no cover - any 32 bytes are a valid seed
        raise KeyFileError(f"key file {p} is not a valid Ed25519 seed: {e}") from None
