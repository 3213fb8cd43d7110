"""Authenticated channels: who is at the other end of a TCP connection, proven.

Two ways, chosen by ``cluster.toml``'s ``transport``:

``tls`` (the default): mutual TLS 1.3 through ``ssl`` and ``trio.SSLStream``. Every node
presents the self-signed certificate over its Ed25519 identity key (``crypto.tls``);
the peer's identity is the one whose public key cluster.toml pins to the key in the
certificate, never a name in it. TLS 1.3 binds both identities, both randoms and both
ephemeral key shares and the direction (client and server sign different transcript
labels), and after the handshake every record is encrypted, integrity-protected and
sequence-numbered, so frames cannot be forged, altered, replayed, reordered or moved
to another connection. Session tickets are off (no resumption, no 0-RTT replay).

``plaintext-insecure`` (``init --insecure-plaintext``, for teaching and benchmarks): a
signed-transcript handshake, then plain frames. Each side sends ``Hello(nonce)``; the
side that dialled sends ``Auth`` naming itself, the replica it dialled, direction 0 and
both nonces, signed; the side that accepted checks it and answers the same with
direction 1. An ``Auth`` therefore cannot be reflected (the direction and the named
peer differ), relayed to another node (it names its verifier) or replayed (both nonces
are fresh). What it cannot do is bind the TCP channel: an on-path attacker can let the
handshake through and then read, drop or inject frames. Never use it on a network you
do not control.

The threat model for both: the attacker can open any number of connections, send any
bytes and (for TLS) sit on the path; it holds no key of the cluster, or the key of at
most f replicas, or of any number of clients. A client key is only ever a client's.
"""
from __future__ import annotations

import logging
import os
import ssl
import tempfile
from pathlib import Path

import trio

from crypto import tls
from crypto.signing import Signer, Verifier
from ledger.clients import ClientKeys
from ledger.cluster import TRANSPORT_PLAINTEXT, Cluster, ClusterError
from ledger.rules import WireRule as W
from ledger.wire import Auth, DecodeError, Hello, decode, frame

log = logging.getLogger("ledger.net.channel")

ROLE_REPLICA = 0
ROLE_CLIENT = 1
ROLE_NAMES = {ROLE_REPLICA: "replica", ROLE_CLIENT: "client"}
DIALLER, LISTENER = 0, 1
HANDSHAKE_MAX_FRAME = 256          # Hello and Auth are ~40 and ~180 bytes
RECV_RAW = 256 * 1024              # ciphertext read from the socket at once


def peer_name(role: int, ident: int) -> str:
    return f"{ROLE_NAMES.get(role, 'role' + str(role))} {ident}"


class HandshakeError(Exception):
    """The peer did not prove an identity from cluster.toml; ``rule`` says which check failed."""

    def __init__(self, rule: W, detail: str = "") -> None:
        super().__init__(f"{rule.text}{': ' + detail if detail else ''}")
        self.rule = rule


class KeyBook:
    """Who may connect: the replicas' and the clients' public keys from cluster.toml."""

    def __init__(self, replica_keys: list[bytes], client_keys: list[bytes], verifier: Verifier) -> None:
        self.replicas = list(replica_keys)
        self.clients = list(client_keys)
        self.verifier = verifier
        self._owner: dict[bytes, tuple[int, int]] = {}
        for i, k in enumerate(self.clients):
            self._owner[k] = (ROLE_CLIENT, i)
        for i, k in enumerate(self.replicas):       # a key listed twice is a replica's, never a client's
            self._owner[k] = (ROLE_REPLICA, i)

    def key(self, role: int, ident: int) -> bytes | None:
        table = self.replicas if role == ROLE_REPLICA else self.clients if role == ROLE_CLIENT else None
        if table is None or not 0 <= ident < len(table):
            return None
        return table[ident]

    def owner(self, public_key: bytes) -> tuple[int, int] | None:
        """The (role, id) that cluster.toml pins to this public key, or the ledger's registry."""
        found = self._owner.get(public_key)
        if found is None and isinstance(self.clients, ClientKeys):
            i = self.clients.id_of(public_key)
            if i is not None:
                return ROLE_CLIENT, i
        return found

    def use_clients(self, clients: ClientKeys) -> None:
        """From now on, the clients are the live ``clients`` (cluster.toml's, then the ledger's)."""
        self.clients = clients


class Identity:
    __slots__ = ("role", "ident", "signer")

    def __init__(self, role: int, ident: int, signer: Signer) -> None:
        self.role, self.ident, self.signer = role, ident, signer


# The result of a handshake: the proven peer, the stream to use from now on (the TLS
# stream, or the socket itself) and any bytes that arrived after the handshake.
Accepted = tuple[int, int, trio.abc.Stream, bytes]


class Channels:
    """Opens (``dial``) and accepts (``accept``) authenticated links for one node.

    The caller bounds the time either takes; both raise HandshakeError on anything but
    a peer proven against cluster.toml, and ``dial`` also when the peer is not ``expect``."""

    secure = True
    name = ""

    def __init__(self, me: Identity, keys: KeyBook) -> None:
        self.me = me
        self.keys = keys

    async def dial(self, stream: trio.abc.Stream, expect: tuple[int, int]) -> Accepted:
        raise NotImplementedError

    async def accept(self, stream: trio.abc.Stream) -> Accepted:
        raise NotImplementedError

    def trust_client(self, cert_pem: bytes) -> None:
        """Accept connections from a client registered in the ledger (``ledger.clients``): its
        key is in the live key book already; TLS also needs its certificate."""


# ----------------------------------------------------------------------------- mutual TLS 1.3
class TlsChannels(Channels):
    name = "mutual TLS 1.3 (Ed25519 certificates, keys pinned by cluster.toml)"

    def __init__(self, me: Identity, keys: KeyBook, own_cert: bytes, own_key_pem: bytes,
                 replica_certs: list[bytes], client_certs: list[bytes]) -> None:
        super().__init__(me, keys)
        self._dial_ctx = _context(ssl.PROTOCOL_TLS_CLIENT, own_cert, own_key_pem, replica_certs)
        # only a replica accepts, and it accepts replicas and clients
        self._accept_ctx = (_context(ssl.PROTOCOL_TLS_SERVER, own_cert, own_key_pem, replica_certs + client_certs)
                            if me.role == ROLE_REPLICA else None)

    def trust_client(self, cert_pem: bytes) -> None:
        if self._accept_ctx is not None:
            try:
                self._accept_ctx.load_verify_locations(cadata=cert_pem.decode("ascii"))
            except (ssl.SSLError, UnicodeDecodeError, ValueError) as e:
                log.warning("a registered client's certificate cannot be trusted (%s); it cannot connect", e)

    async def dial(self, stream: trio.abc.Stream, expect: tuple[int, int]) -> Accepted:
        s = TlsStream(stream, self._dial_ctx, server_side=False)
        role, ident = await self._finish(s)
        if (role, ident) != expect:
            raise HandshakeError(W.NOT_WHO_WE_DIALLED,
                                 f"expected {peer_name(*expect)}, got {peer_name(role, ident)}")
        return role, ident, s, b""

    async def accept(self, stream: trio.abc.Stream) -> Accepted:
        if self._accept_ctx is None:
            raise HandshakeError(W.NOT_ACCEPTING)
        s = TlsStream(stream, self._accept_ctx, server_side=True)
        role, ident = await self._finish(s)
        return role, ident, s, b""

    async def _finish(self, s: "TlsStream") -> tuple[int, int]:
        await s.do_handshake()
        der = s.peer_certificate()
        if not der:
            raise HandshakeError(W.NO_CERTIFICATE)
        try:
            key = tls.ed25519_key_of(der)
        except tls.CertificateError as e:
            raise HandshakeError(W.NO_CERTIFICATE, str(e)) from None
        owner = self.keys.owner(key)
        if owner is None:
            raise HandshakeError(W.UNKNOWN_IDENTITY)
        if owner == (self.me.role, self.me.ident):
            raise HandshakeError(W.CLAIMS_TO_BE_ME)
        return owner


class TlsStream(trio.abc.Stream):
    """TLS over a trio stream through ``ssl.SSLObject`` and two memory BIOs.

    ``trio.SSLStream`` does the same with more machinery per call (conflict detectors, a
    generic retry loop, a checkpoint per operation); on this hot path, where every
    coalesced write and every read of a replica link goes through it, the lean version
    costs measurably less CPU per frame (see the note in README's channel section).
    One task may send while another receives (the reader sends when OpenSSL answers a
    post-handshake message): encrypted bytes leave in the order the BIO produced them
    because only one task at a time drains the BIO, and it drains it to the end, also
    what others added meanwhile. No lock: a trio.Lock costs a scheduler round per send."""

    def __init__(self, raw: trio.abc.Stream, ctx: ssl.SSLContext, *, server_side: bool) -> None:
        self.raw = raw
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = ctx.wrap_bio(self._in, self._out, server_side=server_side)
        self._sending = False

    async def do_handshake(self) -> None:
        obj = self._obj
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                data = await self.raw.receive_some(RECV_RAW)
                if not data:
                    raise HandshakeError(W.HANDSHAKE_CLOSED) from None
                self._in.write(data)
            except ssl.SSLError as e:
                try:
                    await self._flush()              # the alert tells the peer why
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
                raise HandshakeError(W.TLS_FAILED, e.reason or str(e)) from None
        await self._flush()

    def peer_certificate(self) -> bytes | None:
        return self._obj.getpeercert(binary_form=True)

    async def _flush(self) -> None:
        out = self._out
        if not out.pending or self._sending:      # the task that is sending takes our bytes too
            return
        self._sending = True
        try:
            while out.pending:
                await self.raw.send_all(out.read())
        finally:
            self._sending = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        try:
            self._obj.write(data)
        except ssl.SSLError as e:
            raise trio.BrokenResourceError(f"TLS: {e.reason or e}") from None
        await self._flush()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Up to ``max_bytes`` of plaintext (several records' worth); b"" once the peer is gone."""
        limit = max_bytes or RECV_RAW
        obj = self._obj
        parts: list[bytes] = []
        got = 0
        while True:
            if parts and not self._in.pending and not obj.pending():
                return b"".join(parts)             # all that arrived is decrypted: no exception needed
            try:
                data = obj.read(limit - got)
            except ssl.SSLWantReadError:
                if self._out.pending:
                    await self._flush()
                if parts:
                    return b"".join(parts)
                raw = await self.raw.receive_some(RECV_RAW)
                if not raw:
                    return b""                        # frames are length-prefixed: a cut is visible
                self._in.write(raw)
                continue
            except ssl.SSLZeroReturnError:
                return b"".join(parts)
            except ssl.SSLError as e:
                raise trio.BrokenResourceError(f"TLS: {e.reason or e}") from None
            if not data:
                return b"".join(parts)
            parts.append(data)
            got += len(data)
            if got >= limit:
                return b"".join(parts)

    async def wait_send_all_might_not_block(self) -> None:
        await self.raw.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.raw.aclose()


def _context(protocol: int, own_cert: bytes, own_key_pem: bytes, trusted: list[bytes]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if protocol == ssl.PROTOCOL_TLS_CLIENT:
        ctx.check_hostname = False          # the pinned key, not a host name, says who the peer is
    else:
        ctx.num_tickets = 0                 # no resumption: every connection proves its key afresh
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_chain(ctx, own_cert, own_key_pem)
    ctx.load_verify_locations(cadata=b"".join(trusted).decode("ascii"))
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert: bytes, key_pem: bytes) -> None:
    """``load_cert_chain`` takes only paths: hand it the private key through an anonymous
    in-memory file, so the key never reaches the disk in a second form."""
    fds = []
    try:
        paths = []
        for blob in (cert, key_pem):
            if hasattr(os, "memfd_create"):
                fd = os.memfd_create("bftledger-tls", 0)
                os.write(fd, blob)
                fds.append(fd)
                paths.append(f"/proc/self/fd/{fd}")
            else:                                               # pragma: no cover - not Linux
                f = tempfile.NamedTemporaryFile(delete=False)
                os.fchmod(f.fileno(), 0o600)
                f.write(blob)
                f.close()
                paths.append(f.name)
        try:
            ctx.load_cert_chain(paths[0], paths[1])
        finally:
            if not fds:                                         # pragma: no cover
                for p in paths:
                    os.unlink(p)
    finally:
        for fd in fds:
            os.close(fd)


def _read_certs(cluster: Cluster, role: str, keys: list[bytes]) -> list[bytes]:
    """The certificates of ``role`` 0..len(keys)-1, each checked to carry its pinned key."""
    out = []
    for i, k in enumerate(keys):
        p: Path = cluster.cert_path(role, i)
        try:
            pem = p.read_bytes()
        except FileNotFoundError:
            raise ClusterError(f"{p} is missing; copy the certs/ folder of the cluster along with cluster.toml "
                               f"(or re-create the cluster with 'bftledger init --force')") from None
        except OSError as e:
            raise ClusterError(f"cannot read {p}: {e.strerror}") from None
        try:
            if tls.ed25519_key_of(pem) != k:
                raise tls.CertificateError(f"it does not carry {role} {i}'s public key from cluster.toml")
        except tls.CertificateError as e:
            raise ClusterError(f"{p} is not {role} {i}'s certificate: {e}") from None
        out.append(pem)
    return out


def _read_own_cert(cluster: Cluster, ident: int, key: bytes) -> bytes:
    p = cluster.cert_path("client", ident)
    try:
        pem = p.read_bytes()
        if tls.ed25519_key_of(pem) != key:
            raise ClusterError(f"{p} does not carry client {ident}'s key")
    except OSError as e:
        raise ClusterError(f"cannot read {p} ({e.strerror}): 'bftledger add-client' writes it") from None
    except tls.CertificateError as e:
        raise ClusterError(f"{p} is not a client certificate: {e}") from None
    return pem


# ----------------------------------------------------------------------------- plaintext
class PlaintextChannels(Channels):
    secure = False
    name = "INSECURE plaintext (signed-transcript handshake, frames neither encrypted nor bound to the channel)"

    async def dial(self, stream: trio.abc.Stream, expect: tuple[int, int]) -> Accepted:
        me = self.me
        my_nonce = os.urandom(32)
        await stream.send_all(frame(Hello(my_nonce).encode()))
        reader = _HandshakeReader(stream)
        their = await reader.expect(Hello)
        await stream.send_all(frame(Auth(me.role, me.ident, expect[0], expect[1], DIALLER, my_nonce,
                                         their.nonce).signed(me.signer).encode()))
        auth = await reader.expect(Auth)
        self._check(auth, LISTENER, my_nonce, their.nonce)
        if (auth.role, auth.ident) != expect:
            raise HandshakeError(W.NOT_WHO_WE_DIALLED,
                                 f"expected {peer_name(*expect)}, got {peer_name(auth.role, auth.ident)}")
        return auth.role, auth.ident, stream, bytes(reader.buf)

    async def accept(self, stream: trio.abc.Stream) -> Accepted:
        me = self.me
        my_nonce = os.urandom(32)
        await stream.send_all(frame(Hello(my_nonce).encode()))
        reader = _HandshakeReader(stream)
        their = await reader.expect(Hello)
        auth = await reader.expect(Auth)
        self._check(auth, DIALLER, their.nonce, my_nonce)
        await stream.send_all(frame(Auth(me.role, me.ident, auth.role, auth.ident, LISTENER, their.nonce,
                                         my_nonce).signed(me.signer).encode()))
        return auth.role, auth.ident, stream, bytes(reader.buf)

    def _check(self, auth: Auth, direction: int, dialler_nonce: bytes, listener_nonce: bytes) -> None:
        """Every field an Auth binds, explicitly: the reflection and relay attacks fail here."""
        me = self.me
        if auth.direction != direction:
            raise HandshakeError(W.REFLECTED)
        if (auth.peer_role, auth.peer_ident) != (me.role, me.ident):
            raise HandshakeError(W.RELAYED,
                                 f"it names {peer_name(auth.peer_role, auth.peer_ident)}")
        if auth.dialler_nonce != dialler_nonce or auth.listener_nonce != listener_nonce:
            raise HandshakeError(W.WRONG_CHALLENGE)
        if (auth.role, auth.ident) == (me.role, me.ident):
            raise HandshakeError(W.CLAIMS_TO_BE_ME)
        pk = self.keys.key(auth.role, auth.ident)
        if pk is None:
            raise HandshakeError(W.UNKNOWN_IDENTITY, peer_name(auth.role, auth.ident))
        if not auth.verify(self.keys.verifier, pk):
            raise HandshakeError(W.HANDSHAKE_SIGNATURE, peer_name(auth.role, auth.ident))


class _HandshakeReader:
    """Reads the handshake's frames one at a time with a tiny cap; whatever bytes follow the
    peer's Auth (it may send at once) are handed back raw, for the connection's own decoder."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def expect(self, kind: type) -> Hello | Auth:
        body = await self._next_body()
        try:
            msg = decode(body)
        except DecodeError as e:
            raise HandshakeError(W.HANDSHAKE_MALFORMED, str(e)) from None
        if type(msg) is not kind:
            raise HandshakeError(W.HANDSHAKE_UNEXPECTED, msg.NAME)
        return msg

    async def _next_body(self) -> bytes:
        buf = self.buf
        while True:
            if len(buf) >= 4:
                length = int.from_bytes(buf[:4], "big")
                if length > HANDSHAKE_MAX_FRAME:
                    raise HandshakeError(W.HANDSHAKE_OVERSIZED, f"{length} bytes")
                if len(buf) >= 4 + length:
                    body = bytes(buf[4:4 + length])
                    del buf[:4 + length]
                    return body
            data = await self.stream.receive_some(4096)
            if not data:
                raise HandshakeError(W.HANDSHAKE_CLOSED)
            buf += data


# ----------------------------------------------------------------------------- construction
def channels_for(cluster: Cluster, role: int, ident: int, signer: Signer) -> Channels:
    """The channels of node (role, ident) of ``cluster``; ClusterError (one line) when the
    certificates the cluster needs are missing or do not match cluster.toml."""
    me = Identity(role, ident, signer)
    keys = KeyBook(cluster.replica_keys(), list(cluster.clients), cluster.verifier(capacity=4096))
    if cluster.transport == TRANSPORT_PLAINTEXT:
        return PlaintextChannels(me, keys)
    seed = getattr(signer, "seed", None)
    if seed is None:
        raise ClusterError("mutual TLS needs an Ed25519 key file")
    replica_certs = _read_certs(cluster, "replica", cluster.replica_keys())
    if role == ROLE_REPLICA:
        client_certs = _read_certs(cluster, "client", list(cluster.clients))
        own = replica_certs[ident]
    else:
        client_certs = []
        if ident < len(cluster.clients):
            own = _read_certs(cluster, "client", list(cluster.clients[:ident + 1]))[ident]
        else:                  # registered on the ledger (ledger.clients): its certificate carries its own key
            own = _read_own_cert(cluster, ident, signer.public_key)
    try:
        return TlsChannels(me, keys, own, tls.private_key_pem(seed), replica_certs, client_certs)
    except ssl.SSLError as e:
        raise ClusterError(f"cannot set up TLS for {peer_name(role, ident)}: {e.reason or e}") from None
