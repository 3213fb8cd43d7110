"""X.509 material for mutual TLS 1.3, made from the nodes' own Ed25519 identity keys.

Each node (replica or client) gets one self-signed certificate over its identity key,
written by ``bftledger init``. Trust does not come from the certificate chain: a peer
is accepted only when the public key its certificate carries is pinned in cluster.toml,
and TLS 1.3 makes it prove possession of the matching private key (CertificateVerify,
signed over the handshake transcript, which holds both sides' randoms and ephemeral
keys and the direction). The chain check OpenSSL insists on is satisfied by putting
the cluster's own certificates in the trust store; a certificate that chains to one of
them but carries an unpinned key is still refused by the pinning.

Certificates are deterministic (fixed serial and validity, Ed25519 signatures are
deterministic), so ``init`` can be re-run on the same keys and give the same files.
"""
from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)


class CertificateError(ValueError):
    """A certificate is unreadable or not over the key it should carry."""


def make_certificate(seed: bytes, common_name: str) -> bytes:
    """A PEM self-signed certificate over the Ed25519 key with this 32-byte seed."""
    key = Ed25519PrivateKey.from_private_bytes(seed)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public = key.public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(public)
            .serial_number(int.from_bytes(raw[:16], "big") >> 1 or 1)
            .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, None))
    return cert.public_bytes(serialization.Encoding.PEM)


def private_key_pem(seed: bytes) -> bytes:
    """The PKCS#8 PEM form of the key, for ``ssl.SSLContext.load_cert_chain``."""
    return Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def ed25519_key_of(cert_bytes: bytes) -> bytes:
    """The raw 32-byte Ed25519 public key a certificate (DER or PEM) carries; CertificateError otherwise."""
    try:
        if cert_bytes.lstrip().startswith(b"-----BEGIN"):
            cert = x509.load_pem_x509_certificate(cert_bytes)
        else:
            cert = x509.load_der_x509_certificate(cert_bytes)
        public = cert.public_key()
    except (ValueError, TypeError) as e:
        raise CertificateError(f"not an X.509 certificate ({e})") from None
    if not isinstance(public, Ed25519PublicKey):
        raise CertificateError(f"the certificate's key is {type(public).__name__}, not Ed25519")
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def check_self_signed(cert_pem: bytes, public_key: bytes) -> None:
    """Raise CertificateError unless ``cert_pem`` is self-signed by the key ``public_key``."""
    if ed25519_key_of(cert_pem) != public_key:
        raise CertificateError("the certificate carries another public key")
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(cert.signature, cert.tbs_certificate_bytes)
    except InvalidSignature:
        raise CertificateError("the certificate is not signed by its own key") from None
