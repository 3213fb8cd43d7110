"""The invariant checker: every honest append and every client acknowledgement is checked.

(1) honest ledgers are prefixes of one another (one block hash per height);
(2) no (view, sequence) commits two digests at honest replicas;
(3) every acknowledged transaction is, in every honest ledger that reached its height,
    at the acknowledged place, and no honest ledger executes a request twice;
(4) liveness, checked by the scenario: after the network heals, every submitted
    request is acknowledged within a stated bound;
(5) validity: every transaction in an honest ledger is one a client submitted, byte for
    byte (a primary cannot slip in a request with a forged client signature);
(6) reads not ordered: a result a client accepts is the value its key held, and held since
    the height the answers named, somewhere between the client's floor and the top of the
    honest ledger (the checker replays the honest blocks to know every key's history).
"""
from __future__ import annotations

from ledger import tx as txmod
from ledger.chain import Chain
from ledger.state import DUPLICATE, INVALID, decode_result


class Checker:
    def __init__(self, sim) -> None:
        self.sim = sim
        self.by_height: dict[int, tuple[bytes, int]] = {}          # height -> (block hash, replica)
        self.by_slot: dict[tuple[int, int], bytes] = {}            # (view, seq) -> digest
        self.executed: dict[int, set[tuple[int, int]]] = {}        # replica -> executed (client, ts)
        self.acked: dict[int, list[tuple[int, bytes, bytes]]] = {}  # height -> [(index, tx, result)]
        self.submitted: dict[tuple[int, int], float] = {}
        self.submitted_raw: set[bytes] = set()
        self.ack_times: dict[tuple[int, int], float] = {}
        self.latencies: list[float] = []
        self.violation: str | None = None
        self.blocks: dict[int, object] = {}                         # height -> the first honest block
        self._canon = Chain()                                       # the honest ledger, replayed
        self._history: dict[str, list[tuple[int, bytes | None]]] = {}   # key -> [(since, value)]
        self.reads_checked = 0

    def fail(self, what: str) -> None:
        if self.violation is None:
            self.violation = f"t={self.sim.now:.4f}: {what}"

    def on_submit(self, client: int, ts: int, raw: bytes, now: float) -> None:
        self.submitted[(client, ts)] = now
        self.submitted_raw.add(raw)

    def on_block(self, r, block) -> None:
        prev = self.by_height.get(block.height)
        h = block.hash()
        if prev is None:
            self.by_height[block.height] = (h, r.id)
            self.blocks[block.height] = block
        elif prev[0] != h:
            self.fail(f"honest replicas {prev[1]} and {r.id} disagree at height {block.height}")
        slot = (block.view, block.sequence)
        d = self.by_slot.get(slot)
        if d is None:
            self.by_slot[slot] = block.batch_root
        elif d != block.batch_root:
            self.fail(f"(view {block.view}, sequence {block.sequence}) committed two digests")
        seen = self.executed.setdefault(r.id, set())
        for raw, res in zip(block.txs, block.results):
            if raw not in self.submitted_raw:
                self.fail(f"replica {r.id} executed a transaction no client submitted at height {block.height}")
            status = decode_result(res)[0]
            if status in (DUPLICATE, INVALID):
                continue
            t = txmod.parse(raw)
            key = (t.client, t.timestamp)
            if key in seen:
                self.fail(f"replica {r.id} executed request {key} twice")
            seen.add(key)
        for index, raw, result in self.acked.get(block.height, ()):
            self._check_place(r.id, block, index, raw, result)

    def _check_place(self, rid: int, block, index: int, raw: bytes, result: bytes) -> None:
        if index >= len(block.txs) or block.txs[index] != raw or block.results[index] != result:
            self.fail(f"acknowledged request is not at height {block.height} index {index} of replica {rid}")

    def on_ack(self, client: int, ts: int, raw: bytes, height: int, index: int, result: bytes, latency: float) -> None:
        key = (client, ts)
        if key in self.ack_times:
            return
        self.ack_times[key] = self.sim.now
        self.latencies.append(latency)
        if decode_result(result)[0] in (DUPLICATE, INVALID):
            self.fail(f"client accepted a {decode_result(result)[0]} result for {key}")
        self.acked.setdefault(height, []).append((index, raw, result))
        for r in self.sim.replicas:
            if r.honest and len(r.blocks) >= height:
                self._check_place(r.id, r.blocks[height - 1], index, raw, result)

    def unacked(self) -> list[tuple[int, int]]:
        return sorted(k for k in self.submitted if k not in self.ack_times)

    # ------------------------------------------------------------------ reads not ordered
    def _advance(self) -> int:
        """Replay the honest blocks not replayed yet; every key's (since, value) history."""
        canon = self._canon
        while canon.height + 1 in self.blocks:
            block = self.blocks[canon.height + 1]
            canon.replay(block)
            for key, at in canon.kv.written().items():
                if at == block.height:
                    self._history.setdefault(key, []).append((at, canon.kv.read(key)))
        return canon.height

    def on_read(self, client: int, key: str, floor: int, since: int, result: bytes) -> None:
        """Client ``client`` accepted ``result`` for ``key``, held since ``since``, at floor ``floor``."""
        self.reads_checked += 1
        top = self._advance()
        try:
            status, value = decode_result(result)
        except ValueError:
            self.fail(f"client {client} accepted a malformed read result for {key!r}")
            return
        versions = [(0, None)] + self._history.get(key, [])
        for k, (at, held) in enumerate(versions):
            until = versions[k + 1][0] - 1 if k + 1 < len(versions) else top
            if (at, held) == (since, value) and status == 0 and at <= top and max(at, floor) <= until:
                return
        self.fail(f"client {client} accepted {value!r} for {key!r} (since height {since}, floor {floor}): the "
                  f"honest ledger (height {top}) never held it there")
