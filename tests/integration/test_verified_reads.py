"""Verified reads (issue 16) on real replica processes: ``get_verified`` returns the true value
with a proof that verifies offline, also when a Byzantine replica lies about every read
(``lying-proofs``), past heights read the state as it was, and forged proofs are rejected:
a changed value, an absence claimed for a present key, a wrong height, another cluster's."""
from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
import trio

import ledger.client
from bft.app.clusterinit import init_cluster
from bft.runtime.factory import write_tuning
from ledger.readproof import ReadProof, ReadProofError
from ledger.rules import WireRule
from ledger.verifiedread import proof_of
from tests.integration.conftest import cli, one_error_line


def _forgeries(p: ReadProof) -> dict[str, ReadProof]:
    """Each forgery the issue names, made on the JSON a liar or an editor would change."""
    d = p.to_dict()
    changed = json.loads(json.dumps(d))
    changed["value"] = b"forged".hex()
    absent = json.loads(json.dumps(d))
    absent["value"] = None
    absent["state_proof"]["children"] = None
    higher = json.loads(json.dumps(d))
    higher["height"] += 1
    higher["block"]["sequence"] += 1
    return {k: ReadProof.from_dict(v) for k, v in
            {"changed value": changed, "absence claimed": absent, "wrong height": higher}.items()}


async def test_a_lying_replica_cannot_forge_a_verified_read_in_pbft(make_cluster, tmp_path) -> None:
    lc = make_cluster("pbft", byzantine={3: "lying-proofs"})
    await lc.ready()
    async with ledger.client.connect(lc.directory, timeout=30) as c:
        for i in range(6):
            await c.put(f"k{i}", f"v{i}")
        r2 = await c.put("k2", b"second")
        proofs = [await c.get_verified("k2") for _ in range(lc.n)]      # each replica is asked first once
        absent = [await c.get_verified("nobody") for _ in range(lc.n)]
        started = trio.current_time()
        olds = [await c.get_verified("k2", at_height=r2.height - 1) for _ in range(lc.n)]  # it stalls at these
        took = trio.current_time() - started
        old = olds[0]
        # the liar's own answer, with its own attestation of the header it forged: f signatures
        lie = proof_of(c, "k2", await c._session.fetch_proof(3, "k2", 0, 5.0))
        a = await c._session.fetch_attestation(3, lie.height, 5.0)
        lie.attestations = [(3, a.sig)]
        rejected = c.read_proofs_rejected
        counted = c._session.problems.counts[WireRule.READ_PROOF_REJECTED]
    assert all(p.value == b"second" and p.height >= r2.height for p in proofs)
    assert all(p.value is None for p in absent)
    assert all(p.value == b"v2" and p.height == r2.height - 1 for p in olds)
    assert took < 5, took                                  # "rebuilding" for ever held no round back
    assert rejected >= 2 and counted == rejected          # the liar was asked first twice, and caught
    for p in proofs + absent + olds:
        v = ReadProof.from_json(p.to_json()).verify(lc.directory)
        assert len(v.attesters) >= 2 and v.value == p.value
    assert lie.value != b"second" and lie.block_hash == a.block_hash
    with pytest.raises(ReadProofError, match="1 valid distinct signatures on the block hash"):
        lie.verify(lc.directory)
    for what, forged in _forgeries(proofs[0]).items():
        with pytest.raises(ReadProofError):
            forged.verify(lc.directory)
    other = tmp_path / "other"
    init_cluster(other, "pbft", 1, clients=1)
    with pytest.raises(ReadProofError, match="from cluster"):
        proofs[0].verify(other)
    relabelled = dataclasses.replace(proofs[0], cluster_id=ledger.cluster.load(other).cluster_id)
    with pytest.raises(ReadProofError, match="certificate"):          # its signatures are under the other id
        relabelled.verify(other)


async def test_verified_reads_in_paxos_and_the_cli(make_cluster, tmp_path) -> None:
    lc = make_cluster("paxos")
    await lc.ready()
    async with ledger.client.connect(lc.directory, timeout=30) as c:
        r1 = await c.put("alice", b"100")
        await c.put("alice", b"90")
        now = await c.get_verified("alice")
        then = await c.get_verified("alice", at_height=r1.height)
        with pytest.raises(ledger.client.ReadProofUnavailable, match="above this replica's height"):
            await c.get_verified("alice", at_height=10_000)
        with pytest.raises(ValueError):
            await c.get_verified("alice", at_height=0)
    assert now.value == b"90" and then.value == b"100" and then.height == r1.height

    def sync() -> tuple:                      # the blocking client: positional and keyword arguments
        with ledger.client.SyncClient(lc.directory, client=1) as sc:
            return sc.get_verified("alice").value, sc.get_verified("alice", at_height=r1.height).value, \
                sc.get_verified("alice", r1.height).height

    async def under_asyncio() -> tuple:
        async with ledger.client.connect(lc.directory, client=2) as ac:
            p = await ac.get_verified("alice", at_height=r1.height)
            return p.value, (await ac.get_verified("nobody")).value

    assert await trio.to_thread.run_sync(sync) == (b"90", b"100", r1.height)
    assert await trio.to_thread.run_sync(lambda: asyncio.run(under_asyncio())) == (b"100", None)
    v = now.verify(lc.directory)
    assert len(v.attesters) == 1 and "crash" in v.trust_model.lower()
    proof_file = tmp_path / "alice.json"
    p = cli("get", str(lc.directory), "alice", "--proof", str(proof_file), "--at-height", str(r1.height))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "100"
    p = cli("verify-read", str(proof_file), "--cluster", str(lc.directory))
    assert p.returncode == 0, p.stderr
    assert "alice" in p.stdout and "100" in p.stdout and f"height {r1.height}" in p.stdout
    d = json.loads(proof_file.read_text())
    d["value"] = b"1000".hex()
    proof_file.write_text(json.dumps(d))
    p = cli("verify-read", str(proof_file), "--cluster", str(lc.directory))
    assert p.returncode == 1 and "state proof" in p.stdout + p.stderr


def test_cli_errors_are_one_line(tmp_path) -> None:
    d = tmp_path / "c"
    init_cluster(d, "pbft", 1, clients=1)
    line = one_error_line(cli("get", str(d), "k", "--proof", str(tmp_path / "p.json")))
    assert "is reachable" in line and "bftledger up" in line                  # not running: said at once
    (tmp_path / "bad.json").write_text("{}")
    assert "not a read proof" in one_error_line(cli("verify-read", str(tmp_path / "bad.json"), "--cluster", str(d)))
    assert "--linearizable" in one_error_line(cli("get", str(d), "k", "--proof", "p", "--linearizable"))
    assert "at least 1" in one_error_line(cli("get", str(d), "k", "--at-height", "0"))


async def test_a_far_past_height_is_rebuilt_over_several_asks(make_cluster) -> None:
    lc = make_cluster("pbft", start=False)
    write_tuning(lc.directory, {"proof_replay_txs": 4})       # a query re-executes at most 4 transactions
    lc.start()
    await lc.ready()
    async with ledger.client.connect(lc.directory, timeout=60) as c:
        receipts = [await c.put("x", f"{i}") for i in range(16)]
        old = await c.get_verified("x", at_height=receipts[13].height)
    assert old.value == b"13" and old.height == receipts[13].height
    old.verify(lc.directory)
