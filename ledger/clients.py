"""Who the clients are: the genesis clients of cluster.toml, then those registered in the ledger.

A running ledger takes a new application's key without a restart and without a wipe: the
administrator (``admin`` in cluster.toml, a client id; ``bftledger init`` names it) commits
a registration transaction (``ledger.state.op_addclient``) carrying the new client's
self-signed TLS certificate, which holds its Ed25519 key. It is executed like any other
transaction, so every replica learns the key at the same height, and a replica that
restarts or catches up by state transfer learns it again by replaying the block.

Who may register is checked where client signatures are (``bft.requests.RequestPool`` and
the pbft backups' batch check): the state machine executes what a quorum certified. The
registry itself only refuses what it can judge alone: a certificate that does not carry an
Ed25519 key, and a key registered before. Client ids are dense: genesis clients are 0..G-1,
the k-th registration (from 0) is client G+k.
"""
from __future__ import annotations

from collections.abc import Sequence

from crypto import tls

MAX_REGISTERED = 1 << 16          # registrations a ledger takes; each costs a key and a certificate in memory


class ClientRegistry:
    """The registrations executed so far, in ledger order (part of the replicated state)."""

    __slots__ = ("keys", "certs", "_index")

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.certs: list[bytes] = []
        self._index: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def register(self, cert_pem: bytes) -> int | str:
        """The new registration's index, or why it was refused (deterministic: a pure function
        of the certificate and the registrations before it)."""
        try:
            key = tls.ed25519_key_of(cert_pem)
            tls.check_self_signed(cert_pem, key)       # only the key's holder can register it
        except (tls.CertificateError, ValueError) as e:
            return f"not a client certificate: {e}"
        if key in self._index:
            return "key already registered"
        if len(self.keys) >= MAX_REGISTERED:
            return "the ledger holds as many registered clients as it takes"
        self._index[key] = len(self.keys)
        self.keys.append(key)
        self.certs.append(cert_pem)
        return len(self.keys) - 1

    def index_of(self, key: bytes) -> int | None:
        return self._index.get(key)


class ClientKeys(Sequence[bytes]):
    """Client id -> public key, live: genesis keys, then the registry's (a view, never a copy,
    so that a core, a channel's key book and the registry agree at every height)."""

    __slots__ = ("genesis", "registry")

    def __init__(self, genesis: Sequence[bytes], registry: ClientRegistry) -> None:
        self.genesis = tuple(genesis)
        self.registry = registry

    def __len__(self) -> int:
        return len(self.genesis) + len(self.registry)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        g = len(self.genesis)
        if i < 0:
            i += len(self)
        if 0 <= i < g:
            return self.genesis[i]
        if g <= i < len(self):
            return self.registry.keys[i - g]
        raise IndexError(f"no client {i}")

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self.id_of(key) is not None

    def id_of(self, key: bytes) -> int | None:
        try:
            return self.genesis.index(key)
        except ValueError:
            k = self.registry.index_of(key)
            return None if k is None else len(self.genesis) + k
