"""The invariant checker: every honest append and every client acknowledgement is checked.

(1) honest ledgers are prefixes of one another (one block hash per height);
(2) no (view, sequence) commits two digests at honest replicas;
(3) every acknowledged transaction is, in every honest ledger that reached its height,
    at the acknowledged place, and no honest ledger executes a request twice;
(4) liveness, checked by the scenario: after the network heals, every submitted
    request is acknowledged within a stated bound;
(5) validity: every transaction in an honest ledger is one a client submitted, byte for
    byte (a primary cannot slip in a request with a forged client signature).
"""
from __future__ import annotations

from ledger import tx as txmod
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
