"""The offline demo: a signed ledger on disk, an audit, and two kinds of tampering caught.

No network and no consensus run here: ``OfflineLedger`` commits batches in one process
with the same real signatures a pbft or paxos cluster would produce (clients sign their
requests, 2f+1 replicas sign COMMITs, or the Paxos leader signs its ACCEPT), so the
store, the audit and the certificate checks are exercised exactly as in production.
Tests use ``OfflineLedger`` to build ledgers with chosen faults.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

from bft import wire
from bft.app.clusterinit import init_cluster
from crypto.merkle import root_of
from crypto.signing import Ed25519Signer
from ledger import state
from ledger.audit import AuditReport, audit
from ledger.block import Block
from ledger.certificate import ACCEPT_DOMAIN, COMMIT_DOMAIN, accept_statement, commit_statement
from ledger.chain import Chain
from ledger.cluster import Cluster
from ledger.records import HEADER_SIZE, OVERHEAD
from ledger.store import BlockStore


class OfflineLedger:
    """Commits batches into a Chain as an honest cluster would, with every private key at hand."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.replicas: list[Ed25519Signer] = [cluster.load_replica_key(i) for i in range(cluster.n)]
        self.clients: list[Ed25519Signer] = [cluster.load_client_key(i) for i in range(len(cluster.clients))]
        self.chain = Chain()
        self._ts = [0] * len(self.clients)

    def request(self, client: int, op: bytes) -> bytes:
        """A client-signed REQUEST with a fresh timestamp, encoded as the ledger stores it."""
        self._ts[client] += 1
        return wire.Request(client, self._ts[client], op).signed(self.clients[client]).encode()

    def certificate(self, view: int, seq: int, batch_root: bytes,
                    signers: list[int] | None = None) -> list[tuple[int, bytes]]:
        """pbft: COMMITs of ``signers`` (default: the first 2f+1); paxos: the ballot leader's ACCEPT."""
        c = self.cluster
        if c.protocol.byzantine:
            ids = list(range(c.quorums.certificate)) if signers is None else signers
            return [(i, self.replicas[i].sign(COMMIT_DOMAIN, commit_statement(view, seq, batch_root, i)))
                    for i in ids]
        leader = view % c.n if signers is None else signers[0]
        return [(leader, self.replicas[leader].sign(ACCEPT_DOMAIN, accept_statement(view, seq, batch_root, leader)))]

    def commit(self, txs: list[bytes], *, view: int = 0,
               cert: list[tuple[int, bytes]] | None = None) -> Block:
        seq = self.chain.height + 1
        if cert is None:
            cert = self.certificate(view, seq, root_of(txs))
        return self.chain.execute(seq, view, txs, cert)


# Three small batches, as different clients would send them.
DEMO_BATCHES: list[list[tuple[int, str, str]]] = [
    [(0, "alice", "100"), (1, "bob", "50"), (2, "carol", "75"), (3, "dave", "20")],
    [(1, "bob", "40"), (0, "alice", "110"), (3, "erin", "5"), (2, "carol", "80")],
    [(2, "frank", "12"), (0, "alice", "95"), (1, "bob", "55"), (3, "dave", "25")],
]


def _verdict(report: AuditReport) -> str:
    if report.ok:
        return (f"OK - {report.height} blocks, {report.tree_size} transactions, "
                f"{report.signatures_checked} signatures checked")
    return f"FAULT at height {report.first_bad_height}: {report.reason}"


def run(out: Callable[[str], None] = print) -> int:
    """Run the demo in a temporary directory (deleted afterwards); 0 when every check behaved."""
    with tempfile.TemporaryDirectory(prefix="bftledger-demo-") as tmp:
        return _run(Path(tmp) / "cluster", out)


def _run(d: Path, out: Callable[[str], None]) -> int:
    out("bftledger demo (offline): a tamper-evident ledger on disk, checked with public keys only.")
    out("")
    cluster = init_cluster(d, "pbft", 1, clients=4)
    out(f"1. Made a pbft cluster with f=1 in {d}:")
    out(f"   {cluster.n} replicas, of which any {cluster.f} may lie, and {len(cluster.clients)} clients,")
    out("   each with its own Ed25519 key. Only public keys are written to cluster.toml.")

    ledger = OfflineLedger(cluster)
    path0 = cluster.data_dir(0)
    with BlockStore.open(path0) as store:
        for batch in DEMO_BATCHES:
            txs = [ledger.request(c, state.op_put(k, v.encode())) for c, k, v in batch]
            block = ledger.commit(txs)
            store.append(block)
        blocks = list(store.blocks())
    out(f"2. Committed {len(blocks)} blocks to replica 0's ledger ({path0}):")
    for b in blocks:
        puts = ", ".join(f"{k}={v}" for _, k, v in DEMO_BATCHES[b.height - 1])
        signers = ", ".join(str(i) for i, _ in b.cert)
        out(f"   block {b.height}: {puts}")
        out(f"            signed by its clients; COMMIT-signed by replicas {signers} "
            f"({len(b.cert)} of {cluster.n}); hash {b.hash().hex()[:16]}...")

    ok = True
    report = audit(d, 0)
    out("3. Audit of replica 0, using only cluster.toml (public keys):")
    out(f"   {_verdict(report)}")
    out("   (hash links, Merkle roots, a re-execution of every transaction, every client")
    out("   signature and every block's 3 COMMIT signatures all agree)")
    ok &= report.ok

    # Accident: one flipped byte in a copy of the ledger.
    path1 = cluster.data_dir(1)
    shutil.copytree(path0, path1, ignore=shutil.ignore_patterns("LOCK"))
    seg = path1 / "segment-000000.log"
    first_len = OVERHEAD + len(blocks[0].encode())
    pos = first_len + HEADER_SIZE + len(blocks[1].encode()) // 2
    data = bytearray(seg.read_bytes())
    data[pos] ^= 0x01
    seg.write_bytes(bytes(data))
    report = audit(d, 1)
    out(f"4. Copied the ledger and flipped one bit (byte {pos} of {seg.name}, inside block 2):")
    out(f"   {_verdict(report)}")
    out("   (the record's checksum no longer matches: the damage is found and named, never skipped)")
    ok &= (not report.ok) and report.first_bad_height == 2

    # Attack: rewrite history consistently, recomputing every root, hash and checksum.
    forged = Chain()
    path2 = cluster.data_dir(2)
    with BlockStore.open(path2) as store:
        for b in blocks:
            txs = list(b.txs)
            if b.height == 2:
                t = wire.decode(txs[1])
                if not isinstance(t, wire.Request):  # pragma: no cover - we built it above
                    raise RuntimeError("demo: expected a request")
                t.op = state.op_put("alice", b"1000000")      # keeps alice's old signature
                txs[1] = t.encode()
            store.append(forged.execute(b.sequence, b.view, txs, b.cert))
    report = audit(d, 2)
    out("5. A smarter attacker rewrote alice's balance in block 2 to 1000000 and recomputed")
    out("   every Merkle root, block hash and checksum, so the file itself is consistent:")
    out(f"   {_verdict(report)}")
    out("   (alice never signed that request, and the replicas' COMMITs name the original batch)")
    ok &= (not report.ok) and report.first_bad_height == 2

    out("")
    out("Checksums catch accidents; signatures catch attackers. Rewriting history undetected")
    out(f"would take the clients' private keys and {cluster.quorums.certificate} replicas' COMMIT keys.")
    if not ok:
        out("demo FAILED: an audit did not behave as described above")
        return 1
    return 0


def main() -> int:  # pragma: no cover - convenience for `python -m bft.app.demo_offline`
    return run()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
