"""The ledger's client API: put, get, delete, compare-and-set, each with a verified receipt.

```python
async with ledger.client.connect(cluster_dir) as client:   # under trio or asyncio
    receipt = await client.put("alice", b"100")     # returns once committed
    value = await client.get("alice")               # b"100" (not ordered: no block; see Client.get)
    receipt.verify(cluster_dir)                     # offline, public keys only
with ledger.client.SyncClient(cluster_dir) as client:   # the same, blocking, from any thread
    client.put("bob", "50")
```

One client object carries many concurrent requests (up to 2048 in flight; more wait).
Every write returns a ``Receipt`` built from a block the client has checked against the
cluster's public keys (its certificate and Merkle roots), holding the client's own
signed request and the result the replicas replied; the block comes from a replica that
replied, or another one if that fails.

Event loops: the client is trio code. ``connect`` looks at the loop it is entered on:
under trio it yields a ``Client`` running in the caller's loop; under asyncio an
``AsyncioClient`` with the same methods, whose ``Client`` runs on a trio loop in a
thread of its own (``ledger.clientthread``; no anyio needed). ``SyncClient`` does the
same for blocking code, from any number of threads; inside a running event loop it
raises ``InsideEventLoop`` rather than stall it.

Limits: a key is at most ``MAX_KEY`` (1,024) bytes of UTF-8 and one operation at most
``MAX_OP`` (65,536, 64 KiB) bytes encoded, which a put of key and value totalling
65,525 bytes always fits. Anything larger raises ``TooLarge`` before anything is sent.
A request fails with ``Unavailable`` after ``timeout`` seconds, or within about half a
second when every replica refuses the connection (the cluster is not running).

The network session under it is ``ledger.net.session.ClientSession`` (authenticated
connections, ``ledger.net.channel``/``transport``), whose decisions about replies,
redirects and retransmission are made by the sans-I/O ``ledger.clientcore``; the messages
are ``ledger.wire``'s. None of them depends on a consensus protocol, so this module, like
all of ``ledger``, imports nothing from ``bft`` (the layers are crypto <- ledger <- bft;
``tests/unit/test_layers.py`` checks it).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import trio

from crypto.merkle import MerkleTree
from ledger import state
from ledger.block import Block, BlockFormatError
from ledger.certificate import certificate_error
from ledger.clientcore import Outcome
from ledger.clientthread import (DEFAULT_TIMEOUT, AsyncioClient, InsideEventLoop, SyncClient, close_on_asyncio,
                                 open_on_asyncio, running_async_library)
from ledger.cluster import Cluster, ClusterError, load
from ledger.net.session import ClientSession, query_status
from ledger.net.session import Unavailable as _SessionUnavailable
from ledger.readproof import ReadProof, ReadProofError
from ledger.receipt import Receipt, ReceiptError
from ledger import historyclient
from ledger.historyclient import History, ScanResult, Version
from ledger.wire import MAX_OP, MAX_QUERY_ITEMS, MAX_U64, DecodeError, Request, decode

MAX_KEY = state.MAX_KEY           # bytes of UTF-8 in a key (1 KiB)
RECEIPT_FETCH_TIMEOUT = 2.0
UNCERTAIN_KEPT = 4096             # requests outcome(request_id) can name, per client object
# A read not ordered that has no 2f+1 matching answers (paxos: the leader's) this soon is ordered
# instead. Replicas answer at once unless they are below the client's floor, and catch up
# within milliseconds when they are merely behind; a longer wait only delays the fallback.
FAST_READ_TIMEOUT = 0.5
BLOCK_CACHE = 256


class LedgerError(Exception):
    """Base of the errors this API raises for a reason outside the caller's code."""


class Unavailable(LedgerError):
    """Nothing was committed in time: too few replicas reachable or working (the message says which)."""


class Uncertain(Unavailable):
    """A write was sent but not confirmed in time: it may still commit (or have committed).

    ``request_id`` ("CLIENT-TIMESTAMP") names it to ``Client.outcome``, which sends the very
    same signed request again and returns its receipt; the ledger executes a request once,
    so asking never writes twice. ``request`` holds the signed request's bytes: keep them
    (the CLI writes them to DIR/pending/) to ask from another process."""

    def __init__(self, message: str, request: Request, advice: str = "outcome() tells what became of it") -> None:
        self.reason = message
        self.request_id = request_id(request)
        self.request = request.encode()
        super().__init__(f"{message}; the request may still commit: it is {self.request_id}, and {advice}")


class ReadProofUnavailable(Unavailable):
    """No replica gave a read proof that verifies (the message gives each replica's reason)."""


class Refused(LedgerError):
    """The replicas refused the request without executing it (e.g. a stale timestamp)."""


class Forgotten(LedgerError):
    """``outcome`` of a request below the client's window: the replicas no longer remember
    whether it executed (they keep each client's last 4,096 executed requests), and it can
    no longer execute. Whether it did is in the ledger's history, not in its client table."""


class ReceiptUnavailable(LedgerError):
    """Committed, but no replica served a block that verifies as its receipt."""


class TooLarge(LedgerError, ValueError):
    """A key over ``MAX_KEY`` bytes or an operation over ``MAX_OP`` bytes, refused before
    anything is sent (the replicas would drop it unanswered, so it could only time out).
    A ValueError too, because it is the caller's input that is wrong."""


def check_operation(op: bytes) -> bytes:
    """``op`` if it is within ``MAX_OP``, else ``TooLarge`` with the sizes (the CLI checks with
    it before it connects)."""
    if len(op) > MAX_OP:
        raise TooLarge(f"the operation is {len(op):,} bytes encoded, over the ledger's limit of {MAX_OP:,} bytes "
                       f"(64 KiB) per operation; a put whose key and value total {MAX_OP - 11:,} bytes or less "
                       "always fits")
    return op


def registration_path(cluster: Cluster, client: int) -> Path:
    """Where ``bftledger add-client`` keeps a registered client's registration receipt."""
    return cluster.cert_path("client", client).with_suffix(".registration.json")


def registration_of(cluster: Cluster, client: int) -> Receipt | None:
    """The registration receipt of a client registered on the ledger (None for cluster.toml's)."""
    if client < len(cluster.clients):
        return None
    path = registration_path(cluster, client)
    try:
        return Receipt.from_json(path.read_bytes())
    except OSError as e:
        raise ClusterError(f"cannot read {path} ({e.strerror}): client {client}'s receipts need its registration "
                           "receipt, which 'bftledger add-client' writes") from None
    except ReceiptError as e:
        raise ClusterError(f"{path}: {e}") from None


def request_id(req: Request) -> str:
    return f"{req.client}-{req.timestamp}"


def _value_bytes(value: bytes | str) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"a value is bytes or str, not {type(value).__name__}")


def _check_key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a key is a str, not {type(key).__name__}")
    size = len(key.encode())
    if size > MAX_KEY:
        raise TooLarge(f"the key is {size:,} bytes of UTF-8, over the ledger's limit of {MAX_KEY:,} bytes per key")
    return key


class Client:
    """Made by ``connect``; every method may be called from many tasks at once."""

    def __init__(self, cluster: Cluster, session: ClientSession, timeout: float | None) -> None:
        self.cluster = cluster
        self.id = session.id
        self.timeout = timeout
        self._session = session
        self._verifier = cluster.verifier()
        self._blocks: OrderedDict[int, tuple[Block, MerkleTree, MerkleTree]] = OrderedDict()
        self._attested: OrderedDict[int, list[tuple[int, bytes]]] = OrderedDict()
        self._attested_hash: dict[int, tuple[bytes, int]] = {}
        self._attesting: dict[int, trio.Event] = {}
        self._proof_turn = -1                  # which replica get_verified asks first (rotates)
        self.read_proofs_rejected = 0          # answers to get_verified that did not verify (a lying replica)
        self._fetching: dict[int, trio.Event] = {}
        self._uncertain: OrderedDict[str, Request] = OrderedDict()     # for outcome(request_id)
        self.registration = registration_of(cluster, self.id)         # proves a registered client's key

    # ------------------------------------------------------------------ operations
    async def put(self, key: str, value: bytes | str) -> Receipt:
        return await self._write(state.op_put(_check_key(key), _value_bytes(value)))

    async def delete(self, key: str) -> Receipt:
        """``receipt.ok`` tells whether the key existed."""
        return await self._write(state.op_delete(_check_key(key)))

    async def cas(self, key: str, expected: bytes | str | None, new: bytes | str) -> Receipt:
        """Set ``key`` to ``new`` if its value is ``expected`` (None: the key is absent); ``receipt.ok``
        tells whether it swapped, ``receipt.value`` holds the current value when it did not."""
        exp = None if expected is None else _value_bytes(expected)
        return await self._write(state.op_cas(_check_key(key), exp, _value_bytes(new)))

    async def transact(self, puts: dict[str, bytes | str] | None = None, deletes: list[str] | None = None,
                       require: dict[str, bytes | str | None] | None = None) -> Receipt:
        """One atomic transaction over several keys: every put and delete applies if every
        requirement holds (``require[key]`` is its expected value, None: the key is absent),
        else none does. ``receipt.ok`` tells which; ``receipt.failed`` maps each unmet
        requirement's key to its current value. One transaction in the ledger, one receipt."""
        puts_b = {_check_key(k): _value_bytes(v) for k, v in (puts or {}).items()}
        dels = [_check_key(k) for k in (deletes or [])]
        req = {_check_key(k): None if v is None else _value_bytes(v) for k, v in (require or {}).items()}
        why = state.txn_error(puts_b, dels, req)
        if why is not None:
            raise ValueError(why)
        return await self._write(state.op_txn(puts_b, dels, req))

    async def outcome(self, request: str | bytes | Uncertain) -> Receipt:
        """What became of a write that raised ``Uncertain``: its receipt, whether it committed
        before or commits now (the same signed request is sent again; the ledger executes it
        at most once). ``request`` is the ``Uncertain`` itself, its ``request_id`` (this client
        object must have raised it), or its ``request`` bytes (from any process with this
        client's key). Raises ``Uncertain`` again if it is still not confirmed, ``Refused``
        if the replicas refuse it, ``Forgotten`` if it is too old for them to tell."""
        req = self._request_of(request)
        return await self._receipt(await self._send(req, write=True, asking=True))

    async def register_client(self, certificate: bytes) -> tuple[int, Receipt]:
        """Register a new client on the running ledger (only the administrator's key may:
        cluster.toml's ``admin``). ``certificate`` is the new client's self-signed TLS
        certificate (``crypto.tls.make_certificate``), which carries its key. Returns its
        client id and the receipt; every replica accepts it from the block on."""
        if self.cluster.admin is None or self.id != self.cluster.admin:
            raise Refused(f"only the administrator (client {self.cluster.admin}) registers clients; this is client "
                          f"{self.id}")
        r = await self._write(check_operation(state.op_addclient(bytes(certificate))))
        if not r.ok:
            raise Refused(f"the ledger refused the registration: {(r.value or b'').decode(errors='replace')}")
        return len(self.cluster.clients) + int(r.value), r

    async def get(self, key: str, linearizable: bool = False) -> bytes | None:
        """The value of ``key``, or None when it is absent. No block, unless the read is ordered.

        By default the read is not ordered: pbft accepts it once 2f+1 replicas answered the
        same value, and the same height since which the key held it (Castro & Liskov, TOCS
        2002, §5.1.3); paxos once the leader confirmed with a majority that it still leads
        (a read index, Ongaro's thesis §6.4). Either falls back to an ordered read (a block)
        when the answers differ or do not come within ``FAST_READ_TIMEOUT``. What it returns:

        - always a value the key held in the committed ledger, at a height at or above this
          client's floor: its own latest write, and the state its latest read saw. So a
          client reads its own writes and never goes back in time, even with f lying
          replicas (2f+1 matching answers hold f+1 honest ones);
        - paxos: linearizable (every write acknowledged before the read began is seen);
        - pbft with every replica honest: linearizable too (the 2f+1 answers meet the f+1
          replicas that executed any acknowledged write, and all describe one stretch of
          the ledger). With faulty replicas it may miss a write another client saw
          acknowledged just before: writes complete with f+1 matching replies, and f of
          them may come from faulty replicas that then answer the read with the old value.
          It is never a value the key did not hold.

        ``linearizable=True`` orders the read through consensus like a write: linearizable
        in both modes whatever f replicas do, at the price of a block (``bftledger get
        --linearizable``)."""
        op = state.op_get(_check_key(key))
        if not linearizable and not self._session.refused_by_all():      # (else the ordered path fails fast)
            rp = await self._session.read(op, FAST_READ_TIMEOUT)
            if rp.result is not None:
                return _get_value(key, rp.result)
        out = await self._submit(op)
        return _get_value(key, out.result)

    async def get_verified(self, key: str, at_height: int | None = None) -> "ReadProof":
        """The value of ``key`` with a proof: a ``ReadProof`` whose ``.value`` (None: absent) the
        key held at ``.height``, and whose ``.verify(cluster_dir)`` checks it offline.

        ``at_height=None`` asks for a replica's current state, at or above this client's
        floor (its latest write or read), so it never goes back in time; a height reads the
        state as it was after that block (replicas rebuild it by re-executing, within a
        bound: ``bft.runtime.proofs``). Replicas are asked one at a time until one's answer
        verifies, f+1 attestations included (one in paxos); an answer that does not is
        counted (``read_proofs_rejected``) and the next replica asked. Raises
        ``ReadProofUnavailable`` with every replica's reason when none verifies."""
        from ledger.verifiedread import verified_read

        return await verified_read(self, _check_key(key), at_height)

    async def history(self, key: str, limit: int = 100, after: int | None = None) -> History:
        """Every version of ``key`` (``Version``: value or deletion, height, and the writing
        transaction's ``Receipt``, which verifies offline), oldest first: at most ``limit``
        above height ``after``; ``.more`` says whether to ask again with
        ``after=page[-1].height``. Each version is checked against its certified block, so
        no replica can invent one; omitting one takes f+1 lying replicas in pbft
        (``ledger.historyclient``)."""
        _check_key(key)
        if type(limit) is not int or not 1 <= limit <= MAX_QUERY_ITEMS:
            raise ValueError(f"limit is an int in 1..{MAX_QUERY_ITEMS}, not {limit!r}")
        if after is not None and (type(after) is not int or not 0 <= after <= MAX_U64):
            raise ValueError(f"after is a height (an int >= 0) or None, not {after!r}")
        return await historyclient.history(self, key, limit, after or 0)

    async def scan(self, prefix: str | None = None, start: str | None = None, end: str | None = None,
                   at_height: int | None = None, limit: int = 1000, verified: bool = False) -> ScanResult:
        """(key, value) pairs in key order: keys beginning with ``prefix``, from ``start``
        (inclusive) below ``end`` (exclusive), at most ``limit``, in the state after block
        ``at_height`` (None: a replica's current state); ``.height`` says which state.
        One replica answers. ``verified=True``: every page comes with probe proofs
        (``ledger.rangeproof``) checked against the state root of the certified, attested
        block at that height, so no replica can add, drop or alter a pair; ``.proof``
        re-checks offline. Else the pairs are as the replica said."""
        for v in (prefix, start, end):
            if v is not None:
                _check_key(v)
        if type(limit) is not int or not 1 <= limit <= historyclient.MAX_SCAN_LIMIT:
            raise ValueError(f"limit is an int in 1..{historyclient.MAX_SCAN_LIMIT}, not {limit!r}")
        if at_height is not None and (type(at_height) is not int or not 1 <= at_height <= MAX_U64):
            raise ValueError(f"at_height is a height (an int >= 1) or None, not {at_height!r}")
        return await historyclient.scan(self, prefix or "", start or "", end, at_height or 0, limit, bool(verified))

    def blocks(self, from_height: int = 1, *, max_lag: int | None = None):
        """``async for block in client.blocks(from_height=1)``: committed blocks with their
        certificates, each verified on arrival, in order, exactly once, following the head
        live (``ledger.stream.BlockStream``; ``max_lag``: end with ``Lagging`` when further
        behind than that). Trio only."""
        from ledger.stream import BlockStream    # (it imports this module)

        everyone = list(range(self.cluster.n))

        async def attest(height: int, block_hash: bytes, batch_size: int) -> None:
            await self._attestations(height, block_hash, batch_size, everyone)

        return BlockStream(self.cluster, self._session, from_height, max_lag=max_lag, timeout=self.timeout,
                           attest=attest)

    async def status(self, timeout: float = 2.0) -> list[dict]:
        """Every replica's self-report (see ``bftledger status``)."""
        return await query_status(self.cluster, self.id, self._session.signer, timeout,
                                  channels=self._session.channels)

    # ------------------------------------------------------------------ internals
    async def _submit(self, op: bytes, write: bool = False) -> Outcome:
        check_operation(op)
        return await self._send(self._session.sign(op), write)

    async def _send(self, req: Request, write: bool, asking: bool = False) -> Outcome:
        try:
            out = await self._session.submit_request(req, self.timeout)
        except _SessionUnavailable as e:
            if write and (e.sent or asking):
                rid = request_id(req)
                self._uncertain[rid] = req
                while len(self._uncertain) > UNCERTAIN_KEPT:
                    self._uncertain.popitem(last=False)
                raise Uncertain(str(e), req) from None
            raise Unavailable(str(e)) from None
        if out.height == 0:                       # no block: f+1 replicas (the leader in paxos) refused it
            _status, why = _decode(out.result)
            text = (why or b"").decode(errors="replace")
            if asking and why == state.STALE_TEXT:
                raise Forgotten(f"request {request_id(req)} is older than the last 4,096 executed requests of "
                                f"client {req.client}, which is all the replicas remember: it cannot execute now, "
                                "and whether it did earlier is in the ledger's history") from None
            raise Refused(f"the replicas refused the request: {text}; "
                          "is another process using the same client key? give each its own (init --clients N)")
        self._uncertain.pop(request_id(req), None)
        return out

    def _request_of(self, request: str | bytes | Uncertain) -> Request:
        if isinstance(request, Uncertain):
            request = request.request
        if isinstance(request, str):
            req = self._uncertain.get(request)
            if req is None:
                raise LedgerError(f"this client holds no uncertain request {request!r}; pass the request's bytes "
                                  "(Uncertain.request) to ask from another client object")
            return req
        if not isinstance(request, (bytes, bytearray)):
            raise TypeError(f"outcome() takes an Uncertain, a request id or request bytes, not "
                            f"{type(request).__name__}")
        try:
            req = decode(bytes(request))
        except DecodeError as e:
            raise ValueError(f"not a signed request: {e}") from None
        if type(req) is not Request:
            raise ValueError(f"not a signed request but a {req.NAME}")
        if req.client != self.id:
            raise ValueError(f"the request is client {req.client}'s; this client is {self.id}")
        return req

    async def _write(self, op: bytes) -> Receipt:
        out = await self._submit(op, write=True)
        return await self._receipt(out)

    async def _receipt(self, out: Outcome) -> Receipt:
        tx = out.request.encode()
        n = self.cluster.n
        candidates = list(out.replicas) + [r for r in range(n) if r not in out.replicas]
        errors = []
        for attempt, r in enumerate(candidates):
            entry = await self._block(out.height, out.index, r, use_cache=attempt == 0)
            if entry is None:
                errors.append(f"replica {r}: no block")
                continue
            block, tx_tree, results_tree = entry
            try:
                if not out.index < len(block.txs) or block.txs[out.index] != tx:
                    raise ReceiptError(f"block {out.height} does not hold this transaction at index {out.index}")
                if block.results[out.index] != out.result:
                    raise ReceiptError("the block's result differs from the one the replicas replied")
                # No second Receipt.verify here: the block's certificate and both of its roots were
                # checked when it was fetched, the proofs come from trees over its very contents, the
                # attestations are checked as they arrive, and the transaction is this client's own.
                attestations = await self._attestations(block.height, block.hash(), len(block.txs), candidates)
                r = Receipt.from_block(block, out.index, self.cluster.mode, cluster_id=self.cluster.cluster_id,
                                       tx_tree=tx_tree, results_tree=results_tree, attestations=attestations)
                r.registration = self.registration
                return r
            except ReceiptError as e:
                self._blocks.pop(out.height, None)
                errors.append(f"replica {r}: {e}")
        raise ReceiptUnavailable(f"committed at height {out.height}, index {out.index}, but no replica served a "
                                 f"verifiable receipt ({'; '.join(errors)})")

    async def _attestations(self, height: int, block_hash: bytes, batch_size: int,
                            candidates: list[int]) -> list[tuple[int, bytes]]:
        """f+1 (pbft) or 1 (paxos) valid signatures on the hash of the block at ``height``, asked
        of every replica in ``candidates`` concurrently; cached per height like blocks (a
        cached set for another hash, from a header a liar served, is not reused)."""
        while True:
            hit = self._attested.get(height)
            if hit is not None and self._attested_hash.get(height) == (block_hash, batch_size):
                return hit
            ev = self._attesting.get(height)
            if ev is None:
                break
            await ev.wait()
        c = self.cluster
        need = c.quorums.attest
        good: dict[int, bytes] = {}
        done = self._attesting[height] = trio.Event()

        async def ask(r: int) -> None:
            a = await self._session.fetch_attestation(r, height, RECEIPT_FETCH_TIMEOUT)
            if a is None or a.block_hash != block_hash or a.batch_size != batch_size or a.replica != r:
                return
            if a.verify(self._verifier, c.replicas[r].public_key):
                good[r] = a.sig
            if len(good) >= need:
                nursery.cancel_scope.cancel()

        try:
            # every replica at once (a signature per block each, cached on their side): waiting
            # for one that just died would stall the receipt for a whole fetch timeout
            async with trio.open_nursery() as nursery:
                for r in candidates:
                    nursery.start_soon(ask, r)
        finally:
            del self._attesting[height]
            done.set()
        if len(good) < need:
            raise ReceiptError(f"only {len(good)} replicas attested block {height}'s hash, {need} are needed "
                               "(f+1 in pbft, one in paxos)")
        result = sorted(good.items())[:need]
        self._attested[height] = result
        self._attested_hash[height] = (block_hash, batch_size)
        while len(self._attested) > BLOCK_CACHE:
            self._attested_hash.pop(self._attested.popitem(last=False)[0], None)
        return result

    async def _block(self, height: int, index: int, replica: int, use_cache: bool):
        """A block that decodes, matches its roots and carries a valid certificate (cached per height)."""
        while use_cache:
            hit = self._blocks.get(height)
            if hit is not None:
                return hit
            ev = self._fetching.get(height)
            if ev is None:
                break
            await ev.wait()
        ev = trio.Event()
        mine = height not in self._fetching
        if mine:
            self._fetching[height] = ev
        try:
            raw = await self._session.fetch_block(replica, height, index, RECEIPT_FETCH_TIMEOUT)
            if raw is None:
                return None
            try:
                block = Block.decode(raw)
            except BlockFormatError:
                return None
            if block.height != height or block.sequence != height or block.check_roots() is not None:
                return None
            c = self.cluster
            if certificate_error(c.mode, c.f, c.replica_keys(), block.view, block.sequence, block.batch_root,
                                 block.cert, self._verifier) is not None:
                return None
            entry = (block, MerkleTree(block.txs), MerkleTree(block.results))
            self._blocks[height] = entry
            while len(self._blocks) > BLOCK_CACHE:
                self._blocks.popitem(last=False)
            return entry
        finally:
            if mine:
                del self._fetching[height]
                ev.set()


def _get_value(key: str, result: bytes) -> bytes | None:
    status, value = _decode(result)
    if status != state.OK:
        raise LedgerError(f"get {key!r} failed with status {state.STATUS_NAMES.get(status, status)}")
    return value


def _decode(result: bytes) -> tuple[int, bytes | None]:
    try:
        return state.decode_result(result)
    except Exception:
        raise LedgerError("the replicas returned a malformed result") from None


def _resolve(cluster_dir: str | os.PathLike[str], client: int | None):
    """Load the cluster and the client's key; errors are ClusterError / KeyFileError (one line each)."""
    cluster = load(cluster_dir)
    cid = 0 if client is None else client
    if type(cid) is not int or cid < 0:
        raise ClusterError(f"client {cid!r} is not a client id")
    if cid >= len(cluster.clients):
        # a client registered on the running ledger (ledger.clients): its key is in the ledger,
        # not in cluster.toml; the replicas check it at the handshake
        if not cluster.key_path("client", cid).exists():
            raise ClusterError(f"client {cid} is not in {Path(cluster_dir) / 'cluster.toml'} (ids 0.."
                               f"{len(cluster.clients) - 1}) and {cluster.key_path('client', cid)} does not exist: "
                               f"register a new client with 'bftledger add-client {cluster_dir}'")
        return cluster, cid, cluster.load_client_key(cid)
    signer = cluster.load_client_key(cid)
    if signer.public_key != cluster.clients[cid]:
        raise ClusterError(f"{cluster.key_path('client', cid)} does not match client {cid}'s public key "
                           "in cluster.toml")
    return cluster, cid, signer


@asynccontextmanager
async def _open(cluster_dir: str | os.PathLike[str], client: int | None,
                timeout: float | None) -> AsyncIterator[Client]:
    """``connect`` under trio: the session's connection tasks run in a nursery of the caller's."""
    cluster, cid, signer = _resolve(cluster_dir, client)
    session = ClientSession(cluster, cid, signer)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            try:
                yield Client(cluster, session, timeout)
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as eg:
        leaf = eg
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if leaf is eg:
            raise
        raise leaf from None


class _Connection:
    """What ``connect`` returns: an async context manager that looks, when entered, at the
    event loop it runs on (the client was trio-only, and asyncio failed deep inside trio)."""

    def __init__(self, cluster_dir: str | os.PathLike[str], client: int | None, timeout: float | None) -> None:
        self._args = (cluster_dir, client, timeout)
        self._trio: AbstractAsyncContextManager[Client] | None = None
        self._thread = None                    # ledger.clientthread.TrioThread, under asyncio
        self._entered = False

    async def __aenter__(self) -> Client | AsyncioClient:
        if self._entered:
            raise RuntimeError("a connect(...) object is entered once; call connect() again for another client")
        self._entered = True
        library = running_async_library()
        if library == "trio":
            self._trio = _open(*self._args)
            return await self._trio.__aenter__()
        if library == "asyncio":
            self._thread, client = await open_on_asyncio(*self._args)
            return client
        raise RuntimeError("ledger.client.connect() runs under trio or asyncio; without an event loop use "
                           "ledger.client.SyncClient")

    async def __aexit__(self, *exc_info: object) -> bool | None:
        if self._trio is not None:
            return await self._trio.__aexit__(*exc_info)      # type: ignore[arg-type]
        await close_on_asyncio(self._thread, failing=exc_info[0] is not None)
        return None


def connect(cluster_dir: str | os.PathLike[str], client: int | None = None, *,
            timeout: float | None = DEFAULT_TIMEOUT) -> _Connection:
    """``async with connect(DIR) as client``: a client of the cluster in ``cluster_dir`` using key
    DIR/keys/client-N.key (N = ``client``, default 0), under trio or asyncio.

    Under trio it is a ``Client`` whose connection tasks run in the caller's trio loop;
    under asyncio an ``AsyncioClient`` with the same methods, whose ``Client`` runs on a
    trio loop in a thread of its own (ended, and joined, when the block exits). Each
    operation raises ``Unavailable`` when it has not committed within ``timeout`` seconds
    (None: wait for ever), or sooner when every replica refuses the connection.
    Connections are made in the background and remade when they break."""
    return _Connection(cluster_dir, client, timeout)


__all__ = ["connect", "Client", "SyncClient", "AsyncioClient", "InsideEventLoop", "Receipt", "ReceiptError",
           "LedgerError", "Unavailable", "Uncertain", "ReadProof", "ReadProofError", "ReadProofUnavailable",
           "Refused", "Forgotten", "ReceiptUnavailable", "TooLarge", "MAX_KEY", "MAX_OP",
           "check_operation", "running_async_library", "History", "ScanResult", "Version"]
