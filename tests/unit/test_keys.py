"""crypto.keys: Ed25519 identities on disk and every way a key file can be wrong."""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from crypto import keys
from crypto.keys import KeyFileError
from crypto.signing import Ed25519Signer, Ed25519Verifier

DOMAIN = b"bftledger/v1/test"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _write(p: Path, content: bytes, mode: int = 0o600) -> Path:
    p.write_bytes(content)
    os.chmod(p, mode)
    return p


def test_generate_save_load_roundtrip(tmp_path: Path):
    s = keys.generate()
    p = tmp_path / "keys" / "replica-0.key"          # parent directory is created
    keys.save(s, p)
    loaded = keys.load(p)
    assert isinstance(loaded, Ed25519Signer)
    assert loaded.seed == s.seed
    assert loaded.public_key == s.public_key
    assert len(s.seed) == keys.SEED_SIZE and len(s.public_key) == keys.PUBLIC_KEY_SIZE
    # the loaded key signs, and its signatures verify under the original public key
    sig = loaded.sign(DOMAIN, b"hello")
    assert Ed25519Verifier().verify(s.public_key, DOMAIN, b"hello", sig)
    # the file is the hex seed and a newline, nothing else
    assert p.read_bytes() == s.seed.hex().encode() + b"\n"
    # str paths work as well as Path objects
    assert keys.load(str(p)).seed == s.seed


def test_generate_gives_distinct_keys():
    assert keys.generate().seed != keys.generate().seed


def test_saved_file_mode_is_0600(tmp_path: Path):
    p = tmp_path / "k.key"
    old = os.umask(0)          # even with a permissive umask
    try:
        keys.save(keys.generate(), p)
    finally:
        os.umask(old)
    assert _mode(p) == 0o600


def test_save_over_world_readable_file_tightens_mode(tmp_path: Path):
    p = _write(tmp_path / "k.key", b"old contents that are longer than a seed " * 4, 0o644)
    s = keys.generate()
    keys.save(s, p)
    assert _mode(p) == 0o600
    assert keys.load(p).seed == s.seed          # truncated, not appended to


def test_load_accepts_owner_read_only_and_uppercase(tmp_path: Path):
    s = keys.generate()
    p = _write(tmp_path / "k.key", s.seed.hex().upper().encode(), 0o400)   # no trailing newline
    assert keys.load(p).seed == s.seed


def test_load_missing_file(tmp_path: Path):
    p = tmp_path / "nope.key"
    with pytest.raises(KeyFileError, match="does not exist") as ei:
        keys.load(p)
    assert str(p) in str(ei.value)
    assert "bftledger init" in str(ei.value)


def test_load_directory(tmp_path: Path):
    d = tmp_path / "adir"
    d.mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        keys.load(d)


def test_load_path_through_a_file(tmp_path: Path):
    """stat fails with ENOTDIR (not FileNotFoundError): still a KeyFileError."""
    f = _write(tmp_path / "plain", b"x")
    with pytest.raises(KeyFileError, match="cannot read key file"):
        keys.load(f / "k.key")


def test_load_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    p = tmp_path / "k.key"
    keys.save(keys.generate(), p)
    os.chmod(p, 0o000)
    try:
        if not os.access(p, os.R_OK):
            # an ordinary user really cannot read it
            with pytest.raises(KeyFileError, match="cannot read key file"):
                keys.load(p)
        else:
            # root reads through mode 000; make the read itself fail as it would for a user
            def denied(self: Path) -> bytes:
                raise PermissionError(13, "Permission denied", str(self))

            monkeypatch.setattr(Path, "read_bytes", denied)
            with pytest.raises(KeyFileError, match="cannot read key file") as ei:
                keys.load(p)
            assert "Permission denied" in str(ei.value)
    finally:
        os.chmod(p, 0o600)


def test_load_stat_permission_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    p = tmp_path / "k.key"
    keys.save(keys.generate(), p)

    def denied(self: Path, *a, **kw):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "stat", denied)
    with pytest.raises(KeyFileError, match="cannot read key file.*Permission denied"):
        keys.load(p)


@pytest.mark.parametrize("content, message", [
    (b"ab" * 31 + b"\n", "holds 31 bytes"),
    (b"ab" * 33 + b"\n", "holds 33 bytes"),
    (b"", "holds 0 bytes"),
    (b"\n", "holds 0 bytes"),
    (b"zz" * 32 + b"\n", "not a hex-encoded"),
    (b"ab" * 31 + b"a\n", "not a hex-encoded"),       # odd number of hex digits
    (b"\xff\xfe" * 32, "not a hex-encoded"),          # not even ASCII
    (b"0x" + b"ab" * 32, "not a hex-encoded"),
])
def test_load_malformed_content(tmp_path: Path, content: bytes, message: str):
    p = _write(tmp_path / "k.key", content)
    with pytest.raises(KeyFileError, match=message) as ei:
        keys.load(p)
    assert str(p) in str(ei.value)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666, 0o777, 0o610, 0o601])
def test_load_too_widely_readable(tmp_path: Path, mode: int):
    s = keys.generate()
    p = tmp_path / "k.key"
    keys.save(s, p)
    os.chmod(p, mode)
    with pytest.raises(KeyFileError, match="readable by others") as ei:
        keys.load(p)
    msg = str(ei.value)
    assert f"{mode:04o}" in msg
    assert f"chmod 600 {p}" in msg
    os.chmod(p, 0o600)
    assert keys.load(p).seed == s.seed          # and fixing the mode fixes the load


def test_key_file_error_is_one_line(tmp_path: Path):
    """The CLI prints the message as its single line of output."""
    cases = [tmp_path / "missing.key", _write(tmp_path / "short.key", b"ab"),
             _write(tmp_path / "wide.key", b"ab" * 32, 0o644), _write(tmp_path / "hex.key", b"q" * 64)]
    for p in cases:
        with pytest.raises(KeyFileError) as ei:
            keys.load(p)
        assert "\n" not in str(ei.value)


def test_fingerprint_stable_and_16_hex_chars():
    s = Ed25519Signer(bytes(range(32)))
    fp = keys.fingerprint(s.public_key)
    assert re.fullmatch(r"[0-9a-f]{16}", fp)
    assert keys.fingerprint(s.public_key) == fp
    assert keys.fingerprint(Ed25519Signer(bytes(range(32))).public_key) == fp
    # pinned: the first 8 bytes of sha256 of the public key of seed 00..1f
    import hashlib
    assert fp == hashlib.sha256(s.public_key).digest()[:8].hex()
    assert s.public_key.hex() == "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    assert keys.fingerprint(keys.generate().public_key) != fp
