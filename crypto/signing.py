"""Signers and verifiers behind one small interface.

Every signature covers ``domain + 0x00 + context + data``. The domain names the message
type, so a signature made for one type never verifies as another; the context is the
cluster id (a hash of the cluster's genesis configuration, see ``ledger.cluster``), so a
signature made in one cluster never verifies in another that reuses the same keys. A
signer and a verifier are bound to one context when they are made; domains never hold
a zero byte, so the framing is unambiguous. Two implementations share the
interface: Ed25519 (PyNaCl/libsodium, used by real replicas and a share of simulator
seeds) and a keyed hash (only for the simulator's bulk seeds, where forging still fails
because the forger does not hold the key).
"""
from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from typing import Protocol

import nacl.exceptions
import nacl.signing

SIGNATURE_SIZE = 64


def _framed(domain: bytes, context: bytes, data: bytes) -> bytes:
    return domain + b"\x00" + context + data


class Signer(Protocol):
    public_key: bytes
    context: bytes

    def sign(self, domain: bytes, data: bytes) -> bytes: ...


class Verifier(Protocol):
    def verify(self, public_key: bytes, domain: bytes, data: bytes, signature: bytes) -> bool: ...


class Ed25519Signer:
    __slots__ = ("_key", "seed", "public_key", "context")

    def __init__(self, seed: bytes, context: bytes = b"") -> None:
        self._key = nacl.signing.SigningKey(seed)
        self.seed = bytes(seed)
        self.public_key = bytes(self._key.verify_key)
        self.context = bytes(context)

    def bound(self, context: bytes) -> "Ed25519Signer":
        """The same key, signing for the cluster ``context``."""
        return Ed25519Signer(self.seed, context)

    def sign(self, domain: bytes, data: bytes) -> bytes:
        return self._key.sign(_framed(domain, self.context, data)).signature


class Ed25519Verifier:
    """Checks Ed25519 signatures and remembers the ones that passed.

    A replica sees the same client request inside the request itself, the PRE-PREPARE,
    a view change and state transfer; the cache makes each distinct (key, message,
    signature) cost one check. Only successes are cached: a failure is cheap to repeat
    and must never be turned into a success by a cache collision.
    """

    __slots__ = ("_keys", "_ok", "_capacity", "checks", "hits", "context")

    def __init__(self, capacity: int = 200_000, context: bytes = b"") -> None:
        self.context = bytes(context)
        self._keys: dict[bytes, nacl.signing.VerifyKey] = {}
        self._ok: OrderedDict[tuple[bytes, bytes, bytes], None] = OrderedDict()
        self._capacity = capacity
        self.checks = 0
        self.hits = 0

    def verify(self, public_key: bytes, domain: bytes, data: bytes, signature: bytes) -> bool:
        if len(signature) != SIGNATURE_SIZE:
            return False
        msg = _framed(domain, self.context, data)
        cache_key = (public_key, signature, msg)
        if cache_key in self._ok:
            self.hits += 1
            return True
        vk = self._keys.get(public_key)
        if vk is None:
            try:
                vk = nacl.signing.VerifyKey(public_key)
            except (nacl.exceptions.CryptoError, ValueError, TypeError):
                return False
            self._keys[public_key] = vk
        self.checks += 1
        try:
            vk.verify(msg, signature)
        except nacl.exceptions.BadSignatureError:
            return False
        self._ok[cache_key] = None
        if len(self._ok) > self._capacity:
            self._ok.popitem(last=False)
        return True


class HashSigner:
    """Simulator-only signer: a keyed BLAKE2b tag, ~1 us instead of ~23 us.

    The "public key" is a hash of the secret; the matching verifier is given the
    secrets of every identity in the run, which is fine inside one simulated process
    and never used over a network.
    """

    __slots__ = ("_secret", "public_key", "context")

    def __init__(self, secret: bytes, context: bytes = b"") -> None:
        self._secret = bytes(secret)
        self.public_key = hashlib.blake2b(b"pk" + self._secret, digest_size=32).digest()
        self.context = bytes(context)

    def bound(self, context: bytes) -> "HashSigner":
        return HashSigner(self._secret, context)

    def sign(self, domain: bytes, data: bytes) -> bytes:
        return hashlib.blake2b(_framed(domain, self.context, data), key=self._secret, digest_size=64).digest()


class HashVerifier:
    __slots__ = ("_secrets", "checks", "hits", "context")

    def __init__(self, signers: list[HashSigner] | None = None, context: bytes = b"") -> None:
        self.context = bytes(context)
        self._secrets: dict[bytes, bytes] = {}
        self.checks = 0
        self.hits = 0
        for s in signers or []:
            self.register(s)

    def register(self, signer: HashSigner) -> None:
        self._secrets[signer.public_key] = signer._secret

    def verify(self, public_key: bytes, domain: bytes, data: bytes, signature: bytes) -> bool:
        secret = self._secrets.get(public_key)
        if secret is None or len(signature) != SIGNATURE_SIZE:
            return False
        self.checks += 1
        expected = hashlib.blake2b(_framed(domain, self.context, data), key=secret, digest_size=64).digest()
        return hmac.compare_digest(expected, signature)
