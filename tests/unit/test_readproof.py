"""Read proofs (issue 16), offline: built from a ledger committed in process, checked with
public keys only, JSON round trip, and every tampering refused with its reason."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bft.app.clusterinit import init_cluster
from bft.app.demo_offline import OfflineLedger
from ledger import state
from ledger.certificate import ATTEST_DOMAIN, attestation_statement
from ledger.cluster import load
from ledger.readproof import ReadProof, ReadProofError
from ledger.statetree import StateTree


def _attest(led: OfflineLedger, height: int, block_hash: bytes, size: int, ids: list[int]) -> list[tuple[int, bytes]]:
    return [(i, led.replicas[i].sign(ATTEST_DOMAIN, attestation_statement(height, block_hash, size, i)))
            for i in ids]


def _proof(led: OfflineLedger, block, key: str, attesters: list[int]) -> ReadProof:
    c = led.cluster
    p = ReadProof(mode=c.mode, cluster_id=c.cluster_id, height=block.height, sequence=block.sequence,
                  view=block.view, prev_hash=block.prev_hash, batch_root=block.batch_root,
                  results_root=block.results_root, tree_size=block.tree_size, tree_root=block.tree_root,
                  state_root=block.state_root, batch_size=len(block.txs), state_proof=led.chain.kv.prove(key),
                  cert=list(block.cert))
    p.attestations = _attest(led, block.height, block.hash(), len(block.txs), attesters)
    return p


def _ledger(d: Path, mode: str) -> tuple[OfflineLedger, object]:
    init_cluster(d, mode, 1, clients=2)
    led = OfflineLedger(load(d))
    for i in range(3):
        led.commit([led.request(0, state.op_put(f"k{j}", f"v{i}.{j}".encode())) for j in range(8)])
    block = led.commit([led.request(1, state.op_put("alice", b"100")), led.request(1, state.op_delete("k3"))])
    return led, block


@pytest.mark.parametrize("mode", ["pbft", "paxos"])
def test_read_proofs_of_a_value_and_of_an_absence_verify_and_round_trip(tmp_path: Path, mode: str) -> None:
    d = tmp_path / "c"
    led, block = _ledger(d, mode)
    ids = [1, 2] if mode == "pbft" else [0]
    for key, want in (("alice", b"100"), ("k5", b"v2.5"), ("k3", None), ("nobody", None)):
        p = _proof(led, block, key, ids)
        assert p.value == want and p.height == 4
        again = ReadProof.from_json(p.to_json())
        assert again == p
        v = again.verify(d)
        assert v.value == want and v.key == key and v.attesters == ids and v.block_hash == block.hash()
    if mode == "paxos":
        assert v.trust_model.startswith("crash-fault")


def test_every_tampering_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "c"
    led, block = _ledger(d, "pbft")
    good = _proof(led, block, "alice", [0, 3]).to_dict()
    gone = _proof(led, block, "k3", [0, 3]).to_dict()

    def refused(change, match: str, base: dict = good) -> None:
        doc = json.loads(json.dumps(base))
        change(doc)
        with pytest.raises(ReadProofError, match=match):
            ReadProof.from_dict(doc).verify(d)

    def flip(h: str, i: int = 0) -> str:
        b = bytearray(bytes.fromhex(h))
        b[i] ^= 1
        return b.hex()

    refused(lambda r: r.update(value=b"1000".hex()), "state proof")                 # a changed value
    refused(lambda r: r.update(value=None), "state proof")                           # absence claimed ...
    refused(lambda r: (r.update(value=None), r["state_proof"].update(children=None)), "state proof")
    refused(lambda r: r.update(value=b"back".hex()), "state proof", gone)            # ... presence claimed
    refused(lambda r: r.update(key="bob"), "state proof")
    refused(lambda r: r["state_proof"]["path"].pop(), "state proof")
    refused(lambda r: r["state_proof"]["path"][0].__setitem__(2, flip(r["state_proof"]["path"][0][2])), "state proof")
    refused(lambda r: (r.update(height=3), r["block"].update(sequence=3)), "certificate")    # a wrong height
    refused(lambda r: r.update(height=5), "sequence")
    refused(lambda r: r["block"].update(view=1), "certificate")
    refused(lambda r: r["block"].update(batch_root=flip(r["block"]["batch_root"])), "certificate")
    refused(lambda r: r.update(certificate=r["certificate"][:2]), "2 valid")
    refused(lambda r: r.update(attestations=r["attestations"][:1]), "1 valid distinct")
    refused(lambda r: r.update(attestations=[r["attestations"][0]] * 2), "1 valid distinct")
    refused(lambda r: r["block"].update(batch_size=1), "attestations")
    refused(lambda r: r["block"].update(tree_size=r["block"]["tree_size"] + 1), "attestations")
    refused(lambda r: r["block"].update(prev_hash=flip(r["block"]["prev_hash"])), "attestations")
    refused(lambda r: r.update(mode="paxos"), "from a paxos cluster")
    refused(lambda r: r.update(cluster_id=flip(r["cluster_id"])), "from cluster")

    # The forgery only the attestations catch: another state (the key holds "lies") whose root
    # the forger put in the header, under the real certificate, attested by one replica (f).
    tree = StateTree()
    tree.put("alice", b"lies")
    forged = ReadProof.from_dict(json.loads(json.dumps(good)))
    path, children = tree.prove("alice")
    forged = dataclasses.replace(forged, state_root=tree.root(),
                                 state_proof=dataclasses.replace(forged.state_proof, value=b"lies",
                                                                 path=tuple(path), children=children))
    forged.attestations = _attest(led, forged.height, forged.block_hash, forged.batch_size, [3])
    with pytest.raises(ReadProofError, match="1 valid distinct signatures on the block hash"):
        forged.verify(d)
    forged.attestations += _attest(led, forged.height, forged.block_hash, forged.batch_size, [2])
    assert forged.verify(d).value == b"lies"            # f+1 liars could: the model's bound, stated


def test_a_proof_of_another_cluster_is_refused_even_with_the_same_keys(tmp_path: Path) -> None:
    led, block = _ledger(tmp_path / "a", "pbft")
    p = _proof(led, block, "alice", [0, 1])
    init_cluster(tmp_path / "b", "pbft", 1, clients=2)
    with pytest.raises(ReadProofError, match="from cluster"):
        p.verify(tmp_path / "b")
    # relabelled with b's id: the signatures were made under a's id (every signature binds it)
    b = load(tmp_path / "b")
    same_keys = dataclasses.replace(b, replicas=led.cluster.replicas)
    relabelled = dataclasses.replace(p, cluster_id=b.cluster_id)
    with pytest.raises(ReadProofError, match="certificate"):
        relabelled.verify(same_keys)


@pytest.mark.parametrize("doc", [
    "", "[]", "{}", '{"read_proof_version": 2}', '{"read_proof_version": true}',
])
def test_malformed_read_proofs_raise_one_error(doc: str) -> None:
    with pytest.raises(ReadProofError, match="not a read proof"):
        ReadProof.from_json(doc)


def test_malformed_fields_raise_one_error(tmp_path: Path) -> None:
    led, block = _ledger(tmp_path / "c", "pbft")
    good = _proof(led, block, "alice", [0, 1]).to_dict()
    for change in (lambda r: r.update(value="zz"), lambda r: r["state_proof"].update(path=[["a", "00"]]),
                   lambda r: r["state_proof"].update(path=[["a", "00" * 32, "00" * 32]] * 300),
                   lambda r: r["state_proof"].update(children=["00" * 32]), lambda r: r.update(key=7),
                   lambda r: r.update(key="x" * 2000), lambda r: r.update(height=-1), lambda r: r.pop("block"),
                   lambda r: r.update(certificate=[[0]])):
        doc = json.loads(json.dumps(good))
        change(doc)
        with pytest.raises(ReadProofError, match="not a read proof"):
            ReadProof.from_dict(doc)
