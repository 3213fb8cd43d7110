"""The ledger's client API: put, get, delete, compare-and-set, each with a verified receipt.

```python
async with ledger.client.connect(cluster_dir) as client:
    receipt = await client.put("alice", b"100")     # returns once committed
    value = await client.get("alice")               # b"100" (not ordered: no block; see Client.get)
    receipt.verify(cluster_dir)                     # offline, public keys only
with ledger.client.SyncClient(cluster_dir) as client:   # the same, blocking
    client.put("bob", "50")
```

One client object carries many concurrent requests (up to 2048 in flight; more wait).
Every write returns a ``Receipt`` built from a block the client has checked against the
cluster's public keys (its certificate and Merkle roots), holding the client's own
signed request and the result the replicas replied; the block comes from a replica that
replied, or another one if that fails.

The network session under it is ``ledger.net.session.ClientSession`` (authenticated
connections, ``ledger.net.channel``/``transport``), whose decisions about replies,
redirects and retransmission are made by the sans-I/O ``ledger.clientcore``; the messages
are ``ledger.wire``'s. None of them depends on a consensus protocol, so this module, like
all of ``ledger``, imports nothing from ``bft`` (the layers are crypto <- ledger <- bft;
``tests/unit/test_layers.py`` checks it).
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import trio

from crypto.merkle import MerkleTree
from ledger import state
from ledger.block import Block, BlockFormatError
from ledger.certificate import certificate_error
from ledger.clientcore import Outcome
from ledger.cluster import Cluster, ClusterError, load
from ledger.net.session import ClientSession, query_status
from ledger.net.session import Unavailable as _SessionUnavailable
from ledger.receipt import Receipt, ReceiptError
from ledger.wire import MAX_OP

DEFAULT_TIMEOUT = 60.0
RECEIPT_FETCH_TIMEOUT = 2.0
# A read not ordered that has no 2f+1 matching answers (paxos: the leader's) this soon is ordered
# instead. Replicas answer at once unless they are below the client's floor, and catch up
# within milliseconds when they are merely behind; a longer wait only delays the fallback.
FAST_READ_TIMEOUT = 0.5
BLOCK_CACHE = 256


class LedgerError(Exception):
    """Base of the errors this API raises for a reason outside the caller's code."""


class Unavailable(LedgerError):
    """Nothing was committed in time: too few replicas reachable or working (the message says which)."""


class Refused(LedgerError):
    """The replicas refused the request without executing it (e.g. a stale timestamp)."""


class ReceiptUnavailable(LedgerError):
    """Committed, but no replica served a block that verifies as its receipt."""


def _value_bytes(value: bytes | str) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"a value is bytes or str, not {type(value).__name__}")


def _check_key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a key is a str, not {type(key).__name__}")
    if len(key.encode()) > state.MAX_KEY:
        raise ValueError(f"a key is at most {state.MAX_KEY} bytes of UTF-8")
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
        self._attesting: dict[int, trio.Event] = {}
        self._fetching: dict[int, trio.Event] = {}

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
        if not linearizable:
            rp = await self._session.read(op, FAST_READ_TIMEOUT)
            if rp.result is not None:
                return _get_value(key, rp.result)
        out = await self._submit(op)
        return _get_value(key, out.result)

    async def status(self, timeout: float = 2.0) -> list[dict]:
        """Every replica's self-report (see ``bftledger status``)."""
        return await query_status(self.cluster, self.id, self._session.signer, timeout,
                                  channels=self._session.channels)

    # ------------------------------------------------------------------ internals
    async def _submit(self, op: bytes) -> Outcome:
        if len(op) > MAX_OP:
            raise ValueError("the operation is larger than 64 KiB")
        try:
            out = await self._session.submit(op, self.timeout)
        except _SessionUnavailable as e:
            raise Unavailable(str(e)) from None
        if out.height == 0:                       # no block: f+1 replicas (the leader in paxos) refused it
            _status, why = _decode(out.result)
            raise Refused(f"the replicas refused the request: {(why or b'').decode(errors='replace')}; "
                          "is another process using the same client key? give each its own (init --clients N)")
        return out

    async def _write(self, op: bytes) -> Receipt:
        out = await self._submit(op)
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
                attestations = await self._attestations(block, candidates)
                return Receipt.from_block(block, out.index, self.cluster.mode, cluster_id=self.cluster.cluster_id,
                                          tx_tree=tx_tree,
                                          results_tree=results_tree, attestations=attestations)
            except ReceiptError as e:
                self._blocks.pop(out.height, None)
                errors.append(f"replica {r}: {e}")
        raise ReceiptUnavailable(f"committed at height {out.height}, index {out.index}, but no replica served a "
                                 f"verifiable receipt ({'; '.join(errors)})")

    async def _attestations(self, block: Block, candidates: list[int]) -> list[tuple[int, bytes]]:
        """f+1 (pbft) or 1 (paxos) valid signatures on ``block``'s hash, asked of every replica
        in ``candidates`` concurrently; cached per height like blocks."""
        height = block.height
        while True:
            hit = self._attested.get(height)
            if hit is not None:
                return hit
            ev = self._attesting.get(height)
            if ev is None:
                break
            await ev.wait()
        c = self.cluster
        need = c.quorums.attest
        block_hash = block.hash()
        good: dict[int, bytes] = {}
        done = self._attesting[height] = trio.Event()

        async def ask(r: int) -> None:
            a = await self._session.fetch_attestation(r, height, RECEIPT_FETCH_TIMEOUT)
            if a is None or a.block_hash != block_hash or a.batch_size != len(block.txs) or a.replica != r:
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
            raise ReceiptError(f"only {len(good)} replicas attested block {height}'s hash, a receipt needs {need}")
        result = sorted(good.items())[:need]
        self._attested[height] = result
        while len(self._attested) > BLOCK_CACHE:
            self._attested.popitem(last=False)
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
    if type(cid) is not int or not 0 <= cid < len(cluster.clients):
        raise ClusterError(f"client {cid!r} is not in {Path(cluster_dir) / 'cluster.toml'} "
                           f"(client ids are 0..{len(cluster.clients) - 1})")
    signer = cluster.load_client_key(cid)
    if signer.public_key != cluster.clients[cid]:
        raise ClusterError(f"{cluster.key_path('client', cid)} does not match client {cid}'s public key "
                           "in cluster.toml")
    return cluster, cid, signer


@asynccontextmanager
async def connect(cluster_dir: str | os.PathLike[str], client: int | None = None, *,
                  timeout: float | None = DEFAULT_TIMEOUT) -> AsyncIterator[Client]:
    """A client of the cluster in ``cluster_dir`` using key DIR/keys/client-N.key (N = ``client``, default 0).

    Each operation raises ``Unavailable`` when it has not committed within ``timeout``
    seconds (None: wait for ever). Connections are made in the background and remade
    when they break."""
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


class SyncClient:
    """The blocking twin of ``connect``: the same methods, each returning when committed.

    A background thread runs the trio event loop with one ``Client``; calls from any
    thread are handed to it (so several threads may share one SyncClient). Use it as a
    context manager or call ``close()``."""

    def __init__(self, cluster_dir: str | os.PathLike[str], client: int | None = None, *,
                 timeout: float | None = DEFAULT_TIMEOUT) -> None:
        _resolve(cluster_dir, client)            # raise bad-cluster / bad-key errors here, in the caller
        self._dir, self._cid, self._timeout = cluster_dir, client, timeout
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._client: Client | None = None
        self._token = None
        self._stop: trio.Event | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._thread_main, name="bftledger-client", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _thread_main(self) -> None:
        async def main() -> None:
            async with connect(self._dir, self._cid, timeout=self._timeout) as c:
                self._client = c
                self._token = trio.lowlevel.current_trio_token()
                self._stop = trio.Event()
                self._ready.set()
                await self._stop.wait()

        try:
            trio.run(main)
        except BaseException as e:               # reported to the constructor if it is still waiting
            self._error = e
        finally:
            self._ready.set()

    def _call(self, name: str, *args):
        if self._closed or self._client is None:
            raise LedgerError("this SyncClient is closed")
        return trio.from_thread.run(getattr(self._client, name), *args, trio_token=self._token)

    def put(self, key: str, value: bytes | str) -> Receipt:
        return self._call("put", key, value)

    def get(self, key: str, linearizable: bool = False) -> bytes | None:
        return self._call("get", key, linearizable)

    def delete(self, key: str) -> Receipt:
        return self._call("delete", key)

    def cas(self, key: str, expected: bytes | str | None, new: bytes | str) -> Receipt:
        return self._call("cas", key, expected, new)

    def status(self, timeout: float = 2.0) -> list[dict]:
        return self._call("status", timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._token is not None and self._stop is not None:
            try:
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(timeout=10)

    def __enter__(self) -> "SyncClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["connect", "Client", "SyncClient", "Receipt", "ReceiptError", "LedgerError", "Unavailable", "Refused",
           "ReceiptUnavailable"]
