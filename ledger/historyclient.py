"""The client side of history and scans (``Client.history``, ``Client.scan``).

History. Replicas answer where a key was written, as (height, index) positions from
their history index (``ledger.history``). The client trusts none of it: for every
position it fetches the block, checks its certificate and roots (``Client._block``, as
for receipts), finds the transaction at that index, recomputes from the transaction and
its result what it wrote (``ledger.history.writes_of``), and builds a ``Receipt`` with
f+1 execution attestations (one in paxos), which verifies offline like any other. A
position that does not hold a write of the key is a lie: that replica's whole answer is
dropped. So a lying replica cannot invent a version, nor change a value or a height.
It can omit versions: the client asks ``quorums.attest`` replicas (f+1 in pbft: at
least one honest; 1 in paxos, whose trust model assumes no liar) and takes the union
of their verified positions, so an omission goes unnoticed only if f+1 replicas lie
together, or if the honest ones asked have not yet executed the block (a replica that
is behind knows fewer versions; an answer says the height it covers, and one below the
client's own latest write or read is not used until the replica catches up).

Scans. One replica answers from its executed state, in key order (``KVStore.scan``),
or from the state it replays to ``at_height``. The pages of one scan are asked at one
height, the first answer's, so they describe one state. Without ``verified`` the
client checks only order and range, and a lying replica can return any pairs. With
``verified=True`` each page carries probe proofs (``ledger.rangeproof``), checked
against the state root of the block at that height, which the client fetched with its
certificate and had attested by f+1 replicas (the attestations sign the block hash,
which binds the state root): no replica can add, drop, reorder or alter a pair.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from ledger import tx as txmod
from ledger.history import writes_of
from ledger.rangeproof import RangeProofError, in_range, probe_after, verify_page
from ledger.receipt import Receipt, ReceiptError
from ledger.statetree import StateProof, StateProofError
from ledger.wire import MAX_QUERY_ITEMS, HistoryRequest, ScanRequest

if TYPE_CHECKING:
    from ledger.client import Client

QUERY_TIMEOUT = 3.0
MAX_SCAN_LIMIT = 1_000_000          # pairs one scan() call gathers, page by page


@dataclass(slots=True)
class Version:
    """One write of a key: its value after the transaction (None: deleted), where it is in
    the ledger, and the transaction's receipt (``receipt.verify(cluster_dir)`` offline)."""
    key: str
    value: bytes | None
    height: int
    index: int
    receipt: Receipt

    @property
    def deleted(self) -> bool:
        return self.value is None

    def to_dict(self) -> dict:
        text = None
        if self.value is not None:
            try:
                text = self.value.decode()
            except UnicodeDecodeError:
                pass
        return {"key": self.key, "height": self.height, "index": self.index, "deleted": self.value is None,
                "value": text, "value_hex": None if self.value is None else self.value.hex(),
                "operation": self.receipt.describe(), "receipt": self.receipt.to_dict()}


class History(list):
    """``Client.history``'s page: a list of ``Version``, oldest first. ``more``: the replicas
    know later versions (ask again with ``after=page[-1].height``); ``replicas``: whose
    answers were used; ``rejected``: why the others' were not (a replica that claimed a
    write the certified block does not hold is lying, or its index is wrong)."""

    def __init__(self, versions: list[Version], more: bool, replicas: list[int], rejected: list[str]) -> None:
        super().__init__(versions)
        self.more = more
        self.replicas = replicas
        self.rejected = rejected


class ScanResult(list):
    """``Client.scan``'s answer: a list of (key, value) in key order, at ``height``, served by
    ``replica``; ``more``: keys in range were left out at the limit. ``proof`` (a
    ``ScanProof``, with ``verified=True``; else None): checked already, and again offline
    by ``proof.verify(cluster_dir)``."""

    def __init__(self, pairs: list[tuple[str, bytes]], height: int, replica: int, more: bool,
                 proof: "ScanProof | None" = None) -> None:
        super().__init__(pairs)
        self.height = height
        self.replica = replica
        self.more = more
        self.proof = proof


@dataclass(slots=True)
class ScanProof:
    """That a scan's pairs are exactly the state's keys in range after block ``receipt.height``:
    a receipt of a transaction of that block (it proves the block's header, state root
    included, with the certificate and f+1 attestations), and each page's probe proofs
    (``ledger.rangeproof``) against that state root."""
    receipt: Receipt
    prefix: str
    end: str | None
    pages: list[tuple[str, list[tuple[str, bytes]], list[StateProof], bool]]

    @property
    def height(self) -> int:
        return self.receipt.height

    def pairs(self) -> list[tuple[str, bytes]]:
        return [kv for _, page, _, _ in self.pages for kv in page]

    def verify(self, cluster_dir) -> list[tuple[str, bytes]]:
        """The proven pairs; raises ReceiptError or RangeProofError on any fault (offline)."""
        self.receipt.verify(cluster_dir)
        inside = in_range(self.prefix, self.end)
        for i, (lo, page, proofs, more) in enumerate(self.pages):
            if i and lo != probe_after(self.pages[i - 1][1][-1][0]):
                raise RangeProofError(f"page {i} does not start where page {i - 1} ended")
            verify_page(self.receipt.state_root, lo, inside, page, proofs, more)
        return self.pairs()


async def _verify_page(client: "Client", replica: int, height: int, lo: str, prefix: str, end: str | None,
                       got: list[tuple[str, bytes]], answer, pages: list, block):
    """Check one page's proofs against the state root of the certified block ``height``
    (fetched and attested once); returns that block."""
    from ledger.client import LedgerError

    if block is None:
        entry = await client._block(height, 0, replica, use_cache=True) or await _any_block(client, height, 0)
        if entry is None:
            raise LedgerError(f"no replica served a verifiable block {height}, whose state root a verified scan needs")
        block = entry[0]
        try:
            await _attest(client, block)       # binds the header's state root
        except ReceiptError as e:
            raise LedgerError(f"block {height}: {e}") from None
    try:
        proofs = [StateProof.decode(p) for p in answer.proofs]
        verify_page(block.state_root, lo, in_range(prefix, end), got, proofs, bool(answer.more))
    except (StateProofError, RangeProofError) as e:
        raise LedgerError(f"replica {replica}'s scan does not match the state root of block {height}: {e}") from None
    pages.append((lo, got, proofs, bool(answer.more)))
    return block


async def _block_receipt(client: "Client", block) -> Receipt:
    """A receipt of the first transaction of ``block`` whose signer's key the cluster knows
    (cluster.toml's clients, or this client), which proves the block's header offline."""
    from ledger.client import LedgerError

    for i, raw in enumerate(block.txs):
        t = txmod.parse(raw)
        if t is not None and (t.client < len(client.cluster.clients) or t.client == client.id):
            entry = client._blocks.get(block.height) or await _any_block(client, block.height, i)
            r = Receipt.from_block(block, i, client.cluster.mode, cluster_id=client.cluster.cluster_id,
                                   tx_tree=entry[1] if entry else None, results_tree=entry[2] if entry else None,
                                   attestations=await _attest(client, block))
            if t.client == client.id:
                r.registration = client.registration
            return r
    raise LedgerError(f"block {block.height} holds no transaction of a client in cluster.toml, so no receipt "
                      "proves its header offline; scan at another height")


async def _attest(client, block) -> list[tuple[int, bytes]]:
    """f+1 (pbft) or 1 (paxos) attestations of ``block``'s hash, which binds its state root."""
    return await client._attestations(block.height, block.hash(), len(block.txs), _order(client))


def _order(client: "Client") -> list[int]:
    """Replicas to ask, connected ones first, in a random order (spreads the load)."""
    n = client.cluster.n
    links = client._session.links
    order = list(range(n))
    random.shuffle(order)
    return sorted(order, key=lambda r: not links[r].connected)


async def history(client: "Client", key: str, limit: int, after: int) -> History:
    need = client.cluster.quorums.attest
    ask_for = min(limit + 1, MAX_QUERY_ITEMS)      # one more than the page: tells where a block ends
    accepted: dict[int, object] = {}             # replica -> its answer, every position checked
    errors: list[str] = []

    floor = client._session.core.floor            # this client's latest write or read: a history holds it
    deadline = trio.current_time() + QUERY_TIMEOUT

    async def ask(r: int) -> None:
        while True:
            a = await client._session.ask(r, lambda nonce: HistoryRequest(nonce, key.encode(), after, ask_for),
                                          max(0.05, deadline - trio.current_time()))
            if a is None:
                errors.append(f"replica {r}: no answer within {QUERY_TIMEOUT:g} s")
                return
            if a.height >= floor:
                break
            if trio.current_time() >= deadline:       # behind this client's own writes: not yet usable
                errors.append(f"replica {r}: indexed up to height {a.height}, below this client's {floor}")
                return
            await trio.sleep(0.02)
        pos = [tuple(p) for p in a.positions]
        if len(pos) > ask_for:                   # each would cost a block fetch to check
            errors.append(f"replica {r}: {len(pos)} positions where at most {ask_for} were asked for")
            return
        if any(p[0] <= after for p in pos) or pos != sorted(set(pos)):
            errors.append(f"replica {r}: positions not in order above height {after}")
            return
        if await _check_positions(client, key, pos, r) is None:
            errors.append(f"replica {r}: claimed a write of {key!r} that the certified block does not hold")
            return
        accepted[r] = a
        if len(accepted) >= need:
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for r in _order(client):
            nursery.start_soon(ask, r)
    if len(accepted) < need:
        from ledger.client import Unavailable
        raise Unavailable(f"the history of {key!r} needs {need} replicas' answers that check out (so that one is "
                          f"honest), got {len(accepted)}: {'; '.join(sorted(errors)) or 'none reachable'}")
    used = sorted(accepted)
    positions: set[tuple[int, int]] = set()
    cut: tuple[int, int] | None = None          # beyond the shortest page that was cut, a replica may know more
    for a in accepted.values():
        pos = [tuple(p) for p in a.positions]
        positions.update(pos)
        if a.more and pos:
            cut = pos[-1] if cut is None else min(cut, pos[-1])
    ordered = sorted(p for p in positions if cut is None or p <= cut)
    more = cut is not None or len(ordered) > limit
    page = ordered[:limit]
    if page and ((len(ordered) > limit and ordered[limit][0] == page[-1][0]) or (cut is not None and page[-1] == cut)):
        # end the page at a block boundary, so that after=page[-1].height misses nothing
        page = [p for p in page if p[0] != page[-1][0]] or page
    versions = [await _version(client, key, h, i) for h, i in page]
    return History(versions, more, used, errors)


async def _check_positions(client: "Client", key: str, pos: list[tuple[int, int]], replica: int) -> bool | None:
    """True when every position holds a write of ``key`` in a certified block, else None."""
    for h, i in pos:
        entry = await client._block(h, i, replica, use_cache=True)
        if entry is None:
            # the block may be fetched from another replica: a position is checked against
            # the certified block, whoever serves it
            entry = await _any_block(client, h, i)
        if entry is None:
            return None
        block = entry[0]
        if not i < len(block.txs) or key not in dict(writes_of(block.txs[i], block.results[i])):
            return None
    return True


async def _any_block(client: "Client", height: int, index: int):
    for r in _order(client):
        entry = await client._block(height, index, r, use_cache=False)
        if entry is not None:
            return entry
    return None


async def _version(client: "Client", key: str, height: int, index: int) -> Version:
    entry = client._blocks.get(height) or await _any_block(client, height, index)
    if entry is None:
        from ledger.client import ReceiptUnavailable
        raise ReceiptUnavailable(f"no replica served a verifiable block {height}")
    block, tx_tree, results_tree = entry
    value = dict(writes_of(block.txs[index], block.results[index]))[key]
    attestations = await _attest(client, block)
    receipt = Receipt.from_block(block, index, client.cluster.mode, cluster_id=client.cluster.cluster_id,
                                 tx_tree=tx_tree, results_tree=results_tree, attestations=attestations)
    if receipt.client == client.id:
        receipt.registration = client.registration
    return Version(key, value, height, index, receipt)


async def scan(client: "Client", prefix: str, start: str, end: str | None, at_height: int,
               limit: int, verified: bool = False) -> ScanResult:
    from ledger.client import LedgerError, Unavailable

    pages: list[tuple[str, list[tuple[str, bytes]], list[StateProof], bool]] = []     # verified: each checked
    block = None
    pairs: list[tuple[str, bytes]] = []
    height = at_height
    floor = client._session.core.floor            # the client's latest write or read: a scan sees it
    order = _order(client)
    errors: list[str] = []
    cursor = start
    while True:
        want = min(MAX_QUERY_ITEMS, limit - len(pairs))
        answer = None
        deadline = trio.current_time() + QUERY_TIMEOUT
        while answer is None and order and trio.current_time() < deadline:
            for r in list(order):
                a = await client._session.ask(
                    r, lambda nonce: ScanRequest(nonce, prefix.encode(), cursor.encode(), (end or "").encode(),
                                                 height, want, int(verified)), QUERY_TIMEOUT)
                if a is None:
                    errors.append(f"replica {r}: no answer")
                    order.remove(r)
                elif a.error:
                    errors.append(f"replica {r}: {a.error.decode(errors='replace')}")
                    order.remove(r)
                elif height == 0 and a.height < floor:
                    continue                          # behind this client's own writes: another, or later
                else:
                    answer, replica = a, r
                    break
            if answer is None and order:
                await trio.sleep(0.02)
        if answer is None:
            why = "; ".join(errors) or f"every replica is behind this client's height {floor}"
            raise Unavailable(f"no replica answered the scan ({why})")
        order = [replica]                            # one replica serves every page: one state
        height = answer.height
        got = []
        for kb, v in answer.pairs:
            try:
                k = kb.decode()
            except UnicodeDecodeError:
                raise LedgerError(f"replica {replica} answered the scan with a key that is not UTF-8") from None
            if k < cursor or not k.startswith(prefix) or (end is not None and k >= end) or (got and k <= got[-1][0]):
                raise LedgerError(f"replica {replica} answered the scan with keys out of range or out of order")
            got.append((k, v))
        if verified:
            block = await _verify_page(client, replica, height, max(cursor, prefix), prefix, end, got, answer,
                                       pages, block)
        pairs.extend(got)
        if not answer.more or len(pairs) >= limit:
            proof = None
            if verified:
                proof = ScanProof(await _block_receipt(client, block), prefix, end, pages)
            return ScanResult(pairs[:limit], height, replica, bool(answer.more), proof)
        if not got:
            raise LedgerError(f"replica {replica} said more keys follow but sent none")
        cursor = got[-1][0] + "\x00"                 # the least key above the last one
